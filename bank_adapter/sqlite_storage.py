"""The bank ledger's durable storage: SQLite in WAL mode, one transaction per state change.

Every ``Changes`` the ledger core returns is written inside ``BEGIN IMMEDIATE ... COMMIT``
together with the idempotency record and the outbox events of the same request, so a crash
(SIGKILL, power loss) leaves either all of a request's effects or none. ``synchronous=FULL``
makes a commit durable before the HTTP answer leaves. Amounts are INTEGER minor units; CHECK
constraints repeat the ledger's bounds so that a bug cannot store money that breaks them.

Webhook deliveries are rows created in the same transaction as their event (the
transactional outbox), so an event is never lost between the commit and the sender.

This storage must never decide a ledger rule, hold a transaction open across an ``await``
(the service calls it from one event-loop thread and keeps transactions short), or store a
float amount.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bank_adapter.ledger import (
    HELD_EVENT,
    Account,
    CertificateUse,
    Changes,
    Event,
    Hold,
    HoldStatus,
    IdempotencyRecord,
    Instruction,
    InstructionState,
    JournalEntry,
    JournalLine,
    LedgerSnapshot,
    LedgerView,
    Operation,
    RejectReason,
    StoredEvent,
)
from bank_adapter.storage import (
    Delivery,
    LedgerTransaction,
    StorageIntegrityError,
    check_changes,
)
from bank_adapter.terms import PaymentTerms

__all__ = ["SCHEMA_VERSION", "SqliteStorage"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    account_id TEXT PRIMARY KEY,
    currency TEXT NOT NULL CHECK (length(currency) = 3),
    balance INTEGER NOT NULL,
    held INTEGER NOT NULL CHECK (held >= 0),
    internal INTEGER NOT NULL CHECK (internal IN (0, 1)),
    created_ms INTEGER NOT NULL,
    CHECK (internal = 1 OR (balance >= 0 AND held <= balance))
);
CREATE TABLE IF NOT EXISTS instructions (
    settlement_id BLOB PRIMARY KEY CHECK (length(settlement_id) = 32),
    payer TEXT, payee TEXT,
    amount INTEGER CHECK (amount IS NULL OR amount BETWEEN 1 AND 9223372036854775807),
    currency TEXT, deadline INTEGER,
    terms_hash BLOB NOT NULL CHECK (length(terms_hash) = 32),
    state TEXT NOT NULL CHECK (state IN ('PREVALIDATED','REJECTED','EXECUTED','CANCELLED')),
    reject_reason TEXT,
    created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
    prepare_report BLOB, outcome_report BLOB
);
CREATE TABLE IF NOT EXISTS holds (
    settlement_id BLOB PRIMARY KEY REFERENCES instructions(settlement_id),
    account_id TEXT NOT NULL REFERENCES accounts(account_id),
    amount INTEGER NOT NULL CHECK (amount BETWEEN 1 AND 9223372036854775807),
    status TEXT NOT NULL CHECK (status IN ('ACTIVE','CONSUMED','RELEASED'))
);
CREATE TABLE IF NOT EXISTS journal_entries (
    entry_id TEXT PRIMARY KEY, kind TEXT NOT NULL, settlement_id BLOB,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS journal_lines (
    entry_id TEXT NOT NULL REFERENCES journal_entries(entry_id),
    line_no INTEGER NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts(account_id),
    direction TEXT NOT NULL CHECK (direction IN ('D','C')),
    amount INTEGER NOT NULL CHECK (amount BETWEEN 1 AND 9223372036854775807),
    PRIMARY KEY (entry_id, line_no)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, settlement_id BLOB NOT NULL,
    payload TEXT NOT NULL, created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    event_seq INTEGER NOT NULL REFERENCES events(seq), url TEXT NOT NULL,
    attempts INTEGER NOT NULL, next_attempt_ms INTEGER NOT NULL,
    delivered_ms INTEGER, last_error TEXT,
    PRIMARY KEY (event_seq, url)
);
CREATE INDEX IF NOT EXISTS webhook_due ON webhook_deliveries (next_attempt_ms)
    WHERE delivered_ms IS NULL;
CREATE TABLE IF NOT EXISTS certificate_uses (
    report_hash BLOB NOT NULL, settlement_id BLOB NOT NULL,
    operation TEXT NOT NULL, client_id TEXT NOT NULL, idempotency_key TEXT NOT NULL,
    used_ms INTEGER NOT NULL,
    PRIMARY KEY (report_hash, settlement_id)
);
CREATE TABLE IF NOT EXISTS idempotency (
    client_id TEXT NOT NULL, key TEXT NOT NULL, request_hash BLOB NOT NULL,
    status INTEGER NOT NULL, body BLOB NOT NULL, created_ms INTEGER NOT NULL,
    PRIMARY KEY (client_id, key)
);
"""


