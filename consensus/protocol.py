"""The consensus node: one committee member's state machine, events in, actions out.

``Node.handle(event)`` is the only entry point. It combines OCR's three parts:

- the pacemaker (``consensus.pacemaker``): NEW-EPOCH, DeltaProgress, DeltaResend;
- report generation, leader and follower, with BLS shares instead of OCR's signature
  lists: OBSERVE-REQ -> signed OBSERVATION -> PROPOSAL after DeltaGrace, carrying a
  quorum of the observations (``proposal_observers``) -> SHARES -> CERTIFICATES. The leader aggregates shares into one certificate per target, so a round
  costs O(n) messages. It verifies the aggregate once and checks shares one by one only
  when that fails, discarding the bad ones;
- the round pace: a leader starts a round DeltaRound after the last one started, once
  that one has finished; when the runtime says new work arrived (ObservationChanged),
  as soon as the last round has finished, but not before ROUND_GAP_FRACTION of DeltaRound
  and only if that round decided less than EARLY_ROUND_MAX_DECISIONS (under load the
  DeltaRound pace gathers larger batches);
- transmission: each member transmits a certificate at its stage of a schedule keyed by
  the round (``transmission_schedule`` stages, DeltaStage apart), so that usually one
  transmission suffices and an honest member transmits anyway.

Messages a node broadcasts are also handled by the node itself, in the same step, without
crossing the network (the leader is a follower of its own rounds; OCR does the same).

Every handler validates its input completely before it changes anything: a malformed,
oversized, wrongly signed, stale or replayed message yields only a ``Rejected`` action and
leaves the state exactly as it was. The one deliberate exception is a BLS share: checking
each share on arrival would double the leader's pairings, so shares are checked in
aggregate; a bad one is kept until the aggregate fails, then dropped, and its sender is
excluded for the rest of the round. Since only a member can send its own share
(authenticated channels), this costs no other member anything. Likewise an observation
that reaches the leader after the quorum is kept unchecked: the proposal carries a quorum
(``proposal_observers``), so most of them are never used; one the proposal picks is
checked then, and a bad one is dropped and its sender rejected. Two errors are raised
instead of reported:
``LocalProtocolError`` when the runtime breaks the contract (an event before Start, time
running backwards, an oversized local observation), and errors from a buggy outcome
function. A peer can trigger neither.

Safety rests on the safety store (``consensus.safety``): shares are signed only for
decisions that conflict with nothing the node signed before, and the record is returned
as a Persist action placed before the Send that carries the shares.

Every signature the node makes or checks (observations, shares, the aggregate and its
per-share fallback, certificates) goes through its crypto suite (``consensus.crypto``,
the real one unless the runtime passes another).

This module must never read a clock, the network, a global random generator or the disk;
time comes only in events, randomness nowhere.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack
from nacl.signing import SigningKey

from consensus import bls
from consensus.codec import CodecError, CodecLimits, decode, encode
from consensus.config import ConsensusConfig
from consensus.crypto import REAL_CRYPTO, CryptoSuite
from consensus.errors import LocalProtocolError
from consensus.events import (
    Action,
    Broadcast,
    CancelTimer,
    Certified,
    EpochStarted,
    Event,
    MessageReceived,
    ObservationChanged,
    ObservationReady,
    Persist,
    Rejected,
    RequestObservation,
    Send,
    SetTimer,
    Start,
    Timer,
    TimerFired,
    TimerKind,
    Transmit,
)
from consensus.identity import observation_message, public_key_bytes
from consensus.messages import (
    MAX_EPOCH,
    Message,
    NewEpoch,
    ObserveReq,
    Proposal,
    RoundCertificates,
    Shares,
    SignedObservation,
)
from consensus.outcome import AttributedObservation, OutcomeContext, OutcomeFunction
from consensus.pacemaker import (
    Pacemaker,
    join_epoch,
    keyed_permutation,
    leader,
    move_epoch,
    progress_timeout,
    resend_interval,
)
from consensus.report import (
    Certificate,
    CertificateError,
    Decision,
    Report,
    ReportError,
    make_certificate,
    report_hash,
    verify_certificate,
)
from consensus.safety import PersistUpdate, SafetyStore

__all__ = [
    "EARLY_ROUND_MAX_DECISIONS",
    "ROUND_GAP_FRACTION",
    "LocalProtocolError",
    "Node",
    "NodeKeys",
    "Phase",
    "compute_reports",
    "proposal_digest",
    "proposal_observers",
    "retransmit_interval",
    "transmission_delay",
]


#: How early (seconds) a timer may fire and still count as due.
_TIMER_SLACK = 1e-3
#: New work pulls a leader's next round in, but no closer than this part of DeltaRound
#: after the start of the last one: back-to-back rounds cost every member a round of
#: crypto each and cut the batches transmitted on chain into smaller, costlier ones.
ROUND_GAP_FRACTION = 0.25
#: ... and only after a round that decided less than this (all targets together): under
#: load, rounds at the DeltaRound pace carry larger batches, each certificate transmitted
#: and checked on chain once for all of its decisions.
EARLY_ROUND_MAX_DECISIONS = 8
#: Checked observations remembered per round, times n (Byzantine members can sign any
#: number of observations; the memory must not grow with them).
_CHECKED_LIMIT = 4


class Phase(IntEnum):
    """The leader's phase within a round (OCR's phaseObserve .. phaseFinal)."""

    IDLE = 0
    OBSERVE = 1
    GRACE = 2
    REPORT = 3
    FINAL = 4


@dataclass(frozen=True, slots=True)
class NodeKeys:
    """A member's secrets: Ed25519 identity key (observations) and BLS key (shares)."""

    identity: SigningKey
    bls_secret: int


