"""The DvP decision rules: from certified observations to COMMIT, ABORT or PREPARE per target.

A settlement has two legs (docs/ARCHITECTURE.md), each living on one *target*: a chain's
DvP coordinator or the bank. Every node observes each leg and reports *facts* about it:

- ``REQUESTED``: the leg exists with these terms (for a bank leg: the on-chain escrow
  named the payment terms, so the bank can be asked to pre-validate);
- ``PREPARED``: the leg is ready without having moved value (escrow locked, bank hold);
- ``REJECTED``: the leg can never be prepared (the bank refused the instruction);
- ``EXPIRED``: the leg's deadline passed on the leg's own clock (block time, bank time);
- ``COMMITTED`` / ``ABORTED``: the target already applied a certified decision.

A fact counts only when at least f+1 distinct nodes report it in the certified
observation set, so at least one honest node saw it (validity). From the counted facts
the rules decide, deterministically and identically on every node:

1. a settlement that some target already COMMITTED (ABORTED) stays COMMIT (ABORT);
2. otherwise COMMIT when every leg is PREPARED and no leg is EXPIRED or REJECTED;
3. otherwise ABORT when some leg is EXPIRED or REJECTED;
4. otherwise nothing is decided yet; a leg that must be asked to prepare (the bank leg)
   gets PREPARE once every leg before it is PREPARED.

A decision goes to every leg's target that has not applied it yet, except that a leg
marked ``after`` another waits until that one has COMMITTED (the reference workflow pays
first and releases the asset after the bank confirms). An ABORT goes to every leg that
exists at its target and was not rejected there (a created but unlocked escrow is closed
too, and a bank that never saw the instruction records that it must not hold it later).

These rules never produce both COMMIT and ABORT for one settlement from one fact set;
that a node never *signs* both across rounds is the safety store's job
(``consensus``), which refuses a decision that conflicts with one it signed before.
This module is pure: no clock, no I/O, no randomness.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

import msgpack

from consensus.outcome import AttributedObservation, OutcomeContext
from consensus.report import Action, Decision
from node.modes import MODES, Leg

MAX_FACTS_PER_OBSERVATION = 4096


class FactKind(IntEnum):
    REQUESTED = 1
    PREPARED = 2
    REJECTED = 3
    EXPIRED = 4
    COMMITTED = 5
    ABORTED = 6


@dataclass(frozen=True, slots=True, order=True)
class Fact:
    """One thing a node saw about one leg: ``kind`` of the leg of ``settlement_id`` at ``target``."""

    settlement_id: bytes  # 32 B
    target: str
    kind: FactKind
    terms_hash: bytes  # 32 B: the terms of that leg, as the target knows them


class ObservationError(ValueError):
    """A node's observation bytes do not decode to a list of facts."""


def encode_observation(facts: Iterable[Fact], max_bytes: int | None = None) -> bytes:
    """The canonical encoding of a fact set. With ``max_bytes``, whole settlements are left
    out (highest ids first) until it fits: a node never sends a partial view of a leg."""
    return fit_observation(facts, max_bytes)[0]


def fit_observation(facts: Iterable[Fact], max_bytes: int | None = None) -> tuple[bytes, int]:
    """``encode_observation``, and how many settlements it had to leave out to fit."""
    # Rows sort as the facts do (field order), compared as plain lists: much cheaper.
    rows = sorted([f.settlement_id, f.target, int(f.kind), f.terms_hash] for f in set(facts))
    settlements = len({row[0] for row in rows})
    if len(rows) > MAX_FACTS_PER_OBSERVATION:
        cut = rows[MAX_FACTS_PER_OBSERVATION][0]  # never half a settlement
        rows = [row for row in rows[:MAX_FACTS_PER_OBSERVATION] if row[0] != cut]
    data = bytes(msgpack.packb(rows))
    while max_bytes is not None and len(data) > max_bytes and rows:
        last = rows[-1][0]
        rows = [row for row in rows if row[0] != last]
        data = bytes(msgpack.packb(rows))
    return data, settlements - len({row[0] for row in rows})


def settled(mode: str, facts: Iterable[Fact]) -> frozenset[bytes]:
    """Settlements every leg of which has applied a decision (or was rejected): nothing is
    left to decide for them, so observations leave them out and stay small."""
    legs = set(MODES[mode].targets)
    closed: dict[bytes, set[str]] = defaultdict(set)
    for fact in facts:
        if fact.target in legs and fact.kind in (
            FactKind.COMMITTED,
            FactKind.ABORTED,
            FactKind.REJECTED,
        ):
            closed[fact.settlement_id].add(fact.target)
    return frozenset(sid for sid, targets in closed.items() if targets == legs)


@lru_cache(maxsize=128)
def decode_observation(data: bytes) -> frozenset[Fact]:
    """Strict decoding: a malformed observation is an error, never a partial list. (Kept
    for recent observations: every member decodes the same ones from the same proposal.)"""
    try:
        raw = msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_array_len=MAX_FACTS_PER_OBSERVATION
        )
    except Exception as exc:
        raise ObservationError(f"observation is not msgpack: {exc}") from None
    if not isinstance(raw, list):
        raise ObservationError("observation is not a list of facts")
    facts = set()
    for item in raw:
        if not (isinstance(item, list) and len(item) == 4):
            raise ObservationError("a fact is not a 4-element list")
        sid, target, kind, terms = item
        if not (
            isinstance(sid, bytes)
            and len(sid) == 32
            and isinstance(terms, bytes)
            and len(terms) == 32
        ):
            raise ObservationError("settlement id and terms hash must be 32 bytes")
        if not (isinstance(target, str) and 0 < len(target) <= 32):
            raise ObservationError("target must be a short string")
        if not (isinstance(kind, int) and kind in FactKind._value2member_map_):
            raise ObservationError(f"unknown fact kind {kind!r}")
        facts.add(Fact(sid, target, FactKind(kind), terms))
    return frozenset(facts)


