"""DvPCoordinator on anvil with real BLS certificates: every mode's commit and abort paths,
the decision table's negative cases, batching, certificates that must not verify, and the
safe vs unsafe deadline behaviour."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain_adapters.model import (
    ZERO_ADDRESS,
    DecisionSkipped,
    Leg,
    LegLocked,
    Mode,
    ReportApplied,
    SettlementAborted,
    SettlementCommitted,
    SettlementCreated,
    SkipReason,
    State,
    Terms,
    TermsProblem,
    terms_hash,
)
from consensus.report import Action, report_hash
from tests.escrow.escrow_helpers import Escrow

LOCKS_ASSET = {Mode.SWAP, Mode.ASSET_ESCROW, Mode.BRIDGE_SELLER_SIDE}
LOCKS_PAYMENT = {Mode.SWAP, Mode.PAYMENT_ESCROW, Mode.BRIDGE_BUYER_SIDE}


def expected_commit_deltas(e: Escrow, t: Terms) -> dict[tuple[str, str], int]:
    """Balance changes from before create to after COMMIT, written out per mode."""
    a, p = t.asset_amount, t.payment_amount
    co, s, b = e.co.address, t.seller, t.buyer
    asset, pay = e.stack.asset.address, e.stack.payment.address
    bridged_asset, bridged_pay = e.stack.bridged_asset.address, e.stack.bridged_payment.address
    return {
        Mode.SWAP: {(asset, s): -a, (asset, b): a, (pay, b): -p, (pay, s): p},
        Mode.ASSET_ESCROW: {(asset, s): -a, (asset, b): a},
        Mode.PAYMENT_ESCROW: {(pay, b): -p, (pay, s): p},
        # The locked leg stays in the coordinator (it backs the other chain's mint).
        Mode.BRIDGE_SELLER_SIDE: {(asset, s): -a, (asset, co): a, (bridged_pay, s): p},
        Mode.BRIDGE_BUYER_SIDE: {(pay, b): -p, (pay, co): p, (bridged_asset, b): a},
    }[Mode(t.mode)]


def delta(before: dict[tuple[str, str], int], after: dict[tuple[str, str], int]) -> dict:
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


@pytest.mark.parametrize("mode", list(Mode))
def test_commit_moves_exactly_the_terms(escrow: Escrow, w3: object, mode: Mode) -> None:
    t = escrow.terms(mode)
    before = escrow.balances()
    escrow.prepare(t)
    assert escrow.co.state_of(t.settlement_id) == State.PREPARED
    cert = escrow.decide(t, Action.COMMIT)
    out = escrow.apply(cert, [t])
    assert out.error is None
    assert delta(before, escrow.balances()) == expected_commit_deltas(escrow, t)
    assert escrow.co.state_of(t.settlement_id) == State.COMMITTED
    digest = report_hash(cert.report)
    state_events = [e for e in out.events if e.NAME not in ("Transfer", "Approval")]
    assert state_events == [
        SettlementCommitted(escrow.co.address, t.settlement_id, digest, t.terms_hash()),
        ReportApplied(escrow.co.address, digest, 1, cert.report.round, 1, 0),
    ]


ABORT_CASES = [
    (mode, locks)
    for mode in Mode
    for locks in ("none", "asset", "payment", "all")
    if (locks != "asset" or mode in LOCKS_ASSET) and (locks != "payment" or mode in LOCKS_PAYMENT)
]


@pytest.mark.parametrize("mode,locks", ABORT_CASES)
def test_abort_refunds_exactly_what_was_locked(
    escrow: Escrow, w3: object, mode: Mode, locks: str
) -> None:
    t = escrow.terms(mode)
    before = escrow.balances()
    assert escrow.create(t).error is None
    if locks in ("asset", "all") and mode in LOCKS_ASSET:
        assert escrow.lock_asset(t).error is None
    if locks in ("payment", "all") and mode in LOCKS_PAYMENT:
        assert escrow.lock_payment(t).error is None
    previous = escrow.co.state_of(t.settlement_id)
    out = escrow.apply(escrow.decide(t, Action.ABORT), [t])
    assert out.error is None
    assert escrow.balances() == before  # everything locked went back, nothing minted
    assert escrow.co.state_of(t.settlement_id) == State.ABORTED
    aborted = [e for e in out.events if isinstance(e, SettlementAborted)]
    assert [(e.settlement_id, e.previous_state) for e in aborted] == [(t.settlement_id, previous)]


def test_events_of_create_and_locks(escrow: Escrow, w3: object) -> None:
    t = escrow.terms(Mode.SWAP)
    created = escrow.create(t, sender=t.buyer)
    assert created.events == [
        SettlementCreated(escrow.co.address, t.settlement_id, t.terms_hash(), t.buyer, t)
    ]
    locked = escrow.lock_payment(t)
    assert locked.events[-1] == LegLocked(
        escrow.co.address, t.settlement_id, Leg.PAYMENT, t.buyer, t.payment_token,
        t.payment_amount, State.PAYMENT_LOCKED,
    )  # fmt: skip
    locked = escrow.lock_asset(t)
    assert locked.events[-1].state == State.PREPARED
    assert locked.names == ["Transfer", "LegLocked"]  # one state-change event per transition


def test_states_of_many_settlements_reads_them_in_chunks_in_order(escrow: Escrow) -> None:
    """A run's final read asks about every settlement at once: 13,200 in one statesOf call
    ran out of the node's call gas (30M). Chunks of STATES_PER_CALL, answers in order."""
    from chain_adapters.bindings import STATES_PER_CALL

    t = escrow.terms(Mode.SWAP)
    escrow.create(t, sender=t.buyer)
    unknown = [i.to_bytes(32, "big") for i in range(1, 13_200)]
    ids = [*unknown[:STATES_PER_CALL], t.settlement_id, *unknown[STATES_PER_CALL:]]
    states = escrow.co.states_of(ids)
    assert len(states) == len(ids) == 13_200
    assert states[STATES_PER_CALL] == State.CREATED
    assert set(states[:STATES_PER_CALL] + states[STATES_PER_CALL + 1 :]) == {State.NONE}


