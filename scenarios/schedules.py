"""Schedules: the faults and Byzantine members a run meets, drawn within a budget, and made
smaller.

One vocabulary serves explore (``dvpsim explore``: draws from a seeded ``random.Random``)
and the public Hypothesis strategies (``dvpsim.testing``: draws through Hypothesis, which
then shrinks what it drew). Both call ``draw_schedule`` with a ``Choices``, the five
questions a draw asks; so a schedule explore finds and one a user's property finds are
made by the same rules, and both are ordinary scenarios (``scenarios.dump`` writes them).

Every schedule ``draw_schedule`` makes is a valid scenario: faults come one after another
in disjoint windows (none clashes with another), network faults heal, member faults name
members of the committee. ``smaller(scenario)`` lists the one-step reductions a shrinker
tries: a fault or a Byzantine member or behaviour less, a fault half as long, half the
settlements.

The budget (``scenarios.schema.Budget``) is what a scenario declares in its ``[explore]``
table.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator, Sequence
from typing import Protocol, TypeVar

from node.byzantine import LIES, TWINS
from node.modes import MODES
from node.rpcfaults import RPC_LIES
from scenarios.schema import (
    MEMBER_FAULTS,
    Budget,
    Byzantine,
    Failure,
    Fault,
    Scenario,
    ScenarioError,
    check_faults,
)

__all__ = [
    "Choices",
    "RandomChoices",
    "draw_byzantine",
    "draw_faults",
    "draw_schedule",
    "faulty_members",
    "schedule_size",
    "smaller",
]

T = TypeVar("T")


class Choices(Protocol):
    """The questions a draw asks; ``RandomChoices`` answers from a seeded generator,
    ``dvpsim.testing`` through Hypothesis."""

    def integer(self, lo: int, hi: int) -> int: ...  # lo <= x <= hi

    def number(self, lo: float, hi: float) -> float: ...  # lo <= x <= hi

    def pick(self, options: Sequence[T]) -> T: ...

    def coin(self) -> bool: ...

    def subset(self, options: Sequence[T], lo: int, hi: int) -> tuple[T, ...]: ...


class RandomChoices:
    """Answers from ``random.Random(seed)``: the same seed, the same schedule."""

    def __init__(self, seed: int | str) -> None:
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def number(self, lo: float, hi: float) -> float:
        # Rounded to milliseconds: a schedule written as TOML reads as the numbers it ran.
        return round(lo + (hi - lo) * self.rng.random(), 3)

    def pick(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def coin(self) -> bool:
        return self.rng.random() < 0.5

    def subset(self, options: Sequence[T], lo: int, hi: int) -> tuple[T, ...]:
        size = self.rng.randint(lo, min(hi, len(options)))
        chosen = set(self.rng.sample(range(len(options)), size))
        return tuple(x for i, x in enumerate(options) if i in chosen)


def _fault(
    choices: Choices, scenario: Scenario, kind: str, at: float, budget: Budget, node: int
) -> Fault:
    n = scenario.committee.n
    duration = choices.number(0.25, max(0.25, budget.max_duration))
    if kind == "partition":
        side = choices.subset(range(n), 1, n - 1)
        return Fault(kind, at, duration=duration, side=side, one_way=choices.coin())
    if kind in ("drop", "duplicate", "reorder"):
        return Fault(kind, at, duration=duration, value=choices.number(0.05, 0.5))
    if kind == "delay":
        value, jitter = choices.number(1.0, 200.0), choices.number(0.0, 50.0)
        return Fault(kind, at, duration=duration, value=value, jitter=jitter)
    if kind == "reorg":
        legs = MODES[scenario.mode].chains
        depth = choices.integer(1, max(1, budget.reorg_depth))
        return Fault(kind, at, leg=choices.pick(legs), value=float(depth))
    if kind == "bank-outage":
        return Fault(kind, at, duration=duration)
    if kind == "bank-latency":
        return Fault(kind, at, duration=duration, value=choices.number(50.0, 3000.0))
    if kind in ("bank-error-rate", "bank-duplicate-callbacks"):
        return Fault(kind, at, duration=duration, value=choices.number(0.05, 1.0))
    if kind == "stop-node":
        return Fault(kind, at, node=node)
    if kind == "lying-rpc":
        return Fault(kind, at, node=node, duration=duration, lie=choices.pick(RPC_LIES))
    if kind == "clock":
        skew, drift = choices.number(0.0, 5.0), choices.number(-0.9, 3.0)
        return Fault(kind, at, node=node, duration=duration, value=skew, drift=drift)
    return Fault(kind, at, node=node, duration=duration)  # isolate and the member faults


def _kinds(scenario: Scenario, budget: Budget) -> tuple[str, ...]:
    """The budget's kinds this scenario's mode can take (bank faults need a bank)."""
    return tuple(k for k in budget.kinds if not k.startswith("bank-") or scenario.uses_bank())


def faulty_members(scenario: Scenario) -> set[int]:
    """The members that are not honest and well: Byzantine ones (twins included) and the
    targets of member faults (``MEMBER_FAULTS``)."""
    return {i for g in scenario.byzantine for i in g.nodes} | {
        f.node for f in scenario.faults if f.kind in MEMBER_FAULTS and isinstance(f.node, int)
    }


def draw_faults(choices: Choices, scenario: Scenario, budget: Budget) -> tuple[Fault, ...]:
    """``scenario``'s own faults and up to ``budget.faults`` drawn ones, one after another in
    disjoint windows that begin within ``budget.window`` seconds. A member fault names a
    member that is already faulty, or another while the faulty members number fewer than
    the budget's (``budget.members(f)``); a drawn fault that would clash with one of the
    scenario's own is left out."""
    kinds = _kinds(scenario, budget)
    faulty = faulty_members(scenario)
    most = budget.members(scenario.committee.f)
    n = scenario.committee.n
    drawn: list[Fault] = []
    at = 0.0
    for _ in range(choices.integer(0, budget.faults) if kinds else 0):
        at = round(at + choices.number(0.0, budget.window / max(1, budget.faults)), 3)
        if at > budget.window:
            break
        eligible = sorted(faulty) if len(faulty) >= most else list(range(n))
        usable = [k for k in kinds if k not in MEMBER_FAULTS or eligible]
        if not usable:
            break
        kind = choices.pick(usable)
        node = choices.pick(eligible) if kind in MEMBER_FAULTS else choices.integer(0, n - 1)
        fault = _fault(choices, scenario, kind, at, budget, node)
        if kind in MEMBER_FAULTS:
            faulty.add(node)
        drawn.append(fault)
        if fault.kind == "stop-node":
            break  # the node stays down: nothing may follow on it, keep it last
        at = round(at + fault.duration, 3)
    return scenario.faults + tuple(f for f in drawn if _fits(scenario, f))


