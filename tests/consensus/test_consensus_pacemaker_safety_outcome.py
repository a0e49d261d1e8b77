"""The pure parts: leader permutation, pacemaker rules, safety store, outcome functions."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.outcome import (
    AttributedObservation,
    FactsOutcome,
    MedianOutcome,
    OutcomeContext,
    decode_facts,
    encode_facts,
    encode_number,
)
from consensus.pacemaker import Pacemaker, join_epoch, keyed_permutation, leader, move_epoch
from consensus.report import Action, Decision, conflicts
from consensus.safety import (
    DurableStore,
    PacemakerRecord,
    PersistedState,
    PersistUpdate,
    SafetyStore,
    SignedRecord,
)

# --------------------------------------------------------------------------- pacemaker


@given(st.binary(min_size=16, max_size=32), st.integers(1, 64), st.integers(0, 2**20))
def test_every_block_of_n_epochs_has_every_leader_once(key: bytes, n: int, block: int) -> None:
    leaders = [leader(block * n + i, n, key) for i in range(n)]
    assert sorted(leaders) == list(range(n))


def test_leader_permutation_depends_on_the_key_and_the_block() -> None:
    a, b = b"a" * 16, b"b" * 16
    assert keyed_permutation(a, b"x", 31) == keyed_permutation(a, b"x", 31)
    assert keyed_permutation(a, b"x", 31) != keyed_permutation(b, b"x", 31)
    assert keyed_permutation(a, b"x", 31) != keyed_permutation(a, b"y", 31)


def _reference_kth_highest_above(values: list[int], floor: int, count: int) -> int | None:
    """OCR's rule, spelled out: the largest e' such that at least ``count`` members asked
    for an epoch >= e' (and e' > floor)."""
    candidates = [e for e in set(values) if e > floor and sum(v >= e for v in values) >= count]
    return max(candidates) if candidates else None


@given(st.lists(st.integers(0, 20), min_size=4, max_size=10), st.integers(0, 20), st.integers(0, 3))
def test_join_and_move_follow_ocr(newepoch: list[int], floor: int, f: int) -> None:
    assert join_epoch(newepoch, floor, f) == _reference_kth_highest_above(newepoch, floor, f + 1)
    assert move_epoch(newepoch, floor, f) == _reference_kth_highest_above(
        newepoch, floor, 2 * f + 1
    )


@given(st.lists(st.integers(0, 2**32 - 1), min_size=4, max_size=4), st.integers(1, 3))
def test_f_byzantine_requests_alone_never_trigger_join(byzantine: list[int], f: int) -> None:
    """f members asking for huge epochs, the others at 0: nobody joins or moves."""
    newepoch = byzantine[:f] + [0] * (3 * f + 1 - f)
    assert join_epoch(newepoch, 1, f) is None
    assert move_epoch(newepoch, 1, f) is None


def test_pacemaker_restores_a_sane_record_and_ignores_a_corrupt_one() -> None:
    restored = Pacemaker(4, PacemakerRecord(5, 6, (5, 6, 5, 4)))
    assert (restored.e, restored.ne, restored.newepoch) == (5, 6, [5, 6, 5, 4])
    for corrupt in (PacemakerRecord(5, 4, (0,) * 4), PacemakerRecord(5, 6, (0,) * 3)):
        fresh = Pacemaker(4, corrupt)
        assert (fresh.e, fresh.ne, fresh.newepoch) == (1, 1, [0, 0, 0, 0])


# --------------------------------------------------------------------------- safety

sids = st.sampled_from([hashlib.sha256(bytes([i])).digest() for i in range(4)])
decisions = st.builds(
    Decision, sids, st.sampled_from(list(Action)), st.sampled_from([b"\x01" * 32, b"\x02" * 32])
)


@given(st.lists(st.lists(decisions, max_size=4), max_size=12))
def test_safety_store_never_holds_or_signs_conflicting_decisions(
    rounds: list[list[Decision]],
) -> None:
    """Drive a store like the follower does: sign a round's decisions only if none
    conflicts; the record never holds a conflict, and the reference fold and the
    incremental store agree after every write, so a restart sees the same record."""
    store = SafetyStore(PersistedState())
    durable = DurableStore()
    reference = PersistedState()
    for number, proposed in enumerate(rounds, start=1):
        unique = list({d.settlement_id: d for d in proposed}.values())
        if any(store.conflict(d) is not None for d in unique):
            continue
        update = store.record(1, number, unique)
        durable.apply(update)
        reference = reference.apply(update)
        assert durable.state() == reference
        record = reference.decisions
        assert not any(conflicts(a, b) for a in record for b in record)
        # A store rebuilt from the persisted state refuses exactly what the live one does.
        rebuilt = SafetyStore(reference)
        for d in [
            Decision(s, a, b"\x01" * 32) for s in {x.settlement_id for x in record} for a in Action
        ]:
            assert (rebuilt.conflict(d) is None) == (store.conflict(d) is None)
        assert not rebuilt.may_sign_round(1, number)
        assert rebuilt.may_sign_round(1, number + 1)


def test_safety_store_refuses_rounds_out_of_order_and_corrupt_records() -> None:
    store = SafetyStore(PersistedState(last_signed=(3, 2)))
    assert not store.may_sign_round(3, 2)
    assert not store.may_sign_round(2, 9)
    assert store.may_sign_round(3, 3)
    with pytest.raises(ValueError, match="not after"):
        store.record(3, 1, [])
    sid = b"\x07" * 32
    commit = Decision(sid, Action.COMMIT, b"\x01" * 32)
    abort = Decision(sid, Action.ABORT, b"\x01" * 32)
    assert store.conflict(abort, pending=[commit]) == commit
    with pytest.raises(ValueError, match="conflicting"):
        SafetyStore(PersistedState(decisions=(commit, abort)))


def test_persist_update_carries_only_new_decisions() -> None:
    d = Decision(b"\x05" * 32, Action.COMMIT, b"\x01" * 32)
    store = SafetyStore(PersistedState())
    assert store.record(1, 1, [d]) == PersistUpdate(signed=SignedRecord(1, 1, (d,)))
    assert store.record(1, 2, [d]) == PersistUpdate(signed=SignedRecord(1, 2, ()))
    assert store.decision_count == 1


# --------------------------------------------------------------------------- outcomes


def _context(f: int = 1) -> OutcomeContext:
    return OutcomeContext(n=3 * f + 1, f=f, epoch=1, round=1, targets=("a", "b"), max_decisions=16)


facts = st.builds(
    Decision, sids, st.sampled_from([Action.COMMIT, Action.ABORT]), st.just(b"\x01" * 32)
)


@given(st.lists(st.lists(facts, max_size=4), min_size=1, max_size=7), st.integers(1, 2))
def test_facts_outcome_certifies_only_facts_with_f_plus_one_support(
    views: list[list[Decision]], f: int
) -> None:
    observations = [AttributedObservation(i, encode_facts(v)) for i, v in enumerate(views)]
    result = FactsOutcome()(observations, _context(f))
    assert result["a"] == result["b"]
    support = {}
    for view in views:
        for fact in set(view):
            support[fact] = support.get(fact, 0) + 1
    chosen = result["a"]
    assert len({d.settlement_id for d in chosen}) == len(chosen)
    for d in chosen:
        assert support[d] >= f + 1
        # It is the best supported fact of its settlement, ties to ABORT.
        rivals = [x for x in support if x.settlement_id == d.settlement_id]
        assert all(support[x] <= support[d] for x in rivals)
        if any(support[x] == support[d] and x.action is Action.ABORT for x in rivals):
            assert d.action is Action.ABORT
    # Every settlement with a well supported fact is decided.
    for fact, count in support.items():
        if count >= f + 1:
            assert any(d.settlement_id == fact.settlement_id for d in chosen)
    # Order of the observation set does not matter.
    assert FactsOutcome()(list(reversed(observations)), _context(f)) == result


@given(st.binary(max_size=200))
def test_facts_outcome_ignores_malformed_observations(junk: bytes) -> None:
    good = encode_facts([Decision(b"\x01" * 32, Action.COMMIT, b"\x02" * 32)])
    observations = [AttributedObservation(0, good), AttributedObservation(1, good)]
    expected = FactsOutcome()(observations, _context())
    with_junk = [*observations, AttributedObservation(2, junk)]
    if decode_facts(junk) is None:
        assert FactsOutcome()(with_junk, _context()) == expected


def test_fact_encoding_is_canonical() -> None:
    a = Decision(b"\x01" * 32, Action.COMMIT, b"\x02" * 32)
    b = Decision(b"\x00" * 32, Action.ABORT, b"\x02" * 32)
    assert encode_facts([a, b, a]) == encode_facts([b, a])
    assert decode_facts(encode_facts([a, b])) == (b, a)
    assert decode_facts(b"\x92" + encode_facts([a])[1:]) is None  # wrong count


@given(
    st.lists(st.integers(0, 2**64 - 1), min_size=3, max_size=3),
    st.lists(st.integers(0, 2**64 - 1), max_size=1),
)
def test_median_of_2f_plus_1_with_f_liars_is_between_honest_values(
    honest: list[int], liars: list[int]
) -> None:
    observations = [
        AttributedObservation(i, encode_number(v))
        for i, v in enumerate(honest[: 3 - len(liars)] + liars)
    ]
    honest_used = honest[: 3 - len(liars)]
    result = MedianOutcome()(observations, _context())
    value = int.from_bytes(result["a"][0].terms_hash, "big")
    assert min(honest_used) <= value <= max(honest_used)