def test_create_and_lock_in_one_transaction(escrow: Escrow, w3: object) -> None:
    t = escrow.terms(Mode.PAYMENT_ESCROW)
    out = escrow.call(escrow.co.contract.functions.createAndLock(t.as_abi()), t.buyer)
    assert out.names == ["SettlementCreated", "Transfer", "LegLocked"]
    assert escrow.co.state_of(t.settlement_id) == State.PREPARED


def test_terms_hash_of_python_and_solidity_agree_and_bind_every_field(
    escrow: Escrow, w3: object
) -> None:
    t = escrow.terms(Mode.SWAP)
    assert escrow.co.hash_terms(t) == terms_hash(t)
    for field, value in [
        ("mode", 2), ("seller", escrow.other), ("buyer", escrow.other), ("asset_amount", 1),
        ("payment_amount", 1), ("deadline", t.deadline + 1), ("settlement_id", os.urandom(32)),
        ("asset_token", escrow.stack.payment.address), ("payment_token", escrow.stack.asset.address),
    ]:  # fmt: skip
        changed = replace(t, **{field: value})
        assert terms_hash(changed) != terms_hash(t), field
        assert escrow.co.hash_terms(changed) == terms_hash(changed)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sid=st.binary(min_size=32, max_size=32),
    mode=st.integers(0, 255),
    amounts=st.tuples(st.integers(0, 2**256 - 1), st.integers(0, 2**256 - 1)),
    deadline=st.integers(0, 2**64 - 1),
)
def test_terms_hash_agrees_on_random_terms(
    escrow: Escrow, sid: bytes, mode: int, amounts: tuple[int, int], deadline: int
) -> None:
    t = Terms(sid, mode, escrow.seller, escrow.buyer, escrow.stack.asset.address, amounts[0],
              ZERO_ADDRESS, amounts[1], deadline)  # fmt: skip
    assert escrow.co.hash_terms(t) == terms_hash(t)


# --------------------------------------------------------------------------- decisions