def _fits(scenario: Scenario, fault: Fault) -> bool:
    """Whether ``fault`` can join ``scenario``'s own faults (no clash the schema refuses)."""
    if not scenario.faults:
        return True
    try:
        check_faults(dataclasses.replace(scenario, faults=(*scenario.faults, fault)))
    except ScenarioError:
        return False
    return True


def draw_byzantine(choices: Choices, scenario: Scenario, budget: Budget) -> tuple[Byzantine, ...]:
    """``scenario``'s own coalitions, and one more of members not yet faulty, with one or
    two behaviours, while the faulty members number at most ``budget.members(f)``."""
    n = scenario.committee.n
    faulty = faulty_members(scenario)
    room = min(budget.members(scenario.committee.f), n) - len(faulty)
    if room <= 0 or not budget.behaviours:
        return scenario.byzantine
    members = choices.subset([i for i in range(n) if i not in faulty], 0, room)
    if not members:
        return scenario.byzantine
    behaviours = choices.subset(budget.behaviours, 1, 2)
    return (*scenario.byzantine, Byzantine(members, behaviours, choices.pick(LIES)))


def draw_schedule(
    choices: Choices, scenario: Scenario, budget: Budget, *, seed: int | None = None
) -> Scenario:
    """``scenario`` with drawn Byzantine members and faults added to its own, and ``seed``
    (default: drawn)."""
    byzantine = draw_byzantine(choices, scenario, budget)
    with_byzantine = dataclasses.replace(scenario, byzantine=byzantine)
    faults = draw_faults(choices, with_byzantine, budget)
    if seed is None:
        seed = choices.integer(0, 2**31 - 1)
    return dataclasses.replace(with_byzantine, faults=faults, seed=seed)


