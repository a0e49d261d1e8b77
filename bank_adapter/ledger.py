"""The bank's ledger rules: accounts, holds, payment instructions and a double-entry journal.

This is the sans-I/O core of the bank. Each operation reads the current state through a
``LedgerView``, checks the rules, and returns an ``Outcome``: the instruction as it now is
and the ``Changes`` (new row values) that a storage must apply in one transaction. Nothing
here touches the disk, the clock or the network; ``now_ms`` (unix milliseconds) is a
parameter, and the two storages (``storage.MemoryStorage``, ``sqlite_storage.SqliteStorage``)
apply the same ``Changes`` with the same constraints.

Instruction life cycle (one instruction per settlement id, for ever)::

    RECEIVED --prevalidate--> PREVALIDATED (hold placed)  --execute--> EXECUTED (funds moved)
             \\-------------> REJECTED (reason, no hold)    \\--cancel--> CANCELLED (hold released)
    (none)   --cancel-------> CANCELLED (an ABORT tombstone: a late PREPARE can never hold)

RECEIVED exists only inside the transaction that decides PREVALIDATED or REJECTED, so it is
never stored. Money moves only on EXECUTED, as one balanced journal entry (debit payer,
credit payee). A hold is an earmark: ``Account.held`` is the sum of the account's ACTIVE
holds and ``available = balance - held``.

Every transition is authorized by one decision of an oracle-network certificate (checked
before the core runs, see ``authorization.py``), handed in as an ``Authorization``. The
core records each decision it uses (``CertificateUse``) and enforces:

* a decision authorizes exactly one operation: PREPARE -> prevalidate, COMMIT -> execute,
  ABORT -> cancel, and its terms hash must equal the instruction's;
* a replayed certificate, i.e. a decision (report hash, settlement id) that was already
  used, presented for a different operation than the one it was used for, is rejected
  (``certificate_replayed``), whatever the state;
* applying a decision again (the same decision, or another certificate for the same
  outcome) changes nothing and answers with the instruction as it is (``duplicate``);
* a conflicting outcome (execute after cancel, cancel after execute) is refused.

The deadline is checked only at prevalidation: once funds are held, a certified COMMIT
executes even after the deadline, because refusing it could leave the asset delivered and
the seller unpaid (a prepared leg never times out on its own).

This module must never: touch I/O or read the clock; let an amount be zero, negative or
above 2**63 - 1; move money without a balanced journal entry; change state when it raises.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final, Protocol

from bank_adapter.terms import MAX_AMOUNT, PaymentTerms, check_account_id, check_currency

__all__ = [
    "Account",
    "Authorization",
    "CertificateUse",
    "Changes",
    "Event",
    "Hold",
    "HELD_EVENT",
    "HoldStatus",
    "IdempotencyRecord",
    "Instruction",
    "InstructionState",
    "JournalEntry",
    "JournalLine",
    "LedgerError",
    "LedgerSnapshot",
    "LedgerView",
    "Operation",
    "Outcome",
    "RejectReason",
    "cancel",
    "execute",
    "funding_account_id",
    "instruction_to_json",
    "open_account",
    "prevalidate",
    "reconcile",
]


class InstructionState(StrEnum):
    RECEIVED = "RECEIVED"
    PREVALIDATED = "PREVALIDATED"
    REJECTED = "REJECTED"
    EXECUTED = "EXECUTED"
    CANCELLED = "CANCELLED"


class RejectReason(StrEnum):
    INSUFFICIENT_FUNDS = "insufficient_funds"
    UNKNOWN_ACCOUNT = "unknown_account"
    CURRENCY_MISMATCH = "currency_mismatch"
    EXPIRED = "expired"


class HoldStatus(StrEnum):
    ACTIVE = "ACTIVE"
    CONSUMED = "CONSUMED"  # the payment executed
    RELEASED = "RELEASED"  # the payment was cancelled


class Operation(StrEnum):
    """What a certified decision lets the bank do: PREPARE -> prevalidate, COMMIT ->
    execute, ABORT -> cancel."""

    PREVALIDATE = "prevalidate"
    EXECUTE = "execute"
    CANCEL = "cancel"


# The legal transitions, read top to bottom; None is "no instruction yet".
LEGAL_TRANSITIONS: Final[dict[InstructionState | None, frozenset[InstructionState]]] = {
    None: frozenset({InstructionState.RECEIVED, InstructionState.CANCELLED}),
    InstructionState.RECEIVED: frozenset(
        {InstructionState.PREVALIDATED, InstructionState.REJECTED}
    ),
    InstructionState.PREVALIDATED: frozenset(
        {InstructionState.EXECUTED, InstructionState.CANCELLED}
    ),
    InstructionState.REJECTED: frozenset(),
    InstructionState.EXECUTED: frozenset(),
    InstructionState.CANCELLED: frozenset(),
}

# The state each operation drives an instruction to, for duplicate detection.
_TARGET_STATE: Final = {
    Operation.EXECUTE: InstructionState.EXECUTED,
    Operation.CANCEL: InstructionState.CANCELLED,
}

_EVENT_KIND: Final = {
    InstructionState.PREVALIDATED: "instruction.prevalidated",
    InstructionState.REJECTED: "instruction.rejected",
    InstructionState.EXECUTED: "instruction.executed",
    InstructionState.CANCELLED: "instruction.cancelled",
}
#: The event kind of a placed hold: an instruction that reached PREVALIDATED.
HELD_EVENT: Final = _EVENT_KIND[InstructionState.PREVALIDATED]


class LedgerError(Exception):
    """A request the ledger refuses; nothing changed. ``code`` is stable and machine-read
    (the HTTP layer maps it to a status), the message is one line for a person."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    currency: str
    balance: int  # minor units; customer accounts never go below zero
    held: int  # sum of ACTIVE holds on this account
    internal: bool  # the bank's own funding accounts ('@funding:EUR'), which go negative
    created_ms: int

    @property
    def available(self) -> int:
        return self.balance - self.held


