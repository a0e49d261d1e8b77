"""The storage interface of the bank ledger, and its in-memory implementation.

A storage keeps the ledger's rows (accounts, holds, instructions, journal, events,
certificate uses, idempotency records) and the webhook delivery bookkeeping. The ledger
core (``ledger.py``) reads through a transaction's ``LedgerView`` methods and hands back
``Changes``; ``apply`` writes them, and the transaction commits all of them or none.

``MemoryStorage`` is the fast storage for deterministic simulation and property tests. It
enforces the same constraints as the SQLite schema (``sqlite_storage.py``), so a bug that
SQLite would refuse is refused here too; a test runs the same operation sequences against
both and compares their snapshots.

A storage must never decide a ledger rule (that is the core's job), and must never apply
part of a ``Changes``: on any error nothing of it is visible.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from typing import Protocol

from bank_adapter.ledger import (
    HELD_EVENT,
    Account,
    CertificateUse,
    Changes,
    Event,
    Hold,
    IdempotencyRecord,
    Instruction,
    InstructionState,
    JournalEntry,
    LedgerSnapshot,
    LedgerView,
    StoredEvent,
)

__all__ = [
    "Delivery",
    "LedgerStorage",
    "LedgerTransaction",
    "MemoryStorage",
    "StorageIntegrityError",
    "check_changes",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class StorageIntegrityError(RuntimeError):
    """A write broke a storage constraint: a bug in the caller, never a client's input."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event to deliver to one webhook URL."""

    seq: int
    url: str
    event: Event
    attempts: int
    next_attempt_ms: int
    delivered_ms: int | None
    last_error: str | None


class LedgerTransaction(LedgerView, Protocol):
    def apply(self, changes: Changes) -> None:
        """Stage the changes; they commit when the transaction's block ends without error.
        Call it once, after all reads."""
        ...


class LedgerStorage(Protocol):
    webhook_urls: tuple[str, ...]

    def transaction(self) -> AbstractContextManager[LedgerTransaction]: ...
    def group(self) -> AbstractContextManager[None]: ...
    def read(self) -> AbstractContextManager[LedgerView]: ...
    def snapshot(self) -> LedgerSnapshot: ...
    def due_deliveries(self, now_ms: int, limit: int) -> list[Delivery]: ...
    def delivery_succeeded(self, seq: int, url: str, now_ms: int) -> None: ...
    def delivery_failed(self, seq: int, url: str, next_attempt_ms: int, error: str) -> None: ...
    def pending_delivery_count(self) -> int: ...
    def instruction_states(self) -> list[tuple[bytes, str]]: ...
    def instruction_states_since(self, seq: int) -> tuple[list[tuple[bytes, str]], int]:
        """(settlement id, state) of every instruction an event after event ``seq``
        concerns (each state change records one), and the newest event's seq: a reader
        that merges these into what it had, asking each time from the seq it was given,
        holds ``instruction_states()`` at a cost of what changed since."""
        ...

    def held_settlements(self) -> list[bytes]:
        """Settlements whose instruction was ever prevalidated (a hold was placed), in the
        order of their first hold: what the audit's validity check calls a prepared leg."""
        ...

    def close(self) -> None: ...


def _int64(value: int, what: str) -> None:
    if not INT64_MIN <= value <= INT64_MAX:
        raise StorageIntegrityError(f"{what} {value} does not fit in 64 bits")


def check_changes(changes: Changes) -> None:
    """The row constraints both storages enforce (the CHECK clauses of the SQLite schema)."""
    for account in changes.accounts:
        _int64(account.balance, "balance")
        _int64(account.held, "held")
        if len(account.currency) != 3 or account.held < 0:
            raise StorageIntegrityError(f"bad account row {account}")
        if not account.internal and not (account.balance >= 0 and account.held <= account.balance):
            raise StorageIntegrityError(f"customer account below zero or over-held: {account}")
    for hold in changes.holds:
        if not 1 <= hold.amount <= INT64_MAX:
            raise StorageIntegrityError(f"bad hold amount {hold}")
    for ins in changes.instructions:
        if ins.state is InstructionState.RECEIVED or len(ins.settlement_id) != 32:
            raise StorageIntegrityError(f"bad instruction row {ins.settlement_id.hex()}")
        if ins.terms is not None and not 1 <= ins.terms.amount <= INT64_MAX:
            raise StorageIntegrityError("instruction amount out of range")
    for entry in changes.journal:
        for line in entry.lines:
            if line.direction not in ("D", "C") or not 1 <= line.amount <= INT64_MAX:
                raise StorageIntegrityError(f"bad journal line in {entry.entry_id}")


