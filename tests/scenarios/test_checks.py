"""The invariant checkers are not blind: each violation is found, honest outcomes pass."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scenarios.checks import (
    CHECK_NAMES,
    LegState,
    Movement,
    RunState,
    SettlementOutcome,
    Verdict,
    check_all,
    check_atomicity,
    check_conservation,
    check_exactly_once,
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


def test_honest_run_passes() -> None:
    state = RunState(
        (committed(), aborted()),
        {"asset@A": 1000, "USD@bank": 5000},
        {"asset@A": 1000, "USD@bank": 5000},
    )
    assert passed(check_all(state))


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
    assert passed(check_all(RunState(tuple(outcomes), {"x": 1}, {"x": 1})))
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
    state = RunState((committed(), aborted()), {"t": 1}, {"t": 1})
    assert tuple(v.invariant for v in check_all(state)) == CHECK_NAMES


STATUSES = st.sampled_from(("valid", "invalid", "unknown"))


@settings(max_examples=300, deadline=None)
@given(
    statuses=st.tuples(STATUSES, STATUSES, STATUSES),
    expect=st.lists(st.sampled_from(CHECK_NAMES), unique=True),
    open_settlements=st.integers(0, 3),
)
def test_an_expectation_is_met_exactly_when_the_named_checks_fail_and_the_rest_hold(
    statuses: tuple[str, str, str], expect: list[str], open_settlements: int
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
