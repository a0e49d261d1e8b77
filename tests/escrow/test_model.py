"""The pure-Python escrow model on its own: the decision table, atomic operations, and
properties over random operation sequences (conservation, exactly-once value movement,
atomicity of two legs under the safe variant, and its violation under the unsafe one)."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain_adapters.model import (
    DECISION_OUTCOMES,
    ZERO_ADDRESS,
    DecisionSkipped,
    EscrowModel,
    EscrowRevert,
    Mode,
    SettlementAborted,
    SettlementCommitted,
    SkipReason,
    State,
    Terms,
    Transfer,
    locked_legs,
)
from consensus.report import Action, Decision, Report

COORDINATOR = "0x" + "c0" * 20
ASSET, PAYMENT = "0x" + "a0" * 20, "0x" + "b0" * 20
WRAPPED_ASSET, WRAPPED_PAYMENT = "0x" + "a1" * 20, "0x" + "b1" * 20
MINTER = "0x" + "99" * 20
SELLER, BUYER, OTHER = "0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20
NOW = 1_000
DIGEST = b"\x0d\x01" + bytes(30)


def make_model(unsafe: bool = False, coordinator: str = COORDINATOR) -> EscrowModel:
    model = EscrowModel(coordinator, unsafe_self_refund_after_deadline=unsafe)
    for token in (ASSET, PAYMENT):
        model.add_token(token, MINTER)
        for party in (SELLER, BUYER, OTHER):
            model.mint(token, MINTER, party, 10**6)
            model.approve(token, party, coordinator, 2**256 - 1)
    model.add_token(WRAPPED_ASSET, coordinator)
    model.add_token(WRAPPED_PAYMENT, coordinator)
    return model


def sid(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(8, "big")).digest()


def terms(mode: Mode, n: int = 1, deadline: int = NOW + 100) -> Terms:
    asset, payment = ASSET, PAYMENT
    if mode == Mode.BRIDGE_SELLER_SIDE:
        payment = WRAPPED_PAYMENT
    if mode == Mode.BRIDGE_BUYER_SIDE:
        asset = WRAPPED_ASSET
    t = Terms(sid(n), int(mode), SELLER, BUYER, asset, 70, payment, 30, deadline)
    if mode == Mode.ASSET_ESCROW:
        t = replace(t, payment_token=ZERO_ADDRESS, payment_amount=0)
    if mode == Mode.PAYMENT_ESCROW:
        t = replace(t, asset_token=ZERO_ADDRESS, asset_amount=0)
    return t


def prepare(model: EscrowModel, t: Terms, now: int = NOW) -> None:
    model.create(t.seller, t, now)
    if t.mode in (Mode.SWAP, Mode.ASSET_ESCROW, Mode.BRIDGE_SELLER_SIDE):
        model.lock_asset(t.seller, t, now)
    if t.mode in (Mode.SWAP, Mode.PAYMENT_ESCROW, Mode.BRIDGE_BUYER_SIDE):
        model.lock_payment(t.buyer, t, now)


def report(*decisions: tuple[Terms, Action], round: int = 1) -> Report:
    return Report(
        DIGEST, 1, round, tuple(Decision(t.settlement_id, a, t.terms_hash()) for t, a in decisions)
    )


def snapshot(model: EscrowModel) -> tuple:
    return (
        {i: (model.state_of(i), model.terms_hash_of(i)) for i in model.settlement_ids()},
        dict(model._reports_done),
        {
            a: (dict(t.balances), dict(t.allowances), t.total_supply)
            for a, t in model.tokens.items()
        },
    )


# --------------------------------------------------------------------------- the tables


def test_decision_table_is_total_and_only_moves_value_from_live_states() -> None:
    live = {State.CREATED, State.ASSET_LOCKED, State.PAYMENT_LOCKED, State.PREPARED}
    for action in (Action.COMMIT, Action.ABORT):
        for state in State:
            if state == State.NONE:
                continue
            outcome = DECISION_OUTCOMES[(action, state)]
            if outcome is None:
                assert state in live
                assert action == Action.ABORT or state == State.PREPARED
    assert DECISION_OUTCOMES[(Action.COMMIT, State.ABORTED)] == SkipReason.CONFLICT
    assert DECISION_OUTCOMES[(Action.ABORT, State.COMMITTED)] == SkipReason.CONFLICT
    assert DECISION_OUTCOMES[(Action.COMMIT, State.COMMITTED)] == SkipReason.ALREADY_APPLIED
    assert DECISION_OUTCOMES[(Action.ABORT, State.ABORTED)] == SkipReason.ALREADY_APPLIED
    assert DECISION_OUTCOMES[(Action.ABORT, State.EXPIRED)] == SkipReason.ALREADY_APPLIED
    assert DECISION_OUTCOMES[(Action.COMMIT, State.EXPIRED)] == SkipReason.CONFLICT


def test_locked_legs_per_mode() -> None:
    assert locked_legs(Mode.SWAP, State.PREPARED) == (1, 2)
    assert locked_legs(Mode.ASSET_ESCROW, State.PREPARED) == (1,)
    assert locked_legs(Mode.BRIDGE_BUYER_SIDE, State.PREPARED) == (2,)
    assert locked_legs(Mode.SWAP, State.COMMITTED) == ()


def test_a_reverted_operation_leaves_the_model_unchanged() -> None:
    model = make_model()
    t = terms(Mode.SWAP)
    prepare(model, t)
    before = snapshot(model)
    # The strict path fails on the second decision after applying the first one.
    other = terms(Mode.SWAP, 2)
    with pytest.raises(EscrowRevert) as caught:
        model.apply_report(
            report((t, Action.COMMIT), (other, Action.COMMIT)), [t, other], strict=True
        )
    assert caught.value.error == "DecisionRejected"
    assert snapshot(model) == before
    # A lock whose token transfer fails rolls back its state change.
    poor = replace(terms(Mode.ASSET_ESCROW, 3), asset_amount=10**9)
    model.create(SELLER, poor, NOW)
    before = snapshot(model)
    with pytest.raises(EscrowRevert) as caught:
        model.lock_asset(SELLER, poor, NOW)
    assert caught.value.error == "ERC20InsufficientBalance"
    assert snapshot(model) == before


def test_a_failed_execution_rolls_back_that_decision_only() -> None:
    model = make_model()
    misminted = replace(terms(Mode.BRIDGE_SELLER_SIDE), payment_token=ASSET)  # cannot mint
    good = terms(Mode.ASSET_ESCROW, 2)
    prepare(model, misminted)
    prepare(model, good)
    events = model.apply_report(
        report((misminted, Action.COMMIT), (good, Action.COMMIT)), [misminted, good]
    )
    skipped = [e for e in events if isinstance(e, DecisionSkipped)]
    assert [(e.settlement_id, e.reason) for e in skipped] == [
        (misminted.settlement_id, SkipReason.EXECUTION_FAILED)
    ]
    assert model.state_of(misminted.settlement_id) == State.PREPARED
    assert model.state_of(good.settlement_id) == State.COMMITTED


def test_only_a_certified_abort_refunds_in_the_safe_variant() -> None:
    model = make_model()
    t = terms(Mode.ASSET_ESCROW)
    prepare(model, t)
    with pytest.raises(EscrowRevert) as caught:
        model.reclaim_after_deadline(SELLER, t, t.deadline + 10**6)
    assert caught.value.error == "UnsafeSelfRefundDisabled"
    unsafe = make_model(unsafe=True)
    prepare(unsafe, t)
    with pytest.raises(EscrowRevert):
        unsafe.reclaim_after_deadline(SELLER, t, t.deadline)  # not after it yet
    unsafe.reclaim_after_deadline(BUYER, t, t.deadline + 1)
    assert unsafe.state_of(t.settlement_id) == State.EXPIRED
    abort = unsafe.apply_report(report((t, Action.ABORT)), [t])
    assert [e.reason for e in abort if isinstance(e, DecisionSkipped)] == [
        SkipReason.ALREADY_APPLIED
    ]


# --------------------------------------------------------------------------- duplicates


def test_a_copy_of_a_done_report_is_refused_and_changes_nothing() -> None:
    model = make_model()
    committed, aborted = terms(Mode.SWAP, 1), terms(Mode.ASSET_ESCROW, 2)
    prepare(model, committed)
    prepare(model, aborted)
    done = report((committed, Action.COMMIT), (aborted, Action.ABORT), round=300)
    model.apply_report(done, [committed, aborted])
    assert model.report_done(done)
    assert model.done_word(done) == 1 << (300 % 256)
    before = snapshot(model)
    for strict in (False, True):
        with pytest.raises(EscrowRevert) as caught:
            model.apply_report(done, [committed, aborted], strict=strict)
        assert (caught.value.error, caught.value.args_) == ("ReportAlreadyApplied", (1, 300))
        # Refused before anything else is looked at, even the terms' count.
        with pytest.raises(EscrowRevert) as caught:
            model.apply_report(done, [])
        assert caught.value.error == "ReportAlreadyApplied"
    assert snapshot(model) == before
    # A report of the next round, the same word, and one under another configuration
    # (a new committee starts from no marks): both apply, here as final skips.
    for other in (
        replace(done, round=301),
        replace(done, config_digest=b"\x0d\x01" + b"\x07" * 30),
    ):
        events = model.apply_report(other, [committed, aborted])
        reasons = [e.reason for e in events if isinstance(e, DecisionSkipped)]
        assert reasons == [SkipReason.ALREADY_APPLIED, SkipReason.ALREADY_APPLIED]
        assert model.report_done(other)
    assert model.done_word(done) == 0b11 << (300 % 256)


@pytest.mark.parametrize(
    "reason",
    [
        SkipReason.UNKNOWN_SETTLEMENT,
        SkipReason.TERMS_MISMATCH,
        SkipReason.NOT_PREPARED,
        SkipReason.TERMS_CALLDATA_MISMATCH,
        SkipReason.EXECUTION_FAILED,
    ],
)
def test_a_skip_that_can_change_leaves_the_report_unmarked(reason: SkipReason) -> None:
    model = make_model()
    good, t = terms(Mode.SWAP, 1), terms(Mode.ASSET_ESCROW, 2)
    prepare(model, good)
    supplied, certified = t, t.terms_hash()
    if reason == SkipReason.TERMS_MISMATCH:
        prepare(model, t)
        certified = bytes(32)
    elif reason == SkipReason.NOT_PREPARED:
        model.create(t.seller, t, NOW)
    elif reason == SkipReason.TERMS_CALLDATA_MISMATCH:
        prepare(model, t)
        supplied = replace(t, buyer=OTHER)
    elif reason == SkipReason.EXECUTION_FAILED:
        t = replace(terms(Mode.BRIDGE_SELLER_SIDE, 2), payment_token=ASSET)  # cannot mint
        prepare(model, t)
        supplied, certified = t, t.terms_hash()
    decisions = (
        Decision(good.settlement_id, Action.COMMIT, good.terms_hash()),
        Decision(t.settlement_id, Action.COMMIT, certified),
    )
    sent = Report(DIGEST, 1, 5, decisions)
    events = model.apply_report(sent, [good, supplied])
    assert [e.reason for e in events if isinstance(e, DecisionSkipped)] == [reason]
    assert not model.report_done(sent)
    again = model.apply_report(sent, [good, supplied])  # fully processed, not refused
    assert SkipReason.ALREADY_APPLIED in [e.reason for e in again if isinstance(e, DecisionSkipped)]


def test_a_strict_report_that_reverts_is_not_marked() -> None:
    model = make_model()
    good, unknown = terms(Mode.SWAP, 1), terms(Mode.SWAP, 2)
    prepare(model, good)
    sent = report((good, Action.COMMIT), (unknown, Action.COMMIT))
    with pytest.raises(EscrowRevert):
        model.apply_report(sent, [good, unknown], strict=True)
    assert not model.report_done(sent)
    prepare(model, unknown)
    model.apply_report(sent, [good, unknown], strict=True)
    assert model.report_done(sent)


# --------------------------------------------------------------------------- random sequences


@dataclass(frozen=True)
class Op:
    kind: str  # create | lock_asset | lock_payment | decide | reclaim
    n: int  # settlement number
    action: Action = Action.COMMIT
    party: str = SELLER
    dt: int = 0


ops = st.lists(
    st.builds(
        Op,
        kind=st.sampled_from(
            ["create", "lock_asset", "lock_payment", "decide", "decide", "reclaim"]
        ),
        n=st.integers(0, 3),
        action=st.sampled_from([Action.COMMIT, Action.ABORT]),
        party=st.sampled_from([SELLER, BUYER, OTHER]),
        dt=st.integers(0, 80),
    ),
    max_size=40,
)


def run(model: EscrowModel, mode_of: dict[int, Mode], sequence: list[Op]) -> list:
    now, events = NOW, []
    for op in sequence:
        now += op.dt
        t = terms(mode_of[op.n], op.n)
        try:
            if op.kind == "create":
                events += model.create(op.party, t, now)
            elif op.kind == "lock_asset":
                events += model.lock_asset(op.party, t, now)
            elif op.kind == "lock_payment":
                events += model.lock_payment(op.party, t, now)
            elif op.kind == "reclaim":
                events += model.reclaim_after_deadline(op.party, t, now)
            else:
                events += model.apply_report(report((t, op.action), round=len(events)), [t])
        except EscrowRevert:
            pass
    return events


modes = st.fixed_dictionaries({n: st.sampled_from(list(Mode)) for n in range(4)})


@settings(max_examples=300, deadline=None)
@given(mode_of=modes, sequence=ops, unsafe=st.booleans())
def test_value_is_conserved_and_moves_at_most_once(
    mode_of: dict[int, Mode], sequence: list[Op], unsafe: bool
) -> None:
    model = make_model(unsafe)
    supply_before = {a: t.total_supply for a, t in model.tokens.items()}
    events = run(model, mode_of, sequence)
    # Supplies: only the bridged tokens grow, by exactly the committed credit legs.
    # Keyed by the ledgers' own (checksummed) addresses, as model.tokens is.
    wrapped_asset, wrapped_payment = (
        model.token(WRAPPED_ASSET).address,
        model.token(WRAPPED_PAYMENT).address,
    )
    minted = {wrapped_asset: 0, wrapped_payment: 0}
    for n, mode in mode_of.items():
        t = terms(mode, n)
        if model.state_of(t.settlement_id) == State.COMMITTED:
            if mode == Mode.BRIDGE_SELLER_SIDE:
                minted[wrapped_payment] += t.payment_amount
            if mode == Mode.BRIDGE_BUYER_SIDE:
                minted[wrapped_asset] += t.asset_amount
    for address, ledger in model.tokens.items():
        assert ledger.total_supply == supply_before[address] + minted.get(address, 0)
        assert sum(ledger.balances.values()) == ledger.total_supply
    # The escrow holds exactly what live settlements locked plus the bridge backing.
    held = {ASSET: 0, PAYMENT: 0}
    for n, mode in mode_of.items():
        t = terms(mode, n)
        state = model.state_of(t.settlement_id)
        legs = set(locked_legs(mode, state))
        if state == State.COMMITTED and mode == Mode.BRIDGE_SELLER_SIDE:
            legs.add(1)
        if state == State.COMMITTED and mode == Mode.BRIDGE_BUYER_SIDE:
            legs.add(2)
        if 1 in legs:
            held[ASSET] += t.asset_amount
        if 2 in legs:
            held[PAYMENT] += t.payment_amount
    assert {a: model.token(a).balance_of(COORDINATOR) for a in held} == held
    # Exactly once: at most one terminal event per settlement.
    terminal = [e.settlement_id for e in events if e.NAME in
                ("SettlementCommitted", "SettlementAborted", "SettlementExpired")]  # fmt: skip
    assert len(terminal) == len(set(terminal))
    if not unsafe:
        assert not any(e.NAME == "SettlementExpired" for e in events)


def two_legs() -> tuple[EscrowModel, EscrowModel, Terms, Terms]:
    """The messaging mode: the asset on chain A, the payment on chain B."""
    return make_model(), make_model(), terms(Mode.ASSET_ESCROW), terms(Mode.PAYMENT_ESCROW)


leg_ops = st.lists(
    st.tuples(st.sampled_from(["A", "B"]), st.sampled_from(["decide", "reclaim", "wait"])),
    max_size=12,
)


def settle_two_legs(
    unsafe: bool, decision: Action, plan: list[tuple[str, str]]
) -> tuple[State, State]:
    """Both legs prepared; the committee certified ``decision`` (one decision, honest nodes
    never sign the other); each chain applies it, parties may try to reclaim, time passes."""
    chain_a, chain_b = make_model(unsafe), make_model(unsafe)
    asset_leg, payment_leg = terms(Mode.ASSET_ESCROW), terms(Mode.PAYMENT_ESCROW)
    prepare(chain_a, asset_leg)
    prepare(chain_b, payment_leg)
    now = NOW
    for chain_name, step in plan:
        model, t = (chain_a, asset_leg) if chain_name == "A" else (chain_b, payment_leg)
        if step == "wait":
            now += 150
        elif step == "reclaim":
            with contextlib.suppress(EscrowRevert):
                model.reclaim_after_deadline(SELLER if chain_name == "A" else BUYER, t, now)
        else:
            try:
                model.apply_report(report((t, decision)), [t])
            except EscrowRevert as exc:  # a second transmission of the report: refused
                assert exc.error == "ReportAlreadyApplied"
    return chain_a.state_of(asset_leg.settlement_id), chain_b.state_of(payment_leg.settlement_id)


def atomic(states: tuple[State, State]) -> bool:
    released = {State.COMMITTED}
    refunded = {State.ABORTED, State.EXPIRED}
    return not (
        (states[0] in released and states[1] in refunded)
        or (states[1] in released and states[0] in refunded)
    )


@settings(max_examples=300, deadline=None)
@given(decision=st.sampled_from([Action.COMMIT, Action.ABORT]), plan=leg_ops)
def test_safe_variant_keeps_two_legs_atomic(decision: Action, plan: list[tuple[str, str]]) -> None:
    assert atomic(settle_two_legs(False, decision, plan))


def test_unsafe_variant_loses_atomicity() -> None:
    from hypothesis import find

    witness = find(
        st.tuples(st.sampled_from([Action.COMMIT, Action.ABORT]), leg_ops),
        lambda case: not atomic(settle_two_legs(True, case[0], case[1])),
        settings=settings(max_examples=2000, database=None),
    )
    decision, plan = witness
    assert decision == Action.COMMIT  # one leg committed, the other refunded itself
    assert ("A", "reclaim") in plan or ("B", "reclaim") in plan


def test_events_mirror_the_contract_order() -> None:
    model = make_model()
    t = terms(Mode.SWAP)
    prepare(model, t)
    events = model.apply_report(report((t, Action.COMMIT)), [t])
    assert [e.NAME for e in events] == [
        "Transfer",
        "Transfer",
        "SettlementCommitted",
        "ReportApplied",
    ]
    assert isinstance(events[0], Transfer) and events[0].to == BUYER  # asset first
    aborted = make_model()
    prepare(aborted, t)
    events = aborted.apply_report(report((t, Action.ABORT)), [t])
    assert isinstance(events[2], SettlementAborted) and events[2].previous_state == State.PREPARED
    assert not any(isinstance(e, SettlementCommitted) for e in events)