@dataclass(frozen=True, slots=True)
class Hold:
    settlement_id: bytes
    account_id: str
    amount: int
    status: HoldStatus


@dataclass(frozen=True, slots=True)
class Instruction:
    settlement_id: bytes
    terms: PaymentTerms | None  # None only for an ABORT tombstone
    terms_hash: bytes
    state: InstructionState
    reject_reason: RejectReason | None
    created_ms: int
    updated_ms: int
    prepare_report: bytes | None  # report hash of the PREPARE decision used
    outcome_report: bytes | None  # report hash of the COMMIT or ABORT decision used


@dataclass(frozen=True, slots=True)
class JournalLine:
    account_id: str
    direction: str  # "D" debit or "C" credit
    amount: int


@dataclass(frozen=True, slots=True)
class JournalEntry:
    entry_id: str  # "payment:<sid hex>" or "opening:<account id>"
    kind: str  # "payment" or "opening"
    settlement_id: bytes | None
    created_ms: int
    lines: tuple[JournalLine, ...]


@dataclass(frozen=True, slots=True)
class Event:
    """A callback to deliver: one per instruction state reached. The id is derived from the
    settlement and the state, so a duplicate delivery carries the same id."""

    event_id: str
    kind: str
    settlement_id: bytes
    payload: str  # canonical JSON; the webhook sender adds its clock (as_of_ms) and signs that
    created_ms: int


@dataclass(frozen=True, slots=True)
class CertificateUse:
    report_hash: bytes
    settlement_id: bytes
    operation: Operation
    client_id: str
    idempotency_key: str
    used_ms: int


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    client_id: str
    key: str
    request_hash: bytes  # sha256 of method, path and body: a reused key must match it
    status: int
    body: bytes
    created_ms: int


@dataclass(frozen=True, slots=True)
class Authorization:
    """One verified certificate decision, as the core needs it."""

    report_hash: bytes
    settlement_id: bytes
    operation: Operation  # what the decision's action allows
    terms_hash: bytes


