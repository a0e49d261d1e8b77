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
EquivocatingLeader     as leader, sends different proposals to different followers,
                       aggregates shares for each variant and broadcasts every
                       certificate it can form
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
from consensus.report import Certificate, Decision, Report, make_certificate, report_hash

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
    NEW-EPOCHs, requests it has no right to make, observations with bad signatures."""

    burst: int = 3

    def outgoing(self, ctx: ByzantineContext, event: Event, actions: list[Action]) -> list[Action]:
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


def _default_variant_observation(ctx: ByzantineContext, variant: int, proposal: Proposal) -> bytes:
    """The leader's own observation in variant ``variant``: for fact observations, every
    settlement seen anywhere in the proposal, COMMIT in even variants and ABORT in odd
    ones; other observations are left as they were."""
    facts: dict[bytes, bytes] = {}
    own = b""
    for so in proposal.observations:
        if so.observer == ctx.index:
            own = so.observation
        for fact in decode_facts(so.observation) or ():
            facts.setdefault(fact.settlement_id, fact.terms_hash)
    if not facts:
        return own
    action = DecisionAction.COMMIT if variant % 2 == 0 else DecisionAction.ABORT
    return encode_facts([Decision(sid, action, terms) for sid, terms in sorted(facts.items())])


def _default_support(variant: int, so: SignedObservation) -> int:
    """How much an observation helps variant ``variant`` (COMMIT in even variants, ABORT
    in odd ones): its facts with that action, minus those with the other."""
    wanted = DecisionAction.COMMIT if variant % 2 == 0 else DecisionAction.ABORT
    score = 0
    for fact in decode_facts(so.observation) or ():
        if fact.action is wanted:
            score += 1
        elif fact.action in (DecisionAction.COMMIT, DecisionAction.ABORT):
            score -= 1
    return score


@dataclass(slots=True)
class _Variant:
    proposal: Proposal
    reports: tuple[Report, ...]
    hashes: tuple[bytes, ...]
    shares: list[dict[int, bytes]]
    done: bool = False


@dataclass(slots=True)
class EquivocatingLeader(_Passive):
    """As leader, replace the honest proposal by ``variants`` different ones: each keeps
    the observations received that support it best (``support``; at least the quorum with
    the leader's own) and carries the leader's own observation re-signed differently per
    variant. Honest followers are dealt out over the variants, coalition members get all. Shares are matched to variants
    by verifying them one by one; every variant that reaches the threshold on every target
    is certified and broadcast."""

    variants: int = 2
    own_observation: Callable[[ByzantineContext, int, Proposal], bytes] = (
        _default_variant_observation
    )
    support: Callable[[int, SignedObservation], int] = _default_support
    round_key: tuple[int, int] = (0, 0)
    open: list[_Variant] = field(default_factory=list)

    def incoming(self, ctx: ByzantineContext, event: Event) -> Event | None:
        if (
            isinstance(event, MessageReceived)
            and self.open
            and peek_kind(event.data) is Kind.SHARES
        ):
            message = ctx.decode(event.data)
            if isinstance(message, Shares) and (message.epoch, message.round) == self.round_key:
                self._collect(ctx, event.sender, message)
                return None  # the honest leader never proposed these; keep them from it
        return event

    def outgoing(self, ctx: ByzantineContext, event: Event, actions: list[Action]) -> list[Action]:
        result: list[Action] = []
        for action in actions:
            if isinstance(action, Broadcast) and peek_kind(action.data) is Kind.PROPOSAL:
                proposal = ctx.decode(action.data)
                assert isinstance(proposal, Proposal)
                result.extend(self._equivocate(ctx, proposal))
            else:
                result.append(action)
        result.extend(self._finished(ctx))
        return result

    def _equivocate(self, ctx: ByzantineContext, honest: Proposal) -> list[Action]:
        cfg, rng = ctx.config, ctx.rng
        others = [so for so in honest.observations if so.observer != ctx.index]
        self.round_key = (honest.epoch, honest.round)
        self.open = []
        for v in range(self.variants):
            # Keep the observations that favour this variant's story most; usually just
            # enough for the quorum, sometimes more.
            floor = max(cfg.quorum - 1, 0)
            size = floor if rng.random() < 0.5 else rng.randint(floor, len(others))
            ranked = sorted(others, key=lambda so: (-self.support(v, so), rng.random()))
            chosen = sorted(ranked[:size], key=lambda so: so.observer)
            mine = self.own_observation(ctx, v, honest)[: cfg.max_observation_bytes]
            signature = ctx.crypto.sign_observation(
                ctx.keys.identity,
                observation_message(
                    cfg.instance_digest, honest.epoch, honest.round, ctx.index, mine
                ),
            )
            own = SignedObservation(honest.epoch, honest.round, ctx.index, mine, signature)
            observations = tuple(sorted([*chosen, own], key=lambda so: so.observer))
            proposal = Proposal(honest.epoch, honest.round, observations)
            reports = compute_reports(cfg, ctx.outcome, proposal)
            hashes = tuple(report_hash(r) for r in reports)
            own_shares = _sign_reports(ctx, reports).shares
            shares = [{ctx.index: s} for s in own_shares]
            self.open.append(_Variant(proposal, reports, hashes, shares))
        # Honest followers are dealt out over the variants (each variant gets some);
        # fellow coalition members get every variant, to sign them all.
        followers = [j for j in range(cfg.n) if j != ctx.index and j not in ctx.coalition]
        rng.shuffle(followers)
        sends: list[Action] = []
        for position, j in enumerate(followers):
            sends.append(Send(j, encode(self.open[position % self.variants].proposal)))
        for j in sorted(ctx.coalition - {ctx.index}):
            sends.extend(Send(j, encode(variant.proposal)) for variant in self.open)
        return sends

    def _collect(self, ctx: ByzantineContext, sender: int, message: Shares) -> None:
        for variant in self.open:
            for i, share in enumerate(message.shares):
                if not share or sender in variant.shares[i]:
                    continue
                pk = ctx.config.targets[i].committee.public_keys[sender]
                if ctx.crypto.bls_verify(pk, variant.hashes[i], share):
                    variant.shares[i][sender] = share

    def _finished(self, ctx: ByzantineContext) -> list[Action]:
        out: list[Action] = []
        for variant in self.open:
            if variant.done:
                continue
            ts = [t.committee.t for t in ctx.config.targets]
            if all(len(s) >= t for s, t in zip(variant.shares, ts, strict=True)):
                certs: list[Certificate] = []
                for i, rep in enumerate(variant.reports):
                    chosen = dict(sorted(variant.shares[i].items())[: ts[i]])
                    certs.append(make_certificate(rep, chosen, crypto=ctx.crypto))
                variant.done = True
                epoch, round_ = self.round_key
                out.append(Broadcast(encode(RoundCertificates(epoch, round_, tuple(certs)))))
        return out
