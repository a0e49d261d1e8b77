"""Leg trackers: what one node knows about the legs on one target, turned into facts.

A node watches every leg of a settlement on the leg's own target: a chain's DvP
coordinator or the bank. A tracker takes what the world reports about that target and
answers with ``node.dvp.Fact`` values (the node's observation) and with what a
transmission to the target needs. Trackers are pure and synchronous: the world (a trio
pump in real mode, the simulated world in sim) hands them events, and they never read a
clock, the network or the disk. Time enters only as the leg's *own* clock:

- an escrow leg's clock is the timestamp of the newest block the node has seen;
- a bank leg's clock is the bank's time, as the bank states it in its answers and
  callbacks (``as_of_ms``).

A leg is EXPIRED when its own clock passed its deadline while it is not final, so every
honest node that saw the same chain or bank answers agrees, whatever its wall clock says.

``EscrowLegTracker`` takes the coordinator's events (``chain_adapters.model`` types) as
the event watcher delivers them, each once its block has the target's confirmations, and
an event *retracted* by a reorg. A retraction undoes what its event said: the tracker asks
for the settlement's state to be read again (``refresh``). Facts: PREPARED, COMMITTED,
ABORTED (an unsafe self-refund, EXPIRED on chain, also rolled the leg back: it reads as
ABORTED), and EXPIRED.

``BankLegTracker`` takes instruction statuses (callbacks, polls, transmission answers).
The bank leg of a settlement is REQUESTED with terms derived from the asset chain's
escrow terms (``SettlementBook``); PREVALIDATED -> PREPARED, REJECTED -> REJECTED,
EXECUTED -> COMMITTED, CANCELLED -> ABORTED. Statuses never move backwards: an answer
that is older than what the tracker knows (a late poll, a duplicate callback) is ignored.

``ReportedFactsTracker`` holds facts a target reports directly (the ``file`` dry-run
target of tests and demos).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Final

from bank_adapter.client import InstructionStatus
from bank_adapter.ledger import InstructionState
from bank_adapter.terms import PaymentTerms
from chain_adapters.model import (
    EscrowEvent,
    LegLocked,
    SettlementAborted,
    SettlementCommitted,
    SettlementCreated,
    SettlementExpired,
    State,
    Terms,
    terms_hash,
)
from consensus.report import Action, Decision, Report
from node.dvp import Fact, FactKind

__all__ = [
    "APPLIED_FACT",
    "BankLegTracker",
    "EscrowLegTracker",
    "EscrowRecord",
    "ReportedFactsTracker",
    "SettlementBook",
    "bank_account",
]

#: The fact a target reports once it applied a decision (COMMIT or ABORT).
APPLIED_FACT: Final = {Action.COMMIT: FactKind.COMMITTED, Action.ABORT: FactKind.ABORTED}

#: A settlement's place in the service order: (rank, a, b), smallest first. Rank 0: the
#: asset chain's creation event at (block number, log index); rank 1: another chain's
#: creation event, for a settlement the asset chain has not shown; rank 2: a bank hold
#: whose settlement no chain shows, by its deadline; rank 3: facts a ``file`` target
#: stated. Every honest member that saw the same blocks and answers derives the same keys.
OrderKey = tuple[int, int, int]


def bank_account(address: str) -> str:
    """The bank account id of a party: its EVM address in lower-case hex."""
    return address.lower()


@dataclass
class SettlementBook:
    """What a node knows about settlements across its targets.

    The asset chain's coordinator announces every settlement with its full terms
    (``SettlementCreated``). The bank leg's terms are derived from them, identically on
    every node, so the committee asks the bank to hold exactly what the escrow promised:
    payer = the buyer's address (lower-case hex), payee = the seller's address, amount =
    the on-chain paymentAmount, currency = the bank target's currency, deadline = the
    on-chain deadline.
    """

    terms: dict[bytes, Terms] = field(default_factory=dict)  # asset-chain terms by settlement
    # Settlements every leg of which applied a decision, as this node's observer saw them:
    # nothing is left to decide, so the trackers leave them out of their facts (a round's
    # cost then follows the open settlements, not every settlement ever seen). A chain
    # reorg that retracts one of their events takes it out of here again.
    settled: set[bytes] = field(default_factory=set)
    # The service order: open settlements, oldest first, by a key every honest member
    # derives alike from what its targets said (``OrderKey``). A node observes a prefix of
    # it, so members agree on which settlements a round serves, and a settlement only
    # moves forward as older ones end: none starves behind newer ones.
    order: list[tuple[OrderKey, bytes]] = field(default_factory=list)
    keys: dict[bytes, OrderKey] = field(default_factory=dict)  # settled ones included
    # Settlements a certificate decided, out of the order until a tracker learns something
    # about them (``touch``) or their time is up (``unpark_due``): their decisions are on
    # the way, so they take no room in a round and cost nothing to walk past.
    parked: dict[bytes, float] = field(default_factory=dict)  # sid -> until (node time)
    _due: list[tuple[float, bytes]] = field(default_factory=list)  # heap of (until, sid)
    # Settlements whose deadline passed on some leg while they waited (``defer``): in the
    # same order, served only when a round has room after the live ones. Their end is an
    # ABORT whenever it comes; serving them first under overload would spend the rounds
    # on settlements that can no longer commit while live ones run out of time behind
    # them, and those would expire in turn.
    late: list[tuple[OrderKey, bytes]] = field(default_factory=list)
    _late_ids: set[bytes] = field(default_factory=set)

    def park(self, sid: bytes, until: float) -> None:
        key = self.keys.get(sid)
        if key is None or sid in self.settled or sid in self.parked:
            return
        self._drop(key, sid)
        self.parked[sid] = until
        heappush(self._due, (until, sid))

    def defer(self, sid: bytes) -> None:
        """``sid``'s deadline passed while it waited: from the order to ``late``."""
        key = self.keys.get(sid)
        if key is None or sid in self._late_ids or sid in self.settled or sid in self.parked:
            return
        self._drop(key, sid)
        self._late_ids.add(sid)
        insort(self.late, (key, sid))

    def touch(self, sid: bytes) -> None:
        """A tracker learned something about ``sid``: a parked one is back in the order."""
        if self.parked.pop(sid, None) is not None:
            insort(self.order, (self.keys[sid], sid))

    def unpark_due(self, now: float) -> None:
        due = self._due
        while due and due[0][0] <= now:
            until, sid = heappop(due)
            if self.parked.get(sid) == until:
                self.touch(sid)

    def admit(self, sid: bytes, key: OrderKey) -> None:
        """Place a settlement in the order (an earlier key than the one it has moves it)."""
        known = self.keys.get(sid)
        if known is not None and known <= key:
            return
        if known is not None and sid not in self.settled and sid not in self.parked:
            self._drop(known, sid)  # from the order, or from late: it is placed anew
        self.keys[sid] = key
        if sid not in self.settled and sid not in self.parked:
            insort(self.order, (key, sid))

    def retire(self, sid: bytes) -> None:
        """Every leg of ``sid`` applied a decision: it leaves the order."""
        if sid in self.settled:
            return
        self.settled.add(sid)
        key = self.keys.get(sid)
        if self.parked.pop(sid, None) is None and key is not None:
            self._drop(key, sid)

    def reopen(self, sid: bytes) -> None:
        """A reorg retracted an event of a settled ``sid``: it is open again, in its place."""
        if sid not in self.settled:
            return
        self.settled.discard(sid)
        key = self.keys.get(sid)
        if key is not None:
            insort(self.order, (key, sid))

    def _drop(self, key: OrderKey, sid: bytes) -> None:
        """Take ``sid`` out of the list that holds it (the order, or ``late``)."""
        held = self.order
        if sid in self._late_ids:
            self._late_ids.discard(sid)
            held = self.late
        i = bisect_left(held, (key, sid))
        if i < len(held) and held[i] == (key, sid):
            del held[i]

    def bank_terms(self, settlement_id: bytes, currency: str) -> PaymentTerms | None:
        t = self.terms.get(settlement_id)
        if t is None:
            return None
        return PaymentTerms(
            settlement_id=settlement_id,
            payer_account=bank_account(t.buyer),
            payee_account=bank_account(t.seller),
            amount=t.payment_amount,
            currency=currency,
            deadline=t.deadline,
        )