class SqliteStorage:
    """Ledger rows in one SQLite database file (WAL). Use from one thread."""

    def __init__(
        self, path: str | Path, webhook_urls: Sequence[str] = (), *, synchronous: str = "FULL"
    ) -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self.path = str(path)
        self.webhook_urls = tuple(webhook_urls)
        self._depth = 0  # 0: no transaction; 1: in a group; >1: in a request's savepoint
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly
        # the block we mean and never an implicit one left open.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        elif int(row[0]) != SCHEMA_VERSION:
            raise StorageIntegrityError(
                f"{self.path} has ledger schema {row[0]}, this bank expects {SCHEMA_VERSION}; use a new --db file"
            )

    # reads (also used by transactions: same connection) --------------------
    def account(self, account_id: str) -> Account | None:
        row = self._db.execute(
            "SELECT account_id, currency, balance, held, internal, created_ms FROM accounts WHERE account_id=?",
            (account_id,),
        ).fetchone()
        return None if row is None else _account(row)

    def instruction(self, settlement_id: bytes) -> Instruction | None:
        row = self._db.execute(
            _INSTRUCTION_SELECT + " WHERE settlement_id=?", (settlement_id,)
        ).fetchone()
        return None if row is None else _instruction(row)

    def hold(self, settlement_id: bytes) -> Hold | None:
        row = self._db.execute(
            "SELECT settlement_id, account_id, amount, status FROM holds WHERE settlement_id=?",
            (settlement_id,),
        ).fetchone()
        return None if row is None else _hold(row)

    def certificate_use(self, report_hash: bytes, settlement_id: bytes) -> CertificateUse | None:
        row = self._db.execute(
            "SELECT report_hash, settlement_id, operation, client_id, idempotency_key, used_ms"
            " FROM certificate_uses WHERE report_hash=? AND settlement_id=?",
            (report_hash, settlement_id),
        ).fetchone()
        return None if row is None else _use(row)

    def idempotency(self, client_id: str, key: str) -> IdempotencyRecord | None:
        row = self._db.execute(
            "SELECT client_id, key, request_hash, status, body, created_ms FROM idempotency"
            " WHERE client_id=? AND key=?",
            (client_id, key),
        ).fetchone()
        return (
            None
            if row is None
            else IdempotencyRecord(row[0], row[1], row[2], row[3], row[4], row[5])
        )

    # transactions --------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[LedgerTransaction]:
        """One request's changes: a transaction of its own, or a savepoint inside ``group``."""
        if self._depth > 0:
            name = f"request{self._depth}"
            self._db.execute(f"SAVEPOINT {name}")
            self._depth += 1
            txn = _SqliteTxn(self)
            try:
                yield txn
                if txn.changes is not None:
                    self._write(txn.changes)
                self._db.execute(f"RELEASE {name}")
            except BaseException:
                self._db.execute(f"ROLLBACK TO {name}")
                self._db.execute(f"RELEASE {name}")
                raise
            finally:
                self._depth -= 1
            return
        with self.group(), self.transaction() as txn:
            yield txn

    @contextmanager
    def group(self) -> Iterator[None]:
        """Group commit: the transactions opened inside are savepoints of one SQLite
        transaction, made durable by one COMMIT (one fsync) at the end. Nothing inside is
        durable, so no answer may leave, before this block ends."""
        if self._depth > 0:
            raise StorageIntegrityError("nested group commit")
        # IMMEDIATE takes the write lock up front, so reads and writes of one request see
        # one consistent state even if another process opened the file.
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0

    @contextmanager
    def read(self) -> Iterator[LedgerView]:
        # A read transaction gives the status endpoint one consistent snapshot.
        self._db.execute("BEGIN")
        try:
            yield self
        finally:
            self._db.execute("COMMIT")

    def _write(self, changes: Changes) -> None:
        check_changes(changes)
        db = self._db
        try:
            for a in changes.accounts:
                db.execute(
                    "INSERT INTO accounts(account_id, currency, balance, held, internal, created_ms)"
                    " VALUES (?,?,?,?,?,?) ON CONFLICT(account_id) DO UPDATE SET"
                    " balance=excluded.balance, held=excluded.held",
                    (a.account_id, a.currency, a.balance, a.held, int(a.internal), a.created_ms),
                )
            for ins in changes.instructions:
                t = ins.terms
                db.execute(
                    "INSERT OR REPLACE INTO instructions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        ins.settlement_id,
                        None if t is None else t.payer_account,
                        None if t is None else t.payee_account,
                        None if t is None else t.amount,
                        None if t is None else t.currency,
                        None if t is None else t.deadline,
                        ins.terms_hash,
                        str(ins.state),
                        None if ins.reject_reason is None else str(ins.reject_reason),
                        ins.created_ms,
                        ins.updated_ms,
                        ins.prepare_report,
                        ins.outcome_report,
                    ),
                )
            for h in changes.holds:
                db.execute(
                    "INSERT INTO holds VALUES (?,?,?,?) ON CONFLICT(settlement_id) DO UPDATE SET"
                    " status=excluded.status",
                    (h.settlement_id, h.account_id, h.amount, str(h.status)),
                )
            for e in changes.journal:
                db.execute(
                    "INSERT INTO journal_entries VALUES (?,?,?,?)",
                    (e.entry_id, e.kind, e.settlement_id, e.created_ms),
                )
                db.executemany(
                    "INSERT INTO journal_lines VALUES (?,?,?,?,?)",
                    [
                        (e.entry_id, i, line.account_id, line.direction, line.amount)
                        for i, line in enumerate(e.lines)
                    ],
                )
            for ev in changes.events:
                cur = db.execute(
                    "INSERT INTO events(event_id, kind, settlement_id, payload, created_ms)"
                    " VALUES (?,?,?,?,?)",
                    (ev.event_id, ev.kind, ev.settlement_id, ev.payload, ev.created_ms),
                )
                db.executemany(
                    "INSERT INTO webhook_deliveries VALUES (?,?,0,?,NULL,NULL)",
                    [(cur.lastrowid, url, ev.created_ms) for url in self.webhook_urls],
                )
            db.executemany(
                "INSERT INTO certificate_uses VALUES (?,?,?,?,?,?)",
                [
                    (
                        u.report_hash,
                        u.settlement_id,
                        str(u.operation),
                        u.client_id,
                        u.idempotency_key,
                        u.used_ms,
                    )
                    for u in changes.certificate_uses
                ],
            )
            db.executemany(
                "INSERT INTO idempotency VALUES (?,?,?,?,?,?)",
                [
                    (r.client_id, r.key, r.request_hash, r.status, r.body, r.created_ms)
                    for r in changes.idempotency
                ],
            )
        except sqlite3.IntegrityError as exc:
            raise StorageIntegrityError(f"ledger write refused by {self.path}: {exc}") from exc

    # snapshot ------------------------------------------------------------
    def snapshot(self) -> LedgerSnapshot:
        with self.read():
            db = self._db
            accounts = tuple(
                _account(r)
                for r in db.execute(
                    "SELECT account_id, currency, balance, held, internal, created_ms FROM accounts ORDER BY account_id"
                )
            )
            holds = tuple(
                _hold(r)
                for r in db.execute(
                    "SELECT settlement_id, account_id, amount, status FROM holds ORDER BY settlement_id"
                )
            )
            instructions = tuple(
                _instruction(r) for r in db.execute(_INSTRUCTION_SELECT + " ORDER BY settlement_id")
            )
            lines: dict[str, list[JournalLine]] = {}
            for entry_id, account_id, direction, amount in db.execute(
                "SELECT entry_id, account_id, direction, amount FROM journal_lines ORDER BY entry_id, line_no"
            ):
                lines.setdefault(entry_id, []).append(JournalLine(account_id, direction, amount))
            journal = tuple(
                JournalEntry(entry_id, kind, sid, created, tuple(lines.get(entry_id, ())))
                for entry_id, kind, sid, created in db.execute(
                    "SELECT entry_id, kind, settlement_id, created_ms FROM journal_entries ORDER BY entry_id"
                )
            )
            events = tuple(
                StoredEvent(seq, Event(event_id, kind, sid, payload, created))
                for seq, event_id, kind, sid, payload, created in db.execute(
                    "SELECT seq, event_id, kind, settlement_id, payload, created_ms FROM events ORDER BY seq"
                )
            )
            uses = tuple(
                _use(r)
                for r in db.execute(
                    "SELECT report_hash, settlement_id, operation, client_id, idempotency_key, used_ms"
                    " FROM certificate_uses ORDER BY report_hash, settlement_id"
                )
            )
            idem = tuple(
                IdempotencyRecord(*r)
                for r in db.execute(
                    "SELECT client_id, key, request_hash, status, body, created_ms FROM idempotency"
                    " ORDER BY client_id, key"
                )
            )
        return LedgerSnapshot(accounts, holds, instructions, journal, events, uses, idem)

    # webhook deliveries ----------------------------------------------------
    def due_deliveries(self, now_ms: int, limit: int) -> list[Delivery]:
        if not self.webhook_urls:
            return []
        marks = ",".join("?" * len(self.webhook_urls))
        rows = self._db.execute(
            "SELECT d.event_seq, d.url, e.event_id, e.kind, e.settlement_id, e.payload,"
            " e.created_ms, d.attempts, d.next_attempt_ms, d.delivered_ms, d.last_error"
            " FROM webhook_deliveries d JOIN events e ON e.seq = d.event_seq"
            f" WHERE d.delivered_ms IS NULL AND d.next_attempt_ms <= ? AND d.url IN ({marks})"
            " ORDER BY d.next_attempt_ms, d.event_seq, d.url LIMIT ?",
            (now_ms, *self.webhook_urls, limit),
        ).fetchall()
        return [
            Delivery(r[0], r[1], Event(r[2], r[3], r[4], r[5], r[6]), r[7], r[8], r[9], r[10])
            for r in rows
        ]

    def delivery_succeeded(self, seq: int, url: str, now_ms: int) -> None:
        self._db.execute(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, delivered_ms = ?"
            " WHERE event_seq = ? AND url = ?",
            (now_ms, seq, url),
        )

    def delivery_failed(self, seq: int, url: str, next_attempt_ms: int, error: str) -> None:
        self._db.execute(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_ms = ?,"
            " last_error = ? WHERE event_seq = ? AND url = ?",
            (next_attempt_ms, error[:500], seq, url),
        )

    def instruction_states(self) -> list[tuple[bytes, str]]:
        """(settlement id, state) of every instruction: one cheap read for operators."""
        return [
            (bytes(sid), str(state))
            for sid, state in self._db.execute("SELECT settlement_id, state FROM instructions")
        ]

    def instruction_states_since(self, seq: int) -> tuple[list[tuple[bytes, str]], int]:
        with self.read():  # one snapshot: the newest seq and the states agree
            (newest,) = self._db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
            rows = self._db.execute(
                "SELECT i.settlement_id, i.state FROM instructions i WHERE i.settlement_id IN"
                " (SELECT settlement_id FROM events WHERE seq > ? AND seq <= ?)",
                (seq, newest),
            ).fetchall()
        return [(bytes(sid), str(state)) for sid, state in rows], int(newest)

    def held_settlements(self) -> list[bytes]:
        rows = self._db.execute(
            "SELECT settlement_id FROM events WHERE kind = ? GROUP BY settlement_id "
            "ORDER BY min(seq)",
            (HELD_EVENT,),
        )
        return [bytes(sid) for (sid,) in rows]

    def pending_delivery_count(self) -> int:
        if not self.webhook_urls:
            return 0
        marks = ",".join("?" * len(self.webhook_urls))
        row = self._db.execute(
            f"SELECT count(*) FROM webhook_deliveries WHERE delivered_ms IS NULL AND url IN ({marks})",
            self.webhook_urls,
        ).fetchone()
        return int(row[0])

    def close(self) -> None:
        self._db.close()