# --------------------------------------------------------------------------- pure helpers


def compute_reports(
    config: ConsensusConfig, outcome: OutcomeFunction, proposal: Proposal
) -> tuple[Report, ...]:
    """The reports, one per target, that every honest member derives from ``proposal``.
    The outcome's decisions beyond ``max_decisions_per_report`` are cut off, in order."""
    names = tuple(t.name for t in config.targets)
    context = OutcomeContext(
        n=config.n,
        f=config.f,
        epoch=proposal.epoch,
        round=proposal.round,
        targets=names,
        max_decisions=config.max_decisions_per_report,
    )
    result = outcome(
        [AttributedObservation(so.observer, so.observation) for so in proposal.observations],
        context,
    )
    unknown = sorted(set(result) - set(names))
    if unknown:
        raise LocalProtocolError(
            f"outcome function returned decisions for unknown targets {unknown}"
        )
    reports = []
    for name, digest in zip(names, config.target_digests, strict=True):
        decisions = tuple(result.get(name, ()))[: config.max_decisions_per_report]
        try:
            reports.append(Report(digest, proposal.epoch, proposal.round, decisions))
        except ReportError as e:
            raise LocalProtocolError(f"outcome function produced an invalid report: {e}") from e
    return tuple(reports)


def proposal_observers(
    config: ConsensusConfig,
    epoch: int,
    round_: int,
    arrived: Collection[int],
    usable: Callable[[int], bool] = lambda j: True,
) -> list[int]:
    """Whose observations the leader's proposal of (epoch, round) carries, in observer
    order: ``observation_quorum`` of those that ``arrived`` and are ``usable`` (all of
    them if fewer), the first in the order keyed by the round; ``usable`` is asked only
    until the quorum is full. The quorum suffices for every rule over the set (2f+1 hold
    f+1 honest ones), and each follower checks each observation a proposal carries: 31
    members checking 30 observations each cost more than all the rest of a round. The
    keyed order, not arrival, picks among them, so that a slow member's observation is
    carried as often as a fast one's once it is in by DeltaGrace. (A Byzantine leader
    can pick any quorum it likes; it could before, by claiming the others were late.)"""
    label = b"propose" + epoch.to_bytes(4, "big") + round_.to_bytes(8, "big")
    chosen: list[int] = []
    for j in keyed_permutation(config.leader_selection_key, label, config.n):
        if len(chosen) == config.quorum:
            break
        if j in arrived and usable(j):
            chosen.append(j)
    return sorted(chosen)


def proposal_digest(proposal: Proposal) -> bytes:
    return hashlib.sha256(encode(proposal)).digest()


def transmission_delay(
    config: ConsensusConfig, target: int, epoch: int, round_: int, member: int
) -> float | None:
    """When, after accepting the certificate of (target, epoch, round), ``member``
    transmits it: its stage times DeltaStage; None if the schedule leaves it out."""
    label = b"transmit" + bytes([target]) + epoch.to_bytes(4, "big") + round_.to_bytes(8, "big")
    position = keyed_permutation(config.leader_selection_key, label, config.n).index(member)
    start = 0
    for stage, size in enumerate(config.schedule):
        if position < start + size:
            return stage * config.delta_stage
        start += size
    return None


def retransmit_interval(resends: int, delta_resend: float, delta_progress: float) -> float:
    """How long a leader waits before it resends the open round's request again, after
    ``resends`` resends: DeltaResend doubled each time, at most DeltaProgress. A member
    that is slow, not lost, answers the first request; resending to it every DeltaResend
    only queues more copies behind the first (and each copy of a proposal is n
    observations long), which made overloaded members slower still."""
    return min(delta_resend * 2.0**resends, delta_progress)


def _certificate_record(cert: Certificate | None) -> list[Any] | None:
    if cert is None:
        return None
    rep = cert.report
    decisions = [[d.settlement_id, int(d.action), d.terms_hash] for d in rep.decisions]
    return [rep.config_digest, rep.epoch, rep.round, decisions, cert.signers, cert.signature]


# --------------------------------------------------------------------------- the node