# --------------------------------------------------------------------------- escrow legs


@dataclass(frozen=True, slots=True)
class EscrowRecord:
    """One coordinator event as the watcher reported it: delivered, or retracted by a reorg."""

    event: EscrowEvent
    retracted: bool = False
    position: tuple[int, int] = (0, 0)  # (block number, log index) of the event


_FACT_OF_STATE: Final = {
    State.PREPARED: FactKind.PREPARED,
    State.COMMITTED: FactKind.COMMITTED,
    State.ABORTED: FactKind.ABORTED,
    State.EXPIRED: FactKind.ABORTED,
}
_FINAL_STATES: Final = frozenset({State.COMMITTED, State.ABORTED, State.EXPIRED})
_DONE_ON_CHAIN: Final = {
    Action.COMMIT: frozenset({State.COMMITTED}),
    Action.ABORT: frozenset({State.ABORTED, State.EXPIRED}),
}


class EscrowLegTracker:
    """The legs of one chain coordinator (module docstring)."""

    def __init__(self, leg: str, book: SettlementBook) -> None:
        self.leg = leg
        self.book = book
        # The asset chain's terms are the ones the bank leg's terms are derived from.
        self.feeds_book = leg == "A"
        self.terms: dict[bytes, Terms] = {}
        self.states: dict[bytes, State] = {}
        self.block_time = 0  # the leg's clock: the newest block's timestamp seen
        self._hashes: dict[bytes, tuple[Terms, bytes]] = {}
        self.version = 0  # changes whenever what facts() says may have changed

    def apply(self, records: Iterable[EscrowRecord], block_time: int) -> tuple[bytes, ...]:
        """Take newly confirmed (or retracted) events and the head's timestamp; return the
        settlements whose state must be read again from the chain (``refresh``)."""
        self.version += 1
        refresh: dict[bytes, None] = {}
        for record in records:
            sid: bytes | None = getattr(record.event, "settlement_id", None)
            if sid is None:
                continue
            self.book.touch(sid)
            if record.retracted:
                refresh[sid] = None
                self.book.reopen(sid)  # not over after all: report it again
                continue
            event = record.event
            if isinstance(event, SettlementCreated):
                self.terms[sid] = event.terms
                self.states.setdefault(sid, State.CREATED)
                if self.feeds_book:
                    self.book.terms[sid] = event.terms
                self.book.admit(sid, (0 if self.feeds_book else 1, *record.position))
            elif isinstance(event, LegLocked):
                self.states[sid] = event.state
            elif isinstance(event, SettlementCommitted):
                self.states[sid] = State.COMMITTED
            elif isinstance(event, SettlementAborted):
                self.states[sid] = State.ABORTED
            elif isinstance(event, SettlementExpired):
                self.states[sid] = State.EXPIRED
        # A chain's time only moves forward; a reorg to a branch with an earlier head does
        # not make an expired leg live again.
        self.block_time = max(self.block_time, block_time)
        return tuple(refresh)

    def refresh(self, states: Iterable[tuple[bytes, State]]) -> None:
        """The chain's current state of settlements asked for by ``apply``."""
        self.version += 1
        for sid, state in states:
            self.book.touch(sid)
            if state == State.NONE:
                self.terms.pop(sid, None)
                self.states.pop(sid, None)
                self._hashes.pop(sid, None)
                if self.feeds_book:
                    self.book.terms.pop(sid, None)
            else:
                self.states[sid] = state

    def facts(self) -> set[Fact]:
        """Every open settlement's facts (tests and tools; a node observes ``facts_of``
        the settlements it serves)."""
        return {fact for sid in self.terms for fact in self.facts_of(sid)}

    def facts_of(self, sid: bytes) -> list[Fact]:
        """What this node saw of the leg of ``sid`` here (nothing once it is settled)."""
        terms = self.terms.get(sid)
        if terms is None or sid in self.book.settled:
            return []
        facts = []
        state = self.states.get(sid, State.CREATED)
        digest = self._hash_of(sid, terms)
        kind = _FACT_OF_STATE.get(state)
        if kind is not None:
            facts.append(Fact(sid, self.leg, kind, digest))
        if state not in _FINAL_STATES and self.block_time > terms.deadline:
            facts.append(Fact(sid, self.leg, FactKind.EXPIRED, digest))
        return facts

    def _hash_of(self, sid: bytes, terms: Terms) -> bytes:
        # Every round observes every open settlement: hash each one's terms once.
        cached = self._hashes.get(sid)
        if cached is None or cached[0] is not terms:
            cached = (terms, terms_hash(terms))
            self._hashes[sid] = cached
        return cached[1]

    def already_applied(self, decision: Decision) -> bool:
        done = _DONE_ON_CHAIN.get(decision.action)
        return done is not None and self.states.get(decision.settlement_id) in done

    def transmission_terms(self, report: Report) -> tuple[Terms, ...] | None:
        """The terms ``applyReport`` needs, one per decision; None if one is unknown here."""
        terms = []
        for decision in report.decisions:
            known = self.terms.get(decision.settlement_id)
            if known is None:
                return None
            terms.append(known)
        return tuple(terms)