class _SqliteTxn:
    def __init__(self, storage: SqliteStorage) -> None:
        self._s = storage
        self.changes: Changes | None = None

    def account(self, account_id: str) -> Account | None:
        return self._s.account(account_id)

    def instruction(self, settlement_id: bytes) -> Instruction | None:
        return self._s.instruction(settlement_id)

    def hold(self, settlement_id: bytes) -> Hold | None:
        return self._s.hold(settlement_id)

    def certificate_use(self, report_hash: bytes, settlement_id: bytes) -> CertificateUse | None:
        return self._s.certificate_use(report_hash, settlement_id)

    def idempotency(self, client_id: str, key: str) -> IdempotencyRecord | None:
        return self._s.idempotency(client_id, key)

    def apply(self, changes: Changes) -> None:
        if self.changes is not None:
            raise StorageIntegrityError("apply called twice in one transaction")
        self.changes = changes


_INSTRUCTION_SELECT = (
    "SELECT settlement_id, payer, payee, amount, currency, deadline, terms_hash, state,"
    " reject_reason, created_ms, updated_ms, prepare_report, outcome_report FROM instructions"
)


def _account(r: tuple[object, ...]) -> Account:
    return Account(str(r[0]), str(r[1]), int(r[2]), int(r[3]), bool(r[4]), int(r[5]))  # type: ignore[call-overload]


def _hold(r: tuple[object, ...]) -> Hold:
    return Hold(r[0], str(r[1]), int(r[2]), HoldStatus(r[3]))  # type: ignore[arg-type,call-overload]


def _use(r: tuple[object, ...]) -> CertificateUse:
    return CertificateUse(r[0], r[1], Operation(r[2]), str(r[3]), str(r[4]), int(r[5]))  # type: ignore[arg-type,call-overload]


def _instruction(r: tuple[object, ...]) -> Instruction:
    sid, payer, payee, amount, currency, deadline = r[0:6]
    terms = None
    if payer is not None:
        terms = PaymentTerms(sid, payer, payee, amount, currency, deadline)  # type: ignore[arg-type]
    return Instruction(
        settlement_id=sid,  # type: ignore[arg-type]
        terms=terms,
        terms_hash=r[6],  # type: ignore[arg-type]
        state=InstructionState(r[7]),
        reject_reason=None if r[8] is None else RejectReason(r[8]),
        created_ms=r[9],  # type: ignore[arg-type]
        updated_ms=r[10],  # type: ignore[arg-type]
        prepare_report=r[11],  # type: ignore[arg-type]
        outcome_report=r[12],  # type: ignore[arg-type]
    )
