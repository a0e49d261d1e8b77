"""The node driver: everything one oracle node decides, with no I/O at all.

``NodeDriver.handle(event) -> tuple[Effect, ...]`` is the whole node. It combines

- the consensus state machine (``consensus.protocol.Node``): rounds, shares, certificates;
- the leg trackers (``node.legs``): what this node has seen of each leg on each target;
- the DvP rules (``node.dvp``): the outcome function the committee certifies with, and the
  observation a node contributes (its trackers' facts, minus settlements that are over).

A *world* feeds it events and carries out its effects. Two worlds exist: the real one
(``node.runtime``: trio, libp2p, chains over JSON-RPC, the bank over HTTP, the wall clock)
and the simulated one (``scenarios.sim``: one event queue, a virtual clock, simulated
network, chains and bank). A world decides nothing; the same decisions come out of the
same events in both.

=====================  ==================================================================
event                  meaning
=====================  ==================================================================
Start                  (consensus) the node (re)starts with what its Persist effects wrote
MessageReceived        (consensus) bytes from an authenticated committee member
TimerFired             a timer set by SetTimer is due (consensus and driver timers alike)
ChainUpdate            a chain target's watcher delivered (or retracted) coordinator events,
                       and the newest block's timestamp
ChainStates            the answer to ReadLeg on a chain target: settlements' current states
BankUpdate             instruction statuses from the bank (callback, poll, transmission
                       answer) and the bank's time
ReportedFacts          facts a ``file`` target states directly
TransmissionDone       the result of a Transmit effect ("ok", "reverted", "error", ...)
=====================  ==================================================================

=====================  ==================================================================
effect                 the world must
=====================  ==================================================================
Persist                (consensus) make the update durable before any later effect
Send / Broadcast       (consensus) deliver bytes to one member / every other member
SetTimer / CancelTimer arm (replacing an earlier deadline of the same timer) / disarm
Transmit               hand the certificate, with the terms it needs, to its target; answer
                       with TransmissionDone
ReadLeg                read these settlements' state at the target; answer with
                       ChainStates (a chain) or BankUpdate(read=True) (the bank; also when
                       the bank did not answer)
Certified, EpochStarted, Rejected, Observed, TransmissionFinished
                       (information) for logs, metrics and the history
=====================  ==================================================================

Effects of one step come out in the order they must be carried out (a Persist before the
Send that carries the shares it protects). The driver answers the consensus node's
RequestObservation itself, from its trackers, within the same step: trackers are memory.

A certificate whose COMMITs go to a leg marked ``after`` another (the asset leg of the
reference mode, after the bank) waits before its Transmit until this node's tracker of
that other leg shows every one of them COMMITTED (payment before release); each update
of that tracker looks again. When several wait for one target, the newest goes and the
older ones it covers end as "superseded". The transmission schedule counts again from
that moment: a member whose stage is k waits k DeltaStage (a STAGE timer), so the
members do not all send the same report the moment the payment is seen.

Transmission retries are timers: a result worth another try ("error", "rpc-error",
"partial") arms a RETRY timer with the next pause of ``retry_delays``; when it fires the
driver looks again whether the target already shows every decision applied.

A leader starts a round early on news (``ObservationChanged``) only for work: a
settlement new to the order, or a decided one a target spoke of again. News that comes
while a round runs is kept until the round finishes; after a PREPARE to the bank, other
news waits for the hold, at most a quarter of DeltaRound (a NEWS timer).

The bank is polled by a POLL timer for instructions it has not spoken of lately, one read
at a time: a new read starts only once the last was answered (or is given up as lost), so
a slow bank is asked less, not more.

This module must never read a clock, the network, the disk or a global random generator:
time comes only in events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

from mypy_extensions import mypyc_attr

from bank_adapter.client import InstructionStatus
from bank_adapter.terms import PaymentTerms
from chain_adapters.model import SettlementRefused, State, Terms
from consensus.byzantine import ByzantineNode
from consensus.config import ConsensusConfig
from consensus.crypto import REAL_CRYPTO, CryptoSuite
from consensus.events import (
    Broadcast,
    Certified,
    EpochStarted,
    MessageReceived,
    ObservationReady,
    Persist,
    Rejected,
    RequestObservation,
    Send,
    Start,
    Timer,
)
from consensus.events import CancelTimer as ConsensusCancelTimer
from consensus.events import Event as ConsensusEvent
from consensus.events import ObservationChanged as ConsensusObservationChanged
from consensus.events import SetTimer as ConsensusSetTimer
from consensus.events import TimerFired as ConsensusTimerFired
from consensus.events import Transmit as ConsensusTransmit
from consensus.protocol import ROUND_GAP_FRACTION, Node, NodeKeys, transmission_delay
from consensus.report import Action, Certificate, Decision
from node.byzantine import ByzantineSpec, wrapper
from node.dvp import (
    DvpOutcome,
    Fact,
    FactKind,
    closed_on_every_leg,
    pack_observation,
    pack_settlement,
    settlement_rows,
)
from node.latency import ROUND_BUCKETS, SETTLEMENT_BUCKETS, TRANSMIT_BUCKETS, LatencyHistogram
from node.legs import (
    BankLegTracker,
    EscrowLegTracker,
    EscrowRecord,
    OrderKey,
    ReportedFactsTracker,
    SettlementBook,
)
from node.modes import MODES

__all__ = [
    "FINISHED_OK",
    "RETRYABLE_RESULTS",
    "TRANSMIT_RETRY_DELAYS",
    "BankUpdate",
    "CancelTimer",
    "ChainStates",
    "ChainUpdate",
    "DriverConfig",
    "DriverStats",
    "DriverTimer",
    "DriverTimerKind",
    "Effect",
    "NodeDriver",
    "NodeEvent",
    "Observed",
    "ReadLeg",
    "ReportedFacts",
    "SetTimer",
    "TargetSpec",
    "TimerFired",
    "Transmit",
    "TransmissionDone",
    "TransmissionFinished",
]

#: Transmission results that count as done: the target applied the decisions, now or before.
FINISHED_OK: Final = frozenset({"ok", "already-applied", "superseded"})
#: Transmission results worth another try, and the pauses between tries (seconds).
RETRYABLE_RESULTS: Final = frozenset({"error", "rpc-error", "partial"})
TRANSMIT_RETRY_DELAYS: Final = (0.5, 1.0, 2.0, 4.0, 8.0)
#: How often a node asks the bank about instructions it has not heard of lately, how
#: quiet "lately" is, and how many it asks about at once (callbacks are the fast path).
BANK_POLL_INTERVAL: Final = 0.5
BANK_QUIET_FOR: Final = 2.0
BANK_POLLS_PER_CYCLE: Final = 32
#: A bank read not answered within this is taken as lost, and the next may start (the
#: bank client's own timeout is 15 s).
BANK_READ_TIMEOUT: Final = 20.0
#: How long a certificate for a leg ``after`` another waits for that leg to be seen
#: COMMITTED before it is given up ("after-leg-pending"; later rounds certify it again).
AFTER_WAIT_LIMIT: Final = 60.0

TARGET_KINDS: Final = ("evm", "bank", "file")


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """What the driver needs to know of one target (the world knows how to reach it)."""

    name: str  # consensus target name, e.g. "chain-A" or "bank"
    leg: str  # the leg it carries: "A", "B" or "bank"
    kind: str  # "evm", "bank" or "file"
    currency: str = "USD"  # bank: the payment leg's currency


@mypyc_attr(native_class=False)  # it judges its own fields (see native)
@dataclass(frozen=True)
class DriverConfig:
    consensus: ConsensusConfig
    index: int
    mode: str
    targets: tuple[TargetSpec, ...]
    retry_delays: tuple[float, ...] = TRANSMIT_RETRY_DELAYS
    bank_poll_interval: float = BANK_POLL_INTERVAL
    bank_quiet_for: float = BANK_QUIET_FOR
    bank_polls_per_cycle: int = BANK_POLLS_PER_CYCLE

    def __post_init__(self: Any) -> None:
        names = [t.name for t in self.consensus.targets]
        for target in self.targets:
            if target.kind not in TARGET_KINDS:
                raise ValueError(f"target {target.name}: unknown kind {target.kind!r}")
            if target.name not in names:
                raise ValueError(f"target {target.name} is not a target of the committee")


# --------------------------------------------------------------------------- timers


class DriverTimerKind(IntEnum):
    RETRY = 1  # try a transmission again
    POLL = 2  # ask the bank about quiet instructions
    STAGE = 3  # a certificate that waited for its ``after`` leg: this member's turn
    NEWS = 4  # the hold-back after a PREPARE to the bank is over: look at the news again


@dataclass(frozen=True, slots=True)
class DriverTimer:
    kind: DriverTimerKind
    target: str
    epoch: int = 0
    round: int = 0


AnyTimer = Timer | DriverTimer


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class TimerFired:
    now: float
    timer: AnyTimer


@dataclass(frozen=True, slots=True)
class ChainUpdate:
    now: float
    target: str
    records: tuple[EscrowRecord, ...]
    block_time: int  # timestamp of the newest block the watcher saw


@dataclass(frozen=True, slots=True)
class ChainStates:
    now: float
    target: str
    states: tuple[tuple[bytes, State], ...]


@dataclass(frozen=True, slots=True)
class BankUpdate:
    now: float
    target: str
    statuses: tuple[InstructionStatus, ...]
    as_of_ms: int | None  # the bank's time when it stated them (None: not stated)
    read: bool = False  # the answer to a ReadLeg (possibly empty: the bank did not answer)


@dataclass(frozen=True, slots=True)
class ReportedFacts:
    now: float
    target: str
    facts: frozenset[Fact]


@dataclass(frozen=True, slots=True)
class TransmissionDone:
    now: float
    target: str
    epoch: int
    round: int
    result: str


NodeEvent = (
    Start
    | MessageReceived
    | TimerFired
    | ChainUpdate
    | ChainStates
    | BankUpdate
    | ReportedFacts
    | TransmissionDone
)


# --------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class SetTimer:
    timer: AnyTimer
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: AnyTimer


@dataclass(frozen=True, slots=True)
class Transmit:
    """Hand ``certificate`` to ``target``. ``terms`` are what the target needs besides the
    certificate: an escrow's terms per decision, or the bank's terms of PREPARE decisions.
    ``attempt`` counts from 0."""

    target: str
    certificate: Certificate
    terms: tuple[Terms, ...] | tuple[PaymentTerms, ...]
    attempt: int


@dataclass(frozen=True, slots=True)
class ReadLeg:
    target: str
    settlement_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Observed:
    """(information) the node's observation for (epoch, round)."""

    epoch: int
    round: int
    size: int  # bytes
    settlements: int  # open settlements it reports on
    left_out: int  # open settlements behind them in the service order: queued
    oldest_queued: float = 0.0  # seconds the first queued one has been first in line


