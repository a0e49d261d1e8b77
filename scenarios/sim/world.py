"""The simulated world: hosts every node's driver and carries out its effects on the
simulated network, chains and bank, on one virtual clock.

Each committee member is the real node driver (``node.driver.NodeDriver``); this module
is the simulated counterpart of ``node.runtime`` and ``node.pumps`` together. For each
effect a node returns it does what the real world does, with simulated parts:

- ``Persist``: into the member's durable store, which survives a crash; before a member
  lets SHARES or CERTIFICATES leave, every decision it recorded must be in that store
  (the safety store's ordering contract, checked here as ``consensus.harness`` does);
- ``Send`` / ``Broadcast``: through ``consensus.network.SimulatedNetwork`` (delay,
  jitter, drops, duplicates, reordering, partitions);
- ``SetTimer`` / ``CancelTimer``: on the event queue; a timer set again replaces its
  deadline, a crash forgets them all;
- ``Transmit``: to a chain as a transaction from the member's transmitter account, one at
  a time per chain as the real sender does, after the sender's check that some decision
  is still pending (a copy that another member's beat into the block is refused by the
  coordinator, ``ReportAlreadyApplied``: "already-applied", as in ``node.pumps.evm``); to
  the bank as ``POST /v1/reports``;
- ``ReadLeg``: a chain read of settlement states, or status requests to the bank.

Each member watches each chain through its own view with the target's confirmations,
polling shortly after the chain changes (as the real pump polls every 0.1 s), and
receives the bank's callbacks. A crashed member loses its driver, timers and views;
it restarts with its durable store and reads the chains from the start again.

Twins (``node.byzantine.TWINS``): a member may run as two copies, each a ``SimMember``
with the member's index and keys and a durable store of its own. The network carries
messages between *endpoints*: member i's first copy is endpoint i, the twin copy of the
j-th twinned member endpoint n + j (``SimWorld.members`` is indexed by endpoint). A
message a node addresses to member i goes to every copy of i, each over its own link,
so a partition or link fault decides per copy whether it arrives; the receiver learns
only the member index it came from. The two copies of one member never message each
other (each would take the other's messages for its own). Both copies watch the chains,
transmit (each from a transmitter account of its own) and take the bank's callbacks.

Everything a node does is written to the history with ``node.trace``; every message
sent, received and lost is too.

This module must never read the wall clock or use a random generator but the queue's.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from bank_adapter import ledger
from bank_adapter.client import InstructionStatus, ReportReply, StatusReply
from chain_adapters.model import Terms
from consensus.crypto import REAL_CRYPTO, CryptoSuite
from consensus.events import Broadcast, Certified, MessageReceived, Persist, Send, Start
from consensus.harness import PersistenceContractViolation, check_persisted
from consensus.network import SimulatedNetwork
from consensus.protocol import NodeKeys
from consensus.safety import DurableStore
from node.byzantine import ByzantineSpec
from node.clockfaults import ClockFault, node_time, world_time
from node.driver import (
    AnyTimer,
    BankUpdate,
    CancelTimer,
    ChainStates,
    ChainUpdate,
    DriverConfig,
    Effect,
    NodeDriver,
    NodeEvent,
    ReadLeg,
    SetTimer,
    TimerFired,
    TransmissionDone,
    Transmit,
)
from node.legs import EscrowRecord
from node.rpcfaults import RpcWindow, active, lie_about
from node.trace import effect_records, message_header
from scenarios.history import History
from scenarios.sim.bank import SimBank
from scenarios.sim.chain import Block, Call, ChainView, Receipt, SimChain
from scenarios.sim.clock import EventQueue

__all__ = ["PersistenceContractViolation", "SimMember", "SimWorld"]

#: A node's chain watcher polls every 0.1 s; it sees a change within that, plus an RPC hop.
POLL_INTERVAL: Final = 0.1
RPC_HOP: Final = 0.001
#: Time a node takes to hand a transaction to the chain and learn its receipt (each way).
TX_HOP: Final = 0.002


@dataclass
class SimMember:
    """One committee member of the simulated world, across its crashes."""

    index: int  # the member's index in the committee (both copies of twins share it)
    config: DriverConfig
    keys: NodeKeys
    targets: dict[str, str]  # consensus target name -> "chain:LEG" or "bank"
    transmitters: dict[str, str]  # chain leg -> this member's transmitter address
    byzantine: ByzantineSpec | None = None  # its behaviours when it is a Byzantine member
    rpc: tuple[RpcWindow, ...] = ()  # its chain endpoint's faults (node.rpcfaults)
    clock: tuple[ClockFault, ...] = ()  # its own clock's faults (node.clockfaults)
    clock_read: float = 0.0  # the last time its own clock read (rounding never winds it back)
    driver: NodeDriver | None = None
    incarnation: int = 0
    durable: DurableStore = field(default_factory=DurableStore)
    timers: dict[AnyTimer, int] = field(default_factory=dict)  # timer -> live token
    views: dict[str, ChainView] = field(default_factory=dict)  # target name -> view
    polls: set[str] = field(default_factory=set)  # targets with a poll scheduled
    callbacks_seen: set[str] = field(default_factory=set)  # bank event ids taken
    sending: dict[str, list[Transmit]] = field(default_factory=dict)  # chain target -> queue
    # Paused (a pause-node fault): what arrives waits here, in order, until it resumes.
    paused: bool = False
    backlog: list[tuple[int, Any]] = field(default_factory=list)  # (src or -1, data or event)
    twin: bool = False  # the second copy of a member that runs as twins
    endpoint: int = -1  # its place in SimWorld.members (set by the world)

    def who(self) -> dict[str, Any]:
        """The fields that name this copy in a history record."""
        return {"node": self.index, "twin": True} if self.twin else {"node": self.index}


class SimWorld:
    def __init__(
        self,
        queue: EventQueue,
        network: SimulatedNetwork,
        members: list[SimMember],
        chains: dict[str, SimChain],
        bank: SimBank | None,
        history: History,
        *,
        crypto: CryptoSuite = REAL_CRYPTO,
        confirmations: int = 1,
        on_certified: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> None:
        self.queue = queue
        self.network = network
        self.members = members  # by endpoint: the first copies in index order, then twins
        for endpoint, member in enumerate(members):
            member.endpoint = endpoint
        #: The committee's size: the members' first copies.
        self.n = sum(1 for m in members if not m.twin)
        copies: list[list[int]] = [[] for _ in range(self.n)]
        for member in members:
            copies[member.index].append(member.endpoint)
        #: Every copy of each member, by member index.
        self.copies: list[tuple[int, ...]] = [tuple(c) for c in copies]
        #: The endpoints a copy broadcasts to: every copy of every other member.
        self._others: list[tuple[int, ...]] = [
            tuple(e for j in range(self.n) if j != m.index for e in self.copies[j]) for m in members
        ]
        self.chains = chains
        self.bank = bank
        self.history = history
        self.crypto = crypto
        self.confirmations = confirmations
        self._on_certified = on_certified
        self.messages_sent = 0
        self._timer_token = 0
        #: Called with every block mined (the runner records leg steps and latencies).
        self.on_block: Callable[[str, Block], None] | None = None

    # ------------------------------------------------------------------ members

    def start(self, index: int) -> None:
        """Start (or restart) a member from its durable store (``index``: its endpoint,
        which for a member's first copy is its index)."""
        member = self.members[index]
        member.incarnation += 1
        member.driver = NodeDriver(
            member.config, member.keys, crypto=self.crypto, byzantine=member.byzantine
        )
        member.timers.clear()
        member.polls.clear()
        member.callbacks_seen.clear()
        member.sending.clear()
        member.views = {}
        for name, where in member.targets.items():
            if where.startswith("chain:"):
                chain = self.chains[where.removeprefix("chain:")]
                member.views[name] = chain.view(self.confirmations)
        self.history.write("node-start", **member.who())
        self._step(member, Start(self.queue.now, member.durable.state()))
        for name in member.views:
            self._schedule_poll(member, name)

    def crash(self, index: int, how: str = "kill") -> None:
        member = self.members[index]
        if member.driver is None:
            return
        member.driver = None
        member.incarnation += 1
        member.timers.clear()
        member.views = {}
        member.paused = False
        member.backlog.clear()
        self.history.write("node-stop", **member.who(), how=how)

    def pause(self, index: int) -> None:
        """Freeze a member (SIGSTOP in a real run): it handles nothing until ``resume``."""
        self.members[index].paused = True

    def resume(self, index: int) -> None:
        """Thaw a member (SIGCONT): it handles what arrived meanwhile, in order, now."""
        member = self.members[index]
        member.paused = False
        backlog, member.backlog = member.backlog, []
        for src, item in backlog:
            if src >= 0:
                self._arrive(src, index, item)
            else:
                self._step(member, dataclasses.replace(item, now=self.queue.now))

    # ------------------------------------------------------------------ stepping

    def _step(self, member: SimMember, event: NodeEvent) -> None:
        driver = member.driver
        if driver is None:
            return
        if member.paused:
            member.backlog.append((-1, event))
            return
        if member.clock:  # the member reads its own clock (never less than it read before)
            member.clock_read = max(member.clock_read, node_time(event.now, member.clock))
            event = dataclasses.replace(event, now=member.clock_read)
        now = self.queue.now
        for effect in driver.handle(event):
            self._carry_out(member, driver, effect, now)

    def _later(self, member: SimMember, delay: float, event_of: Callable[[], NodeEvent]) -> None:
        """Give ``member`` an event after ``delay``, unless it crashed in between."""
        incarnation = member.incarnation

        def fire() -> None:
            if member.incarnation == incarnation:
                self._step(member, event_of())

        self.queue.after(delay, fire)

    def _carry_out(self, member: SimMember, driver: NodeDriver, effect: Effect, now: float) -> None:
        index = member.index
        twin = member.twin
        effect_type = type(effect)
        if effect_type is Send or effect_type is Broadcast:
            assert isinstance(effect, Send | Broadcast)
            check_persisted(
                index,
                effect.data,
                member.durable.decision_count,
                driver.node.safety_decision_count,
                now,
            )
            src = member.endpoint
            if isinstance(effect, Send):
                for dst in self.copies[effect.to]:
                    self._send(src, dst, effect.data)
            else:
                self.history.write_records(now, effect_records(index, effect, twin))
                for dst in self._others[src]:
                    self._send(src, dst, effect.data)
        elif effect_type is SetTimer:
            assert isinstance(effect, SetTimer)
            self._timer_token += 1
            token = self._timer_token
            member.timers[effect.timer] = token
            # The member set it by its own clock: due when that clock reads effect.at.
            at = world_time(effect.at, member.clock) if member.clock else effect.at
            self.queue.at(at, self._fire_timer, member, member.incarnation, effect.timer, token)
        elif isinstance(effect, Persist):
            member.durable.apply(effect.update)
        elif isinstance(effect, CancelTimer):
            member.timers.pop(effect.timer, None)
        elif isinstance(effect, Transmit):
            self.history.write_records(now, effect_records(index, effect, twin))
            self._transmit(member, effect)
        elif isinstance(effect, ReadLeg):
            self._read(member, effect)
        else:
            records = effect_records(index, effect, twin)
            if isinstance(effect, Certified) and self._on_certified is not None:
                self._on_certified(index, records[0])  # its "certified" history record
            self.history.write_records(now, records)

    def _fire_timer(self, member: SimMember, incarnation: int, timer: AnyTimer, token: int) -> None:
        if member.incarnation != incarnation or member.timers.get(timer) != token:
            return  # replaced, cancelled, or set before a crash
        del member.timers[timer]
        self._step(member, TimerFired(self.queue.now, timer))

    # ------------------------------------------------------------------ network

    def _send(self, src: int, dst: int, data: bytes) -> None:
        """A message from endpoint ``src`` to endpoint ``dst`` (a member's copy)."""
        now = self.queue.now
        self.messages_sent += 1
        route = self.network.route(src, dst, now)
        kind, epoch, round_ = message_header(data)
        sender, receiver = self.members[src], self.members[dst]
        a, b, a_twin, b_twin = sender.index, receiver.index, sender.twin, receiver.twin
        if isinstance(route, str):
            self.history.write_message(
                now, "lost", a, b, kind, epoch, round_, route, a_twin, b_twin
            )
            return
        self.history.write_message(now, "send", a, b, kind, epoch, round_, None, a_twin, b_twin)
        for delay in route:
            self.queue.after(delay, self._arrive, src, dst, data)

    def _arrive(self, src: int, dst: int, data: bytes) -> None:
        member = self.members[dst]
        if member.paused and member.driver is not None:
            member.backlog.append((src, data))  # read from the socket when it resumes
            return
        now = self.queue.now
        kind, epoch, round_ = message_header(data)
        sender = self.members[src]
        a, b, a_twin, b_twin = sender.index, member.index, sender.twin, member.twin
        if member.driver is None:
            self.history.write_message(
                now, "lost", a, b, kind, epoch, round_, "down", a_twin, b_twin
            )
            return
        self.history.write_message(now, "recv", a, b, kind, epoch, round_, None, a_twin, b_twin)
        self._step(member, MessageReceived(now, a, data))

    # ------------------------------------------------------------------ chains

    def chain_changed(self, leg: str) -> None:
        """A block was mined or the chain reorganised: every watcher sees it soon."""
        for member in self.members:
            if member.driver is None:
                continue
            for name, where in member.targets.items():
                if where == f"chain:{leg}":
                    self._schedule_poll(member, name)

    def _schedule_poll(self, member: SimMember, target: str) -> None:
        if target in member.polls:
            return
        member.polls.add(target)
        incarnation = member.incarnation
        delay = POLL_INTERVAL * self.queue.rng.random() + RPC_HOP  # uniform(0, POLL_INTERVAL)

        def poll() -> None:
            if member.incarnation != incarnation:
                return
            member.polls.discard(target)
            view = member.views.get(target)
            fault = active(member.rpc, self.queue.now)
            if view is None or (fault is not None and not fault.lie):
                return  # an outage: read again at the next block
            found, block_time = view.poll()
            records = tuple(EscrowRecord(event, retracted, at) for event, retracted, at in found)
            if fault is not None:
                records = lie_about(records, fault.lie)
            self._step(member, ChainUpdate(self.queue.now, target, records, block_time))

        self.queue.after(delay, poll)

    def _chain_of(self, member: SimMember, target: str) -> SimChain:
        return self.chains[member.targets[target].removeprefix("chain:")]

    def submit(self, leg: str, call: Call, on_receipt: Callable[[Receipt], None] | None) -> None:
        """A transaction to chain ``leg``; mined at once on an automining chain."""
        chain = self.chains[leg]
        chain.submit(call, on_receipt)
        if chain.automine:
            self.queue.after(0.0, self._mine_now, leg)

    def _mine_now(self, leg: str) -> None:
        if self.chains[leg].has_pending():
            self.mine(leg)

    def reorg(self, leg: str, depth: int, *, record: bool = True) -> int:
        """Replace the newest ``depth`` blocks of chain ``leg`` (``SimChain.reorg``); every
        member's watcher retracts what it had delivered from them at its next poll. Returns
        how many transactions were dropped; ``record``: write the fault's history line."""
        dropped = self.chains[leg].reorg(depth, self.queue.now)
        if record:
            self.history.write(
                "fault", phase="begin", kind="reorg", leg=leg, depth=depth, dropped=len(dropped)
            )
        self.chain_changed(leg)
        return len(dropped)

    def mine(self, leg: str) -> None:
        """Mine a block (a block-time tick, a heartbeat, or automining)."""
        block = self.chains[leg].mine(self.queue.now)
        if block is None:
            return
        if self.on_block is not None:
            self.on_block(leg, block)
        self.chain_changed(leg)

    # ------------------------------------------------------------------ transmission

    def _transmit(self, member: SimMember, effect: Transmit) -> None:
        where = member.targets.get(effect.target, "")
        if where == "bank":
            self._transmit_bank(member, effect)
            return
        queue = member.sending.setdefault(effect.target, [])
        queue.append(effect)
        if len(queue) == 1:
            self._send_next(member, effect.target, member.incarnation)

    def _send_next(self, member: SimMember, target: str, incarnation: int) -> None:
        """One transaction in flight per chain target (the real sender's lock)."""
        if member.incarnation != incarnation:
            return
        queue = member.sending.get(target)
        if not queue:
            return
        effect = queue[0]
        chain = self._chain_of(member, target)
        report = effect.certificate.report

        def finish(result: str) -> None:
            if member.incarnation != incarnation:
                return
            queue.pop(0)
            self._later(
                member,
                TX_HOP,
                lambda: TransmissionDone(
                    self.queue.now, target, report.epoch, report.round, result
                ),
            )
            if queue:
                self.queue.after(TX_HOP, self._send_next, member, target, incarnation)

        def at_chain() -> None:
            fault = active(member.rpc, self.queue.now)
            if fault is not None and not fault.lie:
                finish("rpc-error")
                return
            if not chain.pending_decisions(report):
                finish("already-applied")
                return
            terms = tuple(t for t in effect.terms if isinstance(t, Terms))
            call = Call(
                member.transmitters[chain.leg],
                "apply_certificate",
                (effect.certificate, terms),
                label="report",
            )
            self.submit(chain.leg, call, lambda receipt: finish(transmission_result(receipt)))

        self.queue.after(TX_HOP, at_chain)

    def _transmit_bank(self, member: SimMember, effect: Transmit) -> None:
        assert self.bank is not None
        report = effect.certificate.report
        incarnation = member.incarnation
        target = effect.target

        def answer(reply: ReportReply | None, error: str) -> None:
            if member.incarnation != incarnation:
                return
            if reply is None:
                result = error
            else:
                learned = tuple(r.instruction for r in reply.results if r.instruction is not None)
                self._step(member, BankUpdate(self.queue.now, target, learned, reply.as_of_ms))
                refused = any(r.instruction is None for r in reply.results)
                result = "partial" if refused else "ok"
            self._step(
                member, TransmissionDone(self.queue.now, target, report.epoch, report.round, result)
            )

        terms = [t for t in effect.terms if not isinstance(t, Terms)]
        self.bank.apply_report(f"node-{member.index}", effect.certificate, terms, answer)

    # ------------------------------------------------------------------ reads

    def _read(self, member: SimMember, effect: ReadLeg) -> None:
        target = effect.target
        if member.targets.get(target) == "bank":
            self._read_bank(member, effect)
            return
        chain = self._chain_of(member, target)
        ids = effect.settlement_ids
        states = tuple((sid, chain.state_of(sid)) for sid in ids)
        self._later(member, 2 * RPC_HOP, lambda: ChainStates(self.queue.now, target, states))

    def _read_bank(self, member: SimMember, effect: ReadLeg) -> None:
        assert self.bank is not None
        incarnation = member.incarnation
        target = effect.target
        answers: dict[bytes, StatusReply | None] = {}
        asked = effect.settlement_ids

        def answer(sid: bytes, reply: StatusReply | None) -> None:
            if member.incarnation != incarnation:
                return
            answers[sid] = reply
            if len(answers) < len(asked):
                return
            replies = [answers[s] for s in asked if answers[s] is not None]
            statuses = tuple(r.instruction for r in replies if r is not None and r.instruction)
            times = [r.as_of_ms for r in replies if r is not None and r.as_of_ms is not None]
            self._step(
                member,
                BankUpdate(self.queue.now, target, statuses, max(times, default=None), read=True),
            )

        for sid in asked:
            self.bank.status(sid, functools.partial(answer, sid))

    # ------------------------------------------------------------------ bank callbacks

    def deliver_callback(self, index: int, events: tuple[ledger.Event, ...], as_of_ms: int) -> bool:
        """The bank's callback POST (one event or a batch) reaches endpoint ``index`` (each
        copy of a member has a callback URL of its own); False when it is down. As the
        real node's pump does, the new events of a POST become one BankUpdate; a POST of
        duplicates only states the bank's time."""
        member = self.members[index]
        if member.driver is None:
            return False
        target = next((n for n, w in member.targets.items() if w == "bank"), None)
        if target is None:
            return True
        statuses = []
        for event in events:
            if event.event_id in member.callbacks_seen:
                continue
            member.callbacks_seen.add(event.event_id)
            value = json.loads(event.payload)
            statuses.append(InstructionStatus.from_json(value["instruction"], as_of_ms=as_of_ms))
        self._step(member, BankUpdate(self.queue.now, target, tuple(statuses), as_of_ms))
        return True


def transmission_result(receipt: Receipt) -> str:
    """A chain transmission's result for the driver: a copy of a report the coordinator
    had done already is a finished transmission (``node.pumps.evm.already_applied``)."""
    if receipt.ok:
        return "ok"
    return "already-applied" if receipt.error == "ReportAlreadyApplied" else "reverted"