class MemoryStorage:
    """Ledger rows in dictionaries; same interface and constraints as SqliteStorage."""

    def __init__(self, webhook_urls: Sequence[str] = ()) -> None:
        self.webhook_urls = tuple(webhook_urls)
        self._accounts: dict[str, Account] = {}
        self._holds: dict[bytes, Hold] = {}
        self._instructions: dict[bytes, Instruction] = {}
        self._journal: dict[str, JournalEntry] = {}
        self._events: list[StoredEvent] = []
        self._event_ids: set[str] = set()
        self._uses: dict[tuple[bytes, bytes], CertificateUse] = {}
        self._idempotency: dict[tuple[str, str], IdempotencyRecord] = {}
        self._deliveries: dict[tuple[int, str], Delivery] = {}
        # The deliveries not made yet, so the outbox is read in time proportional to what
        # is pending rather than to every event ever sent (simulations send many).
        self._undelivered: dict[tuple[int, str], None] = {}
        self._in_transaction = False

    # reads ---------------------------------------------------------------
    def account(self, account_id: str) -> Account | None:
        return self._accounts.get(account_id)

    def instruction(self, settlement_id: bytes) -> Instruction | None:
        return self._instructions.get(settlement_id)

    def hold(self, settlement_id: bytes) -> Hold | None:
        return self._holds.get(settlement_id)

    def certificate_use(self, report_hash: bytes, settlement_id: bytes) -> CertificateUse | None:
        return self._uses.get((report_hash, settlement_id))

    def idempotency(self, client_id: str, key: str) -> IdempotencyRecord | None:
        return self._idempotency.get((client_id, key))

    # transactions --------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[LedgerTransaction]:
        if self._in_transaction:
            raise StorageIntegrityError("nested ledger transaction")
        staged = _Staged(self)
        self._in_transaction = True
        try:
            yield staged
            if staged.changes is not None:
                self._commit(staged.changes)
        finally:
            self._in_transaction = False

    @contextmanager
    def group(self) -> Iterator[None]:
        # Nothing to group: memory has no commit cost, each transaction applies at its end.
        yield

    @contextmanager
    def read(self) -> Iterator[LedgerView]:
        yield self

    def _commit(self, changes: Changes) -> None:
        # Validate everything first so that a failure leaves no partial write.
        check_changes(changes)
        event_ids = [e.event_id for e in changes.events]
        if len(set(event_ids)) != len(event_ids) or self._event_ids & set(event_ids):
            raise StorageIntegrityError(f"duplicate event id in {event_ids}")
        entry_ids = [e.entry_id for e in changes.journal]
        if len(set(entry_ids)) != len(entry_ids) or any(i in self._journal for i in entry_ids):
            raise StorageIntegrityError(f"duplicate journal entry in {entry_ids}")
        use_keys = [(u.report_hash, u.settlement_id) for u in changes.certificate_uses]
        if len(set(use_keys)) != len(use_keys) or any(k in self._uses for k in use_keys):
            raise StorageIntegrityError("certificate use recorded twice")
        idem_keys = [(r.client_id, r.key) for r in changes.idempotency]
        if len(set(idem_keys)) != len(idem_keys) or any(k in self._idempotency for k in idem_keys):
            raise StorageIntegrityError("idempotency key recorded twice")
        for hold in changes.holds:
            if hold.account_id not in self._accounts and all(
                a.account_id != hold.account_id for a in changes.accounts
            ):
                raise StorageIntegrityError(f"hold on unknown account {hold.account_id}")

        for account in changes.accounts:
            self._accounts[account.account_id] = account
        for ins in changes.instructions:
            self._instructions[ins.settlement_id] = ins
        for hold in changes.holds:
            self._holds[hold.settlement_id] = hold
        for entry in changes.journal:
            self._journal[entry.entry_id] = entry
        for event in changes.events:
            seq = len(self._events) + 1
            self._events.append(StoredEvent(seq, event))
            self._event_ids.add(event.event_id)
            for url in self.webhook_urls:
                self._deliveries[(seq, url)] = Delivery(
                    seq, url, event, 0, event.created_ms, None, None
                )
                self._undelivered[(seq, url)] = None
        for use in changes.certificate_uses:
            self._uses[(use.report_hash, use.settlement_id)] = use
        for record in changes.idempotency:
            self._idempotency[(record.client_id, record.key)] = record

    # snapshot ------------------------------------------------------------
    def snapshot(self) -> LedgerSnapshot:
        return LedgerSnapshot(
            accounts=tuple(sorted(self._accounts.values(), key=lambda a: a.account_id)),
            holds=tuple(sorted(self._holds.values(), key=lambda h: h.settlement_id)),
            instructions=tuple(sorted(self._instructions.values(), key=lambda i: i.settlement_id)),
            journal=tuple(sorted(self._journal.values(), key=lambda e: e.entry_id)),
            events=tuple(self._events),
            certificate_uses=tuple(
                sorted(self._uses.values(), key=lambda u: (u.report_hash, u.settlement_id))
            ),
            idempotency=tuple(
                sorted(self._idempotency.values(), key=lambda r: (r.client_id, r.key))
            ),
        )

    def snapshot_events(self, after: int = 0) -> list[Event]:
        """The events recorded after the first ``after``, in order (cheap: no copy of the
        rest of the ledger)."""
        return [stored.event for stored in self._events[after:]]

    # webhook deliveries ----------------------------------------------------
    def due_deliveries(self, now_ms: int, limit: int) -> list[Delivery]:
        due = [
            d
            for d in map(self._deliveries.__getitem__, self._undelivered)
            if d.next_attempt_ms <= now_ms and d.url in self.webhook_urls
        ]
        due.sort(key=lambda d: (d.next_attempt_ms, d.seq, d.url))
        return due[:limit]

    def delivery_succeeded(self, seq: int, url: str, now_ms: int) -> None:
        d = self._deliveries[(seq, url)]
        self._deliveries[(seq, url)] = replace(d, attempts=d.attempts + 1, delivered_ms=now_ms)
        self._undelivered.pop((seq, url), None)

    def delivery_failed(self, seq: int, url: str, next_attempt_ms: int, error: str) -> None:
        d = self._deliveries[(seq, url)]
        self._deliveries[(seq, url)] = replace(
            d, attempts=d.attempts + 1, next_attempt_ms=next_attempt_ms, last_error=error[:500]
        )

    def instruction_states(self) -> list[tuple[bytes, str]]:
        return [(sid, i.state.value) for sid, i in self._instructions.items()]

    def instruction_states_since(self, seq: int) -> tuple[list[tuple[bytes, str]], int]:
        changed = dict.fromkeys(s.event.settlement_id for s in self._events[max(seq, 0) :])
        states = [(sid, self._instructions[sid].state.value) for sid in changed]
        return states, len(self._events)

    def held_settlements(self) -> list[bytes]:
        held = (s.event.settlement_id for s in self._events if s.event.kind == HELD_EVENT)
        return list(dict.fromkeys(held))

    def pending_delivery_count(self) -> int:
        return sum(1 for _, url in self._undelivered if url in self.webhook_urls)

    def close(self) -> None:
        pass


class _Staged:
    """A MemoryStorage transaction: reads see committed rows, ``apply`` stages the writes."""

    def __init__(self, storage: MemoryStorage) -> None:
        self._storage = storage
        self.changes: Changes | None = None

    def account(self, account_id: str) -> Account | None:
        return self._storage.account(account_id)

    def instruction(self, settlement_id: bytes) -> Instruction | None:
        return self._storage.instruction(settlement_id)

    def hold(self, settlement_id: bytes) -> Hold | None:
        return self._storage.hold(settlement_id)

    def certificate_use(self, report_hash: bytes, settlement_id: bytes) -> CertificateUse | None:
        return self._storage.certificate_use(report_hash, settlement_id)

    def idempotency(self, client_id: str, key: str) -> IdempotencyRecord | None:
        return self._storage.idempotency(client_id, key)

    def apply(self, changes: Changes) -> None:
        if self.changes is not None:
            raise StorageIntegrityError("apply called twice in one transaction")
        self.changes = changes