@dataclass(frozen=True, slots=True)
class Changes:
    """New row values to write in one transaction (upserts, except appends for journal,
    events, certificate uses and idempotency records)."""

    accounts: tuple[Account, ...] = ()
    instructions: tuple[Instruction, ...] = ()
    holds: tuple[Hold, ...] = ()
    journal: tuple[JournalEntry, ...] = ()
    events: tuple[Event, ...] = ()
    certificate_uses: tuple[CertificateUse, ...] = ()
    idempotency: tuple[IdempotencyRecord, ...] = ()

    def plus(self, other: Changes) -> Changes:
        return Changes(
            accounts=self.accounts + other.accounts,
            instructions=self.instructions + other.instructions,
            holds=self.holds + other.holds,
            journal=self.journal + other.journal,
            events=self.events + other.events,
            certificate_uses=self.certificate_uses + other.certificate_uses,
            idempotency=self.idempotency + other.idempotency,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    instruction: Instruction
    changes: Changes
    duplicate: bool = False  # the decision was already applied; nothing changed


class LedgerView(Protocol):
    """The reads the core needs, inside the transaction that will apply its changes."""

    def account(self, account_id: str) -> Account | None: ...
    def instruction(self, settlement_id: bytes) -> Instruction | None: ...
    def hold(self, settlement_id: bytes) -> Hold | None: ...
    def certificate_use(
        self, report_hash: bytes, settlement_id: bytes
    ) -> CertificateUse | None: ...
    def idempotency(self, client_id: str, key: str) -> IdempotencyRecord | None: ...


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    event: Event


@dataclass(frozen=True, slots=True)
class LedgerSnapshot:
    """Everything a storage holds about the ledger, in a canonical order (for reconcile and
    for comparing storages)."""

    accounts: tuple[Account, ...]
    holds: tuple[Hold, ...]
    instructions: tuple[Instruction, ...]
    journal: tuple[JournalEntry, ...]
    events: tuple[StoredEvent, ...]
    certificate_uses: tuple[CertificateUse, ...]
    idempotency: tuple[IdempotencyRecord, ...] = field(default=())


# --------------------------------------------------------------------------- operations


def funding_account_id(currency: str) -> str:
    """The bank's internal account that opening balances in ``currency`` come from."""
    return f"@funding:{currency}"


def open_account(
    view: LedgerView, account_id: str, currency: str, opening_balance: int, now_ms: int
) -> Changes:
    """A new customer account, funded from the bank's funding account by a journal entry."""
    check_account_id(account_id, "account_id")
    check_currency(currency)
    if (
        not isinstance(opening_balance, int)
        or isinstance(opening_balance, bool)
        or not 0 <= opening_balance <= MAX_AMOUNT
    ):
        raise LedgerError(
            "invalid_amount",
            f"opening_balance must be an integer between 0 and {MAX_AMOUNT} minor units",
            "opening_balance",
        )
    if view.account(account_id) is not None:
        raise LedgerError(
            "account_exists", f"account {account_id} already exists; choose another id"
        )
    account = Account(account_id, currency, opening_balance, 0, False, now_ms)
    if opening_balance == 0:
        return Changes(accounts=(account,))
    fund_id = funding_account_id(currency)
    fund = view.account(fund_id) or Account(fund_id, currency, 0, 0, True, now_ms)
    # Total money per currency stays within 2**63 - 1, so no balance can overflow later.
    if fund.balance - opening_balance < -MAX_AMOUNT:
        raise LedgerError(
            "supply_limit",
            f"opening {account_id} would put more than {MAX_AMOUNT} minor units of {currency} in circulation",
            "opening_balance",
        )
    fund = replace(fund, balance=fund.balance - opening_balance)
    entry = JournalEntry(
        entry_id=f"opening:{account_id}",
        kind="opening",
        settlement_id=None,
        created_ms=now_ms,
        lines=(
            JournalLine(fund_id, "D", opening_balance),
            JournalLine(account_id, "C", opening_balance),
        ),
    )
    return Changes(accounts=(fund, account), journal=(entry,))


def prevalidate(
    view: LedgerView,
    terms: PaymentTerms,
    authorization: Authorization,
    client_id: str,
    idempotency_key: str,
    now_ms: int,
) -> Outcome:
    """Receive an instruction and either hold the funds (PREVALIDATED) or reject it."""
    sid = terms.settlement_id
    terms_hash = terms.terms_hash()
    _check_authorization(view, authorization, sid, Operation.PREVALIDATE, terms_hash)
    existing = view.instruction(sid)
    if existing is not None:
        if existing.terms_hash != terms_hash:
            raise LedgerError(
                "settlement_conflict",
                f"settlement 0x{sid.hex()} already has an instruction with other terms (state {existing.state})",
            )
        # The same instruction again (another transmitter, or a later PREPARE round).
        return Outcome(existing, Changes(), duplicate=True)

    _check_transition(None, InstructionState.RECEIVED)
    use = _use(authorization, Operation.PREVALIDATE, client_id, idempotency_key, now_ms)
    reason, payer = _rejection(view, terms, now_ms)
    if reason is not None:
        _check_transition(InstructionState.RECEIVED, InstructionState.REJECTED)
        rejected = Instruction(
            sid,
            terms,
            terms_hash,
            InstructionState.REJECTED,
            reason,
            now_ms,
            now_ms,
            authorization.report_hash,
            None,
        )
        return Outcome(
            rejected,
            Changes(
                instructions=(rejected,),
                events=(_event(rejected, now_ms),),
                certificate_uses=(use,),
            ),
        )
    assert payer is not None
    _check_transition(InstructionState.RECEIVED, InstructionState.PREVALIDATED)
    instruction = Instruction(
        sid,
        terms,
        terms_hash,
        InstructionState.PREVALIDATED,
        None,
        now_ms,
        now_ms,
        authorization.report_hash,
        None,
    )
    hold = Hold(sid, payer.account_id, terms.amount, HoldStatus.ACTIVE)
    return Outcome(
        instruction,
        Changes(
            accounts=(replace(payer, held=payer.held + terms.amount),),
            instructions=(instruction,),
            holds=(hold,),
            events=(_event(instruction, now_ms),),
            certificate_uses=(use,),
        ),
    )


def execute(
    view: LedgerView,
    settlement_id: bytes,
    authorization: Authorization,
    client_id: str,
    idempotency_key: str,
    now_ms: int,
) -> Outcome:
    """Pay a prevalidated instruction: consume the hold and journal the transfer."""
    existing = _existing_for_outcome(view, settlement_id, authorization, Operation.EXECUTE)
    if isinstance(existing, Outcome):
        return existing
    terms = existing.terms
    hold = view.hold(settlement_id)
    assert terms is not None and hold is not None and hold.status is HoldStatus.ACTIVE
    payer = view.account(terms.payer_account)
    payee = view.account(terms.payee_account)
    # Prevalidation checked both accounts and accounts are never deleted.
    assert payer is not None and payee is not None
    executed = replace(
        existing,
        state=InstructionState.EXECUTED,
        updated_ms=now_ms,
        outcome_report=authorization.report_hash,
    )
    entry = JournalEntry(
        entry_id=f"payment:{settlement_id.hex()}",
        kind="payment",
        settlement_id=settlement_id,
        created_ms=now_ms,
        lines=(
            JournalLine(payer.account_id, "D", terms.amount),
            JournalLine(payee.account_id, "C", terms.amount),
        ),
    )
    return Outcome(
        executed,
        Changes(
            accounts=(
                replace(
                    payer, balance=payer.balance - terms.amount, held=payer.held - terms.amount
                ),
                replace(payee, balance=payee.balance + terms.amount),
            ),
            instructions=(executed,),
            holds=(replace(hold, status=HoldStatus.CONSUMED),),
            journal=(entry,),
            events=(_event(executed, now_ms),),
            certificate_uses=(
                _use(authorization, Operation.EXECUTE, client_id, idempotency_key, now_ms),
            ),
        ),
    )


def cancel(
    view: LedgerView,
    settlement_id: bytes,
    authorization: Authorization,
    client_id: str,
    idempotency_key: str,
    now_ms: int,
) -> Outcome:
    """Release the hold of a prevalidated instruction, or record an ABORT tombstone for a
    settlement the bank has not seen, so that a late PREPARE cannot hold funds for it."""
    use = _use(authorization, Operation.CANCEL, client_id, idempotency_key, now_ms)
    if view.instruction(settlement_id) is None:
        _check_authorization(
            view, authorization, settlement_id, Operation.CANCEL, authorization.terms_hash
        )
        _check_transition(None, InstructionState.CANCELLED)
        tombstone = Instruction(
            settlement_id,
            None,
            authorization.terms_hash,
            InstructionState.CANCELLED,
            None,
            now_ms,
            now_ms,
            None,
            authorization.report_hash,
        )
        return Outcome(
            tombstone,
            Changes(
                instructions=(tombstone,),
                events=(_event(tombstone, now_ms),),
                certificate_uses=(use,),
            ),
        )
    existing = _existing_for_outcome(view, settlement_id, authorization, Operation.CANCEL)
    if isinstance(existing, Outcome):
        return existing
    hold = view.hold(settlement_id)
    assert hold is not None and hold.status is HoldStatus.ACTIVE
    payer = view.account(hold.account_id)
    assert payer is not None
    cancelled = replace(
        existing,
        state=InstructionState.CANCELLED,
        updated_ms=now_ms,
        outcome_report=authorization.report_hash,
    )
    return Outcome(
        cancelled,
        Changes(
            accounts=(replace(payer, held=payer.held - hold.amount),),
            instructions=(cancelled,),
            holds=(replace(hold, status=HoldStatus.RELEASED),),
            events=(_event(cancelled, now_ms),),
            certificate_uses=(use,),
        ),
    )


# --------------------------------------------------------------------------- rule helpers


def _check_authorization(
    view: LedgerView,
    authorization: Authorization,
    settlement_id: bytes,
    operation: Operation,
    terms_hash: bytes,
) -> None:
    """The certificate decision may drive ``operation`` on this settlement with these terms.
    Raises LedgerError; the order of the checks fixes which error a request gets."""
    if authorization.settlement_id != settlement_id:
        raise LedgerError(
            "certificate_wrong_settlement",
            f"the certificate decision is for settlement 0x{authorization.settlement_id.hex()}, not 0x{settlement_id.hex()}",
            "certificate",
        )
    used = view.certificate_use(authorization.report_hash, settlement_id)
    if used is not None and used.operation is not operation:
        raise LedgerError(
            "certificate_replayed",
            f"the certificate's decision for settlement 0x{settlement_id.hex()} was already used to {used.operation}; a decision authorizes one operation",
            "certificate",
        )
    if authorization.operation is not operation:
        raise LedgerError(
            "certificate_wrong_action",
            f"the certificate allows {authorization.operation} of settlement 0x{settlement_id.hex()}, not {operation}",
            "certificate",
        )
    if authorization.terms_hash != terms_hash:
        raise LedgerError(
            "certificate_terms_mismatch",
            f"the certified terms hash 0x{authorization.terms_hash.hex()} does not match the instruction's 0x{terms_hash.hex()}",
            "certificate",
        )


def _existing_for_outcome(
    view: LedgerView, settlement_id: bytes, authorization: Authorization, operation: Operation
) -> Instruction | Outcome:
    """The prevalidated instruction an execute or cancel applies to, or the duplicate
    outcome when it already reached that operation's state. Raises LedgerError."""
    existing = view.instruction(settlement_id)
    if existing is None:
        raise LedgerError(
            "unknown_instruction",
            f"no instruction for settlement 0x{settlement_id.hex()}; prevalidate it first",
        )
    _check_authorization(view, authorization, settlement_id, operation, existing.terms_hash)
    target = _TARGET_STATE[operation]
    if existing.state is target:
        return Outcome(existing, Changes(), duplicate=True)
    if existing.state is not InstructionState.PREVALIDATED:
        raise LedgerError(
            "invalid_state",
            f"cannot {operation} settlement 0x{settlement_id.hex()}: the instruction is {existing.state}",
        )
    _check_transition(existing.state, target)
    return existing


def _check_transition(before: InstructionState | None, after: InstructionState) -> None:
    if after not in LEGAL_TRANSITIONS[before]:  # a bug in this module, never a peer's input
        raise AssertionError(f"illegal instruction transition {before} -> {after}")


def _rejection(
    view: LedgerView, terms: PaymentTerms, now_ms: int
) -> tuple[RejectReason | None, Account | None]:
    """Why the bank refuses to hold funds for ``terms``, or (None, payer account)."""
    # The deadline is unix seconds; the instruction is expired once it has passed.
    if now_ms > terms.deadline * 1000:
        return RejectReason.EXPIRED, None
    payer = view.account(terms.payer_account)
    payee = view.account(terms.payee_account)
    if payer is None or payee is None or payer.internal or payee.internal:
        return RejectReason.UNKNOWN_ACCOUNT, None
    if payer.currency != terms.currency or payee.currency != terms.currency:
        return RejectReason.CURRENCY_MISMATCH, None
    if payer.available < terms.amount:
        return RejectReason.INSUFFICIENT_FUNDS, None
    return None, payer


def _use(
    authorization: Authorization,
    operation: Operation,
    client_id: str,
    idempotency_key: str,
    now_ms: int,
) -> CertificateUse:
    return CertificateUse(
        authorization.report_hash,
        authorization.settlement_id,
        operation,
        client_id,
        idempotency_key,
        now_ms,
    )


def _event(instruction: Instruction, now_ms: int) -> Event:
    kind = _EVENT_KIND[instruction.state]
    event_id = f"evt_{instruction.settlement_id.hex()}_{instruction.state.lower()}"
    payload = canonical_json(
        {
            "event_id": event_id,
            "type": kind,
            "created_ms": now_ms,
            "instruction": instruction_to_json(instruction),
        }
    )
    return Event(event_id, kind, instruction.settlement_id, payload, now_ms)


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces: the one JSON form the bank stores, signs and compares."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def stamped_json(body: str | bytes, now_ms: int) -> bytes:
    """A JSON object ``body`` with the bank's clock added at the top level (``as_of_ms``,
    unix ms), in canonical form: how answers and callbacks state the bank's time."""
    return canonical_json({**json.loads(body), "as_of_ms": now_ms}).encode()


def _hex(value: bytes | None) -> str | None:
    return None if value is None else "0x" + value.hex()


def instruction_to_json(instruction: Instruction) -> dict[str, Any]:
    """The public JSON form of an instruction (API responses and callbacks)."""
    terms = instruction.terms
    return {
        "settlement_id": "0x" + instruction.settlement_id.hex(),
        "state": str(instruction.state),
        "reject_reason": None
        if instruction.reject_reason is None
        else str(instruction.reject_reason),
        "terms_hash": "0x" + instruction.terms_hash.hex(),
        "payer_account": None if terms is None else terms.payer_account,
        "payee_account": None if terms is None else terms.payee_account,
        "amount": None if terms is None else terms.amount,
        "currency": None if terms is None else terms.currency,
        "deadline": None if terms is None else terms.deadline,
        "created_ms": instruction.created_ms,
        "updated_ms": instruction.updated_ms,
        "prepare_report_hash": _hex(instruction.prepare_report),
        "outcome_report_hash": _hex(instruction.outcome_report),
    }


# --------------------------------------------------------------------------- reconciliation


def reconcile(snapshot: LedgerSnapshot) -> list[str]:
    """Every broken ledger invariant, one line each; an empty list means the books hold.

    Checked: each journal entry balances; each balance equals its journal postings; customer
    balances are >= 0 and holds <= balance; ``held`` equals the account's ACTIVE holds; each
    currency nets to zero; each instruction's hold, journal entry and events agree with its
    state (executed exactly once, or not at all)."""
    problems: list[str] = []
    postings: dict[str, int] = {}
    payments: dict[bytes, JournalEntry] = {}
    for entry in snapshot.journal:
        debits = sum(line.amount for line in entry.lines if line.direction == "D")
        credits = sum(line.amount for line in entry.lines if line.direction == "C")
        if debits != credits or debits <= 0 or len(entry.lines) < 2:
            problems.append(f"journal entry {entry.entry_id} does not balance")
        for line in entry.lines:
            if line.amount <= 0 or line.direction not in ("D", "C"):
                problems.append(f"journal entry {entry.entry_id} has a bad line {line}")
            sign = 1 if line.direction == "C" else -1
            postings[line.account_id] = postings.get(line.account_id, 0) + sign * line.amount
        if entry.kind == "payment":
            if entry.settlement_id is None or entry.settlement_id in payments:
                problems.append(f"journal entry {entry.entry_id} is a second payment")
            else:
                payments[entry.settlement_id] = entry

    accounts = {a.account_id: a for a in snapshot.accounts}
    active: dict[str, int] = {}
    for hold in snapshot.holds:
        if hold.status is HoldStatus.ACTIVE:
            active[hold.account_id] = active.get(hold.account_id, 0) + hold.amount
    per_currency: dict[str, int] = {}
    for account in snapshot.accounts:
        if account.balance != postings.get(account.account_id, 0):
            problems.append(
                f"account {account.account_id} balance {account.balance} != journal {postings.get(account.account_id, 0)}"
            )
        if not account.internal and not 0 <= account.held <= account.balance:
            problems.append(
                f"account {account.account_id} holds {account.held} of {account.balance}"
            )
        if account.held != active.get(account.account_id, 0):
            problems.append(f"account {account.account_id} held {account.held} != active holds")
        per_currency[account.currency] = per_currency.get(account.currency, 0) + account.balance
    for account_id in postings:
        if account_id not in accounts:
            problems.append(f"journal posts to unknown account {account_id}")
    for currency, total in per_currency.items():
        if total != 0:
            problems.append(f"currency {currency} nets to {total}, not 0")

    holds = {h.settlement_id: h for h in snapshot.holds}
    events: dict[bytes, set[str]] = {}
    for stored in snapshot.events:
        events.setdefault(stored.event.settlement_id, set()).add(stored.event.kind)
    for ins in snapshot.instructions:
        problems.extend(_reconcile_instruction(ins, holds.get(ins.settlement_id), payments))
        want = _expected_events(ins)
        if events.get(ins.settlement_id, set()) != want:
            problems.append(
                f"instruction 0x{ins.settlement_id.hex()} has events {sorted(events.get(ins.settlement_id, set()))}, expected {sorted(want)}"
            )
    instruction_ids = {i.settlement_id for i in snapshot.instructions}
    for sid in payments:
        if sid not in instruction_ids:
            problems.append(f"payment 0x{sid.hex()} has no instruction")
    return problems


def _expected_events(ins: Instruction) -> set[str]:
    if ins.state is InstructionState.CANCELLED and ins.terms is None:
        return {_EVENT_KIND[InstructionState.CANCELLED]}
    if ins.state is InstructionState.REJECTED:
        return {_EVENT_KIND[InstructionState.REJECTED]}
    kinds = {_EVENT_KIND[InstructionState.PREVALIDATED]}
    if ins.state is not InstructionState.PREVALIDATED:
        kinds.add(_EVENT_KIND[ins.state])
    return kinds


def _reconcile_instruction(
    ins: Instruction, hold: Hold | None, payments: dict[bytes, JournalEntry]
) -> Iterable[str]:
    name = f"instruction 0x{ins.settlement_id.hex()}"
    payment = payments.get(ins.settlement_id)
    expected_hold = {
        InstructionState.PREVALIDATED: HoldStatus.ACTIVE,
        InstructionState.EXECUTED: HoldStatus.CONSUMED,
        InstructionState.CANCELLED: HoldStatus.RELEASED,
    }.get(ins.state)
    if ins.state is InstructionState.RECEIVED:
        yield f"{name} was stored as RECEIVED"
    if ins.terms is None:
        if ins.state is not InstructionState.CANCELLED or hold is not None:
            yield f"{name} has no terms but is {ins.state}"
        if payment is not None:
            yield f"{name} is a tombstone with a payment"
        return
    if ins.terms.terms_hash() != ins.terms_hash:
        yield f"{name} terms hash does not match its terms"
    if expected_hold is None:
        if hold is not None:
            yield f"{name} is {ins.state} but has a hold"
    elif hold is None or hold.status is not expected_hold:
        yield f"{name} is {ins.state} but its hold is {None if hold is None else hold.status}"
    elif hold.amount != ins.terms.amount or hold.account_id != ins.terms.payer_account:
        yield f"{name} hold does not match its terms"
    if ins.state is InstructionState.EXECUTED:
        expected = (
            JournalLine(ins.terms.payer_account, "D", ins.terms.amount),
            JournalLine(ins.terms.payee_account, "C", ins.terms.amount),
        )
        if payment is None or payment.lines != expected:
            yield f"{name} is EXECUTED but its payment entry is {payment}"
    elif payment is not None:
        yield f"{name} is {ins.state} but money moved"