# --------------------------------------------------------------------------- bank legs

_BANK_FINAL: Final = frozenset(
    {InstructionState.REJECTED, InstructionState.EXECUTED, InstructionState.CANCELLED}
)
_BANK_FACT: Final = {
    InstructionState.PREVALIDATED: FactKind.PREPARED,
    InstructionState.REJECTED: FactKind.REJECTED,
    InstructionState.EXECUTED: FactKind.COMMITTED,
    InstructionState.CANCELLED: FactKind.ABORTED,
}
# A served settlement that no certificate has sent to the bank is asked about this many
# times less often than one the bank should have spoken of (``BankLegTracker.stale``).
UNEXPECTED_QUIET_FACTOR: Final = 4.0
_BANK_RANK: Final = {
    InstructionState.RECEIVED: 0,
    InstructionState.PREVALIDATED: 1,
    InstructionState.REJECTED: 2,
    InstructionState.EXECUTED: 2,
    InstructionState.CANCELLED: 2,
}
_DONE_AT_BANK: Final = {
    Action.COMMIT: InstructionState.EXECUTED,
    Action.ABORT: InstructionState.CANCELLED,
}


class BankLegTracker:
    """The bank legs of a node (module docstring). ``now`` arguments are the node's own
    clock, used only to pace polling (which settlements the bank has not spoken of lately)."""

    def __init__(self, leg: str, currency: str, book: SettlementBook) -> None:
        self.leg = leg
        self.currency = currency
        self.book = book
        self.statuses: dict[bytes, InstructionStatus] = {}
        self.bank_time_ms: int | None = None  # the leg's clock: the latest bank time heard
        self._terms: dict[bytes, tuple[PaymentTerms, bytes]] = {}
        self._heard: dict[bytes, float] = {}  # node time the bank last spoke of a settlement
        # Settlements a certificate decided at the bank that the bank has not yet said it
        # applied: the rank of the state it will say then (``expect``).
        self._expected: dict[bytes, int] = {}
        self.version = 0  # changes whenever what facts() says may have changed

    def learn(
        self, statuses: Iterable[InstructionStatus], as_of_ms: int | None, now: float
    ) -> None:
        """Take statuses the bank stated at its time ``as_of_ms`` (None: not stated)."""
        self.version += 1
        if as_of_ms is not None and (self.bank_time_ms is None or as_of_ms > self.bank_time_ms):
            self.bank_time_ms = as_of_ms
        for status in statuses:
            sid = status.settlement_id
            self._heard[sid] = now
            self.book.touch(sid)
            current = self.statuses.get(sid)
            rank = _BANK_RANK[status.state]
            if rank >= self._expected.get(sid, 3):
                del self._expected[sid]
            if current is None or rank >= _BANK_RANK[current.state]:
                self.statuses[sid] = status
                if sid not in self.book.terms and _orphan_hold(status):
                    assert status.deadline is not None
                    self.book.admit(sid, (2, int(status.deadline), 0))

    def facts(self) -> set[Fact]:
        """Every open settlement's facts (tests and tools; a node observes ``facts_of``
        the settlements it serves)."""
        sids = [*self.book.terms, *self.statuses]
        return {fact for sid in dict.fromkeys(sids) for fact in self.facts_of(sid)}

    def facts_of(self, sid: bytes) -> list[Fact]:
        """What this node saw of the bank leg of ``sid`` (nothing once it is settled)."""
        if sid in self.book.settled:
            return []
        bank_time_s = None if self.bank_time_ms is None else self.bank_time_ms / 1000
        status = self.statuses.get(sid)
        known = self.terms_of(sid) if sid in self.book.terms else None
        if known is None:
            # A hold whose settlement this node no longer knows (a reorg took the creation
            # event away): the bank's own record still says what it holds and until when,
            # so the committee can end it (ABORT once expired; a COMMIT signed before still
            # binds every member's safety record).
            if status is None or not _orphan_hold(status):
                return []
            assert status.deadline is not None
            orphan = [Fact(sid, self.leg, FactKind.PREPARED, status.terms_hash)]
            if bank_time_s is not None and bank_time_s > status.deadline:
                orphan.append(Fact(sid, self.leg, FactKind.EXPIRED, status.terms_hash))
            return orphan
        terms, digest = known
        facts = [Fact(sid, self.leg, FactKind.REQUESTED, digest)]
        if status is not None and status.terms_hash == digest and status.state in _BANK_FACT:
            facts.append(Fact(sid, self.leg, _BANK_FACT[status.state], digest))
        final = status is not None and status.state in _BANK_FINAL
        if not final and bank_time_s is not None and bank_time_s > terms.deadline:
            facts.append(Fact(sid, self.leg, FactKind.EXPIRED, digest))
        return facts

    def terms_of(self, sid: bytes) -> tuple[PaymentTerms, bytes] | None:
        """The bank leg's terms and their hash, derived once per settlement."""
        cached = self._terms.get(sid)
        if cached is None:
            terms = self.book.bank_terms(sid, self.currency)
            if terms is None:
                return None
            cached = (terms, terms.terms_hash())
            self._terms[sid] = cached
        return cached

    def already_applied(self, decision: Decision) -> bool:
        known = self.statuses.get(decision.settlement_id)
        if known is None:
            return False
        if decision.action is Action.PREPARE:
            return known.state != InstructionState.RECEIVED
        return known.state == _DONE_AT_BANK.get(decision.action)

    def transmission_terms(self, report: Report) -> tuple[PaymentTerms, ...]:
        """The terms of the report's PREPARE decisions that this node can derive. Terms it
        cannot derive (or derives differently) are left out: the bank refuses that one
        decision, and another transmitter may have them."""
        terms = []
        for decision in report.decisions:
            if decision.action is Action.PREPARE:
                known = self.terms_of(decision.settlement_id)
                if known is not None and known[1] == decision.terms_hash:
                    terms.append(known[0])
        return tuple(terms)

    def expect(self, decision: Decision) -> None:
        """A certificate decided ``decision`` for this leg: the bank will speak of it once
        it applies it (PREPARE: a hold or a rejection; COMMIT, ABORT: a final state)."""
        rank = 1 if decision.action is Action.PREPARE else 2
        sid = decision.settlement_id
        status = self.statuses.get(sid)
        if (status is None or _BANK_RANK[status.state] < rank) and rank > self._expected.get(
            sid, 0
        ):
            self._expected[sid] = rank

    def stale(
        self, now: float, quiet_for: float, limit: int, serving: Iterable[bytes]
    ) -> tuple[bytes, ...]:
        """Up to ``limit`` of the settlements this node is ``serving`` (those of its last
        observation: the oldest open ones) that the bank has not spoken of for a while
        (a lost callback, a bank restart): the ones to ask about now. A while is
        ``quiet_for`` seconds when a certificate decided something the bank has not yet
        said it applied (``expect``), and ``UNEXPECTED_QUIET_FACTOR`` times that when not:
        then the committee, not the bank, is what the settlement waits for, and under load
        asking every quiet one would cost the node and the bank a request each per
        ``quiet_for`` for nothing. It still asks, more slowly: this node may have missed
        the certificate (down, partitioned, restarted). Asking counts as hearing, so each
        is asked at most once per while. Queued settlements are not asked about: a poll's
        cost follows a round's, not the backlog."""
        over = self.book.settled
        expected = self._expected
        stale: list[bytes] = []
        for sid in serving:
            if len(stale) >= limit:
                break
            if sid in over or (sid not in self.book.terms and sid not in self.statuses):
                continue
            status = self.statuses.get(sid)
            if status is not None and status.state in _BANK_FINAL:
                continue
            wait = quiet_for if sid in expected else quiet_for * UNEXPECTED_QUIET_FACTOR
            if now - self._heard.setdefault(sid, now) > wait:
                stale.append(sid)
        for sid in stale:
            self._heard[sid] = now
        return tuple(stale)