def schedule_size(scenario: Scenario) -> tuple[int, int, float, int]:
    """How big a schedule is, smaller first: faults, Byzantine members and behaviours,
    fault seconds, settlements."""
    actions = sum(len(g.nodes) + len(g.behaviours) for g in scenario.byzantine)
    seconds = sum(f.duration for f in scenario.faults)
    return len(scenario.faults), actions, round(seconds, 3), scenario.settlements.count


def smaller(scenario: Scenario) -> Iterator[Scenario]:
    """The one-step reductions of ``scenario``, boldest first: drop a fault, drop a
    Byzantine coalition, member or behaviour, halve a fault's window, halve the settlements.
    Each is a valid scenario when ``scenario`` is one."""
    faults, groups = scenario.faults, scenario.byzantine
    for i in range(len(faults)):
        yield dataclasses.replace(scenario, faults=faults[:i] + faults[i + 1 :])
    for i, group in enumerate(groups):
        rest = groups[:i] + groups[i + 1 :]
        yield _with_byzantine(scenario, rest)
        for member in group.nodes if len(group.nodes) > 1 else ():
            nodes = tuple(m for m in group.nodes if m != member)
            yield _with_byzantine(scenario, (*rest, dataclasses.replace(group, nodes=nodes)))
        for behaviour in group.behaviours if len(group.behaviours) > 1 else ():
            kept = tuple(b for b in group.behaviours if b != behaviour)
            yield _with_byzantine(scenario, (*rest, dataclasses.replace(group, behaviours=kept)))
    for i, fault in enumerate(faults):
        if fault.duration > 0.25:
            shorter = dataclasses.replace(fault, duration=max(0.25, round(fault.duration / 2, 3)))
            yield dataclasses.replace(scenario, faults=(*faults[:i], shorter, *faults[i + 1 :]))
    settlements = scenario.settlements
    unplanned = settlements.count - sum(x.count for x in settlements.fail)
    if settlements.count > 1:
        count = max(1, math.ceil(settlements.count / 2))
        fail = _fewer_failures(settlements.fail, count)
        yield dataclasses.replace(
            scenario, settlements=dataclasses.replace(settlements, count=count, fail=fail)
        )
        if unplanned > 0 and count != settlements.count - 1:
            yield dataclasses.replace(
                scenario,
                settlements=dataclasses.replace(settlements, count=settlements.count - 1),
            )


def _fewer_failures(fail: tuple[Failure, ...], count: int) -> tuple[Failure, ...]:
    """The planned failures scaled into ``count`` settlements (each kind at least one)."""
    total = sum(x.count for x in fail)
    if total <= count:
        return fail
    kept = []
    for failure in fail:
        share = max(1, failure.count * count // max(1, total))
        kept.append(dataclasses.replace(failure, count=share))
    while sum(x.count for x in kept) > count:
        kept.pop()
    return tuple(kept)


def _with_byzantine(scenario: Scenario, groups: tuple[Byzantine, ...]) -> Scenario:
    """The scenario with these coalitions; a twin copy named by a fault ("2b") must still
    exist, so a fault naming a twin that went is dropped with it."""
    twins = {i for g in groups if TWINS in g.behaviours for i in g.nodes}

    def names_gone_twin(fault: Fault) -> bool:
        labels = (fault.node, *fault.side, *fault.from_nodes, *fault.to_nodes)
        return any(isinstance(x, str) and int(x[:-1]) not in twins for x in labels)

    faults = tuple(f for f in scenario.faults if not names_gone_twin(f))
    return dataclasses.replace(scenario, byzantine=groups, faults=faults)
