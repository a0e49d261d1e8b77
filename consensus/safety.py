"""The safety store: what a node has signed, so it never signs a conflicting decision.

Like a validator's slashing protection, every honest node remembers each decision it has
signed a BLS share for, keyed by settlement id across all targets (a COMMIT sent to the
asset chain and an ABORT sent to the bank for one settlement would break atomicity as
surely as two certificates for one target). Before signing a round's reports a node checks
each decision against that record (``consensus.report.conflicts``: same settlement, one
COMMIT and one ABORT) and refuses a report that conflicts. It also signs at most once per
(epoch, round), at increasing positions, so an equivocating leader cannot collect two
shares from it for one round.

Ordering contract (the runtime's part of the safety argument). The node never writes to
disk: it returns ``Persist(update)`` actions. Within the tuple of actions one event
produces, the runtime must make every ``Persist`` durable *before* it releases any action
that follows it, in particular the ``Send`` carrying the shares the update protects. A
crash between the two then loses the share, never the record. On restart the runtime
gives back the fold of everything it persisted (``PersistedState.apply``, or the
incremental ``DurableStore``) in the ``Start`` event. The in-memory harness enforces the
contract: it refuses to deliver a node's send while that node's safety record holds a
decision its durable store does not.

The pacemaker's epoch counters travel in the same updates; losing them would only cost
liveness, but persisting them lets a restarted node rejoin its epoch at once.

This module must never forget a recorded decision, accept a record that would hold two
conflicting decisions, or do I/O itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from consensus.report import Decision, conflicts

__all__ = [
    "DurableStore",
    "PacemakerRecord",
    "PersistUpdate",
    "PersistedState",
    "SafetyStore",
    "SignedRecord",
]


@dataclass(frozen=True, slots=True)
class PacemakerRecord:
    """The pacemaker's state (OCR: epoch, highest sent, highest received per node)."""

    epoch: int
    highest_sent_epoch: int
    highest_received: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """A round the node signed shares for, and the decisions it newly committed to."""

    epoch: int
    round: int
    decisions: tuple[Decision, ...]


@dataclass(frozen=True, slots=True)
class PersistUpdate:
    """One write the node asks the runtime to make durable."""

    pacemaker: PacemakerRecord | None = None
    signed: SignedRecord | None = None


def _sort_key(d: Decision) -> tuple[bytes, int, bytes]:
    return (d.settlement_id, int(d.action), d.terms_hash)


@dataclass(frozen=True, slots=True)
class PersistedState:
    """Everything a node persisted, as given back on restart."""

    pacemaker: PacemakerRecord | None = None
    decisions: tuple[Decision, ...] = ()  # sorted, distinct
    last_signed: tuple[int, int] = (0, 0)  # (epoch, round) of the latest signed round

    def apply(self, update: PersistUpdate) -> PersistedState:
        """The state after ``update`` (the reference fold; DurableStore is the fast one)."""
        pacemaker = update.pacemaker if update.pacemaker is not None else self.pacemaker
        decisions = self.decisions
        last_signed = self.last_signed
        if update.signed is not None:
            merged = set(decisions) | set(update.signed.decisions)
            decisions = tuple(sorted(merged, key=_sort_key))
            last_signed = max(last_signed, (update.signed.epoch, update.signed.round))
        return PersistedState(pacemaker, decisions, last_signed)


@dataclass(slots=True)
class DurableStore:
    """A runtime's incremental fold of Persist updates (the harness keeps one per node in
    memory and keeps it across simulated crashes; ``node/`` backs it with a database)."""

    pacemaker: PacemakerRecord | None = None
    decisions: dict[Decision, None] = field(default_factory=dict)
    last_signed: tuple[int, int] = (0, 0)

    def apply(self, update: PersistUpdate) -> None:
        if update.pacemaker is not None:
            self.pacemaker = update.pacemaker
        if update.signed is not None:
            for d in update.signed.decisions:
                self.decisions[d] = None
            self.last_signed = max(self.last_signed, (update.signed.epoch, update.signed.round))

    def state(self) -> PersistedState:
        return PersistedState(
            self.pacemaker, tuple(sorted(self.decisions, key=_sort_key)), self.last_signed
        )

    @property
    def decision_count(self) -> int:
        return len(self.decisions)


class SafetyStore:
    """The node's in-memory view of what it signed; changes only through ``record``."""

    __slots__ = ("_by_settlement", "_count", "_last_signed")

    def __init__(self, persisted: PersistedState) -> None:
        self._by_settlement: dict[bytes, list[Decision]] = {}
        self._count = 0
        self._last_signed = persisted.last_signed
        self._add(persisted.decisions)

    def _add(self, decisions: Iterable[Decision]) -> list[Decision]:
        added = []
        for d in decisions:
            known = self._by_settlement.setdefault(d.settlement_id, [])
            if d in known:
                continue
            if any(conflicts(d, k) for k in known):
                # Only reachable through a corrupted persisted state or a caller that
                # skipped ``conflict``: signing on would be the very failure we prevent.
                raise ValueError(
                    f"safety record would hold conflicting decisions for settlement "
                    f"0x{d.settlement_id.hex()}"
                )
            known.append(d)
            added.append(d)
            self._count += 1
        return added

    @property
    def last_signed(self) -> tuple[int, int]:
        return self._last_signed

    @property
    def decision_count(self) -> int:
        return self._count

    def may_sign_round(self, epoch: int, round_: int) -> bool:
        """A node signs each (epoch, round) at most once, and only moving forward."""
        return (epoch, round_) > self._last_signed

    def conflict(self, decision: Decision, pending: Sequence[Decision] = ()) -> Decision | None:
        """An earlier signed decision (or one in ``pending``, about to be signed in the same
        round) that ``decision`` conflicts with, or None."""
        for earlier in self._by_settlement.get(decision.settlement_id, ()):
            if conflicts(decision, earlier):
                return earlier
        for earlier in pending:
            if conflicts(decision, earlier):
                return earlier
        return None

    def record(self, epoch: int, round_: int, decisions: Sequence[Decision]) -> PersistUpdate:
        """Remember a signed round and its decisions; return the update to persist before
        the shares leave the node."""
        if not self.may_sign_round(epoch, round_):
            raise ValueError(f"round ({epoch}, {round_}) is not after {self._last_signed}")
        added = self._add(decisions)
        self._last_signed = (epoch, round_)
        return PersistUpdate(signed=SignedRecord(epoch, round_, tuple(added)))

    def snapshot(self) -> list[object]:
        """A canonical, encodable view of the store (for state comparisons in tests)."""
        items = sorted(
            (_sort_key(d) for known in self._by_settlement.values() for d in known),
        )
        return [list(self._last_signed), [list(i) for i in items]]