@dataclass(frozen=True, slots=True)
class TransmissionFinished:
    """(information) a certificate's transmission to a target ended with ``result``."""

    target: str
    epoch: int
    round: int
    result: str
    attempts: int
    seconds: float  # from the first try to the end


Effect = (
    Persist
    | Send
    | Broadcast
    | SetTimer
    | CancelTimer
    | Transmit
    | ReadLeg
    | Certified
    | EpochStarted
    | Rejected
    | Observed
    | TransmissionFinished
)


# --------------------------------------------------------------------------- statistics


@dataclass
class DriverStats:
    """Counters the metrics endpoint publishes (monotonic)."""

    events: int = 0
    rounds_observed: int = 0
    certificates: int = 0
    epochs: int = 0
    rejected: int = 0
    persists: int = 0
    decisions: dict[str, int] = field(default_factory=dict)  # action -> count, certified
    transmissions: dict[str, int] = field(default_factory=dict)  # "target:result" -> count
    # observe request -> certificate, s
    certify_latency: LatencyHistogram = field(
        default_factory=lambda: LatencyHistogram(ROUND_BUCKETS)
    )
    transmit_latency: LatencyHistogram = field(
        default_factory=lambda: LatencyHistogram(TRANSMIT_BUCKETS)
    )
    # a settlement first served in an observation -> every leg applied a decision, s
    settlement_latency: LatencyHistogram = field(
        default_factory=lambda: LatencyHistogram(SETTLEMENT_BUCKETS)
    )
    last_certified_at: float = 0.0  # node time of the last certificate accepted
    observation_largest_bytes: int = 0
    observation_left_out: int = 0  # summed over rounds
    queued: int = 0  # open settlements behind the served ones, at the last observation
    oldest_queued_s: float = 0.0  # how long the first of them has been first in line
    queued_peak: int = 0
    observation_walked: int = 0  # settlements the last observation looked at: its cost
    oldest_queued_peak_s: float = 0.0
    # settlements a chain's admission refused (SettlementRefused logs this node's watchers
    # confirmed; the nodes never serve them: backpressure made visible in the metrics)
    refused: int = 0


