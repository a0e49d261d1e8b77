"""Worlds, schedules and adversaries for the consensus tests, and Hypothesis strategies.

Imported by the test modules of tests/consensus as tests.consensus.worlds.

A *world* is what the members observe: ``FactWorld`` gives each member a set of facts
(settlement, COMMIT or ABORT, terms) that become visible to it at its own time; in a
consistent world every member that sees a fact sees the same action, in a divergent one
members may disagree (as near a deadline), which is what stresses the safety rules.
``NumberWorld`` gives each member a number for MedianOutcome.

An ``Adversary`` names, per Byzantine member, the behaviours of consensus.byzantine it
runs; everything here is a frozen dataclass so a failing example prints as a schedule
that can be pasted back into a test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from consensus import byzantine as byz
from consensus.config import ConsensusConfig
from consensus.harness import (
    Crash,
    NetworkProfile,
    NodeFactory,
    Partition,
    Schedule,
    Simulation,
    SimulationResult,
    simulated_committee,
)
from consensus.outcome import FactsOutcome, OutcomeFunction, encode_facts, encode_number
from consensus.protocol import NodeKeys
from consensus.report import Action, Decision

#: Fast virtual-time parameters for property runs: epochs of a few seconds.
PARAMETERS: dict[str, Any] = {
    "delta_progress": 1.5,
    "delta_resend": 0.4,
    "delta_round": 0.3,
    "delta_grace": 0.05,
    "delta_stage": 0.2,
    "r_max": 6,
}


def committee(
    n: int = 4, f: int = 1, *, t: int | None = None, targets: tuple[str, ...] = ("asset",)
) -> tuple[ConsensusConfig, tuple[NodeKeys, ...]]:
    return simulated_committee(
        n, f, seed=1, targets=targets, t=t, allow_unsafe_threshold=t is not None, **PARAMETERS
    )


# --------------------------------------------------------------------------- worlds


def settlement(k: int) -> bytes:
    return hashlib.sha256(b"settlement" + bytes([k])).digest()


def terms(k: int) -> bytes:
    return hashlib.sha256(b"terms" + bytes([k])).digest()


@dataclass(frozen=True)
class Fact:
    """Settlement ``key``: member i sees ``actions[i]`` (1 COMMIT, 2 ABORT) from
    ``visible_from[i]`` on (None: never)."""

    key: int
    actions: tuple[int, ...]
    visible_from: tuple[float | None, ...]


@dataclass(frozen=True)
class FactWorld:
    facts: tuple[Fact, ...]

    def __call__(self, node: int, now: float, epoch: int, round_: int) -> bytes:
        seen = [
            Decision(settlement(f.key), Action(f.actions[node]), terms(f.key))
            for f in self.facts
            if f.visible_from[node] is not None and f.visible_from[node] <= now
        ]
        return encode_facts(seen)

    def consistent(self) -> bool:
        return all(len(set(f.actions)) == 1 for f in self.facts)


@dataclass(frozen=True)
class NumberWorld:
    base: int = 1000

    def __call__(self, node: int, now: float, epoch: int, round_: int) -> bytes:
        return encode_number(self.base + 10 * node + round_ % 7)


@st.composite
def fact_worlds(
    draw: st.DrawFn,
    n: int,
    *,
    consistent: bool,
    max_time: float = 3.0,
    times: st.SearchStrategy[float | None] | None = None,
) -> FactWorld:
    """Up to three facts; ``times`` draws when a member sees one (default: never, or a
    time up to ``max_time``)."""
    count = draw(st.integers(1, 3))
    facts = []
    for key in range(count):
        if consistent:
            action = draw(st.sampled_from([1, 2]))
            actions = (action,) * n
        else:
            actions = tuple(draw(st.lists(st.sampled_from([1, 2]), min_size=n, max_size=n)))
        when = (
            times
            if times is not None
            else st.one_of(
                st.none(), st.floats(0, max_time, allow_nan=False).map(lambda x: round(x, 2))
            )
        )
        visible = tuple(draw(st.lists(when, min_size=n, max_size=n)))
        facts.append(Fact(key, actions, visible))
    return FactWorld(tuple(facts))


# --------------------------------------------------------------------------- adversaries

BEHAVIOURS: dict[str, Callable[[], byz.Behaviour]] = {
    "silent": byz.Silent,
    "liar": byz.LyingObserver,
    "liar-number": lambda: byz.LyingObserver(byz.lie_about_number),
    "withhold": byz.WithholdShares,
    "invalid-shares": byz.InvalidShares,
    "sign-anything": byz.SignAnything,
    "equivocate": byz.EquivocatingLeader,
    "replay": byz.Replay,
    "flood": byz.Flood,
}


@dataclass(frozen=True)
class Adversary:
    """Byzantine members and the behaviours each runs, e.g. ((0, ("equivocate",)),)."""

    members: tuple[tuple[int, tuple[str, ...]], ...] = ()

    @property
    def nodes(self) -> frozenset[int]:
        return frozenset(i for i, _ in self.members)

    def factories(
        self,
        config: ConsensusConfig,
        keys: Sequence[NodeKeys],
        outcome: OutcomeFunction,
        seed: int,
    ) -> dict[int, NodeFactory]:
        coalition = self.nodes
        result: dict[int, NodeFactory] = {}
        for index, names in self.members:

            def behaviours(names: tuple[str, ...] = names) -> list[byz.Behaviour]:
                return [BEHAVIOURS[name]() for name in names]

            result[index] = byz.byzantine(config, keys, outcome, coalition, seed, behaviours)
        return result


@st.composite
def adversaries(
    draw: st.DrawFn,
    n: int,
    f: int,
    *,
    names: Sequence[str] = tuple(b for b in BEHAVIOURS if b != "liar-number"),
) -> Adversary:
    members = draw(st.lists(st.integers(0, n - 1), max_size=f, unique=True))
    chosen = []
    for index in sorted(members):
        behaviours = draw(
            st.lists(st.sampled_from(list(names)), min_size=1, max_size=2, unique=True)
        )
        chosen.append((index, tuple(sorted(behaviours))))
    return Adversary(tuple(chosen))


# --------------------------------------------------------------------------- schedules

_delays = st.floats(0.005, 0.08, allow_nan=False).map(lambda x: round(x, 3))
_probability = st.sampled_from([0.0, 0.0, 0.05, 0.15, 0.3])


@st.composite
def networks(draw: st.DrawFn, *, faulty: bool = True) -> NetworkProfile:
    return NetworkProfile(
        delay=draw(_delays),
        link_spread=draw(st.sampled_from([0.0, 0.01, 0.04])),
        jitter=draw(st.sampled_from([0.0, 0.005, 0.02])),
        drop=draw(_probability) if faulty else 0.0,
        duplicate=draw(_probability) if faulty else 0.0,
        reorder=draw(_probability) if faulty else 0.0,
        reorder_delay=draw(st.sampled_from([0.05, 0.3])),
    )


@st.composite
def schedules(
    draw: st.DrawFn,
    n: int,
    *,
    max_heal: float = 3.0,
    after_heal: float = 3.0,
    crashable: Sequence[int] | None = None,
) -> Schedule:
    """Faults until heal_at, then a healthy network for ``after_heal`` seconds."""
    heal_at = round(draw(st.floats(0, max_heal, allow_nan=False)), 2)
    times = st.floats(0, max(heal_at, 0.01), allow_nan=False).map(lambda x: round(x, 2))
    partitions = []
    for _ in range(draw(st.integers(0, 2))):
        start = draw(times)
        end = round(start + draw(st.floats(0.1, 2.0, allow_nan=False)), 2)
        side = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n - 1, unique=True))
        partitions.append(Partition(start, end, tuple(sorted(side)), draw(st.booleans())))
    crashes = []
    candidates = list(range(n)) if crashable is None else list(crashable)
    if candidates:
        for _ in range(draw(st.integers(0, 2))):
            at = draw(times)
            restart = draw(st.one_of(st.none(), st.floats(0.05, 1.5, allow_nan=False)))
            crashes.append(
                Crash(
                    node=draw(st.sampled_from(candidates)),
                    at=at,
                    restart_at=None if restart is None else round(min(at + restart, heal_at), 2),
                    after_actions=draw(st.one_of(st.none(), st.integers(0, 4))),
                )
            )
    return Schedule(
        seed=draw(st.integers(0, 2**31)),
        network=draw(networks()),
        partitions=tuple(partitions),
        crashes=tuple(crashes),
        heal_at=heal_at,
        duration=round(heal_at + after_heal, 2),
    )


# --------------------------------------------------------------------------- runs


def build(
    config: ConsensusConfig,
    keys: Sequence[NodeKeys],
    world: Callable[[int, float, int, int], bytes],
    schedule: Schedule,
    adversary: Adversary = Adversary(),
    outcome: OutcomeFunction | None = None,
    **options: Any,
) -> Simulation:
    chosen = outcome if outcome is not None else FactsOutcome()
    return Simulation(
        config,
        keys,
        chosen,
        world,
        schedule,
        adversary.factories(config, keys, chosen, schedule.seed),
        **options,
    )


def simulate(
    config: ConsensusConfig,
    keys: Sequence[NodeKeys],
    world: Callable[[int, float, int, int], bytes],
    schedule: Schedule,
    adversary: Adversary = Adversary(),
    outcome: OutcomeFunction | None = None,
    **options: Any,
) -> tuple[Simulation, SimulationResult]:
    simulation = build(config, keys, world, schedule, adversary, outcome, **options)
    return simulation, simulation.run()