def test_replayed_decision_is_a_noop_in_batch_and_strict(escrow: Escrow, w3: object) -> None:
    t = escrow.terms(Mode.SWAP)
    escrow.prepare(t)
    cert = escrow.decide(t, Action.COMMIT)
    assert escrow.apply(cert, [t]).error is None
    after_first = escrow.balances()
    decision = [(t.settlement_id, Action.COMMIT, t.terms_hash())]
    for strict, round in ((False, 2), (True, 3)):
        # The same report again is refused before verification; the same decision in
        # another round's report is verified and skipped.
        copy = escrow.apply(cert, [t], strict=strict)
        assert (copy.error, copy.error_args) == ("ReportAlreadyApplied", (1, cert.report.round))
        out = escrow.apply(escrow.certify(decision, round=round), [t], strict=strict)
        assert out.error is None
        assert escrow.balances() == after_first
        skipped = [e for e in out.events if isinstance(e, DecisionSkipped)]
        assert [e.reason for e in skipped] == [SkipReason.ALREADY_APPLIED]
        assert out.names == ["DecisionSkipped", "ReportApplied"]


@pytest.mark.parametrize(
    "first,second", [(Action.COMMIT, Action.ABORT), (Action.ABORT, Action.COMMIT)]
)
def test_conflicting_decision_never_moves_value(
    escrow: Escrow, w3: object, first: Action, second: Action
) -> None:
    t = escrow.terms(Mode.SWAP)
    escrow.prepare(t)
    assert escrow.apply(escrow.decide(t, first), [t]).error is None
    settled = escrow.balances()
    state = escrow.co.state_of(t.settlement_id)
    conflicting = escrow.decide(t, second)
    strict = escrow.apply(conflicting, [t], strict=True)
    assert strict.error == "ConflictingDecision"
    assert strict.error_args == (t.settlement_id, int(state), int(second))
    batch = escrow.apply(conflicting, [t])
    assert batch.error is None
    assert [e.reason for e in batch.events if isinstance(e, DecisionSkipped)] == [
        SkipReason.CONFLICT
    ]
    assert escrow.balances() == settled
    assert escrow.co.state_of(t.settlement_id) == state


def test_one_report_applies_many_decisions_and_skips_the_bad_ones(
    escrow: Escrow, w3: object
) -> None:
    good_commit = escrow.terms(Mode.ASSET_ESCROW)
    good_abort = escrow.terms(Mode.SWAP)
    not_prepared = escrow.terms(Mode.SWAP)
    committed = escrow.terms(Mode.ASSET_ESCROW)
    wrong_terms = escrow.terms(Mode.PAYMENT_ESCROW)
    for t in (good_commit, good_abort, committed, wrong_terms):
        escrow.prepare(t)
    assert escrow.create(not_prepared).error is None
    assert escrow.lock_asset(not_prepared).error is None
    assert escrow.apply(escrow.decide(committed, Action.COMMIT), [committed]).error is None
    unknown = os.urandom(32)
    decisions = [
        (good_commit.settlement_id, Action.COMMIT, good_commit.terms_hash()),
        (unknown, Action.COMMIT, os.urandom(32)),
        (wrong_terms.settlement_id, Action.COMMIT, os.urandom(32)),
        (not_prepared.settlement_id, Action.COMMIT, not_prepared.terms_hash()),
        (committed.settlement_id, Action.ABORT, committed.terms_hash()),
        (good_abort.settlement_id, Action.PREPARE, good_abort.terms_hash()),
    ]
    # The transmitter passes terms per decision; for the unknown one any terms do.
    terms = [good_commit, good_commit, wrong_terms, not_prepared, committed, good_abort]
    cert = escrow.certify(decisions)
    before = escrow.balances()
    out = escrow.apply(cert, terms)
    assert out.error is None
    skipped = {e.settlement_id: e.reason for e in out.events if isinstance(e, DecisionSkipped)}
    assert skipped == {
        unknown: SkipReason.UNKNOWN_SETTLEMENT,
        wrong_terms.settlement_id: SkipReason.TERMS_MISMATCH,
        not_prepared.settlement_id: SkipReason.NOT_PREPARED,
        committed.settlement_id: SkipReason.CONFLICT,
        good_abort.settlement_id: SkipReason.UNSUPPORTED_ACTION,
    }
    assert out.events[-1] == ReportApplied(escrow.co.address, report_hash(cert.report), 1, 1, 1, 5)
    assert delta(before, escrow.balances()) == {
        (escrow.stack.asset.address, escrow.co.address): -good_commit.asset_amount,
        (escrow.stack.asset.address, escrow.buyer): good_commit.asset_amount,
    }
    assert escrow.co.states_of([t.settlement_id for t in terms[2:5]]) == [
        State.PREPARED, State.ASSET_LOCKED, State.COMMITTED,
    ]  # fmt: skip
    # The strict entry point refuses the same report at its first bad decision.
    strict = escrow.apply(escrow.certify(decisions, round=2), terms, strict=True)
    assert (strict.error, strict.error_args) == (
        "DecisionRejected", (unknown, int(SkipReason.UNKNOWN_SETTLEMENT)),
    )  # fmt: skip


