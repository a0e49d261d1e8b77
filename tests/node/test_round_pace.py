"""When a leader starts its rounds: four node drivers on a virtual clock, no world.

Messages take ``HOP`` seconds, timers fire at their deadlines, and every driver sees the
same chain events at the same moment (as members woken by the chain's block
announcements do). The rules held here are the latency path's:

- news that comes while a round runs starts the next round when that one finishes, not a
  DeltaRound tick later;
- a leg's clock moving is not news: after a round decided a settlement, a block that
  brings nothing new starts no round.
"""

from __future__ import annotations

import dataclasses
import heapq
from typing import Any

from bank_adapter.ledger import InstructionState
from chain_adapters.model import Leg as EscrowLeg
from chain_adapters.model import LegLocked, SettlementCreated, State, terms_hash
from consensus.events import Broadcast, Certified, Send, Start
from consensus.events import MessageReceived as Message
from consensus.harness import simulated_committee
from consensus.report import Action
from consensus.safety import PersistedState
from node.driver import (
    BankUpdate,
    ChainUpdate,
    DriverConfig,
    NodeDriver,
    NodeEvent,
    Observed,
    SetTimer,
    TargetSpec,
    TimerFired,
    Transmit,
)
from node.legs import EscrowRecord
from tests.node.test_driver import COORDINATOR, SELLER, TOKEN, bank_status, escrow_terms, sid

N, F = 4, 1
DELTA_ROUND = 0.2
HOP = 0.005  # one message's delay


class Committee:
    """Four drivers and a virtual clock: a queue of (time, order, member, event)."""

    def __init__(self) -> None:
        config, keys = simulated_committee(
            N,
            F,
            targets=("chain-A", "bank"),
            delta_progress=5.0,
            delta_resend=2.0,
            delta_round=DELTA_ROUND,
            delta_grace=0.0,
            delta_stage=0.5,
        )
        specs = (TargetSpec("chain-A", "A", "evm"), TargetSpec("bank", "bank", "bank", "USD"))
        self.drivers = [
            NodeDriver(DriverConfig(config, i, "multi-chain-messaging", specs), keys[i])
            for i in range(N)
        ]
        self.now = 0.0
        self._queue: list[tuple[float, int, int, Any]] = []
        self._order = 0
        self._timers: list[dict[Any, float]] = [{} for _ in range(N)]
        self.observed: list[tuple[float, int, Observed]] = []  # (time, member, effect)
        self.transmits: list[Transmit] = []
        self.certified: list[tuple[float, str, tuple[Action, ...]]] = []  # at member 0
        for i in range(N):
            self._put(0.0, i, Start(0.0, PersistedState()))

    def _put(self, at: float, member: int, event: Any) -> None:
        self._order += 1
        heapq.heappush(self._queue, (at, self._order, member, event))

    def _handle(self, member: int, event: NodeEvent) -> None:
        for effect in self.drivers[member].handle(event):
            if isinstance(effect, Send):
                self._put(self.now + HOP, effect.to, Message(0.0, member, effect.data))
            elif isinstance(effect, Broadcast):
                for j in range(N):
                    if j != member:
                        self._put(self.now + HOP, j, Message(0.0, member, effect.data))
            elif isinstance(effect, SetTimer):
                self._timers[member][effect.timer] = effect.at
                self._put(effect.at, member, TimerFired(effect.at, effect.timer))
            elif isinstance(effect, Transmit):
                self.transmits.append(effect)
            elif isinstance(effect, Observed):
                self.observed.append((self.now, member, effect))
            elif member == 0 and isinstance(effect, Certified):
                decisions = effect.certificate.report.decisions
                if decisions:
                    actions = tuple(d.action for d in decisions)
                    self.certified.append((self.now, effect.target, actions))

    def run_until(self, until: float) -> None:
        while self._queue and self._queue[0][0] <= until:
            at, _, member, event = heapq.heappop(self._queue)
            self.now = at
            if isinstance(event, TimerFired):
                if self._timers[member].get(event.timer) != at:
                    continue  # re-set or cancelled since
                del self._timers[member][event.timer]
            self._handle(member, _at(event, at))
        self.now = until

    def chain(self, update: ChainUpdate | BankUpdate) -> None:
        """Every member's watcher (or bank callback) delivers ``update`` now."""
        for i in range(N):
            self._handle(i, _at(update, self.now))

    def round_starts(self) -> dict[tuple[int, int], float]:
        """When each round began: its first observation (the leader's, made as it asks)."""
        starts: dict[tuple[int, int], float] = {}
        for at, _, o in self.observed:
            starts.setdefault((o.epoch, o.round), at)
        return starts