class Node:
    """One committee member (see the module docstring)."""

    def __init__(
        self,
        config: ConsensusConfig,
        index: int,
        keys: NodeKeys,
        outcome: OutcomeFunction,
        *,
        crypto: CryptoSuite = REAL_CRYPTO,
    ) -> None:
        if not 0 <= index < config.n:
            raise LocalProtocolError(f"node index {index} is outside the committee of {config.n}")
        if public_key_bytes(keys.identity) != config.identity_keys[index]:
            raise LocalProtocolError(
                f"identity key of node {index} does not match identity_keys[{index}]"
            )
        bls_pk = crypto.sk_to_pk(keys.bls_secret)
        for target in config.targets:
            if target.committee.public_keys[index] != bls_pk:
                raise LocalProtocolError(
                    f"BLS key of node {index} is not member {index} of target {target.name!r}"
                )
        self.config = config
        self.index = index
        #: The suite every signature of this node goes through (Byzantine wrappers use it).
        self.crypto = crypto
        self._keys = keys
        self._outcome = outcome
        self._limits = CodecLimits.from_config(config)
        self._n_targets = len(config.targets)
        self._started = False
        self._now = 0.0
        self._out: list[Action] = []
        self._loopback: deque[Message] = deque()
        # Durable-through-Persist state, restored at Start.
        self._pacemaker = Pacemaker(config.n, None)
        self._safety: SafetyStore | None = None
        # Volatile state.
        self._timers: dict[Timer, float] = {}
        self._leader = leader(1, config.n, config.leader_selection_key)
        self._reset_epoch_state()
        self._pending_transmissions: dict[tuple[int, int, int], Certificate] = {}
        # Epochs entered in a row without a certificate (the progress timeout's backoff).
        self._failed_epochs = 0
        # Observations of one round whose signatures this node checked (a cache).
        self._checked: set[SignedObservation] = set()
        self._checked_round = (0, 0)

    def _reset_epoch_state(self) -> None:
        # Follower side of the current epoch.
        self._f_round = 0
        self._f_awaiting_observation = False
        self._f_observation: bytes | None = None  # encoded, for resends
        self._f_own_observation: SignedObservation | None = None
        self._f_signed_round = 0
        self._f_signed_proposal: Proposal | None = None  # the one signed in _f_signed_round
        self._f_shares: bytes | None = None  # encoded, for resends
        self._certified: dict[tuple[int, int], tuple[Certificate, ...]] = {}  # (e, r)
        # Leader side of the current epoch.
        self._l_round = 0
        self._l_round_started = 0.0
        self._l_retransmits = 0  # resends of the open round's request so far
        self._l_phase = Phase.IDLE
        self._l_ready = True
        self._l_observations: dict[int, SignedObservation] = {}
        # Observations that arrived after the quorum, kept unchecked until the proposal
        # picks them (most are never picked: a quorum is carried, not all).
        self._l_unchecked: set[int] = set()
        self._l_proposal: Proposal | None = None
        self._l_proposal_bytes = b""
        self._l_reports: tuple[Report, ...] = ()
        self._l_hashes: tuple[bytes, ...] = ()
        self._l_share_senders: set[int] = set()
        self._l_shares: list[dict[int, bytes]] = [{} for _ in range(self._n_targets)]
        self._l_good: list[set[int]] = [set() for _ in range(self._n_targets)]
        self._l_bad: list[set[int]] = [set() for _ in range(self._n_targets)]
        self._l_certs: list[Certificate | None] = [None] * self._n_targets
        # The reports computed for the last proposal handled, shared by the leader and
        # its own follower part (same proposal object, same deterministic result).
        self._report_cache: tuple[Proposal | None, tuple[Report, ...], tuple[bytes, ...]] = (
            None,
            (),
            (),
        )

    # ------------------------------------------------------------------ public API

    @property
    def epoch(self) -> int:
        return self._pacemaker.e

    @property
    def current_leader(self) -> int:
        return self._leader

    @property
    def safety_decision_count(self) -> int:
        """Decisions in the node's safety record (the harness checks durability with it)."""
        return 0 if self._safety is None else self._safety.decision_count

    def handle(self, event: Event) -> tuple[Action, ...]:
        """Process one event; return the actions the runtime must carry out, in order."""
        if event.now < self._now:
            raise LocalProtocolError(f"time went backwards: {event.now} < {self._now}")
        self._out = []
        if isinstance(event, Start):
            self._now = event.now
            self._on_start(event)
        elif not self._started:
            raise LocalProtocolError("a node must receive Start before any other event")
        else:
            self._now = event.now
            if isinstance(event, MessageReceived):
                self._on_message(event.sender, event.data)
            elif isinstance(event, TimerFired):
                self._on_timer(event.timer)
            elif isinstance(event, ObservationChanged):
                self._on_observation_changed()
            else:
                self._on_observation_ready(event)
        while self._loopback:
            self._dispatch(self.index, self._loopback.popleft())
        out = tuple(self._out)
        self._out = []
        return out

    def snapshot(self) -> bytes:
        """A canonical encoding of the node's whole protocol state (not its clock), so
        tests can assert that an input changed nothing."""
        pm = self._pacemaker
        state: list[Any] = [
            self._started,
            [pm.e, pm.ne, list(pm.newepoch), self._failed_epochs],
            self._safety.snapshot() if self._safety is not None else None,
            sorted([int(t.kind), t.epoch, t.round, t.target, at] for t, at in self._timers.items()),
            self._leader,
            [
                self._f_round,
                self._f_awaiting_observation,
                self._f_observation,
                self._f_signed_round,
                b""
                if self._f_signed_proposal is None
                else proposal_digest(self._f_signed_proposal),
                self._f_shares,
                sorted(
                    [e, r, [_certificate_record(c) for c in certs]]
                    for (e, r), certs in self._certified.items()
                ),
            ],
            [
                self._l_round,
                self._l_retransmits,
                int(self._l_phase),
                self._l_ready,
                sorted(encode(so) for so in self._l_observations.values()),
                sorted(self._l_unchecked),
                self._l_proposal_bytes,
                sorted(self._l_share_senders),
                [sorted(s.items()) for s in self._l_shares],
                [sorted(s) for s in self._l_good],
                [sorted(s) for s in self._l_bad],
                [_certificate_record(c) for c in self._l_certs],
            ],
            sorted(list(k) for k in self._pending_transmissions),
        ]
        packed: bytes = msgpack.packb(state, use_bin_type=True)
        return packed

    # ------------------------------------------------------------------ output helpers

    def _reject(self, sender: int | None, reason: str) -> None:
        self._out.append(Rejected(sender, reason))

    def _set_timer(self, timer: Timer, delay: float) -> None:
        at = self._now + delay
        self._timers[timer] = at
        self._out.append(SetTimer(timer, at))

    def _cancel_timer(self, timer: Timer) -> None:
        if self._timers.pop(timer, None) is not None:
            self._out.append(CancelTimer(timer))

    def _broadcast(self, message: Message, *, loopback: bool = True) -> bytes:
        data = encode(message)
        self._out.append(Broadcast(data))
        if loopback:
            self._loopback.append(message)
        return data

    def _send(self, to: int, message: Message) -> None:
        if to == self.index:
            self._loopback.append(message)
        else:
            self._out.append(Send(to, encode(message)))

    def _persist_pacemaker(self) -> None:
        self._out.append(Persist(PersistUpdate(pacemaker=self._pacemaker.record())))

    def _is_leader(self) -> bool:
        return self._leader == self.index

    # ------------------------------------------------------------------ events

    def _on_start(self, event: Start) -> None:
        if self._started:
            raise LocalProtocolError("Start given twice; a restart is a new Node")
        self._started = True
        persisted = event.persisted
        self._pacemaker = Pacemaker(self.config.n, persisted.pacemaker)
        self._safety = SafetyStore(persisted)
        pm = self._pacemaker
        self._leader = leader(pm.e, self.config.n, self.config.leader_selection_key)
        self._out.append(EpochStarted(pm.e, self._leader))
        self._set_timer(Timer(TimerKind.PROGRESS), self.config.delta_progress)
        self._send_newepoch(pm.ne)
        if self._is_leader():
            # Continue after the last round this node signed in this epoch, so that
            # followers, who remember it, accept the next request.
            last_epoch, last_round = self._safety.last_signed
            if last_epoch == pm.e:
                self._l_round = last_round
            self._start_round()

    def _on_message(self, sender: int, data: bytes) -> None:
        if not 0 <= sender < self.config.n or sender == self.index:
            raise LocalProtocolError(f"message attributed to invalid sender {sender}")
        try:
            message = decode(data, self._limits)
        except CodecError as e:
            self._reject(sender, f"malformed message: {e}")
            return
        self._dispatch(sender, message)

    def _dispatch(self, sender: int, message: Message) -> None:
        if isinstance(message, NewEpoch):
            self._on_new_epoch(sender, message)
        elif isinstance(message, ObserveReq):
            self._on_observe_req(sender, message)
        elif isinstance(message, SignedObservation):
            self._on_observation(sender, message)
        elif isinstance(message, Proposal):
            self._on_proposal(sender, message)
        elif isinstance(message, Shares):
            self._on_shares(sender, message)
        else:
            self._on_certificates(sender, message)

    def _on_timer(self, timer: Timer) -> None:
        due = self._timers.get(timer)
        # A runtime replaces a re-set timer, so an early fire is a stale one; the slack
        # absorbs wall clocks that wake a hair before the deadline they were given.
        if due is None or self._now < due - _TIMER_SLACK:
            self._reject(None, f"stale timer {timer.kind.name}")
            return
        del self._timers[timer]
        kind = timer.kind
        if kind is TimerKind.PROGRESS:
            self._change_leader()
        elif kind is TimerKind.RESEND:
            self._send_newepoch(self._pacemaker.ne)
        elif kind is TimerKind.ROUND:
            self._start_round()
        elif kind is TimerKind.GRACE:
            self._propose()
        elif kind is TimerKind.RETRANSMIT:
            self._retransmit()
        else:
            cert = self._pending_transmissions.pop((timer.target, timer.epoch, timer.round))
            self._out.append(Transmit(self.config.targets[timer.target].name, cert))

    # ------------------------------------------------------------------ pacemaker

    def _send_newepoch(self, epoch: int) -> None:
        pm = self._pacemaker
        # The node's own NEW-EPOCH counts in newepoch[self]; resends of a value it already
        # counted need no second look.
        self._broadcast(NewEpoch(epoch), loopback=pm.newepoch[self.index] < epoch)
        if pm.ne != epoch:
            pm.ne = epoch
            self._persist_pacemaker()
        self._set_timer(
            Timer(TimerKind.RESEND),
            resend_interval(pm.e, pm.ne, self.config.delta_resend, self.config.delta_progress),
        )

    def _change_leader(self) -> None:
        """No progress (or the leader asked for too many rounds): ask for the next epoch."""
        pm = self._pacemaker
        if pm.e >= MAX_EPOCH:
            return  # nowhere to go; OCR logs and stays
        self._cancel_timer(Timer(TimerKind.PROGRESS))
        self._send_newepoch(max(pm.ne, pm.e + 1))

    def _on_new_epoch(self, sender: int, message: NewEpoch) -> None:
        pm = self._pacemaker
        if message.epoch == pm.newepoch[sender]:
            return  # the periodic resend of what the sender asked for already: nothing new
        if message.epoch < pm.newepoch[sender]:
            self._reject(sender, f"stale NEW-EPOCH {message.epoch}")
            return
        pm.newepoch[sender] = message.epoch
        self._persist_pacemaker()
        join = join_epoch(pm.newepoch, pm.ne, self.config.f)
        if join is not None:
            self._send_newepoch(join)
        move = move_epoch(pm.newepoch, pm.e, self.config.f)
        if move is not None:
            self._enter_epoch(move)

    def _enter_epoch(self, epoch: int) -> None:
        pm = self._pacemaker
        old_epoch, old_round = pm.e, self._l_round
        for kind in (TimerKind.ROUND, TimerKind.GRACE, TimerKind.RETRANSMIT):
            self._cancel_timer(Timer(kind, old_epoch, old_round))
        pm.e = epoch
        pm.ne = max(pm.ne, epoch)
        self._persist_pacemaker()
        self._leader = leader(epoch, self.config.n, self.config.leader_selection_key)
        self._reset_epoch_state()
        self._out.append(EpochStarted(epoch, self._leader))
        self._set_timer(
            Timer(TimerKind.PROGRESS),
            progress_timeout(self.config.delta_progress, self._failed_epochs),
        )
        self._failed_epochs += 1  # until a certificate of this epoch says otherwise
        if self._is_leader():
            self._start_round()

    # ------------------------------------------------------------------ leader

    def _start_round(self) -> None:
        """OCR's startRound: a new round starts when both the round timer has fired and
        the previous round has finished, whichever comes second."""
        if not self._l_ready:
            self._l_ready = True
            return
        if self._l_round > self.config.r_max:
            return  # followers asked for a new epoch at round r_max + 1
        e = self._pacemaker.e
        for kind in (TimerKind.GRACE, TimerKind.RETRANSMIT):
            self._cancel_timer(Timer(kind, e, self._l_round))
        self._l_round += 1
        r = self._l_round
        self._l_round_started = self._now
        self._l_retransmits = 0
        self._l_phase = Phase.OBSERVE
        self._l_ready = False
        self._l_observations = {}
        self._l_unchecked = set()
        self._l_proposal = None
        self._l_proposal_bytes = b""
        self._l_reports = ()
        self._l_hashes = ()
        self._l_share_senders = set()
        self._l_shares = [{} for _ in range(self._n_targets)]
        self._l_good = [set() for _ in range(self._n_targets)]
        self._l_bad = [set() for _ in range(self._n_targets)]
        self._l_certs = [None] * self._n_targets
        self._set_timer(Timer(TimerKind.ROUND, e, r), self.config.delta_round)
        self._set_timer(Timer(TimerKind.RETRANSMIT, e, r), self.config.delta_resend)
        self._broadcast(ObserveReq(e, r))

    def would_start_early(self) -> bool:
        """Whether news of new work (``ObservationChanged``) could start a round now: this
        node leads, its last round finished with a small batch (a busy committee's full
        DeltaRound gathers a larger, cheaper batch) and the round timer is running. A
        driver asks before it computes an observation to compare: under load the answer
        is no, and the observation is computed once a round, not once per event."""
        if not self._is_leader() or self._l_phase is not Phase.FINAL:
            return False
        decided = sum(len(c.report.decisions) for c in self._l_certs if c is not None)
        if decided >= EARLY_ROUND_MAX_DECISIONS:
            return False
        return Timer(TimerKind.ROUND, self._pacemaker.e, self._l_round) in self._timers

    def _on_observation_changed(self) -> None:
        """New work: if this node leads, its last round has finished with a small batch
        and the round timer is still running, start the next round now, or at ROUND_GAP_FRACTION of
        DeltaRound after the last start if that is later. Otherwise nothing: a round in
        progress will be followed by one at DeltaRound as usual, and a follower's news
        reaches the leader in its next observation."""
        if not self.would_start_early():
            return
        timer = Timer(TimerKind.ROUND, self._pacemaker.e, self._l_round)
        due = self._timers[timer]
        earliest = self._l_round_started + ROUND_GAP_FRACTION * self.config.delta_round
        if earliest <= self._now:
            self._cancel_timer(timer)
            self._start_round()  # the last round finished: this starts the next one
        elif earliest < due:
            self._set_timer(timer, earliest - self._now)  # earlier, never later

    def _retransmit(self) -> None:
        """Resend the unfinished round's request to the members that have not answered."""
        e, r = self._pacemaker.e, self._l_round
        if self._l_phase in (Phase.OBSERVE, Phase.GRACE):
            request = encode(ObserveReq(e, r))
            missing = [j for j in range(self.config.n) if j not in self._l_observations]
        elif self._l_phase is Phase.REPORT:
            request = self._l_proposal_bytes
            missing = [j for j in range(self.config.n) if j not in self._l_share_senders]
        else:
            return
        for j in missing:
            if j != self.index:
                self._out.append(Send(j, request))
        self._l_retransmits += 1
        self._set_timer(
            Timer(TimerKind.RETRANSMIT, e, r),
            retransmit_interval(
                self._l_retransmits, self.config.delta_resend, self.config.delta_progress
            ),
        )

    def _on_observation(self, sender: int, so: SignedObservation) -> None:
        if not self._is_leader():
            self._reject(sender, "OBSERVATION sent to a node that does not lead this epoch")
            return
        if so.epoch != self._pacemaker.e or so.round != self._l_round:
            self._reject(sender, f"OBSERVATION for ({so.epoch}, {so.round}) is not the open round")
            return
        if self._l_phase not in (Phase.OBSERVE, Phase.GRACE):
            self._reject(sender, "OBSERVATION after the proposal")
            return
        if so.observer != sender:
            self._reject(sender, f"OBSERVATION names observer {so.observer}, not its sender")
            return
        if sender in self._l_observations:
            self._reject(sender, "duplicate OBSERVATION")
            return
        if self._l_phase is Phase.GRACE and sender != self.index:
            self._l_observations[sender] = so
            self._l_unchecked.add(sender)  # checked if the proposal picks it
            return
        if sender != self.index and not self._observation_valid(so):
            self._reject(sender, "OBSERVATION signature does not verify")
            return
        self._l_observations[sender] = so
        if self._l_phase is Phase.OBSERVE and len(self._l_observations) >= self.config.quorum:
            self._l_phase = Phase.GRACE
            self._set_timer(
                Timer(TimerKind.GRACE, self._pacemaker.e, self._l_round), self.config.delta_grace
            )

    def _propose(self) -> None:
        if self._l_phase is not Phase.GRACE:
            return
        e, r = self._pacemaker.e, self._l_round
        chosen = proposal_observers(self.config, e, r, self._l_observations, self._picked)
        proposal = Proposal(e, r, tuple(self._l_observations[j] for j in chosen))
        self._l_proposal = proposal
        self._l_phase = Phase.REPORT
        self._l_reports, self._l_hashes = self._reports_for(proposal)
        self._l_proposal_bytes = self._broadcast(proposal)

    def _picked(self, observer: int) -> bool:
        """The proposal picks ``observer``'s observation: usable if it was checked on
        arrival or checks now; one that does not is dropped and its sender told."""
        if observer not in self._l_unchecked:
            return True
        self._l_unchecked.discard(observer)
        if self._observation_valid(self._l_observations[observer]):
            return True
        del self._l_observations[observer]
        self._reject(observer, "OBSERVATION signature does not verify")
        return False

    def _on_shares(self, sender: int, message: Shares) -> None:
        if not self._is_leader():
            self._reject(sender, "SHARES sent to a node that does not lead this epoch")
            return
        if message.epoch != self._pacemaker.e or message.round != self._l_round:
            self._reject(
                sender, f"SHARES for ({message.epoch}, {message.round}) is not the open round"
            )
            return
        if self._l_phase is not Phase.REPORT:
            self._reject(sender, "SHARES while not collecting shares")
            return
        if sender in self._l_share_senders:
            self._reject(sender, "duplicate SHARES")
            return
        self._l_share_senders.add(sender)
        for i, share in enumerate(message.shares):
            if share and self._l_certs[i] is None:
                self._l_shares[i][sender] = share
                if sender == self.index:
                    self._l_good[i].add(sender)
        for i in range(self._n_targets):
            if self._l_certs[i] is None:
                self._try_certify(i)
        if all(c is not None for c in self._l_certs):
            certs = tuple(c for c in self._l_certs if c is not None)
            self._l_phase = Phase.FINAL
            self._cancel_timer(Timer(TimerKind.RETRANSMIT, self._pacemaker.e, self._l_round))
            self._broadcast(RoundCertificates(self._pacemaker.e, self._l_round, certs))
            self._start_round()

    def _try_certify(self, target: int) -> None:
        """Aggregate t shares and verify the result once; only if that fails, verify the
        shares one by one, drop the bad ones and try again with the rest."""
        t = self.config.targets[target].committee.t
        committee = self.config.targets[target].committee
        shares, good, bad = self._l_shares[target], self._l_good[target], self._l_bad[target]
        while len(shares) >= t:
            chosen = sorted(shares, key=lambda j: (j not in good, j))[:t]
            try:
                cert = make_certificate(
                    self._l_reports[target], {j: shares[j] for j in chosen}, crypto=self.crypto
                )
                verify_certificate(cert, committee, crypto=self.crypto)
            except (CertificateError, bls.BlsError):
                unchecked = [j for j in chosen if j not in good]
                if not unchecked:
                    # t individually valid shares that do not aggregate: impossible unless
                    # the BLS backend is broken; stop rather than loop.
                    raise LocalProtocolError(
                        f"valid shares of {chosen} do not aggregate into a valid certificate"
                    ) from None
                for j in unchecked:
                    share_ok = self.crypto.bls_verify(
                        committee.public_keys[j], self._l_hashes[target], shares[j]
                    )
                    if share_ok:
                        good.add(j)
                    else:
                        bad.add(j)
                        del shares[j]
                continue
            self._l_certs[target] = cert
            return

    # ------------------------------------------------------------------ follower

    def _round_beyond_r_max(self, sender: int, round_: int) -> bool:
        """OCR: a leader asking for round r_max + 1 is asking to be replaced."""
        if round_ <= self.config.r_max:
            return False
        if self._pacemaker.ne > self._pacemaker.e:
            self._reject(sender, "round beyond r_max; a new epoch is already requested")
        else:
            self._change_leader()
        return True

    def _on_observe_req(self, sender: int, message: ObserveReq) -> None:
        if message.epoch != self._pacemaker.e:
            self._reject(sender, f"OBSERVE-REQ for epoch {message.epoch}, not {self._pacemaker.e}")
            return
        if sender != self._leader:
            self._reject(sender, "OBSERVE-REQ from a node that does not lead this epoch")
            return
        if self._round_beyond_r_max(sender, message.round):
            return
        if message.round < self._f_round or message.round <= self._f_signed_round:
            self._reject(sender, f"stale OBSERVE-REQ for round {message.round}")
            return
        if message.round == self._f_round:
            if self._f_observation is None:
                self._reject(sender, "OBSERVE-REQ repeated before the observation is ready")
            elif sender != self.index:
                # The leader lost it: send the same signed observation again.
                self._out.append(Send(sender, self._f_observation))
            return
        self._f_round = message.round
        self._f_observation = None
        self._f_own_observation = None
        self._f_awaiting_observation = True
        self._out.append(RequestObservation(message.epoch, message.round))

    def _on_observation_ready(self, event: ObservationReady) -> None:
        if (
            not self._f_awaiting_observation
            or event.epoch != self._pacemaker.e
            or event.round != self._f_round
        ):
            self._reject(None, f"stale observation for ({event.epoch}, {event.round})")
            return
        if len(event.observation) > self.config.max_observation_bytes:
            raise LocalProtocolError(
                f"observation of {len(event.observation)} bytes exceeds max_observation_bytes "
                f"({self.config.max_observation_bytes}); shrink it or raise the limit"
            )
        signature = self.crypto.sign_observation(
            self._keys.identity,
            observation_message(
                self.config.instance_digest,
                event.epoch,
                event.round,
                self.index,
                event.observation,
            ),
        )
        so = SignedObservation(event.epoch, event.round, self.index, event.observation, signature)
        self._f_awaiting_observation = False
        self._f_observation = encode(so)
        self._f_own_observation = so
        self._send(self._leader, so)

    def _observation_checked(self, so: SignedObservation) -> bool:
        """``_observation_valid``, remembered for the round: a proposal sent again (a
        leader's resend, or a Byzantine one's replay with one observation changed) costs
        only its new observations. The memory holds exact signed observations (observer,
        round, bytes and signature), so a changed one is checked afresh; it is a cache of
        verdicts, not protocol state, and holds one round's worth at most."""
        if self._checked_round != (so.epoch, so.round):
            self._checked_round = (so.epoch, so.round)
            self._checked.clear()
        if so in self._checked:
            return True
        if not self._observation_valid(so):
            return False
        if len(self._checked) < _CHECKED_LIMIT * self.config.n:
            self._checked.add(so)
        return True

    def _observation_valid(self, so: SignedObservation) -> bool:
        return self.crypto.verify_observation(
            self.config.identity_keys[so.observer],
            observation_message(
                self.config.instance_digest, so.epoch, so.round, so.observer, so.observation
            ),
            so.signature,
        )

    def _reports_for(self, proposal: Proposal) -> tuple[tuple[Report, ...], tuple[bytes, ...]]:
        """The proposal's reports and their hashes, computed once per proposal object."""
        cached_proposal, cached_reports, cached_hashes = self._report_cache
        if cached_proposal is proposal:
            return cached_reports, cached_hashes
        reports = compute_reports(self.config, self._outcome, proposal)
        hashes = tuple(report_hash(rep) for rep in reports)
        self._report_cache = (proposal, reports, hashes)
        return reports, hashes

    def _on_proposal(self, sender: int, proposal: Proposal) -> None:
        assert self._safety is not None
        e, r = proposal.epoch, proposal.round
        if e != self._pacemaker.e:
            self._reject(sender, f"PROPOSAL for epoch {e}, not {self._pacemaker.e}")
            return
        if sender != self._leader:
            self._reject(sender, "PROPOSAL from a node that does not lead this epoch")
            return
        if self._round_beyond_r_max(sender, r):
            return
        if r < self._f_round or r < self._f_signed_round:
            self._reject(sender, f"stale PROPOSAL for round {r}")
            return
        if r == self._f_signed_round:
            if proposal != self._f_signed_proposal:
                self._reject(sender, f"second, different PROPOSAL for signed round {r}")
            elif self._f_shares is not None and sender != self.index:
                self._out.append(Send(sender, self._f_shares))
            return
        if not self._safety.may_sign_round(e, r):
            self._reject(sender, f"round ({e}, {r}) is not after the last signed round")
            return
        if len(proposal.observations) < self.config.quorum:
            self._reject(
                sender,
                f"PROPOSAL has {len(proposal.observations)} observations, "
                f"quorum is {self.config.quorum}",
            )
            return
        if sender != self.index:
            for so in proposal.observations:
                if so.observer == self.index and so == self._f_own_observation:
                    continue  # my own, as I signed it
                if not self._observation_checked(so):
                    self._reject(sender, f"PROPOSAL observation of {so.observer} does not verify")
                    return
        reports, hashes = self._reports_for(proposal)
        # Safety: sign a target's report only if none of its decisions conflicts with one
        # signed before or with one signed for an earlier target of this round.
        pending: list[Decision] = []
        signable: list[bool] = []
        for rep in reports:
            ok = all(self._safety.conflict(d, pending) is None for d in rep.decisions)
            signable.append(ok)
            if ok:
                pending.extend(rep.decisions)
        # All checks passed: from here on the state changes.
        self._f_round = r
        self._f_awaiting_observation = False
        self._f_signed_round = r
        self._f_signed_proposal = proposal
        if any(signable):
            self._out.append(Persist(self._safety.record(e, r, pending)))
        shares = tuple(
            self.crypto.bls_sign(self._keys.bls_secret, digest) if ok else b""
            for digest, ok in zip(hashes, signable, strict=True)
        )
        message = Shares(e, r, shares)
        self._f_shares = encode(message)
        self._send(sender, message)

    def _on_certificates(self, sender: int, message: RoundCertificates) -> None:
        e, r = message.epoch, message.round
        if e != self._pacemaker.e:
            self._reject(sender, f"CERTIFICATES for epoch {e}, not {self._pacemaker.e}")
            return
        if len(message.certificates) != self._n_targets:
            self._reject(sender, "CERTIFICATES does not carry one certificate per target")
            return
        known = self._certified.get((e, r))
        if known is not None:
            if known == message.certificates:
                self._reject(sender, f"duplicate CERTIFICATES for round {r}")
            else:
                self._reject(sender, f"second, different CERTIFICATES for round ({e}, {r})")
            return
        if sender != self.index:
            for i, cert in enumerate(message.certificates):
                try:
                    verify_certificate(cert, self.config.targets[i].committee, crypto=self.crypto)
                except CertificateError as err:
                    self._reject(sender, f"certificate for target {i}: {err.reason}")
                    return
        self._certified[(e, r)] = message.certificates
        # Progress: a round of this epoch was certified (OCR's eventProgress).
        self._failed_epochs = 0
        self._set_timer(Timer(TimerKind.PROGRESS), self.config.delta_progress)
        for i, cert in enumerate(message.certificates):
            name = self.config.targets[i].name
            self._out.append(Certified(name, cert))
            if not cert.report.decisions:
                continue  # nothing for the target to apply
            delay = transmission_delay(self.config, i, e, r, self.index)
            if delay is not None:
                self._pending_transmissions[(i, e, r)] = cert
                self._set_timer(Timer(TimerKind.TRANSMIT, e, r, i), delay)
