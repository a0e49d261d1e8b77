"""The DvP decision rules: the reference workflow step by step, and properties over any facts."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.report import Action
from node.dvp import (
    Fact,
    FactKind,
    ObservationError,
    decide,
    decode_observation,
    encode_observation,
    supported_facts,
)
from node.modes import MODES

MODE_LEGS = {name: mode.legs for name, mode in MODES.items()}

SID = bytes(range(32))
TA, TB, TBANK = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32


def facts(*items: tuple[str, FactKind]) -> set[Fact]:
    terms = {"A": TA, "B": TB, "bank": TBANK}
    return {Fact(SID, target, kind, terms[target]) for target, kind in items}


def actions(result: dict[str, tuple]) -> dict[str, list[Action]]:
    return {target: [d.action for d in decisions] for target, decisions in result.items()}


def test_reference_workflow_step_by_step() -> None:
    mode = "multi-chain-messaging"
    locked = facts(("A", FactKind.PREPARED), ("bank", FactKind.REQUESTED))
    assert actions(decide(mode, locked)) == {
        "bank": [Action.PREPARE]
    }  # step 3: pre-validation request
    held = locked | facts(("bank", FactKind.PREPARED))
    # Step 5, pay first: both COMMITs are certified in one round; the asset's transmission
    # waits until the payment is seen executed (node.driver; tests/node/test_driver.py).
    assert actions(decide(mode, held)) == {"bank": [Action.COMMIT], "A": [Action.COMMIT]}
    paid = held | facts(("bank", FactKind.COMMITTED))
    assert actions(decide(mode, paid)) == {
        "A": [Action.COMMIT]
    }  # step 7: release after confirmation
    done = paid | facts(("A", FactKind.COMMITTED))
    assert decide(mode, done) == {}
    assert decide(mode, paid)["A"][0].terms_hash == TA


def test_reference_workflow_abort_paths() -> None:
    mode = "multi-chain-messaging"
    rejected = facts(
        ("A", FactKind.PREPARED), ("bank", FactKind.REQUESTED), ("bank", FactKind.REJECTED)
    )
    assert actions(decide(mode, rejected)) == {
        "A": [Action.ABORT]
    }  # refund; nothing held at the bank
    expired = facts(("A", FactKind.PREPARED), ("bank", FactKind.PREPARED), ("A", FactKind.EXPIRED))
    assert actions(decide(mode, expired)) == {
        "A": [Action.ABORT],
        "bank": [Action.ABORT],
    }  # refund, cancel hold


def test_late_commit_wins_over_expiry_once_applied() -> None:
    """Once the bank executed a certified COMMIT, the asset must be released even after its deadline."""
    late = facts(("A", FactKind.PREPARED), ("A", FactKind.EXPIRED), ("bank", FactKind.COMMITTED))
    assert actions(decide("multi-chain-messaging", late)) == {"A": [Action.COMMIT]}


def test_single_chain_and_token_modes() -> None:
    assert actions(decide("single-chain-onchain", facts(("A", FactKind.PREPARED)))) == {
        "A": [Action.COMMIT]
    }
    both = facts(("A", FactKind.PREPARED), ("B", FactKind.PREPARED))
    assert actions(decide("multi-chain-token", both)) == {
        "A": [Action.COMMIT],
        "B": [Action.COMMIT],
    }
    one = facts(("A", FactKind.PREPARED), ("B", FactKind.EXPIRED))
    assert actions(decide("multi-chain-token", one)) == {"A": [Action.ABORT], "B": [Action.ABORT]}


def test_conflicting_terms_for_one_leg_are_ignored() -> None:
    lie = {Fact(SID, "A", FactKind.PREPARED, TA), Fact(SID, "A", FactKind.PREPARED, TB)}
    assert decide("single-chain-onchain", lie) == {}


def test_observation_codec_is_strict() -> None:
    sample = facts(("A", FactKind.PREPARED), ("bank", FactKind.REQUESTED))
    assert decode_observation(encode_observation(sample)) == frozenset(sample)
    for bad in (
        b"",
        b"\xc1",
        encode_observation([])[:0] + b"\x91\x93\x01\x02\x03",
        b"\x91\x94" + b"\xc4\x01x" * 2 + b"\x02\x02",
        msgpack.packb([[SID, []]]),  # a settlement without legs
        msgpack.packb([[SID, [["A", 1 << 2, TA]]], [SID, [["A", 1 << 2, TA]]]]),  # twice
        msgpack.packb([[SID, [["A", 1 << 2, TA], ["A", 1 << 5, TA]]]]),  # a leg twice
        msgpack.packb([[SID, [["A", 1 << 9, TA]]]]),  # an unknown kind
        msgpack.packb([[SID, [["A", 0, TA]]]]),  # no kind
        msgpack.packb([[SID, [["A", 1 << 2, TA[:31]]]]]),  # a short terms hash
    ):
        try:
            decode_observation(bad)
        except ObservationError:
            continue
        raise AssertionError(f"accepted {bad!r}")


fact_st = st.builds(
    Fact,
    settlement_id=st.sampled_from([SID, b"\x01" * 32]),
    target=st.sampled_from(["A", "B", "bank"]),
    kind=st.sampled_from(list(FactKind)),
    terms_hash=st.sampled_from([TA, TB]),
)


@settings(max_examples=300, deadline=None)
@given(mode=st.sampled_from(sorted(MODE_LEGS)), fact_set=st.frozensets(fact_st, max_size=12))
def test_never_commit_and_abort_for_one_settlement(mode: str, fact_set: frozenset[Fact]) -> None:
    per_settlement: dict[bytes, set[Action]] = {}
    for decisions in decide(mode, fact_set).values():
        for d in decisions:
            per_settlement.setdefault(d.settlement_id, set()).add(d.action)
    for acts in per_settlement.values():
        assert not {Action.COMMIT, Action.ABORT} <= acts


@settings(max_examples=300, deadline=None)
@given(mode=st.sampled_from(sorted(MODE_LEGS)), fact_set=st.frozensets(fact_st, max_size=12))
def test_commit_only_when_prepared_or_already_committed(
    mode: str, fact_set: frozenset[Fact]
) -> None:
    legs = MODE_LEGS[mode]
    for decisions in decide(mode, fact_set).values():
        for d in decisions:
            if d.action is not Action.COMMIT:
                continue
            targets = {leg.target for leg in legs}  # facts about other targets play no part
            mine = {
                (x.target, x.kind)
                for x in fact_set
                if x.settlement_id == d.settlement_id and x.target in targets
            }
            already = any(kind is FactKind.COMMITTED for _, kind in mine)
            prepared = all((leg.target, FactKind.PREPARED) in mine for leg in legs)
            blocked = any(
                kind in (FactKind.EXPIRED, FactKind.REJECTED, FactKind.ABORTED) for _, kind in mine
            )
            assert already or (prepared and not blocked)


@settings(max_examples=200, deadline=None)
@given(
    f=st.integers(1, 3),
    honest=st.lists(st.frozensets(fact_st, max_size=6), min_size=1, max_size=7),
    lies=st.frozensets(fact_st, max_size=6),
    order_seed=st.randoms(use_true_random=False),
)
def test_f_liars_cannot_add_a_fact_and_order_does_not_matter(
    f: int, honest: list, lies: frozenset, order_seed
) -> None:
    honest_obs = [(i, encode_observation(fs)) for i, fs in enumerate(honest)]
    liar_obs = [(100 + j, encode_observation(lies)) for j in range(f)]
    counted = supported_facts(honest_obs + liar_obs, f)
    for fact in counted:
        assert any(fact in fs for fs in honest), "a fact no honest node saw was counted"
    shuffled = honest_obs + liar_obs
    order_seed.shuffle(shuffled)
    assert supported_facts(shuffled, f) == counted
    # The decisions do not depend on the order the facts come in either.
    in_order = sorted(counted)
    reordered = list(counted)
    order_seed.shuffle(reordered)
    for mode in MODE_LEGS:
        assert decide(mode, reordered) == decide(mode, in_order)
        assert decide(mode, reversed(in_order)) == decide(mode, in_order)


def test_outcome_function_maps_legs_to_consensus_targets() -> None:
    from consensus.outcome import AttributedObservation, OutcomeContext
    from node.dvp import DvpOutcome

    seen = encode_observation(facts(("A", FactKind.PREPARED), ("bank", FactKind.REQUESTED)))
    outcome = DvpOutcome("multi-chain-messaging", {"A": "chain-A", "bank": "bank"})
    ctx = OutcomeContext(n=4, f=1, epoch=1, round=1, targets=("chain-A", "bank"), max_decisions=128)
    two = [AttributedObservation(0, seen), AttributedObservation(1, seen)]
    assert [d.action for d in outcome(two, ctx)["bank"]] == [Action.PREPARE]
    assert outcome(two[:1], ctx) == {}  # one observer (f = 1) is not enough


def test_observation_fits_its_limit_by_leaving_out_whole_settlements() -> None:
    many = {
        Fact(bytes([i]) * 32, "A", kind, TA)
        for i in range(60)
        for kind in (FactKind.PREPARED, FactKind.EXPIRED)
    }
    data = encode_observation(many, max_bytes=2000)
    assert len(data) <= 2000
    kept = decode_observation(data)
    ids = {f.settlement_id for f in kept}
    assert ids and all(
        {(f.kind) for f in kept if f.settlement_id == sid} == {FactKind.PREPARED, FactKind.EXPIRED}
        for sid in ids
    )


def test_fitting_counts_the_settlements_left_out_and_never_splits_one() -> None:
    from node.dvp import MAX_SETTLEMENTS_PER_OBSERVATION, fit_observation

    many = {
        Fact(i.to_bytes(32, "big"), "A", kind, TA)
        for i in range(60)
        for kind in (FactKind.PREPARED, FactKind.EXPIRED)
    }
    data, left_out = fit_observation(many, max_bytes=2000)
    assert left_out == 60 - len({f.settlement_id for f in decode_observation(data)}) > 0
    assert fit_observation(many)[1] == 0
    # The settlement cap counts settlements, not facts: a settlement's legs travel together.
    count = MAX_SETTLEMENTS_PER_OBSERVATION + 2
    capped = {
        Fact(i.to_bytes(32, "big"), target, kind, TA)
        for i in range(count)
        for target, kind in (
            ("A", FactKind.PREPARED),
            ("A", FactKind.EXPIRED),
            ("B", FactKind.PREPARED),
        )
    }
    data, left_out = fit_observation(capped)
    kept = decode_observation(data)
    assert len(kept) == 3 * MAX_SETTLEMENTS_PER_OBSERVATION and left_out == 2


def test_a_legs_terms_hash_travels_once_however_many_facts() -> None:
    one = encode_observation(facts(("A", FactKind.PREPARED)))
    three = encode_observation(
        facts(("A", FactKind.PREPARED), ("A", FactKind.EXPIRED), ("A", FactKind.COMMITTED))
    )
    assert len(three) == len(one)  # the kinds are bits of one mask


def test_settled_settlements_are_those_closed_on_every_leg() -> None:
    from node.dvp import settled

    done = facts(("A", FactKind.COMMITTED), ("bank", FactKind.COMMITTED))
    half = {
        Fact(b"\x01" * 32, "A", FactKind.COMMITTED, TA),
        Fact(b"\x01" * 32, "bank", FactKind.PREPARED, TBANK),
    }
    assert settled("multi-chain-messaging", done | half) == {SID}