def _orphan_hold(status: InstructionStatus) -> bool:
    """A hold the bank keeps, with the deadline it keeps it until."""
    return status.state is InstructionState.PREVALIDATED and status.deadline is not None


# --------------------------------------------------------------------------- reported facts


class ReportedFactsTracker:
    """Facts a target states directly (the ``file`` dry-run target): the latest set wins."""

    def __init__(self, leg: str, book: SettlementBook | None = None) -> None:
        self.leg = leg
        self.book = book
        self.reported: frozenset[Fact] = frozenset()
        self._by_settlement: defaultdict[bytes, list[Fact]] = defaultdict(list)
        self.version = 0

    def replace(self, facts: Iterable[Fact]) -> None:
        self.version += 1
        self.reported = frozenset(f for f in facts if f.target == self.leg)
        self._by_settlement = defaultdict(list)
        for fact in sorted(self.reported):
            self._by_settlement[fact.settlement_id].append(fact)
            if self.book is not None:
                self.book.touch(fact.settlement_id)
                self.book.admit(fact.settlement_id, (3, 0, 0))

    def facts(self) -> set[Fact]:
        return set(self.reported)

    def facts_of(self, sid: bytes) -> list[Fact]:
        return list(self._by_settlement.get(sid, ()))

    def already_applied(self, decision: Decision) -> bool:
        kind = APPLIED_FACT.get(decision.action)
        return kind is not None and any(
            f.settlement_id == decision.settlement_id and f.kind is kind for f in self.reported
        )