@dataclass
class _Transmission:
    certificate: Certificate
    began: float
    attempt: int = 0


_Tracker = EscrowLegTracker | BankLegTracker | ReportedFactsTracker
#: The events that can teach a tracker something new.
_WORLD_UPDATES = (ChainUpdate, ChainStates, BankUpdate, ReportedFacts)


# --------------------------------------------------------------------------- the driver


class _Batch:
    """What one observation serves: whole settlements, at most ``max_served`` of them, in
    at most ``max_bytes`` (``NodeDriver._observe_trackers``)."""

    def __init__(self, max_served: int, max_bytes: int) -> None:
        self.max_served = max_served
        self.max_bytes = max_bytes
        self.items: list[bytes] = []
        self.serving: list[bytes] = []
        self.size = 5  # the encoded list's header, at most
        self.full = False

    def add(self, sid: bytes, facts: list[Fact]) -> bool:
        """Serve ``sid`` with its facts; False (and full from now on) when it does not fit."""
        legs = settlement_rows(facts).get(sid)
        if not legs:
            return True
        item = pack_settlement(sid, legs)
        if len(self.items) >= self.max_served or self.size + len(item) > self.max_bytes:
            self.full = True
            return False
        self.items.append(item)
        self.serving.append(sid)
        self.size += len(item)
        return True


