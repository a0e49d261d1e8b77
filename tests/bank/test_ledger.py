"""The ledger core's rules on the in-memory storage: life cycle, rejections, replays,
duplicates, conflicts, and reconcile catching broken books."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from bank_adapter import ledger
from bank_adapter.ledger import (
    Authorization,
    HoldStatus,
    InstructionState,
    LedgerError,
    Operation,
    Outcome,
    RejectReason,
    reconcile,
)
from bank_adapter.storage import MemoryStorage, StorageIntegrityError
from bank_adapter.terms import MAX_AMOUNT, PaymentTerms

from .conftest import FAR_DEADLINE, NOW_MS, terms


def auth(t: PaymentTerms, op: Operation, report: bytes | None = None) -> Authorization:
    return Authorization(report or secrets.token_bytes(32), t.settlement_id, op, t.terms_hash())


def apply(storage: MemoryStorage, rule: Callable[..., Any], *args: Any) -> Any:
    with storage.transaction() as txn:
        result = rule(txn, *args)
        txn.apply(result.changes if isinstance(result, Outcome) else result)
    return result


def books(*accounts: tuple[str, str, int]) -> MemoryStorage:
    storage = MemoryStorage()
    for account_id, currency, balance in accounts:
        apply(storage, ledger.open_account, account_id, currency, balance, NOW_MS)
    return storage


def prevalidate(
    s: MemoryStorage, t: PaymentTerms, a: Authorization | None = None, now: int = NOW_MS
) -> Outcome:
    return apply(s, ledger.prevalidate, t, a or auth(t, Operation.PREVALIDATE), "node-0", "k", now)


def execute(s: MemoryStorage, t: PaymentTerms, a: Authorization | None = None) -> Outcome:
    return apply(
        s, ledger.execute, t.settlement_id, a or auth(t, Operation.EXECUTE), "node-0", "k", NOW_MS
    )


def cancel(s: MemoryStorage, t: PaymentTerms, a: Authorization | None = None) -> Outcome:
    return apply(
        s, ledger.cancel, t.settlement_id, a or auth(t, Operation.CANCEL), "node-0", "k", NOW_MS
    )


def balance(s: MemoryStorage, account_id: str) -> tuple[int, int]:
    account = s.account(account_id)
    assert account is not None
    return account.balance, account.held


def test_prevalidate_execute_moves_money_once_with_a_balanced_journal() -> None:
    s = books(("alice", "EUR", 1000), ("bob", "EUR", 0))
    t = terms(amount=300)
    out = prevalidate(s, t)
    assert out.instruction.state is InstructionState.PREVALIDATED
    assert balance(s, "alice") == (1000, 300)
    out = execute(s, t)
    assert out.instruction.state is InstructionState.EXECUTED and not out.duplicate
    assert balance(s, "alice") == (700, 0) and balance(s, "bob") == (300, 0)
    snap = s.snapshot()
    assert reconcile(snap) == []
    payment = [e for e in snap.journal if e.kind == "payment"]
    assert len(payment) == 1 and payment[0].lines[0].direction == "D"
    assert s.hold(t.settlement_id).status is HoldStatus.CONSUMED  # type: ignore[union-attr]


def test_cancel_releases_the_hold_and_moves_nothing() -> None:
    s = books(("alice", "EUR", 1000), ("bob", "EUR", 0))
    t = terms(amount=300)
    prevalidate(s, t)
    out = cancel(s, t)
    assert out.instruction.state is InstructionState.CANCELLED
    assert balance(s, "alice") == (1000, 0) and balance(s, "bob") == (0, 0)
    assert reconcile(s.snapshot()) == []


@pytest.mark.parametrize(
    ("t", "now", "reason"),
    [
        (terms(amount=1001), NOW_MS, RejectReason.INSUFFICIENT_FUNDS),
        (terms(payer="carol"), NOW_MS, RejectReason.UNKNOWN_ACCOUNT),
        (terms(payee="dave"), NOW_MS, RejectReason.UNKNOWN_ACCOUNT),
        (terms(currency="USD"), NOW_MS, RejectReason.CURRENCY_MISMATCH),
        (terms(deadline=1_700_000_000), NOW_MS + 1, RejectReason.EXPIRED),
    ],
)
def test_rejections_are_recorded_with_a_reason_and_hold_nothing(
    t: PaymentTerms, now: int, reason: RejectReason
) -> None:
    s = books(("alice", "EUR", 1000), ("bob", "EUR", 0))
    before = balance(s, "alice")
    out = prevalidate(s, t, now=now)
    assert out.instruction.state is InstructionState.REJECTED
    assert out.instruction.reject_reason is reason
    assert balance(s, "alice") == before and s.hold(t.settlement_id) is None
    assert reconcile(s.snapshot()) == []
    # A rejected instruction can neither execute nor cancel.
    for rule in (execute, cancel):
        with pytest.raises(LedgerError) as err:
            rule(s, t)
        assert err.value.code == "invalid_state"


def test_deadline_is_inclusive_and_only_checked_at_prevalidation() -> None:
    s = books(("alice", "EUR", 1000), ("bob", "EUR", 0))
    t = terms(deadline=1_700_000_000)
    assert (
        prevalidate(s, t, now=1_700_000_000_000).instruction.state is InstructionState.PREVALIDATED
    )
    # A prepared leg never times out by itself: a COMMIT after the deadline still executes.
    out = apply(
        s, ledger.execute, t.settlement_id, auth(t, Operation.EXECUTE), "n", "k2", 1_800_000_000_000
    )
    assert out.instruction.state is InstructionState.EXECUTED


def test_hold_counts_against_available_funds() -> None:
    s = books(("alice", "EUR", 1000), ("bob", "EUR", 0))
    assert prevalidate(s, terms(amount=600)).instruction.state is InstructionState.PREVALIDATED
    second = prevalidate(s, terms(amount=600))
    assert second.instruction.reject_reason is RejectReason.INSUFFICIENT_FUNDS
    assert prevalidate(s, terms(amount=400)).instruction.state is InstructionState.PREVALIDATED
    assert balance(s, "alice") == (1000, 1000)


def test_certificate_rules_wrong_action_terms_and_settlement() -> None:
    s = books(("alice", "EUR", 1000), ("bob", "EUR", 0))
    t = terms()
    for op in (Operation.EXECUTE, Operation.CANCEL):
        with pytest.raises(LedgerError) as err:
            prevalidate(s, t, auth(t, op))
        assert err.value.code == "certificate_wrong_action"
    other = dataclasses.replace(t, amount=101)
    with pytest.raises(LedgerError) as err:
        prevalidate(s, other, auth(t, Operation.PREVALIDATE))
    assert err.value.code == "certificate_terms_mismatch"
    wrong_sid = Authorization(
        secrets.token_bytes(32), secrets.token_bytes(32), Operation.PREVALIDATE, t.terms_hash()
    )
    with pytest.raises(LedgerError) as err:
        prevalidate(s, t, wrong_sid)
    assert err.value.code == "certificate_wrong_settlement"
    assert s.snapshot().instructions == ()


def test_replayed_certificate_is_refused_for_another_operation() -> None:
    """A decision (report hash, settlement) already used for one operation cannot be
    presented for another: 'certificate_replayed', even before the action check."""
    s = books(("alice", "EUR", 1000), ("bob", "EUR", 0))
    t = terms()
    report = secrets.token_bytes(32)
    prevalidate(s, t, auth(t, Operation.PREVALIDATE, report))
    used_prepare = Authorization(report, t.settlement_id, Operation.PREVALIDATE, t.terms_hash())
    for rule in (execute, cancel):
        before = s.snapshot()
        with pytest.raises(LedgerError) as err:
            rule(s, t, used_prepare)
        assert err.value.code == "certificate_replayed"
        assert s.snapshot() == before
    # An unused PREPARE certificate presented to execute is a wrong action, not a replay.
    with pytest.raises(LedgerError) as err:
        execute(s, t, auth(t, Operation.PREVALIDATE))
    assert err.value.code == "certificate_wrong_action"


def test_same_decision_again_is_a_duplicate_that_changes_nothing() -> None:
    s = books(("alice", "EUR", 1000), ("bob", "EUR", 0))
    t = terms()
    prep = auth(t, Operation.PREVALIDATE)
    prevalidate(s, t, prep)
    before = s.snapshot()
    again = prevalidate(s, t, prep)  # another transmitter, another idempotency key
    assert again.duplicate and again.changes == ledger.Changes()
    assert prevalidate(s, t).duplicate  # a later PREPARE round, same terms
    commit = auth(t, Operation.EXECUTE)
    execute(s, t, commit)
    after_execute = s.snapshot()
    assert execute(s, t, commit).duplicate
    assert execute(s, t).duplicate  # another COMMIT certificate for the same settlement
    assert s.snapshot() == after_execute and before != after_execute
    assert balance(s, "bob") == (100, 0)


def test_conflicting_outcomes_are_refused() -> None:
    s = books(("alice", "EUR", 1000), ("bob", "EUR", 0))
    executed, cancelled = terms(), terms()
    prevalidate(s, executed)
    prevalidate(s, cancelled)
    execute(s, executed)
    cancel(s, cancelled)
    before = s.snapshot()
    with pytest.raises(LedgerError) as err:
        cancel(s, executed)
    assert err.value.code == "invalid_state"
    with pytest.raises(LedgerError) as err:
        execute(s, cancelled)
    assert err.value.code == "invalid_state"
    assert s.snapshot() == before


def test_other_terms_for_a_known_settlement_conflict() -> None:
    s = books(("alice", "EUR", 1000), ("bob", "EUR", 0))
    t = terms()
    prevalidate(s, t)
    with pytest.raises(LedgerError) as err:
        prevalidate(s, dataclasses.replace(t, amount=5))
    assert err.value.code == "settlement_conflict"


def test_execute_unknown_settlement_is_refused() -> None:
    s = books(("alice", "EUR", 1000), ("bob", "EUR", 0))
    with pytest.raises(LedgerError) as err:
        execute(s, terms())
    assert err.value.code == "unknown_instruction"


def test_abort_before_prepare_leaves_a_tombstone_that_blocks_a_late_hold() -> None:
    s = books(("alice", "EUR", 1000), ("bob", "EUR", 0))
    t = terms()
    out = cancel(s, t)
    assert out.instruction.state is InstructionState.CANCELLED and out.instruction.terms is None
    late = prevalidate(s, t)
    assert late.duplicate and late.instruction.state is InstructionState.CANCELLED
    assert balance(s, "alice") == (1000, 0)
    with pytest.raises(LedgerError) as err:
        execute(s, t)
    assert err.value.code == "invalid_state"
    assert reconcile(s.snapshot()) == []


def test_open_account_bounds_and_supply_limit() -> None:
    s = books(("alice", "EUR", MAX_AMOUNT - 10))
    with pytest.raises(LedgerError) as err:
        apply(s, ledger.open_account, "bob", "EUR", 11, NOW_MS)
    assert err.value.code == "supply_limit"
    apply(s, ledger.open_account, "bob", "EUR", 10, NOW_MS)
    for bad in (-1, MAX_AMOUNT + 1, True, 1.5):
        with pytest.raises(LedgerError):
            apply(s, ledger.open_account, "carol", "EUR", bad, NOW_MS)
    with pytest.raises(LedgerError) as err:
        apply(s, ledger.open_account, "bob", "EUR", 0, NOW_MS)
    assert err.value.code == "account_exists"
    assert reconcile(s.snapshot()) == []


def test_events_have_stable_ids_per_state() -> None:
    s = books(("alice", "EUR", 1000), ("bob", "EUR", 0))
    t = terms()
    prevalidate(s, t)
    execute(s, t)
    ids = [e.event.event_id for e in s.snapshot().events]
    assert ids == [
        f"evt_{t.settlement_id.hex()}_prevalidated",
        f"evt_{t.settlement_id.hex()}_executed",
    ]


# --------------------------------------------------------------------------- adversarial


def _corrupt(snapshot: ledger.LedgerSnapshot, **fields: Any) -> ledger.LedgerSnapshot:
    return dataclasses.replace(snapshot, **fields)


def test_reconcile_catches_every_kind_of_broken_books() -> None:
    s = books(("alice", "EUR", 1000), ("bob", "EUR", 0))
    paid, held = terms(amount=100), terms(amount=50)
    prevalidate(s, paid)
    execute(s, paid)
    prevalidate(s, held)
    good = s.snapshot()
    assert reconcile(good) == []
    accounts = {a.account_id: a for a in good.accounts}
    alice = accounts["alice"]

    # A balance that disagrees with the journal (money created).
    minted = tuple(
        dataclasses.replace(a, balance=a.balance + 1) if a is alice else a for a in good.accounts
    )
    assert reconcile(_corrupt(good, accounts=minted))
    # held != active holds.
    unheld = tuple(dataclasses.replace(a, held=0) if a is alice else a for a in good.accounts)
    assert reconcile(_corrupt(good, accounts=unheld))
    # A journal entry that does not balance.
    entry = next(e for e in good.journal if e.kind == "payment")
    lopsided = dataclasses.replace(
        entry, lines=(entry.lines[0], dataclasses.replace(entry.lines[1], amount=99))
    )
    assert reconcile(
        _corrupt(good, journal=tuple(lopsided if e is entry else e for e in good.journal))
    )
    # A second payment for one settlement (double payment).
    twice = dataclasses.replace(entry, entry_id=entry.entry_id + "-again")
    assert reconcile(_corrupt(good, journal=(*good.journal, twice)))
    # An executed instruction without its payment.
    assert reconcile(_corrupt(good, journal=tuple(e for e in good.journal if e is not entry)))
    # An instruction whose state disagrees with its hold.
    instructions = tuple(
        dataclasses.replace(i, state=InstructionState.CANCELLED)
        if i.settlement_id == held.settlement_id
        else i
        for i in good.instructions
    )
    assert reconcile(_corrupt(good, instructions=instructions))
    # A lost event.
    assert reconcile(_corrupt(good, events=good.events[1:]))


def test_storage_refuses_rows_that_break_constraints_and_writes_nothing() -> None:
    s = books(("alice", "EUR", 1000), ("bob", "EUR", 0))
    before = s.snapshot()
    alice = s.account("alice")
    assert alice is not None
    overdrawn = ledger.Changes(accounts=(dataclasses.replace(alice, balance=-1),))
    with pytest.raises(StorageIntegrityError), s.transaction() as txn:
        txn.apply(overdrawn)
    overheld = ledger.Changes(accounts=(dataclasses.replace(alice, held=1001),))
    with pytest.raises(StorageIntegrityError), s.transaction() as txn:
        txn.apply(overheld)
    assert s.snapshot() == before


def test_terms_refuse_bad_values() -> None:
    from bank_adapter.terms import TermsError

    sid = secrets.token_bytes(32)
    for kwargs in (
        {"amount": 0},
        {"amount": -5},
        {"amount": MAX_AMOUNT + 1},
        {"amount": True},
        {"amount": 1.0},
        {"currency": "eur"},
        {"payer_account": "@funding:EUR"},
        {"payee_account": "alice"},
        {"deadline": -1},
        {"deadline": 2**63},
    ):
        fields = {
            "settlement_id": sid,
            "payer_account": "alice",
            "payee_account": "bob",
            "amount": 1,
            "currency": "EUR",
            "deadline": FAR_DEADLINE,
        }
        fields.update(kwargs)
        with pytest.raises(TermsError):
            PaymentTerms(**fields)  # type: ignore[arg-type]