def supported_facts(observations: Sequence[tuple[int, bytes]], f: int) -> frozenset[Fact]:
    """Facts reported by at least f+1 distinct nodes; malformed observations count for nothing."""
    supporters: dict[Fact, set[int]] = defaultdict(set)
    for node, data in observations:
        try:
            facts = decode_observation(data)
        except ObservationError:
            continue
        for fact in facts:
            supporters[fact].add(node)
    return frozenset(fact for fact, nodes in supporters.items() if len(nodes) >= f + 1)


@dataclass(frozen=True, slots=True)
class LegView:
    """What the supported facts say about one leg."""

    terms_hash: bytes | None
    kinds: frozenset[FactKind]

    def has(self, kind: FactKind) -> bool:
        return kind in self.kinds


def _leg_views(facts: Iterable[Fact]) -> dict[bytes, dict[str, LegView]]:
    by_leg: dict[tuple[bytes, str], list[Fact]] = defaultdict(list)
    for fact in facts:
        by_leg[(fact.settlement_id, fact.target)].append(fact)
    views: dict[bytes, dict[str, LegView]] = defaultdict(dict)
    for (sid, target), leg_facts in by_leg.items():
        hashes = {fact.terms_hash for fact in leg_facts}
        # Two different terms for one leg mean someone lied or the leg is broken: act on neither.
        terms = hashes.pop() if len(hashes) == 1 else None
        kinds = frozenset(fact.kind for fact in leg_facts) if terms is not None else frozenset()
        views[sid][target] = LegView(terms, kinds)
    return views


def settlement_decision(legs: tuple[Leg, ...], views: Mapping[str, LegView]) -> Action | None:
    """COMMIT, ABORT or None for one settlement, by rules 1-3 of the module docstring."""
    seen = [views.get(leg.target, LegView(None, frozenset())) for leg in legs]
    if any(v.has(FactKind.COMMITTED) for v in seen):
        return Action.COMMIT
    if any(v.has(FactKind.ABORTED) for v in seen):
        return Action.ABORT
    blocked = any(v.has(FactKind.EXPIRED) or v.has(FactKind.REJECTED) for v in seen)
    if not blocked and all(v.has(FactKind.PREPARED) for v in seen):
        return Action.COMMIT
    if blocked:
        return Action.ABORT
    return None


def decide(mode: str, facts: Iterable[Fact]) -> dict[str, tuple[Decision, ...]]:
    """Decisions per target name, sorted by settlement id; targets with none are omitted."""
    legs = MODES[mode].legs
    out: dict[str, list[Decision]] = defaultdict(list)
    for sid, views in sorted(_leg_views(facts).items()):
        action = settlement_decision(legs, views)
        applied = {
            leg.target: views[leg.target].has(FactKind.COMMITTED)
            or views[leg.target].has(FactKind.ABORTED)
            for leg in legs
            if leg.target in views
        }
        for leg in legs:
            view = views.get(leg.target)
            if view is None or view.terms_hash is None or applied.get(leg.target, False):
                continue
            if action is Action.COMMIT:
                if leg.after is not None and not views.get(
                    leg.after, LegView(None, frozenset())
                ).has(FactKind.COMMITTED):
                    continue
                out[leg.target].append(Decision(sid, Action.COMMIT, view.terms_hash))
            elif action is Action.ABORT:
                # Every leg that exists at its target is closed, held or not; a rejected
                # bank leg holds nothing and is already closed.
                if not view.has(FactKind.REJECTED):
                    out[leg.target].append(Decision(sid, Action.ABORT, view.terms_hash))
            elif leg.needs_prepare_request and not view.has(FactKind.PREPARED):
                earlier = legs[: legs.index(leg)]
                if view.has(FactKind.REQUESTED) and all(
                    views.get(e.target, LegView(None, frozenset())).has(FactKind.PREPARED)
                    for e in earlier
                ):
                    out[leg.target].append(Decision(sid, Action.PREPARE, view.terms_hash))
    return {target: tuple(decisions) for target, decisions in out.items()}


@dataclass(frozen=True, slots=True)
class DvpOutcome:
    """The consensus outcome function of a DvP committee (``consensus.outcome.OutcomeFunction``).

    ``targets`` maps a leg's target ("A", "B", "bank") to the consensus target name whose
    committee configuration that target verifies (a chain's coordinator, or the bank).
    """

    mode: str
    targets: Mapping[str, str]

    def __call__(
        self, observations: Sequence[AttributedObservation], context: OutcomeContext
    ) -> Mapping[str, tuple[Decision, ...]]:
        observed = tuple((o.observer, o.observation) for o in observations)
        out: dict[str, tuple[Decision, ...]] = {}
        for leg_target, decisions in _decisions(self.mode, observed, context.f):
            name = self.targets.get(leg_target)
            if name is not None and name in context.targets:
                out[name] = decisions[: context.max_decisions]
        return out


@lru_cache(maxsize=32)
def _decisions(
    mode: str, observations: tuple[tuple[int, bytes], ...], f: int
) -> tuple[tuple[str, tuple[Decision, ...]], ...]:
    """``decide`` over the supported facts of a proposal's observations. Kept for recent
    proposals: every member computes the same reports from the same proposal."""
    return tuple(decide(mode, supported_facts(observations, f)).items())