def test_wrong_terms_in_calldata_skip_until_the_right_ones_come(escrow: Escrow, w3: object) -> None:
    t = escrow.terms(Mode.ASSET_ESCROW)
    escrow.prepare(t)
    cert = escrow.decide(t, Action.COMMIT)
    # A transmitter that lies about the buyer cannot redirect the asset.
    lying = replace(t, buyer=escrow.other)
    before = escrow.balances()
    out = escrow.apply(cert, [lying])
    assert [e.reason for e in out.events if isinstance(e, DecisionSkipped)] == [
        SkipReason.TERMS_CALLDATA_MISMATCH
    ]
    assert escrow.balances() == before
    assert escrow.apply(cert, [t]).error is None
    assert escrow.co.state_of(t.settlement_id) == State.COMMITTED
    assert (
        escrow.stack.asset.balance_of(escrow.other)
        == before[(escrow.stack.asset.address, escrow.other)]
    )


def test_batch_length_must_match(escrow: Escrow, w3: object) -> None:
    t = escrow.terms()
    escrow.prepare(t)
    out = escrow.apply(escrow.decide(t, Action.COMMIT), [t, t])
    assert (out.error, out.error_args) == ("BatchLengthMismatch", (1, 2))


# --------------------------------------------------------------------------- certificates


def test_uncertified_decisions_revert_and_change_nothing(
    escrow: Escrow, unsafe_escrow: Escrow, w3: object
) -> None:
    t = escrow.terms(Mode.SWAP)
    escrow.prepare(t)
    committee = escrow.stack.committee
    decision = [(t.settlement_id, Action.ABORT, t.terms_hash())]
    report = committee.report(decision)
    too_few = committee.certify(report, signers=[0, 1])  # t = 3
    assert escrow.apply(too_few, [t]).error == "TooFewSigners"
    # Bitmap claims members 0,1,2 but member 3 signed instead of 2.
    forged = committee.certify(report, signers=[0, 1, 3])
    forged = type(forged)(forged.report, 0b0111, forged.signature)
    assert escrow.apply(forged, [t]).error == "InvalidSignature"
    # A valid certificate for the same committee on another coordinator (other digest).
    other = unsafe_escrow.stack.committee
    elsewhere = other.certify(other.report(decision))
    out = escrow.apply(elsewhere, [t])
    assert (out.error, out.error_args) == ("ConfigDigestMismatch", (committee.digest, other.digest))
    # A signature over another report.
    swapped = committee.certify(committee.report(decision, round=9))
    assert escrow.apply(type(swapped)(report, swapped.signers, swapped.signature), [t]).error == (
        "InvalidSignature"
    )
    out_of_range = committee.certify(report)
    assert escrow.apply(type(out_of_range)(report, out_of_range.signers | 1 << 4,
                                           out_of_range.signature), [t]).error == "SignerOutOfRange"  # fmt: skip
    assert escrow.co.state_of(t.settlement_id) == State.PREPARED


# --------------------------------------------------------------------------- party calls


