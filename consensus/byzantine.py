"""Byzantine committee members, as wrappers around the honest state machine.

A Byzantine member holds real keys (it can sign anything with its own Ed25519 and BLS
keys, nothing with anyone else's) and misbehaves by rewriting what goes into and comes out
of an honest ``consensus.protocol.Node``. Behaviours compose: ``ByzantineNode`` passes each
event through every behaviour's ``incoming`` (which may replace or drop it) and the honest
node's actions through every behaviour's ``outgoing``.

=====================  ==================================================================
behaviour              what it does
=====================  ==================================================================
Silent                 takes part in nothing (a crashed node that never restarts)
LyingObserver          reports a lie instead of what it observes
WithholdShares         never sends BLS shares
InvalidShares          sends shares that do not verify (wrong message, or random bytes)
SignAnything           signs every proposal it receives, ignoring its safety record
EquivocatingLeader     as leader, splits the honest followers into a side that gets
                       its proposals and a side kept from signing any COMMIT (given a
                       variant telling the abort story, or nothing), signs both
                       whatever its safety record says and certifies each it can
Replay                 re-sends old messages it received, to random peers
Flood                  sends bursts of junk and well-formed but useless messages
Mutate                 ByzzFuzz-style small-scope mutations of what it sends: epoch or
                       round moved by one, an earlier proposal or observation of its own
                       sent again instead, one decision of a certificate flipped
=====================  ==================================================================

Randomness comes from a ``random.Random`` seeded per member by the caller, so a
simulation with Byzantine members stays deterministic. A Byzantine member signs, verifies
and aggregates through the crypto suite of the node it wraps (``Node.crypto``), with its own
keys only, and draws the same random numbers under every suite.

This module must never give a Byzantine member another member's secret key or any view
of another member's state: what it knows, it received.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from consensus.codec import CodecError, CodecLimits, decode, encode, peek_kind
from consensus.config import ConsensusConfig
from consensus.crypto import REAL_CRYPTO, CryptoSuite
from consensus.events import (
    Action,
    Broadcast,
    Event,
    MessageReceived,
    ObservationReady,
    Send,
    TimerFired,
    TimerKind,
)
from consensus.identity import observation_message
from consensus.messages import (
    Kind,
    Message,
    NewEpoch,
    ObserveReq,
    Proposal,
    RoundCertificates,
    Shares,
    SignedObservation,
)
from consensus.outcome import (
    OutcomeFunction,
    decode_facts,
    decode_number,
    encode_facts,
    encode_number,
)
from consensus.protocol import Node, NodeKeys, compute_reports
from consensus.report import Action as DecisionAction
from consensus.report import Decision, Report, make_certificate, report_hash

__all__ = [
    "Behaviour",
    "ByzantineContext",
    "ByzantineNode",
    "EquivocatingLeader",
    "Flood",
    "InvalidShares",
    "LyingObserver",
    "Mutate",
    "Replay",
    "SignAnything",
    "Silent",
    "WithholdShares",
    "byzantine",
    "lie_about_facts",
    "lie_about_number",
    "split_followers",
]


@dataclass(slots=True)
class ByzantineContext:
    """What a Byzantine member has: its configuration, index, own keys, the outcome
    function every member runs, its coalition (other Byzantine members it colludes with),
    its own seeded random generator, and the crypto suite of the node it wraps (it signs
    with its own keys through that suite, as the honest node does)."""

    config: ConsensusConfig
    index: int
    keys: NodeKeys
    outcome: OutcomeFunction
    coalition: frozenset[int]
    rng: random.Random
    crypto: CryptoSuite = REAL_CRYPTO
    limits: CodecLimits = field(init=False)

    def __post_init__(self) -> None:
        self.limits = CodecLimits.from_config(self.config)

    def decode(self, data: bytes) -> object | None:
        try:
            return decode(data, self.limits)
        except CodecError:
            return None


class Behaviour(Protocol):
    def incoming(self, ctx: ByzantineContext, event: Event) -> Event | None: ...

    def outgoing(
        self, ctx: ByzantineContext, event: Event, actions: list[Action]
    ) -> list[Action]: ...


class _Passive:
    """Default hooks: change nothing."""

    def incoming(self, ctx: ByzantineContext, event: Event) -> Event | None:
        return event

    def outgoing(self, ctx: ByzantineContext, event: Event, actions: list[Action]) -> list[Action]:
        return actions


class ByzantineNode:
    """An honest node with behaviours layered on its inputs and outputs."""

    def __init__(self, inner: Node, ctx: ByzantineContext, behaviours: Sequence[Behaviour]):
        self.inner = inner
        self.ctx = ctx
        self.behaviours = tuple(behaviours)

    @property
    def safety_decision_count(self) -> int:
        return self.inner.safety_decision_count

    @property
    def epoch(self) -> int:
        return self.inner.epoch

    def handle(self, event: Event) -> tuple[Action, ...]:
        rewritten: Event | None = event
        for behaviour in self.behaviours:
            if rewritten is None:
                break
            rewritten = behaviour.incoming(self.ctx, rewritten)
        actions = list(self.inner.handle(rewritten)) if rewritten is not None else []
        for behaviour in self.behaviours:
            actions = behaviour.outgoing(self.ctx, event, actions)
        return tuple(actions)


def byzantine(
    config: ConsensusConfig,
    keys: Sequence[NodeKeys],
    outcome: OutcomeFunction,
    coalition: frozenset[int],
    seed: int,
    behaviours: Callable[[], Sequence[Behaviour]],
) -> Callable[[Node], ByzantineNode]:
    """A harness NodeFactory: wraps the honest node with fresh behaviours (``behaviours``
    is called at every start, so a restart loses the behaviours' memory too)."""

    starts = [0]

    def factory(node: Node) -> ByzantineNode:
        starts[0] += 1
        rng = random.Random(f"{seed}/{node.index}/{starts[0]}")
        ctx = ByzantineContext(
            config, node.index, keys[node.index], outcome, coalition, rng, crypto=node.crypto
        )
        return ByzantineNode(node, ctx, behaviours())

    return factory


# --------------------------------------------------------------------------- simple ones


class Silent(_Passive):
    def incoming(self, ctx: ByzantineContext, event: Event) -> Event | None:
        return None


def lie_about_facts(rng: random.Random, observation: bytes) -> bytes:
    """Flip COMMIT and ABORT in every fact, and invent one fact no honest node saw."""
    facts = decode_facts(observation) or ()
    flip = {
        DecisionAction.COMMIT: DecisionAction.ABORT,
        DecisionAction.ABORT: DecisionAction.COMMIT,
    }
    lies = [Decision(d.settlement_id, flip.get(d.action, d.action), d.terms_hash) for d in facts]
    invented = rng.randbytes(32)
    lies.append(Decision(invented, DecisionAction.COMMIT, hashlib.sha256(invented).digest()))
    return encode_facts(lies)


def lie_about_number(rng: random.Random, observation: bytes) -> bytes:
    """An extreme value, far from any honest one."""
    value = decode_number(observation)
    return encode_number(rng.choice([0, 2**64 - 1]) if value is not None else 2**63)


@dataclass(slots=True)
class LyingObserver(_Passive):
    lie: Callable[[random.Random, bytes], bytes] = lie_about_facts

    def incoming(self, ctx: ByzantineContext, event: Event) -> Event | None:
        if isinstance(event, ObservationReady):
            lie = self.lie(ctx.rng, event.observation)[: ctx.config.max_observation_bytes]
            return ObservationReady(event.now, event.epoch, event.round, lie)
        return event


def _is(action: Action, kind: Kind) -> bool:
    return isinstance(action, Send | Broadcast) and peek_kind(action.data) is kind


class WithholdShares(_Passive):
    def outgoing(self, ctx: ByzantineContext, event: Event, actions: list[Action]) -> list[Action]:
        return [a for a in actions if not _is(a, Kind.SHARES)]


class InvalidShares(_Passive):
    """Replace each share by a signature of another message, or by random bytes."""

    def outgoing(self, ctx: ByzantineContext, event: Event, actions: list[Action]) -> list[Action]:
        result: list[Action] = []
        for action in actions:
            if isinstance(action, Send) and _is(action, Kind.SHARES):
                message = ctx.decode(action.data)
                assert isinstance(message, Shares)
                bad = tuple(self._corrupt(ctx) for _ in message.shares)
                action = Send(action.to, encode(Shares(message.epoch, message.round, bad)))
            result.append(action)
        return result

    @staticmethod
    def _corrupt(ctx: ByzantineContext) -> bytes:
        if ctx.rng.random() < 0.5:
            return ctx.crypto.bls_sign(ctx.keys.bls_secret, ctx.rng.randbytes(32))
        return ctx.rng.randbytes(96)


def _sign_reports(ctx: ByzantineContext, reports: Sequence[Report]) -> Shares:
    first = reports[0]
    return Shares(
        first.epoch,
        first.round,
        tuple(ctx.crypto.bls_sign(ctx.keys.bls_secret, report_hash(rep)) for rep in reports),
    )


@dataclass(slots=True)
class SignAnything(_Passive):
    """Sign every distinct proposal received, with no safety record, straight back to its
    sender; the honest node still sees the proposal too."""

    signed: set[bytes] = field(default_factory=set)

    def outgoing(self, ctx: ByzantineContext, event: Event, actions: list[Action]) -> list[Action]:
        if not isinstance(event, MessageReceived) or peek_kind(event.data) is not Kind.PROPOSAL:
            return actions
        digest = hashlib.sha256(event.data).digest()
        if digest in self.signed:
            return actions
        proposal = ctx.decode(event.data)
        if not isinstance(proposal, Proposal):
            return actions
        self.signed.add(digest)
        shares = _sign_reports(ctx, compute_reports(ctx.config, ctx.outcome, proposal))
        # Our own shares replace whatever the honest part would have sent for this round.
        kept = [a for a in actions if not _is(a, Kind.SHARES)]
        return [*kept, Send(event.sender, encode(shares))]


@dataclass(slots=True)
class Replay(_Passive):
    """Keep the messages received; on each event, with probability ``rate``, send up to
    ``burst`` of them to random peers."""

    rate: float = 0.3
    burst: int = 2
    memory: int = 200
    seen: list[bytes] = field(default_factory=list)

    def outgoing(self, ctx: ByzantineContext, event: Event, actions: list[Action]) -> list[Action]:
        if isinstance(event, MessageReceived) and len(self.seen) < self.memory:
            self.seen.append(event.data)
        if not self.seen or ctx.rng.random() >= self.rate:
            return actions
        extra: list[Action] = []
        for _ in range(self.burst):
            to = ctx.rng.randrange(ctx.config.n)
            if to != ctx.index:
                extra.append(Send(to, ctx.rng.choice(self.seen)))
        return actions + extra


@dataclass(slots=True)
class Flood(_Passive):
    """On each event, send ``burst`` messages: junk bytes, oversized bytes, far-future
    NEW-EPOCHs, requests it has no right to make, observations with bad signatures. A
    message from its own coalition is not answered with a flood: two flooders answering
    each other's bursts grow a storm without bound (each burst begets more than one), which
    attacks nobody but themselves, and in sim, where reading a message costs no time, never
    lets virtual time reach the run's end."""

    burst: int = 3

    def outgoing(self, ctx: ByzantineContext, event: Event, actions: list[Action]) -> list[Action]:
        if isinstance(event, MessageReceived) and event.sender in ctx.coalition:
            return actions
        extra: list[Action] = []
        rng = ctx.rng
        for _ in range(self.burst):
            to = rng.randrange(ctx.config.n)
            if to == ctx.index:
                continue
            choice = rng.randrange(5)
            if choice == 0:
                data = rng.randbytes(rng.randrange(1, 200))
            elif choice == 1:
                data = b"\x00" * (ctx.config.message_limit + 1)
            elif choice == 2:
                data = encode(NewEpoch(rng.randrange(1, 2**32)))
            elif choice == 3:
                data = encode(ObserveReq(rng.randrange(1, 50), rng.randrange(1, 50)))
            else:
                data = encode(
                    SignedObservation(
                        rng.randrange(1, 50),
                        rng.randrange(1, 50),
                        ctx.index,
                        rng.randbytes(16),
                        rng.randbytes(64),
                    )
                )
            extra.append(Send(to, data))
        return actions + extra


@dataclass(slots=True)
class Mutate(_Passive):
    """With probability ``rate``, each message sent is mutated a little (ByzzFuzz's small
    scope): its epoch or round moved by one, an earlier proposal or observation of this
    member's sent again in its place, or one decision of a certificate it forwards flipped
    between COMMIT and ABORT. Signatures are left as they were: honest members must refuse
    what no longer verifies or no longer fits."""

    rate: float = 0.3
    earlier: list[bytes] = field(default_factory=list)
    memory: int = 50

    def outgoing(self, ctx: ByzantineContext, event: Event, actions: list[Action]) -> list[Action]:
        result: list[Action] = []
        for action in actions:
            if isinstance(action, Send | Broadcast):
                data = action.data
                own = peek_kind(data) in (Kind.PROPOSAL, Kind.OBSERVATION)
                if own and len(self.earlier) < self.memory:
                    self.earlier.append(data)
                if ctx.rng.random() < self.rate:
                    data = self._mutate(ctx, data)
                    action = Send(action.to, data) if isinstance(action, Send) else Broadcast(data)
            result.append(action)
        return result

    def _mutate(self, ctx: ByzantineContext, data: bytes) -> bytes:
        message = ctx.decode(data)
        if not isinstance(message, Message):
            return data
        rng = ctx.rng
        choice = rng.randrange(3)
        if choice == 0 and isinstance(message, RoundCertificates):
            return encode(_flip_one(rng, message))
        if choice == 1 and self.earlier:
            kind = peek_kind(data)
            same = [d for d in self.earlier if peek_kind(d) is kind and d != data]
            if same:
                return rng.choice(same)
        field_name = "round" if hasattr(message, "round") and rng.random() < 0.5 else "epoch"
        value = getattr(message, field_name) + rng.choice((-1, 1))
        try:
            mutated: Message = dataclasses.replace(message, **{field_name: value})
        except (ValueError, TypeError):  # out of range (epoch 0): send it as it was
            return data
        return encode(mutated)


def _flip_one(rng: random.Random, message: RoundCertificates) -> RoundCertificates:
    """The certificates with one COMMIT or ABORT decision turned into the other."""
    flip = {
        DecisionAction.COMMIT: DecisionAction.ABORT,
        DecisionAction.ABORT: DecisionAction.COMMIT,
    }
    spots = [
        (i, j)
        for i, cert in enumerate(message.certificates)
        for j, d in enumerate(cert.report.decisions)
        if d.action in flip
    ]
    if not spots:
        return message
    i, j = rng.choice(spots)
    cert = message.certificates[i]
    decisions = list(cert.report.decisions)
    d = decisions[j]
    decisions[j] = Decision(d.settlement_id, flip[d.action], d.terms_hash)
    report = dataclasses.replace(cert.report, decisions=tuple(decisions))
    certs = list(message.certificates)
    certs[i] = dataclasses.replace(cert, report=report)
    return dataclasses.replace(message, certificates=tuple(certs))


# --------------------------------------------------------------------------- equivocation


def _default_abort_story(ctx: ByzantineContext, proposal: Proposal) -> bytes:
    """The leader's own observation in the abort story: for fact observations, ABORT for
    every settlement seen anywhere in the proposal; other observations are left as they
    were."""
    facts: dict[bytes, bytes] = {}
    own = b""
    for so in proposal.observations:
        if so.observer == ctx.index:
            own = so.observation
        for fact in decode_facts(so.observation) or ():
            facts.setdefault(fact.settlement_id, fact.terms_hash)
    if not facts:
        return own
    return encode_facts(
        [Decision(sid, DecisionAction.ABORT, terms) for sid, terms in sorted(facts.items())]
    )


def _default_abort_support(so: SignedObservation) -> int:
    """How much an observation helps the abort story: its ABORT facts minus its COMMIT
    facts."""
    score = 0
    for fact in decode_facts(so.observation) or ():
        if fact.action is DecisionAction.ABORT:
            score += 1
        elif fact.action is DecisionAction.COMMIT:
            score -= 1
    return score


@dataclass(slots=True)
class _Told:
    """A proposal the leader sent in its open round, to whom, and the shares it gathered
    for it (its own among them, signed whatever its safety record says)."""

    proposal: Proposal
    data: bytes
    reports: tuple[Report, ...]
    hashes: tuple[bytes, ...]
    shares: list[dict[int, bytes]]
    to: set[int] = field(default_factory=set)
    done: bool = False

    def commits(self) -> bool:
        return any(d.action is DecisionAction.COMMIT for rep in self.reports for d in rep.decisions)


def _told(ctx: ByzantineContext, proposal: Proposal, data: bytes) -> _Told:
    reports = compute_reports(ctx.config, ctx.outcome, proposal)
    own = _sign_reports(ctx, reports).shares
    return _Told(
        proposal,
        data,
        reports,
        tuple(report_hash(r) for r in reports),
        [{ctx.index: s} for s in own],
    )


def _threshold(config: ConsensusConfig) -> int:
    return max(t.committee.t for t in config.targets)


def split_followers(
    config: ConsensusConfig, leader: int, coalition: frozenset[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The equivocating ``leader``'s two sides of honest followers: the commit side, the
    fewest that certify with the leader and its coalition (t-1 of them, less the other
    coalition members), taken in index order after the leader; the abort side, the rest."""
    followers = [
        j for j in ((leader + k) % config.n for k in range(1, config.n)) if j not in coalition
    ]
    size = max(0, _threshold(config) - 1 - len(coalition - {leader}))
    return tuple(followers[:size]), tuple(followers[size:])


@dataclass(slots=True)
class EquivocatingLeader(_Passive):
    """As leader, tell two sides of the honest followers two stories, so that two quorums
    that share no honest member sign for one round, or for rounds on either side of a
    change in what members see (a deadline passing while a COMMIT is on its way).

    The honest followers are split (``split_followers``) into a *commit side*, just enough
    to certify with the leader, and an *abort side*, the rest, which is kept from ever
    signing a COMMIT while this member leads. Each round the commit side gets the
    proposal the honest node built (P). The abort side gets P when P commits nothing;
    otherwise a variant V that commits nothing if one can be made: the leader's own
    observation re-signed to tell the abort story (``own_observation``), with the
    observations that support that story most (``support``), just enough for the quorum;
    otherwise no proposal at all (the honest node's resends of P are kept from it too).
    Fellow coalition members get P and V.

    The leader signs both with its own key, whatever its safety record says, gathers the
    shares of each (verifying them one by one), asks again every DeltaResend each member
    whose share for some target is missing (one that refused may since have forgotten
    why: a wiped safety store), and certifies each that reaches the threshold on every
    target: the honest node certifies P when it can (and goes on to
    its next round); this behaviour does when the honest node's own share was refused.
    P's certificates go to every member not told V, V's to those told V: each member
    accepts the one it signed, so both are seen. With the default threshold the two
    sides cannot both certify (that takes 2(t-1) > n-1 honest signers); with t = f+1 they
    can."""

    own_observation: Callable[[ByzantineContext, Proposal], bytes] = _default_abort_story
    support: Callable[[SignedObservation], int] = _default_abort_support
    round_key: tuple[int, int] = (0, 0)
    honest: _Told | None = None
    variant: _Told | None = None

    def incoming(self, ctx: ByzantineContext, event: Event) -> Event | None:
        if (
            isinstance(event, MessageReceived)
            and self.honest is not None
            and peek_kind(event.data) is Kind.SHARES
        ):
            message = ctx.decode(event.data)
            if isinstance(message, Shares) and (message.epoch, message.round) == self.round_key:
                sender, variant = event.sender, self.variant
                told_v = variant is not None and sender in variant.to
                told_p = sender in self.honest.to
                for_v = (
                    variant is not None and told_v and self._gather(ctx, variant, sender, message)
                )
                for_p = told_p and self._gather(ctx, self.honest, sender, message)
                if (told_v and not told_p) or (for_v and not for_p):
                    return None  # V's: the honest node never proposed it
        return event

    def outgoing(self, ctx: ByzantineContext, event: Event, actions: list[Action]) -> list[Action]:
        result: list[Action] = []
        for action in actions:
            if not isinstance(action, Send | Broadcast):
                result.append(action)
                continue
            kind = peek_kind(action.data)
            if isinstance(action, Broadcast) and kind is Kind.PROPOSAL:
                proposal = ctx.decode(action.data)
                assert isinstance(proposal, Proposal)
                result.extend(self._equivocate(ctx, proposal, action.data))
            elif (
                isinstance(action, Send)
                and kind is Kind.PROPOSAL
                and self.honest is not None
                and action.data == self.honest.data
            ):
                # The honest node resends P to a member that has not answered: it goes
                # only where P went; V's members get V again, the others nothing.
                if action.to in self.honest.to:
                    result.append(action)
                elif self.variant is not None and action.to in self.variant.to:
                    result.append(Send(action.to, self.variant.data))
            elif (
                isinstance(action, Broadcast)
                and kind is Kind.CERTIFICATES
                and self._ours(ctx, action.data)
            ):
                assert self.honest is not None
                if not self.honest.done:  # else this behaviour certified P already
                    self.honest.done = True
                    result.extend(Send(j, action.data) for j in self._p_members(ctx))
            else:
                result.append(action)
        if (
            isinstance(event, TimerFired)
            and event.timer.kind is TimerKind.RETRANSMIT
            and (event.timer.epoch, event.timer.round) == self.round_key
        ):
            result.extend(self._ask_again(result))
        result.extend(self._finished(ctx))
        return result

    def _ask_again(self, sent: list[Action]) -> list[Action]:
        """Send each unfinished proposal again to every member it went to whose share for
        some target is still missing (the honest node asks only those that never
        answered): a member that refused may have forgotten why."""
        already = {(a.to, a.data) for a in sent if isinstance(a, Send)}
        out: list[Action] = []
        for told in (self.honest, self.variant):
            if told is None or told.done:
                continue
            for j in sorted(told.to):
                missing = any(j not in shares for shares in told.shares)
                if missing and (j, told.data) not in already:
                    out.append(Send(j, told.data))
        return out

    def _ours(self, ctx: ByzantineContext, data: bytes) -> bool:
        """Whether ``data`` is the honest node's certificates of the open round."""
        message = ctx.decode(data)
        return (
            self.honest is not None
            and isinstance(message, RoundCertificates)
            and (message.epoch, message.round) == self.round_key
        )

    def _p_members(self, ctx: ByzantineContext) -> list[int]:
        told_v = set() if self.variant is None else self.variant.to - ctx.coalition
        return [j for j in range(ctx.config.n) if j != ctx.index and j not in told_v]

    def _equivocate(self, ctx: ByzantineContext, honest: Proposal, data: bytes) -> list[Action]:
        cfg = ctx.config
        self.round_key = (honest.epoch, honest.round)
        self.honest = _told(ctx, honest, data)
        self.variant = None
        commit_side, abort_side = split_followers(cfg, ctx.index, ctx.coalition)
        fellows = sorted(ctx.coalition - {ctx.index})
        self.honest.to = {*commit_side, *fellows}
        if not self.honest.commits():
            self.honest.to |= set(abort_side)
        else:
            variant = self._variant(ctx, honest)
            if not variant.commits():
                variant.to = {*abort_side, *fellows}
                self.variant = variant
        sends: list[Action] = [Send(j, data) for j in sorted(self.honest.to)]
        if self.variant is not None:
            sends.extend(Send(j, self.variant.data) for j in sorted(self.variant.to))
        return sends

    def _variant(self, ctx: ByzantineContext, honest: Proposal) -> _Told:
        cfg = ctx.config
        others = [so for so in honest.observations if so.observer != ctx.index]
        ranked = sorted(others, key=lambda so: (-self.support(so), so.observer))
        chosen = ranked[: max(cfg.quorum - 1, 0)]
        mine = self.own_observation(ctx, honest)[: cfg.max_observation_bytes]
        signature = ctx.crypto.sign_observation(
            ctx.keys.identity,
            observation_message(cfg.instance_digest, honest.epoch, honest.round, ctx.index, mine),
        )
        own = SignedObservation(honest.epoch, honest.round, ctx.index, mine, signature)
        observations = tuple(sorted([*chosen, own], key=lambda so: so.observer))
        proposal = Proposal(honest.epoch, honest.round, observations)
        return _told(ctx, proposal, encode(proposal))

    @staticmethod
    def _gather(ctx: ByzantineContext, told: _Told, sender: int, message: Shares) -> bool:
        """Keep the sender's shares that verify for ``told``; whether any did."""
        kept = False
        for i, share in enumerate(message.shares):
            if not share or i >= len(told.hashes) or sender in told.shares[i]:
                continue
            pk = ctx.config.targets[i].committee.public_keys[sender]
            if ctx.crypto.bls_verify(pk, told.hashes[i], share):
                told.shares[i][sender] = share
                kept = True
        return kept

    def _finished(self, ctx: ByzantineContext) -> list[Action]:
        out: list[Action] = []
        ts = [t.committee.t for t in ctx.config.targets]
        for told, members in (
            (self.variant, sorted(self.variant.to) if self.variant is not None else []),
            (self.honest, self._p_members(ctx)),
        ):
            if told is None or told.done:
                continue
            if all(len(s) >= t for s, t in zip(told.shares, ts, strict=True)):
                certs = tuple(
                    make_certificate(
                        rep, dict(sorted(told.shares[i].items())[: ts[i]]), crypto=ctx.crypto
                    )
                    for i, rep in enumerate(told.reports)
                )
                told.done = True
                epoch, round_ = self.round_key
                data = encode(RoundCertificates(epoch, round_, certs))
                out.extend(Send(j, data) for j in members)
        return out