class NodeDriver:
    """One oracle node, events in, effects out (module docstring)."""

    def __init__(
        self,
        config: DriverConfig,
        keys: NodeKeys,
        *,
        crypto: CryptoSuite = REAL_CRYPTO,
        byzantine: ByzantineSpec | None = None,
    ) -> None:
        """``byzantine``: a Byzantine member's behaviours (``node.byzantine``), wrapped
        around this honest driver's consensus node; None for an honest member."""
        self.config = config
        self.index = config.index
        outcome = DvpOutcome(config.mode, {t.leg: t.name for t in config.targets})
        self.book = SettlementBook()
        honest = Node(config.consensus, config.index, keys, outcome, crypto=crypto)
        self.node: Node | ByzantineNode = honest
        if byzantine is not None:
            self.node = wrapper(byzantine, config.mode, keys, outcome, self.book)(honest)
        self.trackers: dict[str, _Tracker] = {}
        for target in config.targets:
            self.trackers[target.name] = _make_tracker(target, self.book)
        self._max_observation = config.consensus.max_observation_bytes
        # A round serves at most a report's worth of settlements: more could not be decided.
        self._max_served = config.consensus.max_decisions_per_report
        self._serving: tuple[bytes, ...] = ()  # the settlements of the last observation
        # A settlement a certificate decided is parked (``SettlementBook.park``) while
        # nothing changes about it, until the transmission schedule has had its turn.
        schedule = config.consensus.schedule
        self._in_flight_for = config.consensus.delta_stage * len(schedule) + (
            config.consensus.delta_round
        )
        self._queued_since: dict[bytes, float] = {}  # queued settlement -> node time
        self.stats = DriverStats()
        self._now = 0.0
        self._out: list[Effect] = []
        self._round_started: dict[tuple[int, int], float] = {}
        # node time each open settlement was first served in an observation
        self._first_served: dict[bytes, float] = {}
        self._transmissions: dict[tuple[str, int, int], _Transmission] = {}
        # Bank targets with a read in flight, and since when: one at a time, so a slow
        # bank is asked less, not more (unanswered reads would pile up on it).
        self._reading: dict[str, float] = {}
        # Targets whose COMMITs wait for another leg's (``after``), and their waiting
        # transmissions: target -> the consensus target name of the leg it waits for.
        by_leg = {t.leg: t.name for t in config.targets}
        self._after: dict[str, str] = {
            by_leg[leg.target]: by_leg[leg.after]
            for leg in MODES[config.mode].legs
            if leg.after is not None and leg.target in by_leg and leg.after in by_leg
        }
        if byzantine is not None and "lie" in byzantine.behaviours:
            # A liar acts on its lie: it claimed the payment made, so it sends the release
            # at once (honest members wait for the payment their own trackers see).
            self._after = {}
        self._waiting: dict[tuple[str, int, int], float] = {}
        self._started = False  # the consensus node takes nothing before Start
        self._news_pending = False  # trackers learned something no round was started for
        # Until then a leader that certified a PREPARE to the bank starts no early round
        # unless the bank speaks (``_on_certified``).
        self._hold_back_until = 0.0
        self._last_observation: tuple[tuple[Any, ...], tuple[bytes, int, int]] | None = None

    # ------------------------------------------------------------------ public API

    @property
    def epoch(self) -> int:
        return self.node.epoch

    def handle(self, event: NodeEvent) -> tuple[Effect, ...]:
        """Process one event; return the effects the world must carry out, in order."""
        self._now = event.now
        self._out = []
        self.stats.events += 1
        # New work lets a leader start its next round early (consensus ObservationChanged).
        book = self.book
        before = (len(book.keys), len(book.parked)) if isinstance(event, _WORLD_UPDATES) else None
        if isinstance(event, Start):
            self._started = True
            self._consensus(event)
            for target in self.config.targets:
                if target.kind == "bank":
                    self._arm_poll(target.name)
        elif isinstance(event, MessageReceived):
            self._consensus(event)
        elif isinstance(event, TimerFired):
            timer = event.timer
            if isinstance(timer, Timer):
                self._consensus(ConsensusTimerFired(event.now, timer))
            else:
                self._on_driver_timer(timer)
        elif isinstance(event, ChainUpdate):
            tracker = self._tracker(event.target, EscrowLegTracker)
            refresh = tracker.apply(event.records, event.block_time)
            for record in event.records:
                if isinstance(record.event, SettlementRefused) and not record.retracted:
                    self.stats.refused += 1
            if refresh:
                self._out.append(ReadLeg(event.target, refresh))
        elif isinstance(event, ChainStates):
            self._tracker(event.target, EscrowLegTracker).refresh(event.states)
        elif isinstance(event, BankUpdate):
            self._tracker(event.target, BankLegTracker).learn(
                event.statuses, event.as_of_ms, event.now
            )
            if event.read:
                self._reading.pop(event.target, None)
            if self._waiting:
                self._release_waiting(event.target)
        elif isinstance(event, ReportedFacts):
            self._tracker(event.target, ReportedFactsTracker).replace(event.facts)
        else:
            self._on_transmission_done(event)
        if before is not None and (len(book.keys) > before[0] or len(book.parked) < before[1]):
            if isinstance(event, BankUpdate):
                self._hold_back_until = 0.0  # the bank spoke of a decided settlement
            # Work: a settlement new to the order, or one a certificate decided that a
            # target spoke of again (a hold, a payment, a refusal). A leg's clock moving
            # or facts of settlements already served are not: the DeltaRound pace takes
            # them, and the rounds in between stay for work that can be decided.
            self._news_pending = True
        if self._news_pending and self._news():
            self._consensus(ConsensusObservationChanged(event.now))
        out = tuple(self._out)
        self._out = []
        return out

    def _news(self) -> bool:
        """Whether pending news (``_news_pending``: a settlement new to the order, or a
        decided one a target spoke of again) may start a round now: this node leads and
        could start one early (``Node.would_start_early``), and no hold-back is on
        (``_hold_back``). News that comes while a round runs is kept and asked about
        again after each event, so the round that follows starts when this one finishes,
        not a DeltaRound tick later. Work always changes the observation, so none is
        computed here: under load the answer is no before any cost."""
        node = self.node
        if not self._started or not isinstance(node, Node) or not node.would_start_early():
            return False
        if self._now < self._hold_back_until:
            return False  # kept: the NEWS timer asks again
        self._news_pending = False
        return True

    def observation(self) -> tuple[bytes, int, int]:
        """This node's observation now: (encoded facts, settlements in it, left out). The
        same as last round's when no tracker learned anything since (a quiet round costs
        nothing to observe)."""
        key = self._observation_key()
        if self._last_observation is not None and self._last_observation[0] == key:
            return self._last_observation[1]
        result = self._observe_trackers()
        key = self._observation_key()
        self._last_observation = (key, result)
        return result

    def _observation_key(self) -> tuple[Any, ...]:
        """What the observation depends on: the trackers, what is over, what certificates
        decided, and (while something is in flight) the time, which ends its wait."""
        versions = tuple(t.version for t in self.trackers.values())
        clock = self._now if self.book.parked else 0.0
        return (versions, len(self.book.settled), self.stats.certificates, clock)

    def _observe_trackers(self) -> tuple[bytes, int, int]:
        """The oldest open settlements in the service order (``SettlementBook.order``),
        as many as fit in one report and in ``max_observation_bytes``, whole. The walk
        stops there, so a round's cost follows what it serves, not the backlog; the rest
        is queued, and counted as such. Settlements a certificate decided are parked out
        of the order while their decisions travel (``SettlementBook.park``): they take
        no room and cost no walk. A settlement whose deadline passed on some leg moves to
        ``SettlementBook.late`` when the walk meets it (once), and is served only when
        the live ones leave room: under overload the rounds go to settlements that can
        still commit, and the expired ones get their ABORT when the load eases."""
        book = self.book
        book.unpark_due(self._now)
        batch = _Batch(self._max_served, self._max_observation)
        over: list[bytes] = []
        expired: list[bytes] = []
        looked = self._walk(book.order, batch, over, expired)
        waiting = len(book.order) - looked  # not looked at: queued behind the served
        head = book.order[looked][1] if waiting else None
        for sid in over:
            book.retire(sid)
        for sid in expired:
            book.defer(sid)
        # Room left: the settlements whose deadline passed, oldest first (their ABORTs).
        over.clear()
        late_looked = 0 if batch.full else self._walk(book.late, batch, over, None)
        late_waiting = len(book.late) - late_looked
        if head is None and late_waiting:
            head = book.late[late_looked][1]
        for sid in over:
            book.retire(sid)
        queued = waiting + late_waiting
        self.stats.observation_walked = looked + late_looked + (queued > 0)
        self._serving = tuple(batch.serving)
        self._note_queue(queued, head)
        items = batch.items
        return pack_observation(items), len(items), queued

    def _walk(
        self,
        entries: list[tuple[OrderKey, bytes]],
        batch: _Batch,
        over: list[bytes],
        expired: list[bytes] | None,
    ) -> int:
        """Serve ``entries`` (the order, or ``late``) oldest first into ``batch`` until it
        is full. Settlements closed on every leg go to ``over``; with ``expired`` given,
        those past a deadline on some leg go there instead of being served. Returns how
        many were looked at (the one that did not fit is not: it waits)."""
        trackers = tuple(self.trackers.values())
        mode = self.config.mode
        looked = 0
        for _, sid in entries:
            facts = [fact for tracker in trackers for fact in tracker.facts_of(sid)]
            if facts:  # none: created, nothing to say yet (no lock, no expiry)
                if closed_on_every_leg(mode, facts):
                    over.append(sid)
                elif expired is not None and any(f.kind is FactKind.EXPIRED for f in facts):
                    expired.append(sid)  # served after the live ones (``SettlementBook.late``)
                elif not batch.add(sid, facts):
                    break  # full: it waits
            looked += 1
        return looked

    def _note_queue(self, queued: int, head: bytes | None) -> None:
        """Backpressure, visible: how many open settlements wait behind the served ones,
        and how long the first of them has been first in line (only the head of the queue
        is looked at, so this costs nothing per queued settlement; it is a lower bound of
        the head's whole wait)."""
        since = self._queued_since
        for sid in self._serving:
            since.pop(sid, None)
        self.stats.queued = queued
        self.stats.queued_peak = max(self.stats.queued_peak, queued)
        if head is None:
            since.clear()
            self.stats.oldest_queued_s = 0.0
            return
        first = since.setdefault(head, self._now)
        self.stats.oldest_queued_s = self._now - first
        self.stats.oldest_queued_peak_s = max(
            self.stats.oldest_queued_peak_s, self.stats.oldest_queued_s
        )
        if len(since) > 4 * self._max_served:  # keep it a small map: the head is what counts
            for sid in list(since)[: len(since) // 2]:
                if sid != head:
                    del since[sid]

    # ------------------------------------------------------------------ consensus

    def _consensus(self, first: ConsensusEvent) -> None:
        pending: list[ConsensusEvent] = [first]
        out = self._out
        while pending:
            for action in self.node.handle(pending.pop(0)):
                if type(action) is Send or type(action) is Broadcast:  # most: straight through
                    out.append(action)
                elif isinstance(action, RequestObservation):
                    pending.append(self._observe(action))
                elif isinstance(action, ConsensusTransmit):
                    self._transmit(action.target, action.certificate, attempt=0)
                elif isinstance(action, ConsensusSetTimer):
                    self._out.append(SetTimer(action.timer, action.at))
                elif isinstance(action, ConsensusCancelTimer):
                    self._out.append(CancelTimer(action.timer))
                elif isinstance(action, Certified):
                    self._on_certified(action)
                    self._out.append(action)
                else:
                    if isinstance(action, Persist):
                        self.stats.persists += 1
                    elif isinstance(action, EpochStarted):
                        self.stats.epochs += 1
                    elif isinstance(action, Rejected):
                        self.stats.rejected += 1
                    self._out.append(action)

    def _observe(self, request: RequestObservation) -> ObservationReady:
        self.stats.rounds_observed += 1
        self._round_started[(request.epoch, request.round)] = self._now
        data, settlements, left_out = self.observation()
        self.stats.observation_largest_bytes = max(self.stats.observation_largest_bytes, len(data))
        self.stats.observation_left_out += left_out
        self._out.append(
            Observed(
                request.epoch,
                request.round,
                len(data),
                settlements,
                left_out,
                round(self.stats.oldest_queued_s, 3),
            )
        )
        return ObservationReady(self._now, request.epoch, request.round, data)

    def _on_certified(self, action: Certified) -> None:
        stats = self.stats
        stats.certificates += 1
        report = action.certificate.report
        for decision in report.decisions:
            name = decision.action.name
            stats.decisions[name] = stats.decisions.get(name, 0) + 1
        began = self._round_started.pop((report.epoch, report.round), None)
        if began is not None:
            stats.certify_latency.observe(self._now - began)
        stats.last_certified_at = self._now
        until = self._now + self._in_flight_for
        target = self.trackers.get(action.target)
        for decision in report.decisions:
            # A decision the target already shows applied (a round that certified again
            # what an earlier one did, before every member heard the target) has nothing
            # on the way: parked, its settlement would wait for a word that already came.
            if target is None or not target.already_applied(decision):
                self.book.park(decision.settlement_id, until)
        bank = target
        if isinstance(bank, BankLegTracker):
            for decision in report.decisions:
                bank.expect(decision)
            if any(d.action is Action.PREPARE for d in report.decisions):
                self._hold_back(action.target)

    def _hold_back(self, bank: str) -> None:
        """This leader certified a PREPARE to the bank: the next round needs the hold,
        which comes back within a bank round trip. Other news waits for it, at most a
        quarter of DeltaRound: a round started now would miss the hold, and the round
        that carries it would wait for that one to finish."""
        node = self.node
        if not isinstance(node, Node) or not node.would_start_early():
            return
        self._hold_back_until = self._now + ROUND_GAP_FRACTION * self.config.consensus.delta_round
        timer = DriverTimer(DriverTimerKind.NEWS, bank)
        self._out.append(SetTimer(timer, self._hold_back_until))

    # ------------------------------------------------------------------ transmission

    def _transmit(self, target: str, certificate: Certificate, attempt: int) -> None:
        report = certificate.report
        key = (target, report.epoch, report.round)
        pending = self._transmissions.get(key)
        if pending is None:
            pending = _Transmission(certificate, self._now)
            self._transmissions[key] = pending
        pending.attempt = attempt
        tracker = self.trackers.get(target)
        if tracker is None:
            self._finish(key, "unknown-target")
            return
        if all(tracker.already_applied(d) for d in report.decisions):
            self._finish(key, "already-applied")
            return
        terms: tuple[Terms, ...] | tuple[PaymentTerms, ...] | None
        if isinstance(tracker, EscrowLegTracker | BankLegTracker):
            terms = tracker.transmission_terms(report)
        else:
            terms = ()
        if terms is None:
            self._finish(key, "unknown-settlement")
            return
        if target in self._after and not self._after_done(target, report.decisions):
            self._waiting.setdefault(key, self._now)  # payment before release
            return
        self._waiting.pop(key, None)
        self._out.append(Transmit(target, certificate, terms, attempt))

    def _after_done(self, target: str, decisions: tuple[Decision, ...]) -> bool:
        """Every COMMIT of ``decisions`` to ``target`` may go: the leg it waits for is
        COMMITTED, as this node's tracker of that leg sees it."""
        first = self.trackers[self._after[target]]
        return all(d.action is not Action.COMMIT or first.already_applied(d) for d in decisions)

    def _release_waiting(self, updated: str) -> None:
        """``updated``'s tracker learned something: transmit the waiting certificates it
        now allows, newest first; an older one whose decisions a newer one that went
        carries ends as "superseded". One waiting too long is given up."""
        sent: dict[str, set[bytes]] = {}
        for key in sorted(self._waiting, key=lambda k: (k[1], k[2]), reverse=True):
            target = key[0]
            if self._after.get(target) != updated:
                continue
            pending = self._transmissions.get(key)
            if pending is None:
                self._waiting.pop(key, None)
                continue
            decisions = pending.certificate.report.decisions
            covered = sent.get(target)
            if covered is not None and {d.settlement_id for d in decisions} <= covered:
                self._finish(key, "superseded")
            elif self._after_done(target, decisions):
                sent.setdefault(target, set()).update(d.settlement_id for d in decisions)
                report = pending.certificate.report
                names = [t.name for t in self.config.consensus.targets]
                delay = transmission_delay(
                    self.config.consensus,
                    names.index(target),
                    report.epoch,
                    report.round,
                    self.index,
                )
                if not delay:
                    self._transmit(target, pending.certificate, pending.attempt)
                else:
                    del self._waiting[key]
                    timer = DriverTimer(DriverTimerKind.STAGE, target, report.epoch, report.round)
                    self._out.append(SetTimer(timer, self._now + delay))
            elif self._now - self._waiting[key] > AFTER_WAIT_LIMIT:
                self._finish(key, "after-leg-pending")

    def _on_transmission_done(self, event: TransmissionDone) -> None:
        key = (event.target, event.epoch, event.round)
        pending = self._transmissions.get(key)
        if pending is None:
            return  # a result for a transmission this incarnation did not start
        delays = self.config.retry_delays
        if event.result in RETRYABLE_RESULTS and pending.attempt < len(delays):
            timer = DriverTimer(DriverTimerKind.RETRY, event.target, event.epoch, event.round)
            self._out.append(SetTimer(timer, self._now + delays[pending.attempt]))
            return
        self._finish(key, event.result)

    def _finish(self, key: tuple[str, int, int], result: str) -> None:
        pending = self._transmissions.pop(key)
        self._waiting.pop(key, None)
        target, epoch, round_ = key
        label = f"{target}:{result}"
        self.stats.transmissions[label] = self.stats.transmissions.get(label, 0) + 1
        seconds = self._now - pending.began
        self.stats.transmit_latency.observe(seconds)
        self._out.append(
            TransmissionFinished(target, epoch, round_, result, pending.attempt + 1, seconds)
        )

    # ------------------------------------------------------------------ driver timers

    def _on_driver_timer(self, timer: DriverTimer) -> None:
        if timer.kind is DriverTimerKind.NEWS:
            return  # ``handle`` looks at pending news after every event
        if timer.kind is DriverTimerKind.RETRY or timer.kind is DriverTimerKind.STAGE:
            pending = self._transmissions.get((timer.target, timer.epoch, timer.round))
            if pending is not None:
                retry = timer.kind is DriverTimerKind.RETRY
                self._transmit(timer.target, pending.certificate, pending.attempt + retry)
        else:
            tracker = self._tracker(timer.target, BankLegTracker)
            began = self._reading.get(timer.target)
            if began is None or self._now - began > BANK_READ_TIMEOUT:
                self.observation()  # which settlements are being served now
                stale = tracker.stale(
                    self._now,
                    self.config.bank_quiet_for,
                    self.config.bank_polls_per_cycle,
                    self._serving,
                )
                if stale:
                    self._reading[timer.target] = self._now
                    self._out.append(ReadLeg(timer.target, stale))
            self._arm_poll(timer.target)

    def _arm_poll(self, target: str) -> None:
        timer = DriverTimer(DriverTimerKind.POLL, target)
        self._out.append(SetTimer(timer, self._now + self.config.bank_poll_interval))

    # ------------------------------------------------------------------ helpers

    def _tracker(self, name: str, kind: type[Any]) -> Any:
        tracker = self.trackers.get(name)
        if not isinstance(tracker, kind):
            raise ValueError(f"event for target {name!r}, which is not a {kind.__name__} target")
        return tracker


def _make_tracker(target: TargetSpec, book: SettlementBook) -> _Tracker:
    if target.kind == "evm":
        return EscrowLegTracker(target.leg, book)
    if target.kind == "bank":
        return BankLegTracker(target.leg, target.currency, book)
    return ReportedFactsTracker(target.leg, book)