def test_create_rejects_bad_terms_in_order(escrow: Escrow, w3: object) -> None:
    cases = [
        ({"settlement_id": bytes(32)}, TermsProblem.ZERO_SETTLEMENT_ID),
        ({"buyer": ZERO_ADDRESS}, TermsProblem.ZERO_PARTY),
        ({"buyer": escrow.seller}, TermsProblem.SAME_PARTY),
        ({"mode": 0}, TermsProblem.UNKNOWN_MODE),
        ({"mode": 6}, TermsProblem.UNKNOWN_MODE),
        ({"asset_amount": 0}, TermsProblem.ASSET_LEG),
        ({"asset_token": ZERO_ADDRESS}, TermsProblem.ASSET_LEG),
        (
            {"payment_token": escrow.stack.payment.address, "payment_amount": 5},
            TermsProblem.PAYMENT_LEG,
        ),
        ({"deadline": 0}, TermsProblem.DEADLINE_PASSED),
    ]
    for overrides, problem in cases:
        t = replace(escrow.terms(Mode.ASSET_ESCROW), **overrides)
        out = escrow.create(t)
        assert (out.error, out.error_args) == ("InvalidTerms", (t.settlement_id, int(problem))), (
            overrides
        )
    t = escrow.terms()
    assert escrow.create(t, sender=escrow.other).error == "WrongCaller"
    assert escrow.create(t).error is None
    assert escrow.create(t, sender=t.buyer).error == "SettlementExists"


def test_lock_rules(escrow: Escrow, w3: object) -> None:
    t = escrow.terms(Mode.ASSET_ESCROW)
    assert escrow.lock_asset(t).error == "UnknownSettlement"
    assert escrow.create(t).error is None
    tampered = replace(t, asset_amount=1)
    assert escrow.lock_asset(tampered).error == "TermsMismatch"
    assert escrow.lock_payment(t).error == "LegNotHere"
    assert escrow.lock_asset(t, sender=t.buyer).error == "WrongCaller"
    assert escrow.lock_asset(t).error is None
    out = escrow.lock_asset(t)
    assert (out.error, out.error_args) == ("WrongState", (t.settlement_id, int(State.PREPARED)))
    # No allowance: the token's own error comes back.
    t2 = escrow.terms(Mode.ASSET_ESCROW, seller=escrow.transmitter)
    assert escrow.create(t2).error is None
    assert escrow.lock_asset(t2).error == "ERC20InsufficientAllowance"


def test_no_lock_after_the_deadline(escrow: Escrow, chain: object, w3: object) -> None:
    t = escrow.terms(Mode.SWAP, deadline_in=60)
    assert escrow.create(t).error is None
    chain.rpc("evm_setNextBlockTimestamp", [t.deadline])  # type: ignore[attr-defined]
    assert escrow.lock_asset(t).error is None  # at the deadline itself: still in time
    chain.rpc("evm_setNextBlockTimestamp", [t.deadline + 1])  # type: ignore[attr-defined]
    chain.rpc("evm_mine")  # type: ignore[attr-defined]
    out = escrow.lock_payment(t)
    assert (out.error, out.error_args) == ("DeadlinePassed", (t.settlement_id, t.deadline))


def test_safe_variant_never_refunds_a_prepared_leg_by_itself(
    escrow: Escrow, chain: object, w3: object
) -> None:
    t = escrow.terms(Mode.ASSET_ESCROW, deadline_in=60)
    escrow.prepare(t)
    chain.rpc("evm_setNextBlockTimestamp", [t.deadline + 3600])  # type: ignore[attr-defined]
    chain.rpc("evm_mine")  # type: ignore[attr-defined]
    reclaim = escrow.co.contract.functions.reclaimAfterDeadline(t.as_abi())
    assert escrow.call(reclaim, t.seller).error == "UnsafeSelfRefundDisabled"
    assert escrow.co.state_of(t.settlement_id) == State.PREPARED
    # The COMMIT the other leg may already have executed still applies after the deadline.
    assert escrow.apply(escrow.decide(t, Action.COMMIT), [t]).error is None
    assert escrow.co.state_of(t.settlement_id) == State.COMMITTED


