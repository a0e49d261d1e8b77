"""The node's durable safety store: every Persist update on disk before the next action.

The consensus core returns ``Persist(update)`` actions and relies on the runtime to make
each one durable before it releases any later action of the same step (above all the
Send that carries BLS shares). This store does that with SQLite in WAL mode and
``synchronous=FULL``: :meth:`apply` returns only after the transaction is on disk, so a
node killed with SIGKILL at any point restarts with every decision it ever let a share
out for (:meth:`load`), and can never sign a conflicting one.

This module never decides anything; it stores and gives back exactly what it was given.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgpack

from consensus.report import Action, Decision
from consensus.safety import DurableStore, PacemakerRecord, PersistedState, PersistUpdate

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    settlement_id BLOB NOT NULL,
    action INTEGER NOT NULL,
    terms_hash BLOB NOT NULL,
    PRIMARY KEY (settlement_id, action, terms_hash)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


class SafetyFile:
    """A SQLite-backed ``DurableStore`` (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._memory = DurableStore()
        self._load_into_memory()

    def _load_into_memory(self) -> None:
        for sid, action, terms in self._db.execute(
            "SELECT settlement_id, action, terms_hash FROM decisions"
        ):
            self._memory.decisions[Decision(bytes(sid), Action(action), bytes(terms))] = None
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        if "pacemaker" in meta:
            epoch, sent, received = msgpack.unpackb(meta["pacemaker"])
            self._memory.pacemaker = PacemakerRecord(epoch, sent, tuple(received))
        if "last_signed" in meta:
            epoch, round_ = msgpack.unpackb(meta["last_signed"])
            self._memory.last_signed = (epoch, round_)

    def apply(self, update: PersistUpdate) -> None:
        """Make ``update`` durable (one transaction, fsynced) and fold it in memory."""
        with self._db:  # BEGIN ... COMMIT, rolled back on error
            self._db.execute("BEGIN IMMEDIATE")
            if update.signed is not None:
                self._db.executemany(
                    "INSERT OR IGNORE INTO decisions VALUES (?, ?, ?)",
                    [
                        (d.settlement_id, int(d.action), d.terms_hash)
                        for d in update.signed.decisions
                    ],
                )
                last = max(self._memory.last_signed, (update.signed.epoch, update.signed.round))
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('last_signed', ?)",
                    (msgpack.packb(list(last)),),
                )
            if update.pacemaker is not None:
                p = update.pacemaker
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('pacemaker', ?)",
                    (msgpack.packb([p.epoch, p.highest_sent_epoch, list(p.highest_received)]),),
                )
        self._memory.apply(update)

    def load(self) -> PersistedState:
        return self._memory.state()

    @property
    def decision_count(self) -> int:
        return self._memory.decision_count

    def close(self) -> None:
        self._db.close()
