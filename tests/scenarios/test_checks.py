"""The invariant checkers are not blind: each violation is found, honest outcomes pass."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from scenarios.checks import (
    CHECK_NAMES,
    LegState,
    LivenessWindow,
    Movement,
    RunState,
    SeenCertificate,
    SettlementOutcome,
    Verdict,
    check_all,
    check_atomicity,
    check_conservation,
    check_exactly_once,
    check_liveness,
    check_no_conflicting_certificates,
    check_validity,
    expectation_differences,
    passed,
)

C, A, P = LegState.COMMITTED, LegState.ABORTED, LegState.PREPARED


def committed(sid: str = "s1") -> SettlementOutcome:
    return SettlementOutcome(
        sid,
        {"A": C, "bank": C},
        10,
        100,
        10,
        100,
        (("bank", Movement.PAYMENT), ("A", Movement.RELEASE)),
    )


def aborted(sid: str = "s2") -> SettlementOutcome:
    return SettlementOutcome(
        sid,
        {"A": A, "bank": A},
        0,
        0,
        10,
        100,
        (("bank", Movement.HOLD_CANCEL), ("A", Movement.REFUND)),
    )


def seen(
    where: str,
    at: float | None,
    *decisions: tuple[str, str],
    round_: int = 4,
    signers: tuple[int, ...] = (),
) -> SeenCertificate:
    if where.startswith("node"):
        return SeenCertificate(where, at, "chain-A", 1, round_, decisions, signers)
    return SeenCertificate(where, at, where.split()[-1], None, None, decisions)


def honest(outcomes: tuple[SettlementOutcome, ...], supply: dict[str, int]) -> RunState:
    """A run's state with what an honest committee leaves: a certificate per settlement
    (COMMIT or ABORT, as it ended), every leg of a committed one prepared, and every
    settlement ended before its deadline."""
    outcomes = tuple(
        dataclasses.replace(o, deadline_at=30.0 + i, ended_at=5.0 + i)
        for i, o in enumerate(outcomes)
    )
    certificates = tuple(
        seen(
            "node 0",
            1.0 + i,
            (o.settlement_id, "COMMIT" if C in o.legs.values() else "ABORT"),
            round_=4 + i,
        )
        for i, o in enumerate(outcomes)
    )
    prepared = frozenset(
        (leg, o.settlement_id) for o in outcomes if C in o.legs.values() for leg in o.legs
    )
    return RunState(
        outcomes, supply, dict(supply), certificates, prepared, LivenessWindow(2.0, 10.0, 60.0)
    )


def test_honest_run_passes() -> None:
    state = honest((committed(), aborted()), {"asset@A": 1000, "USD@bank": 5000})
    assert passed(check_all(state))


def test_conflicting_certificates_are_found_with_both_sightings() -> None:
    state = RunState(
        (committed("s1"),),
        certificates=(
            seen("chain A", None, ("s1", "ABORT")),
            seen("node 2", 3.25, ("s1", "PREPARE"), round_=3),
            seen("node 1", 2.5, ("s1", "COMMIT")),
        ),
        prepared=frozenset(),
    )
    verdict = check_no_conflicting_certificates(state)
    assert verdict.status == "invalid"
    assert verdict.witness == (
        "s1: COMMIT for chain-A (epoch 1, round 4) accepted by node 1 at 2.500 s, "
        "and ABORT applied by chain A"
    )
    # PREPARE conflicts with neither; without sightings the check cannot say.
    calm = RunState((), certificates=(seen("node 0", 1.0, ("s1", "PREPARE"), ("s1", "COMMIT")),))
    assert check_no_conflicting_certificates(calm).status == "valid"
    assert check_no_conflicting_certificates(RunState(())).status == "unknown"


def test_two_reports_certified_for_one_round_conflict_and_name_who_signed_both() -> None:
    """Twins on two sides of a partition, each side certifying its own report."""
    same = seen("node 0", 1.0, ("s1", "PREPARE"), signers=(0, 1, 2))
    again = seen("node 3", 1.5, ("s1", "PREPARE"), signers=(0, 2, 3))
    assert check_no_conflicting_certificates(RunState((), certificates=(same, again))).ok
    other = seen("node 2b", 1.25, ("s2", "PREPARE"), ("s1", "PREPARE"), signers=(2, 3))
    verdict = check_no_conflicting_certificates(RunState((), certificates=(same, other)))
    assert verdict.status == "invalid"
    assert verdict.witness == (
        "two reports for chain-A (epoch 1, round 4): [PREPARE s1] accepted by node 0 at "
        "1.000 s, and [PREPARE s2, PREPARE s1] accepted by node 2b at 1.250 s; "
        "member(s) 2 signed both"
    )


ACTIONS = st.sampled_from(("PREPARE", "COMMIT", "ABORT"))
SIGHTING = st.builds(
    lambda where, at, decisions, round_: seen(where, at, *decisions, round_=round_),
    st.sampled_from(("node 0", "node 1", "chain A", "bank")),
    st.one_of(st.none(), st.floats(0, 100)),
    st.lists(st.tuples(st.sampled_from(("s1", "s2", "s3")), ACTIONS), max_size=4),
    st.integers(1, 4),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(SIGHTING, max_size=8))
def test_certificates_conflict_exactly_when_a_settlement_or_a_round_has_two_stories(
    sightings: list[SeenCertificate],
) -> None:
    actions: dict[str, set[str]] = {}
    reports: dict[tuple[str, int | None, int | None], set[tuple[tuple[str, str], ...]]] = {}
    for cert in sightings:
        for sid, action in cert.decisions:
            actions.setdefault(sid, set()).add(action)
        if cert.epoch is not None:
            reports.setdefault((cert.target, cert.epoch, cert.round), set()).add(cert.decisions)
    conflict = any({"COMMIT", "ABORT"} <= a for a in actions.values()) or any(
        len(r) > 1 for r in reports.values()
    )
    verdict = check_no_conflicting_certificates(RunState((), certificates=tuple(sightings)))
    assert verdict.status == ("invalid" if conflict else "valid")
    if conflict and verdict.witness.startswith("two reports for "):
        where = verdict.witness.removeprefix("two reports for ").split(":")[0]
        target, rest = where.split(" (epoch ")
        epoch, round_ = (int(x) for x in rest.rstrip(")").split(", round "))
        assert len(reports[(target, epoch, round_)]) > 1
    elif conflict:
        sid = verdict.witness.split(":")[0]
        assert {"COMMIT", "ABORT"} <= actions[sid]
        assert "COMMIT" in verdict.witness and "ABORT" in verdict.witness


def test_liveness_needs_every_settlement_ended_by_its_limit() -> None:
    window = LivenessWindow(heal_at=20.0, bound_s=10.0, run_end=100.0)

    def judged(
        deadline_at: float | None, ended_at: float | None, run_end: float = 100.0
    ) -> Verdict:
        outcome = dataclasses.replace(committed(), deadline_at=deadline_at, ended_at=ended_at)
        return check_liveness(
            RunState((outcome,), liveness=dataclasses.replace(window, run_end=run_end))
        )

    # The limit is max(heal 20, deadline) + 10.
    assert judged(15.0, 30.0).ok and judged(35.0, 45.0).ok
    late = judged(15.0, 30.5)
    assert late.status == "invalid" and late.witness.startswith(
        "s1: ended at 30.500 s, after its limit 30.000 s = max(heal 20.000 s, deadline "
        "15.000 s) + bound 10.000 s"
    )
    assert "still open when the run stopped at 100.000 s" in judged(15.0, None).witness
    # Open, but the run stopped before the limit: cannot say; never created: cannot say.
    assert judged(15.0, None, run_end=29.0).status == "unknown"
    assert judged(None, None).status == "unknown"
    assert check_liveness(RunState((committed(),))).status == "unknown"
    # A fault that never heals (heal = inf) leaves only "every settlement ended".
    never = LivenessWindow(float("inf"), 10.0, 100.0)
    ended = dataclasses.replace(committed(), deadline_at=15.0, ended_at=99.0)
    assert check_liveness(RunState((ended,), liveness=never)).ok


def test_validity_needs_every_leg_of_a_committed_settlement_prepared() -> None:
    outcome = committed("s1")
    certificates = (seen("node 3", 4.0, ("s1", "COMMIT")),)
    both = frozenset({("A", "s1"), ("bank", "s1")})
    assert check_validity(RunState((outcome,), certificates=certificates, prepared=both)).ok
    verdict = check_validity(
        RunState((outcome,), certificates=certificates, prepared=frozenset({("A", "s1")}))
    )
    assert verdict.status == "invalid"
    assert verdict.witness.startswith(
        "s1: COMMIT for chain-A (epoch 1, round 4) accepted by node 3 at 4.000 s, "
        "but leg bank was never prepared at its target"
    )
    # A COMMIT for a settlement nobody created is a certified lie too.
    ghost = (*certificates, seen("node 0", 1.0, ("s9", "COMMIT")))
    assert (
        "s9: COMMIT"
        in check_validity(RunState((outcome,), certificates=ghost, prepared=both)).witness
    )
    # An aborted settlement needs no prepared leg; missing records make it unknown.
    aborts = (seen("node 0", 1.0, ("s2", "ABORT")),)
    assert check_validity(RunState((aborted(),), certificates=aborts, prepared=frozenset())).ok
    assert check_validity(RunState((outcome,), certificates=certificates)).status == "unknown"


def test_atomicity_violations_are_found() -> None:
    mixed = SettlementOutcome(
        "s3",
        {"A": A, "bank": C},
        0,
        100,
        10,
        100,
        (("bank", Movement.PAYMENT), ("A", Movement.REFUND)),
    )
    verdict = check_atomicity(RunState((committed(), mixed)))
    assert verdict.status == "invalid" and verdict.witness.startswith(
        "s3: committed on one leg and aborted"
    )
    unpaid = SettlementOutcome("s4", {"A": C}, 10, 0, 10, 100, (("A", Movement.RELEASE),))
    assert "seller was not paid" in check_atomicity(RunState((unpaid,))).witness
    both = SettlementOutcome(
        "s5", {"A": C}, 10, 100, 10, 100, (("A", Movement.RELEASE), ("A", Movement.REFUND))
    )
    assert "both released and refunded" in check_atomicity(RunState((both,))).witness


def test_stuck_settlement_is_unknown_not_valid() -> None:
    stuck = SettlementOutcome("s6", {"A": P, "bank": P}, 0, 0, 10, 100)
    verdict = check_atomicity(RunState((stuck,)))
    assert verdict.status == "unknown" and not passed([verdict])


def test_conservation_and_exactly_once_violations_are_found() -> None:
    assert (
        check_conservation(RunState((), {"asset@A": 10}, {"asset@A": 20})).witness
        == "asset@A: total 10 before the run, 20 after (+10)"
    )
    assert check_conservation(RunState(())).status == "unknown"
    double = SettlementOutcome(
        "s7",
        {"bank": C, "A": C},
        10,
        200,
        10,
        100,
        (("bank", Movement.PAYMENT), ("bank", Movement.PAYMENT), ("A", Movement.RELEASE)),
    )
    verdict = check_exactly_once(RunState((double,)))
    assert verdict.status == "invalid" and "payment on leg bank happened 2 times" in verdict.witness


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=20),
    st.integers(0, 19),
    st.sampled_from(["flip-leg", "pay-twice", "no-pay"]),
)
def test_any_single_corruption_of_an_honest_run_is_caught(
    commits: list[bool], which: int, corruption: str
) -> None:
    outcomes = [committed(f"s{i}") if c else aborted(f"s{i}") for i, c in enumerate(commits)]
    assert passed(check_all(honest(tuple(outcomes), {"x": 1})))
    i = which % len(outcomes)
    s = outcomes[i]
    if corruption == "flip-leg":
        legs = dict(s.legs)
        legs["A"] = A if legs["A"] is C else C
        outcomes[i] = SettlementOutcome(
            s.settlement_id,
            legs,
            s.asset_to_buyer,
            s.paid_to_seller,
            s.asset_amount,
            s.payment_amount,
            s.movements,
        )
    elif corruption == "pay-twice":
        outcomes[i] = SettlementOutcome(
            s.settlement_id,
            s.legs,
            s.asset_to_buyer,
            s.paid_to_seller + 100,
            s.asset_amount,
            s.payment_amount,
            (*s.movements, ("bank", Movement.PAYMENT), ("bank", Movement.PAYMENT)),
        )
    else:
        outcomes[i] = SettlementOutcome(
            s.settlement_id,
            s.legs,
            s.asset_amount,
            0,
            s.asset_amount,
            s.payment_amount,
            s.movements,
        )
    assert not passed(check_all(RunState(tuple(outcomes), {"x": 1}, {"x": 1})))


def test_check_names_are_the_verdicts_names_in_order() -> None:
    state = honest((committed(), aborted()), {"t": 1})
    assert tuple(v.invariant for v in check_all(state)) == CHECK_NAMES


STATUSES = st.sampled_from(("valid", "invalid", "unknown"))


@settings(max_examples=300, deadline=None)
@given(
    statuses=st.lists(STATUSES, min_size=len(CHECK_NAMES), max_size=len(CHECK_NAMES)),
    expect=st.lists(st.sampled_from(CHECK_NAMES), unique=True),
    open_settlements=st.integers(0, 3),
)
def test_an_expectation_is_met_exactly_when_the_named_checks_fail_and_the_rest_hold(
    statuses: list[str], expect: list[str], open_settlements: int
) -> None:
    verdicts = [
        Verdict(name, status, "w") for name, status in zip(CHECK_NAMES, statuses, strict=True)
    ]
    differences = expectation_differences(expect, verdicts, open_settlements)
    wanted = {name: "invalid" if name in expect else "valid" for name in CHECK_NAMES}
    met = all(v.status == wanted[v.invariant] for v in verdicts) and (
        bool(expect) or open_settlements == 0
    )
    assert (not differences) == met
    # Each difference names its check; an unknown verdict never meets an expectation.
    for v in verdicts:
        if v.status == "unknown":
            assert any(d.startswith(f"{v.invariant}: expected ") for d in differences)
    if not expect:
        assert (not differences) == (passed(verdicts) and open_settlements == 0)