def test_unsafe_variant_refunds_by_itself_and_breaks_atomicity(
    unsafe_escrow: Escrow, chain: object, w3: object
) -> None:
    e = unsafe_escrow
    assert e.co.unsafe_self_refund_after_deadline()
    t = e.terms(Mode.ASSET_ESCROW, deadline_in=60)
    before = e.balances()
    e.prepare(t)
    reclaim = e.co.contract.functions.reclaimAfterDeadline(t.as_abi())
    assert e.call(reclaim, t.seller).error == "DeadlineNotPassed"
    chain.rpc("evm_setNextBlockTimestamp", [t.deadline + 1])  # type: ignore[attr-defined]
    chain.rpc("evm_mine")  # type: ignore[attr-defined]
    out = e.call(reclaim, t.seller)
    assert out.names == ["Transfer", "SettlementExpired"]
    assert e.balances() == before
    # The committee certified COMMIT (the bank paid the seller): the asset cannot follow.
    late = e.apply(e.decide(t, Action.COMMIT), [t])
    assert [x.reason for x in late.events if isinstance(x, DecisionSkipped)] == [
        SkipReason.CONFLICT
    ]
    assert e.stack.asset.balance_of(t.buyer) == before[(e.stack.asset.address, t.buyer)]
    assert e.co.state_of(t.settlement_id) == State.EXPIRED
    # A certified ABORT finds the leg already refunded: a no-op, nothing moves twice.
    again = e.apply(e.decide(t, Action.ABORT), [t])
    assert [x.reason for x in again.events if isinstance(x, DecisionSkipped)] == [
        SkipReason.ALREADY_APPLIED
    ]
    assert e.balances() == before


# --------------------------------------------------------------------------- hostile tokens


@pytest.fixture
def hostile(escrow: Escrow, contracts: dict, w3: object) -> object:
    from chain_adapters.deploy import deploy

    token = deploy(w3, contracts["HostileToken"], sender=escrow.deployer)
    escrow.call(token.functions.mint(escrow.seller, 10**24), escrow.deployer)
    escrow.call(token.functions.approve(escrow.co.address, 2**256 - 1), escrow.seller)
    return token


@pytest.mark.parametrize("behaviour", [1, 2, 4, 5])  # revert, burn gas, return false, bomb
def test_a_hostile_token_fails_its_own_decision_only(
    escrow: Escrow, hostile: object, behaviour: int
) -> None:
    bad = escrow.terms(Mode.ASSET_ESCROW, asset_token=hostile.address)  # type: ignore[attr-defined]
    good = escrow.terms(Mode.ASSET_ESCROW)
    escrow.prepare(bad)
    escrow.prepare(good)
    escrow.call(hostile.functions.setBehaviour(behaviour, ZERO_ADDRESS, b""), escrow.deployer)  # type: ignore[attr-defined]
    decisions = [(t.settlement_id, Action.COMMIT, t.terms_hash()) for t in (bad, good)]
    cert = escrow.certify(decisions)
    out = escrow.apply(cert, [bad, good])
    assert out.error is None
    assert [(e.settlement_id, e.reason) for e in out.events if isinstance(e, DecisionSkipped)] == [
        (bad.settlement_id, SkipReason.EXECUTION_FAILED)
    ]
    assert escrow.co.states_of([bad.settlement_id, good.settlement_id]) == [
        State.PREPARED,
        State.COMMITTED,
    ]
    assert hostile.functions.balanceOf(escrow.co.address).call() == bad.asset_amount  # type: ignore[attr-defined]
    # Strict mode refuses the whole report; once the token behaves, a replay settles it.
    strict = escrow.apply(cert, [bad, good], strict=True)
    assert (strict.error, strict.error_args) == (
        "DecisionRejected", (bad.settlement_id, int(SkipReason.EXECUTION_FAILED)),
    )  # fmt: skip
    escrow.call(hostile.functions.setBehaviour(0, ZERO_ADDRESS, b""), escrow.deployer)  # type: ignore[attr-defined]
    replay = escrow.apply(cert, [bad, good])
    assert [e.reason for e in replay.events if isinstance(e, DecisionSkipped)] == [
        SkipReason.ALREADY_APPLIED
    ]
    assert escrow.co.state_of(bad.settlement_id) == State.COMMITTED
    assert hostile.functions.balanceOf(escrow.buyer).call() == bad.asset_amount  # type: ignore[attr-defined]


