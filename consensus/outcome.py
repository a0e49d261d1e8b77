"""Outcome functions: from a certified observation set to each target's decisions.

Every follower recomputes a round's reports from the leader's proposal with the same
outcome function, so the function must be *deterministic* (same observations, same
context -> same decisions, on every machine) and *total* (observations come from peers,
some Byzantine: undecodable ones count as absent, they never raise). It returns, per
target name, the decisions of that target's report; targets it leaves out get an empty
report (the round is still certified, which is the pacemaker's proof of progress).

The DvP decision rules live in ``node/``. Two simple functions ship here for tests and
benchmarks, both encoding their results as ``Decision`` values so one agreement checker
covers every outcome:

- ``MedianOutcome``: each observation is an 8-byte unsigned integer; the report carries
  the median as the terms hash of one COMMIT decision per round. With at most f liars in
  a set of at least 2f+1, the median lies between two honest values.
- ``FactsOutcome``: each observation is a set of facts ``(settlement id, action, terms
  hash)``; a fact is certified only if at least f+1 observations in the set contain it,
  so at least one honest node saw it. When several facts about one settlement pass (for
  example COMMIT and ABORT, from honest nodes with diverging views), the one with the most
  support wins, ties going to ABORT, then to the smaller terms hash. Whether a node may
  sign the result is the safety store's business, not the outcome's.

For liveness an outcome should be monotone: once a decision has been certified, later
observation sets of honest nodes should not produce a conflicting one (honest nodes
refuse to sign it, and the round stalls). ``FactsOutcome`` is monotone when honest nodes'
views never disagree; the agreement tests deliberately break that to stress safety.

This module must never read a clock, a random generator or any state outside its
arguments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import msgpack

from consensus.report import Action, Decision

__all__ = [
    "AttributedObservation",
    "FactsOutcome",
    "MedianOutcome",
    "OutcomeContext",
    "OutcomeFunction",
    "decode_facts",
    "decode_number",
    "encode_facts",
    "encode_number",
]

_MAX_FACTS: Final = 64
# Resolution order among facts of one settlement with equal support: ABORT first.
_ACTION_PREFERENCE: Final = {Action.ABORT: 0, Action.COMMIT: 1, Action.PREPARE: 2}


@dataclass(frozen=True, slots=True)
class AttributedObservation:
    """An observation from the proposal, with its (signature-checked) observer."""

    observer: int
    observation: bytes


@dataclass(frozen=True, slots=True)
class OutcomeContext:
    n: int
    f: int
    epoch: int
    round: int
    targets: tuple[str, ...]
    max_decisions: int


class OutcomeFunction(Protocol):
    """Deterministic, total map from a certified observation set to decisions per target."""

    def __call__(
        self, observations: Sequence[AttributedObservation], context: OutcomeContext
    ) -> Mapping[str, tuple[Decision, ...]]: ...


# --------------------------------------------------------------------------- median


def encode_number(value: int) -> bytes:
    """An observation for ``MedianOutcome``."""
    return value.to_bytes(8, "big")


def decode_number(observation: bytes) -> int | None:
    return int.from_bytes(observation, "big") if len(observation) == 8 else None


@dataclass(frozen=True, slots=True)
class MedianOutcome:
    """One COMMIT per round whose terms hash is the median observed number (32-byte
    big-endian), for a settlement id derived from ``name``, epoch and round."""

    name: bytes = b"median"

    def settlement_id(self, epoch: int, round_: int) -> bytes:
        return hashlib.sha256(
            b"dvpsim/median/" + self.name + epoch.to_bytes(4, "big") + round_.to_bytes(8, "big")
        ).digest()

    def __call__(
        self, observations: Sequence[AttributedObservation], context: OutcomeContext
    ) -> Mapping[str, tuple[Decision, ...]]:
        values = sorted(
            v for v in (decode_number(o.observation) for o in observations) if v is not None
        )
        if not values:
            return {}
        median = values[len(values) // 2]
        decision = Decision(
            settlement_id=self.settlement_id(context.epoch, context.round),
            action=Action.COMMIT,
            terms_hash=median.to_bytes(32, "big"),
        )
        return {name: (decision,) for name in context.targets}


# --------------------------------------------------------------------------- facts


def encode_facts(facts: Sequence[Decision]) -> bytes:
    """An observation for ``FactsOutcome``: the facts, sorted, each once."""
    unique = sorted(
        {(d.settlement_id, int(d.action), d.terms_hash) for d in facts},
    )
    packed: bytes = msgpack.packb([list(u) for u in unique], use_bin_type=True)
    return packed


def decode_facts(observation: bytes) -> tuple[Decision, ...] | None:
    """The facts of an observation, or None if it is not a canonical fact list."""
    try:
        raw = msgpack.unpackb(
            observation, raw=False, use_list=True, max_array_len=_MAX_FACTS, max_ext_len=0
        )
    except Exception:  # noqa: BLE001 - any parser failure means "not a fact list"
        return None
    if type(raw) is not list:
        return None
    facts = []
    for entry in raw:
        if (
            type(entry) is not list
            or len(entry) != 3
            or type(entry[0]) is not bytes
            or len(entry[0]) != 32
            or type(entry[1]) is not int
            or entry[1] not in (1, 2, 3)
            or type(entry[2]) is not bytes
            or len(entry[2]) != 32
        ):
            return None
        facts.append(Decision(entry[0], Action(entry[1]), entry[2]))
    # One encoding per fact set, so two observers with the same view sign the same bytes.
    if encode_facts(facts) != observation:
        return None
    return tuple(facts)


@dataclass(frozen=True, slots=True)
class FactsOutcome:
    """Certify the facts that at least f+1 observations contain (module docstring)."""

    def __call__(
        self, observations: Sequence[AttributedObservation], context: OutcomeContext
    ) -> Mapping[str, tuple[Decision, ...]]:
        support: dict[Decision, int] = {}
        for o in observations:
            facts = decode_facts(o.observation)
            if facts is None:
                continue
            for fact in facts:
                support[fact] = support.get(fact, 0) + 1
        best: dict[bytes, Decision] = {}
        for fact, count in support.items():
            if count < context.f + 1:
                continue
            current = best.get(fact.settlement_id)
            if current is None or self._rank(fact, count) < self._rank(current, support[current]):
                best[fact.settlement_id] = fact
        decisions = tuple(best[sid] for sid in sorted(best))[: context.max_decisions]
        return {name: decisions for name in context.targets}

    @staticmethod
    def _rank(fact: Decision, count: int) -> tuple[int, int, bytes]:
        return (-count, _ACTION_PREFERENCE[fact.action], fact.terms_hash)
