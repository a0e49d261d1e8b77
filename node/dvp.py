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

A decision goes to every leg's target that has not applied it yet. A leg marked ``after``
another (the reference workflow pays first and releases the asset after the bank
confirms) gets its COMMIT in the same round as that leg, and its transmission waits
until the node sees that leg COMMITTED (``node.driver``): one certified step less, and
payment still comes first. That is safe because the bank executes a certified COMMIT on
a hold whatever the time (``bank_adapter.ledger``) and a hold is only cancelled by a
certified ABORT, which cannot exist beside a COMMIT. An ABORT goes to every leg that
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
from typing import Any, Final

import msgpack

from consensus.outcome import AttributedObservation, OutcomeContext
from consensus.report import Action, Decision
from node.modes import MODES, Leg

#: At most this many settlements in one observation (a decoder refuses more). A node's
#: own observations carry fewer: at most a report's worth (``max_decisions_per_report``),
#: oldest first (``node.driver``).
MAX_SETTLEMENTS_PER_OBSERVATION = 4096


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


#: Every fact-kind bit a leg's mask may carry (bit ``kind``).
_ALL_KIND_BITS: Final = sum(1 << kind for kind in FactKind)


class ObservationError(ValueError):
    """A node's observation bytes do not decode to a list of facts."""


def encode_observation(facts: Iterable[Fact], max_bytes: int | None = None) -> bytes:
    """The canonical encoding of a fact set. With ``max_bytes``, whole settlements are left
    out (highest ids first) until it fits: a node never sends a partial view of a leg."""
    return fit_observation(facts, max_bytes)[0]


def settlement_rows(facts: Iterable[Fact]) -> dict[bytes, list[list[Any]]]:
    """Facts grouped as the wire carries them: per settlement, one row per leg
    ``[target, kind bits, terms hash]`` (the leg's terms hash once, however many facts),
    legs sorted by target. A leg seen with two terms hashes is left out: a node that saw
    both reports neither (the rules would act on neither)."""
    masks: dict[tuple[bytes, str], int] = defaultdict(int)
    hashes: dict[tuple[bytes, str], bytes | None] = {}
    for fact in facts:
        leg = (fact.settlement_id, fact.target)
        masks[leg] |= 1 << fact.kind
        if hashes.setdefault(leg, fact.terms_hash) != fact.terms_hash:
            hashes[leg] = None
    rows: dict[bytes, list[list[Any]]] = defaultdict(list)
    for (sid, target), mask in sorted(masks.items()):
        digest = hashes[(sid, target)]
        if digest is not None:
            rows[sid].append([target, mask, digest])
    return rows


def pack_settlement(sid: bytes, legs: list[list[Any]]) -> bytes:
    """One settlement's wire item: ``[settlement id, [leg rows]]``, msgpack."""
    return bytes(msgpack.packb([sid, legs]))


def pack_observation(items: Sequence[bytes]) -> bytes:
    """An observation from settlements packed by ``pack_settlement``, in the given order."""
    count = len(items)
    if count < 16:
        header = bytes([0x90 | count])
    elif count < 1 << 16:
        header = b"\xdc" + count.to_bytes(2, "big")
    else:
        header = b"\xdd" + count.to_bytes(4, "big")
    return header + b"".join(items)


def fit_observation(facts: Iterable[Fact], max_bytes: int | None = None) -> tuple[bytes, int]:
    """``encode_observation``, and how many settlements it had to leave out to fit (at most
    ``MAX_SETTLEMENTS_PER_OBSERVATION``, lowest ids first)."""
    rows = settlement_rows(facts)
    kept = sorted(rows)[:MAX_SETTLEMENTS_PER_OBSERVATION]
    items = [pack_settlement(sid, rows[sid]) for sid in kept]
    if max_bytes is not None:
        size = 5 + sum(len(item) for item in items)
        while items and size > max_bytes:
            size -= len(items.pop())
    return pack_observation(items), len(rows) - len(items)


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


def closed_on_every_leg(mode: str, facts: Iterable[Fact]) -> bool:
    """One settlement's facts (as ``settled`` counts them): every leg applied a decision
    or was rejected."""
    return bool(settled(mode, facts))


@lru_cache(maxsize=128)
def decode_observation(data: bytes) -> frozenset[Fact]:
    """Strict decoding: a malformed observation is an error, never a partial list. (Kept
    for recent observations: every member decodes the same ones from the same proposal.)"""
    try:
        raw = msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_array_len=MAX_SETTLEMENTS_PER_OBSERVATION
        )
    except Exception as exc:
        raise ObservationError(f"observation is not msgpack: {exc}") from None
    if not isinstance(raw, list):
        raise ObservationError("observation is not a list of settlements")
    facts: set[Fact] = set()
    seen: set[bytes] = set()
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], list)):
            raise ObservationError("a settlement is not [id, [legs]]")
        sid, legs = item
        if not (isinstance(sid, bytes) and len(sid) == 32):
            raise ObservationError("settlement id must be 32 bytes")
        if sid in seen or not legs:
            raise ObservationError("a settlement is repeated or has no legs")
        seen.add(sid)
        targets: set[str] = set()
        for leg in legs:
            if not (isinstance(leg, list) and len(leg) == 3):
                raise ObservationError("a leg is not [target, kinds, terms hash]")
            target, mask, terms = leg
            if not (isinstance(target, str) and 0 < len(target) <= 32) or target in targets:
                raise ObservationError("target must be a short string, once per settlement")
            targets.add(target)
            if not (isinstance(terms, bytes) and len(terms) == 32):
                raise ObservationError("terms hash must be 32 bytes")
            if not (isinstance(mask, int) and mask > 0 and mask & ~_ALL_KIND_BITS == 0):
                raise ObservationError(f"unknown fact kinds in mask {mask!r}")
            for kind in FactKind:
                if mask >> kind & 1:
                    facts.add(Fact(sid, target, kind, terms))
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
                # A leg ``after`` another is certified with it; the driver holds its
                # transmission until that leg is seen COMMITTED.
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
