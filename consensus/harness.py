"""A deterministic in-memory harness: n consensus nodes, one virtual clock, a seeded network.

This is the seed of dvpsim's simulation mode. It runs the real node state machines
(``consensus.protocol.Node``, wrapped by ``consensus.byzantine`` for Byzantine members)
and replaces only the world around them:

- time: a priority queue of ``(time, sequence)`` events; virtual seconds, no sleeping;
- network: ``consensus.network.SimulatedNetwork``, the one network model of every
  simulation (the full-system world of ``scenarios.sim`` uses it too): per-link base
  delay plus jitter; until ``heal_at``, per-message drops, duplicates, extra delay that
  reorders, and partitions (symmetric, or one-way: messages from one side are lost, the
  other direction works);
- crashes: a node's volatile state is lost at ``at`` (optionally in the middle of a step,
  after its first k actions, to exercise the persistence contract) and it restarts with
  exactly what its Persist actions wrote;
- observations: a deterministic ``ObservationSource`` answers RequestObservation;
- cryptography, optionally: every node signs and verifies through the ``crypto`` suite
  given (``consensus.crypto``); the real one by default, the memoized one to verify each
  certificate once per process, or the simulation's keyed-hash stand-in
  (``scenarios.sim.fastcrypto``), whose findings are re-run with real crypto before they
  are reported. A suite that needs the members' keys (``KeyRegistry``) is given them here.
  The suite changes signature bytes only: with the same seed, every suite certifies the
  same reports in the same rounds with the same signers.

Everything random comes from one ``random.Random(schedule.seed)``, consumed in event order,
so the same configuration, schedule and adversary give the same history, record for record
(``SimulationResult.history`` holds canonical msgpack records; two runs compare byte for
byte).

The harness enforces the safety store's ordering contract (``consensus.safety``): before an
honest node's SHARES or CERTIFICATES message leaves, every decision in the node's safety
record must already be in its durable store, else ``PersistenceContractViolation``.

This module must never let a node see anything but its events (no shared state between
nodes), read the wall clock, or use randomness not drawn from the schedule's seed.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache
from typing import Any, Protocol

import msgpack

from consensus import bls
from consensus.codec import CodecError, CodecLimits, decode, peek_kind
from consensus.config import ConsensusConfig, Target
from consensus.crypto import REAL_CRYPTO, CryptoSuite, KeyRegistry
from consensus.events import (
    Action,
    Broadcast,
    CancelTimer,
    Certified,
    EpochStarted,
    Event,
    MessageReceived,
    ObservationReady,
    Persist,
    Rejected,
    RequestObservation,
    Send,
    SetTimer,
    Start,
    Timer,
    TimerFired,
    Transmit,
)
from consensus.identity import identity_key_from_seed, public_key_bytes
from consensus.messages import Kind, RoundCertificates
from consensus.network import Crash, NetworkProfile, Partition, SimulatedNetwork
from consensus.outcome import OutcomeFunction
from consensus.protocol import Node, NodeKeys
from consensus.report import (
    Certificate,
    CommitteeConfig,
    check_proofs_of_possession,
    default_threshold,
)
from consensus.safety import DurableStore

__all__ = [
    "CertificateSighting",
    "Crash",
    "NetworkProfile",
    "NodeLike",
    "NodeFactory",
    "ObservationSource",
    "Partition",
    "PersistenceContractViolation",
    "Schedule",
    "Simulation",
    "SimulationResult",
    "TimedCertificate",
    "check_persisted",
    "register_keys",
    "simulated_committee",
]


class PersistenceContractViolation(AssertionError):
    """A node let shares leave before the decisions they commit to were persisted."""


def check_persisted(node: int, data: bytes, persisted: int, committed: int, now: float) -> None:
    """The persistence contract for one outgoing message of ``node``: shares and
    certificates may leave only once all ``committed`` safety decisions are among the
    ``persisted`` ones; otherwise :class:`PersistenceContractViolation`."""
    if persisted >= committed:
        return
    kind = peek_kind(data)
    if kind is Kind.SHARES or kind is Kind.CERTIFICATES:
        raise PersistenceContractViolation(
            f"node {node} sent {kind.name} at t={now} before persisting "
            f"{committed - persisted} decisions"
        )


class NodeLike(Protocol):
    """What the harness drives: the honest Node or a Byzantine wrapper around one."""

    def handle(self, event: Event) -> tuple[Action, ...]: ...

    @property
    def safety_decision_count(self) -> int: ...


#: Builds node ``index`` (honest or Byzantine) from its honest state machine.
NodeFactory = Callable[[Node], NodeLike]


class ObservationSource(Protocol):
    """What node ``node`` observes at ``now`` for (epoch, round). Must be deterministic."""

    def __call__(self, node: int, now: float, epoch: int, round_: int) -> bytes: ...


# --------------------------------------------------------------------------- schedules


@dataclass(frozen=True, slots=True)
class Schedule:
    """Everything about a run that is not the committee: seed, network, faults, length."""

    seed: int = 0
    network: NetworkProfile = NetworkProfile()
    partitions: tuple[Partition, ...] = ()
    crashes: tuple[Crash, ...] = ()
    heal_at: float = 0.0  # from here on: no drops, duplicates, reordering or partitions
    duration: float = 10.0
    observation_delay: float = 0.0  # time a node takes to answer RequestObservation


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class CertificateSighting:
    """A certificate that appeared anywhere: in a message some node sent, or transmitted."""

    time: float
    node: int  # who sent or transmitted it
    target: int
    certificate: Certificate


@dataclass(frozen=True, slots=True)
class TimedCertificate:
    """A certificate an honest node accepted (a Certified action)."""

    time: float
    node: int
    target: str
    certificate: Certificate


@dataclass(frozen=True, slots=True)
class SimulationResult:
    history: tuple[bytes, ...]
    sightings: tuple[CertificateSighting, ...]
    certified: tuple[TimedCertificate, ...]
    transmissions: tuple[TimedCertificate, ...]
    observations: tuple[tuple[int, float, int, int, bytes], ...]  # node, time, e, r, bytes
    honest: frozenset[int]
    end_time: float
    steps: int
    messages_sent: int
    messages_delivered: int
    rejected: int

    def history_digest(self) -> str:
        digest = hashlib.sha256()
        for record in self.history:
            digest.update(len(record).to_bytes(4, "big"))
            digest.update(record)
        return digest.hexdigest()


# --------------------------------------------------------------------------- committees


def register_keys(crypto: CryptoSuite, keys: Sequence[NodeKeys]) -> None:
    """Give a suite that checks only keys it knows (``KeyRegistry``) the members' keys,
    as the simulated world does when it builds a committee; other suites need nothing."""
    if isinstance(crypto, KeyRegistry):
        for member in keys:
            crypto.register_bls(member.bls_secret)
            crypto.register_identity(member.identity)


@lru_cache(maxsize=32)
def simulated_committee(
    n: int,
    f: int,
    *,
    seed: int = 0,
    targets: tuple[str, ...] = ("asset",),
    t: int | None = None,
    allow_unsafe_threshold: bool = False,
    crypto: CryptoSuite = REAL_CRYPTO,
    **parameters: Any,
) -> tuple[ConsensusConfig, tuple[NodeKeys, ...]]:
    """A committee with keys derived from ``seed`` (never use them for anything real):
    Ed25519 identities and BLS keys with proofs of possession made and checked with
    ``crypto`` (which is given the keys first if it is a ``KeyRegistry``), one
    CommitteeConfig per target (chain ids 1, 2, ...), and the ConsensusConfig with the
    given Delta parameters and limits. The keys and configs are the same for every suite."""
    keys = []
    for i in range(n):
        base = hashlib.sha256(b"dvpsim/simulated-committee" + seed.to_bytes(8, "big") + bytes([i]))
        identity = identity_key_from_seed(hashlib.sha256(base.digest() + b"identity").digest())
        bls_secret = bls.keygen(hashlib.sha256(base.digest() + b"bls").digest())
        keys.append(NodeKeys(identity, bls_secret))
    register_keys(crypto, keys)
    public_keys = tuple(crypto.sk_to_pk(k.bls_secret) for k in keys)
    threshold = default_threshold(n, f) if t is None else t
    committees = []
    for number, name in enumerate(targets, start=1):
        committee = CommitteeConfig(
            chain_id=number,
            verifier=hashlib.sha256(name.encode()).digest()[:20],
            config_count=1,
            public_keys=public_keys,
            f=f,
            t=threshold,
        )
        check_proofs_of_possession(
            committee, [crypto.pop_prove(k.bls_secret) for k in keys], crypto=crypto
        )
        committees.append(Target(name, committee))
    config = ConsensusConfig(
        f=f,
        identity_keys=tuple(public_key_bytes(k.identity) for k in keys),
        targets=tuple(committees),
        leader_selection_key=hashlib.sha256(b"leader" + seed.to_bytes(8, "big")).digest()[:16],
        allow_unsafe_threshold=allow_unsafe_threshold,
        **parameters,
    )
    return config, tuple(keys)


# --------------------------------------------------------------------------- simulation


class _Ev(IntEnum):
    # Tie order at equal times is the sequence number; the kind only names the entry.
    START = 0
    DELIVER = 1
    TIMER = 2
    OBSERVE = 3
    CRASH = 4
    RESTART = 5


def _short(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:12]


def _unrecorded(data: bytes) -> bytes:
    return b""


@dataclass(slots=True)
class _Stats:
    steps: int = 0
    sent: int = 0
    delivered: int = 0
    rejected: int = 0


@dataclass(slots=True)
class _Run:
    history: list[bytes] = field(default_factory=list)
    sightings: list[CertificateSighting] = field(default_factory=list)
    sighting_keys: dict[tuple[int, bytes, bytes, int, bytes], None] = field(default_factory=dict)
    certified: list[TimedCertificate] = field(default_factory=list)
    transmissions: list[TimedCertificate] = field(default_factory=list)
    observations: list[tuple[int, float, int, int, bytes]] = field(default_factory=list)
    stats: _Stats = field(default_factory=_Stats)


class Simulation:
    """One run of a committee under a schedule. ``byzantine`` maps a node index to a
    factory wrapping its honest state machine; at most f entries keep the protocol's
    assumptions (the harness does not check, so tests can also go beyond)."""

    def __init__(
        self,
        config: ConsensusConfig,
        keys: Sequence[NodeKeys],
        outcome: OutcomeFunction,
        observe: ObservationSource,
        schedule: Schedule,
        byzantine: Mapping[int, NodeFactory] | None = None,
        *,
        record_history: bool = True,
        keep_deliveries: bool = False,
        crypto: CryptoSuite = REAL_CRYPTO,
        member_crypto: Sequence[CryptoSuite] | None = None,
    ) -> None:
        self.config = config
        self.keys = tuple(keys)
        self.outcome = outcome
        self.observe = observe
        self.schedule = schedule
        self.byzantine = dict(byzantine or {})
        self.record_history = record_history
        self.keep_deliveries = keep_deliveries
        self.crypto = crypto
        register_keys(crypto, self.keys)
        #: Each member's own suite, where one process must charge every member its own
        #: work (caches included); by default every member uses ``crypto``.
        self.member_crypto = tuple(member_crypto) if member_crypto is not None else None
        if self.member_crypto is not None:
            if len(self.member_crypto) != config.n:
                raise ValueError(
                    f"member_crypto has {len(self.member_crypto)} suites for {config.n} members"
                )
            for suite in self.member_crypto:
                register_keys(suite, self.keys)
        #: After run(): the members as they ended (None if crashed), and, with
        #: keep_deliveries, every delivered message as (time, sender, receiver, bytes).
        self.final_nodes: list[NodeLike | None] = []
        self.deliveries: list[tuple[float, int, int, bytes]] = []
        self._ran = False
        self.honest = frozenset(i for i in range(config.n) if i not in self.byzantine)
        self._limits = CodecLimits.from_config(config)

    def _make_node(self, index: int) -> NodeLike:
        suite = self.crypto if self.member_crypto is None else self.member_crypto[index]
        node = Node(self.config, index, self.keys[index], self.outcome, crypto=suite)
        factory = self.byzantine.get(index)
        return node if factory is None else factory(node)

    def run(self) -> SimulationResult:
        """Run the schedule to its end and return what happened. A Simulation runs once
        (its Byzantine factories keep state); build a new one to run again."""
        if self._ran:
            raise RuntimeError("this Simulation has already run; build a new one")
        self._ran = True
        cfg, sched = self.config, self.schedule
        n = cfg.n
        rng = random.Random(sched.seed)
        run = _Run()
        queue: list[tuple[float, int, int, int, Any]] = []
        seq = 0

        def push(time: float, kind: _Ev, node: int, payload: Any) -> int:
            nonlocal seq
            seq += 1
            heapq.heappush(queue, (time, seq, kind, node, payload))
            return seq

        def record(*fields: Any) -> None:
            if self.record_history:
                run.history.append(msgpack.packb(list(fields), use_bin_type=True))

        # Digests of the bytes recorded, only computed for a history that is kept.
        short = _short if self.record_history else _unrecorded

        network = SimulatedNetwork(
            n, sched.network, rng, partitions=sched.partitions, heal_at=sched.heal_at
        )
        nodes: list[NodeLike | None] = [None] * n
        durable = [DurableStore() for _ in range(n)]
        incarnation = [0] * n
        timers: dict[tuple[int, Timer], int] = {}  # (node, timer) -> live queue sequence
        armed_crash: dict[int, Crash] = {}  # node -> crash due within its next step

        for i in range(n):
            push(0.0, _Ev.START, i, None)
        for crash in sched.crashes:
            push(crash.at, _Ev.CRASH, crash.node, crash)

        def transmit(src: int, dst: int, data: bytes, now: float) -> None:
            run.stats.sent += 1
            route = network.route(src, dst, now)
            if isinstance(route, str):
                record(now, "lost", src, dst, short(data), route)
                return
            for delay in route:
                push(now + delay, _Ev.DELIVER, dst, (src, data))
            record(now, "send", src, dst, short(data), len(route))

        def note_certificates(node: int, data: bytes, now: float) -> None:
            if peek_kind(data) is not Kind.CERTIFICATES:
                return
            try:
                message = decode(data, self._limits)
            except CodecError:
                return
            assert isinstance(message, RoundCertificates)
            for target, cert in enumerate(message.certificates):
                self._sight(run, now, node, target, cert)

        def crash_now(i: int, now: float, restart_at: float | None) -> None:
            nodes[i] = None
            incarnation[i] += 1
            for key in [k for k in timers if k[0] == i]:
                del timers[key]
            record(now, "crash", i)
            if restart_at is None:
                restart_at = sched.heal_at if sched.heal_at > now else now + 1.0
            push(max(restart_at, now), _Ev.RESTART, i, None)

        def step(i: int, event: Event) -> None:
            node = nodes[i]
            if node is None:
                return
            run.stats.steps += 1
            actions = node.handle(event)
            crash = armed_crash.pop(i, None)
            now = event.now
            for k, action in enumerate(actions):
                if (
                    crash is not None
                    and crash.after_actions is not None
                    and k >= crash.after_actions
                ):
                    break
                carry_out(i, node, action, now)
            if crash is not None:
                crash_now(i, now, crash.restart_at)

        def carry_out(i: int, node: NodeLike, action: Action, now: float) -> None:
            if isinstance(action, Send | Broadcast):
                if i in self.honest:
                    check_persisted(
                        i, action.data, durable[i].decision_count, node.safety_decision_count, now
                    )
                note_certificates(i, action.data, now)
                if isinstance(action, Send):
                    transmit(i, action.to, action.data, now)
                else:
                    for j in range(n):
                        if j != i:
                            transmit(i, j, action.data, now)
            elif isinstance(action, Persist):
                durable[i].apply(action.update)
                if self.record_history:
                    record(now, "persist", i, _short(repr(action.update).encode()))
            elif isinstance(action, SetTimer):
                timers[(i, action.timer)] = push(
                    action.at, _Ev.TIMER, i, (action.timer, incarnation[i])
                )
            elif isinstance(action, CancelTimer):
                timers.pop((i, action.timer), None)
            elif isinstance(action, RequestObservation):
                push(
                    now + sched.observation_delay,
                    _Ev.OBSERVE,
                    i,
                    (action.epoch, action.round, incarnation[i]),
                )
            elif isinstance(action, Certified):
                if i in self.honest:
                    run.certified.append(
                        TimedCertificate(now, i, action.target, action.certificate)
                    )
                record(
                    now,
                    "certified",
                    i,
                    action.target,
                    action.certificate.report.epoch,
                    action.certificate.report.round,
                )
            elif isinstance(action, Transmit):
                run.transmissions.append(
                    TimedCertificate(now, i, action.target, action.certificate)
                )
                self._sight(run, now, i, cfg.target_index(action.target), action.certificate)
                record(
                    now,
                    "transmit",
                    i,
                    action.target,
                    action.certificate.report.epoch,
                    action.certificate.report.round,
                )
            elif isinstance(action, EpochStarted):
                record(now, "epoch", i, action.epoch, action.leader)
            elif isinstance(action, Rejected):
                run.stats.rejected += 1
                record(now, "rejected", i, action.sender, action.reason)

        end = sched.duration
        while queue:
            time, entry_seq, kind, i, payload = heapq.heappop(queue)
            if time > end:
                break
            if kind == _Ev.DELIVER:
                src, data = payload
                if nodes[i] is None:
                    record(time, "lost", src, i, short(data), "crashed")
                    continue
                run.stats.delivered += 1
                record(time, "deliver", src, i, short(data))
                if self.keep_deliveries:
                    self.deliveries.append((time, src, i, data))
                step(i, MessageReceived(time, src, data))
            elif kind == _Ev.TIMER:
                timer, inc = payload
                if inc != incarnation[i] or timers.get((i, timer)) != entry_seq:
                    continue  # cancelled, replaced, or set before a crash
                del timers[(i, timer)]
                record(time, "timer", i, int(timer.kind), timer.epoch, timer.round, timer.target)
                step(i, TimerFired(time, timer))
            elif kind == _Ev.OBSERVE:
                epoch, round_, inc = payload
                if inc != incarnation[i]:
                    continue
                observation = self.observe(i, time, epoch, round_)
                if i in self.honest:
                    run.observations.append((i, time, epoch, round_, observation))
                record(time, "observe", i, epoch, round_, short(observation))
                step(i, ObservationReady(time, epoch, round_, observation))
            elif kind in (_Ev.START, _Ev.RESTART):
                nodes[i] = self._make_node(i)
                record(time, "start", i)
                step(i, Start(time, durable[i].state()))
            elif kind == _Ev.CRASH:
                crash = payload
                if nodes[i] is None:
                    continue
                if crash.after_actions is not None:
                    armed_crash[i] = crash
                else:
                    crash_now(i, time, crash.restart_at)
        self.final_nodes = nodes
        return SimulationResult(
            history=tuple(run.history),
            sightings=tuple(run.sightings),
            certified=tuple(run.certified),
            transmissions=tuple(run.transmissions),
            observations=tuple(run.observations),
            honest=self.honest,
            end_time=end,
            steps=run.stats.steps,
            messages_sent=run.stats.sent,
            messages_delivered=run.stats.delivered,
            rejected=run.stats.rejected,
        )

    @staticmethod
    def _sight(run: _Run, now: float, node: int, target: int, cert: Certificate) -> None:
        key = (target, cert.report.config_digest, _report_key(cert), cert.signers, cert.signature)
        if key in run.sighting_keys:
            return
        run.sighting_keys[key] = None
        run.sightings.append(CertificateSighting(now, node, target, cert))


def _report_key(cert: Certificate) -> bytes:
    rep = cert.report
    packed: bytes = msgpack.packb(
        [
            rep.epoch,
            rep.round,
            [[d.settlement_id, int(d.action), d.terms_hash] for d in rep.decisions],
        ],
        use_bin_type=True,
    )
    return packed