def _at(event: Any, now: float) -> Any:
    return dataclasses.replace(event, now=now)


def lock(i: int, block_time: int) -> ChainUpdate:
    t = escrow_terms(i)
    created = SettlementCreated(COORDINATOR, sid(i), terms_hash(t), SELLER, t)
    locked = LegLocked(COORDINATOR, sid(i), EscrowLeg.ASSET, SELLER, TOKEN, 10, State.PREPARED)
    return ChainUpdate(0.0, "chain-A", (EscrowRecord(created), EscrowRecord(locked)), block_time)


def test_news_during_a_round_starts_the_next_round_when_it_finishes() -> None:
    c = Committee()
    c.run_until(1.0)  # a few empty rounds at the DeltaRound pace
    began = max(c.round_starts().values())
    # The lock lands after the members answered this round's request, before it ends.
    c.run_until(began + 3 * HOP)
    c.chain(lock(1, block_time=100))
    c.run_until(began + DELTA_ROUND + 0.5)
    later = sorted(t for t in c.round_starts().values() if t > began)
    assert later, "no round after the one the lock interrupted"
    # It finished after four hops; the next one starts then (no sooner than a quarter of
    # DeltaRound after the last start), not at the DeltaRound tick.
    assert later[0] <= began + DELTA_ROUND / 4 + 1e-9
    prepared = [t for t, target, actions in c.certified if target == "bank"]
    assert prepared and prepared[0] < began + DELTA_ROUND / 2
    assert c.certified[0][2] == (Action.PREPARE,)


def test_a_block_that_brings_nothing_new_starts_no_round() -> None:
    c = Committee()
    c.run_until(0.95)  # between two rounds: the lock starts one at once
    c.chain(lock(1, block_time=100))
    while not c.certified:  # the PREPARE round, hop by hop
        c.run_until(c.now + HOP)
    assert c.certified[0][1:] == ("bank", (Action.PREPARE,))
    started = max(c.round_starts().values())
    # The settlement now waits for the bank's hold; a block that only moves the leg's
    # clock is no reason for a round (it would decide nothing, and delay the one the
    # hold needs).
    c.chain(ChainUpdate(0.0, "chain-A", (), 101))
    c.run_until(started + DELTA_ROUND - HOP)
    assert max(c.round_starts().values()) == started
    c.chain(lock(2, block_time=102))  # new work does start one
    assert max(c.round_starts().values()) > started


def _prepared_then_other_work() -> tuple[Committee, float, float]:
    """A committee that certified a PREPARE to the bank for one lock, then saw a second
    lock; with when the PREPARE was certified and when its round started."""
    c = Committee()
    c.run_until(0.85)  # a round started at 0.8: the gap is over, the lock starts one
    c.chain(lock(1, block_time=100))
    while not c.certified:
        c.run_until(c.now + HOP)
    certified, started = c.now, max(c.round_starts().values())
    c.chain(lock(2, block_time=101))  # other work, a moment after the PREPARE
    return c, certified, started


def test_after_a_prepare_to_the_bank_other_news_waits_for_the_hold() -> None:
    c, certified, started = _prepared_then_other_work()
    # Past the early-start gap, still within the hold-back: a round now would miss the
    # hold the first settlement's COMMIT needs, and the round that carries the hold
    # would wait for it to finish. The news waits.
    c.run_until(started + DELTA_ROUND / 4 + HOP)
    assert c.now < certified + DELTA_ROUND / 4
    assert max(c.round_starts().values()) == started
    prepare = next(t for t in c.transmits if t.target == "bank")
    c.chain(BankUpdate(0.0, "bank", (bank_status(prepare, InstructionState.PREVALIDATED),), 1))
    assert max(c.round_starts().values()) == c.now  # the hold came: the round starts
    held = c.now
    while not any(target == "chain-A" for _, target, _ in c.certified):
        c.run_until(c.now + HOP)
    assert c.now <= held + 5 * HOP  # that very round certified the COMMIT
    assert [a for _, target, a in c.certified if target == "chain-A"][0] == (Action.COMMIT,)


def test_the_hold_back_ends_after_a_quarter_of_delta_round() -> None:
    c, certified, started = _prepared_then_other_work()
    c.run_until(certified + DELTA_ROUND / 4 + HOP)  # the bank never answers
    later = [t for t in c.round_starts().values() if t > started]
    assert later and later[0] <= certified + DELTA_ROUND / 4 + 1e-9