def test_reentry_from_a_token_is_refused(escrow: Escrow, hostile: object) -> None:
    t = escrow.terms(Mode.ASSET_ESCROW, asset_token=hostile.address)  # type: ignore[attr-defined]
    victim = escrow.terms(Mode.ASSET_ESCROW)
    escrow.prepare(t)
    escrow.prepare(victim)
    # During the payout the token replays a certified ABORT of another settlement and
    # tries to call the execution entry point directly.
    abort = escrow.decide(victim, Action.ABORT)
    from chain_adapters.verifier import certificate_calldata

    c = certificate_calldata(abort)
    reenter = escrow.co.contract.encode_abi(
        "applyReport", args=[c.report, c.signers, c.signature, [victim.as_abi()]]
    )
    escrow.call(hostile.functions.setBehaviour(3, escrow.co.address, reenter), escrow.deployer)  # type: ignore[attr-defined]
    out = escrow.apply(escrow.decide(t, Action.COMMIT), [t])
    assert out.error is None and escrow.co.state_of(t.settlement_id) == State.COMMITTED
    assert hostile.functions.lastReentrySucceeded().call() is False  # type: ignore[attr-defined]
    result = bytes(hostile.functions.lastReentryResult().call())  # type: ignore[attr-defined]
    assert escrow.co.decode_error(result) == "Reentrancy()"
    assert escrow.co.state_of(victim.settlement_id) == State.PREPARED
    direct = escrow.co.contract.functions.executeDecision(t.as_abi(), 1, 4, bytes(32), bytes(32))
    assert escrow.call(direct, escrow.other).error == "OnlySelf"


def test_no_gas_limit_makes_a_decision_fail_in_a_successful_transaction(
    escrow: Escrow, chain: object, w3: object
) -> None:
    """A transmitter choosing the gas limit can make the transaction revert, never make it
    succeed with the decision recorded as EXECUTION_FAILED."""
    t = escrow.terms(Mode.SWAP)
    escrow.prepare(t)
    cert = escrow.decide(t, Action.COMMIT)
    outcomes = set()
    for gas in range(240_000, 520_000, 10_000):
        snapshot = chain.snapshot()  # type: ignore[attr-defined]
        out = escrow.apply(cert, [t], gas=gas)
        state = escrow.co.state_of(t.settlement_id)
        skipped = [e for e in out.events or [] if isinstance(e, DecisionSkipped)]
        assert not skipped, (gas, skipped)
        if out.receipt["status"] == 1:
            assert state == State.COMMITTED, gas
        else:
            assert state == State.PREPARED, gas
        outcomes.add(out.receipt["status"])
        chain.revert(snapshot)  # type: ignore[attr-defined]
    assert outcomes == {0, 1}  # the sweep crossed the limit


def test_pending_decisions_lists_only_what_would_apply(escrow: Escrow, w3: object) -> None:
    prepared, done, created = (escrow.terms(Mode.ASSET_ESCROW) for _ in range(3))
    escrow.prepare(prepared)
    escrow.prepare(done)
    assert escrow.create(created).error is None
    assert escrow.apply(escrow.decide(done, Action.COMMIT), [done]).error is None
    decisions = [
        (prepared.settlement_id, Action.COMMIT, prepared.terms_hash()),  # would apply
        (done.settlement_id, Action.COMMIT, done.terms_hash()),  # already applied
        (created.settlement_id, Action.COMMIT, created.terms_hash()),  # not prepared
        (created.settlement_id[::-1], Action.ABORT, created.terms_hash()),  # unknown
    ]
    report = escrow.stack.committee.report(decisions)
    assert [d.settlement_id for d in escrow.co.pending_decisions(report)] == [
        prepared.settlement_id
    ]
    other_terms = escrow.stack.committee.report(
        [(prepared.settlement_id, Action.COMMIT, bytes(32))]
    )
    assert escrow.co.pending_decisions(other_terms) == ()
    abort = escrow.stack.committee.report(
        [(created.settlement_id, Action.ABORT, created.terms_hash())]
    )
    assert len(escrow.co.pending_decisions(abort)) == 1
