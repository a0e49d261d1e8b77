"""``scenarios.schedules``: every drawn schedule, and every reduction of one, is a valid
scenario (the schema reads its TOML back as the same scenario); the same seed draws the
same schedule; a budget bounds what is drawn."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain_adapters.build import REPO_ROOT
from scenarios.dump import dumps
from scenarios.schedules import (
    RandomChoices,
    draw_schedule,
    faulty_members,
    schedule_size,
    smaller,
)
from scenarios.schema import FAULT_KINDS, SCENARIO_BEHAVIOURS, Budget, Scenario, load, parse

REFERENCE = load(REPO_ROOT / "scenarios" / "reference.toml")
ONCHAIN = load(REPO_ROOT / "scenarios" / "single-chain-onchain.toml")
EVERYTHING = Budget(faults=4, kinds=FAULT_KINDS, byzantine=3, behaviours=SCENARIO_BEHAVIOURS)


def valid(scenario: Scenario) -> Scenario:
    """The scenario as the schema reads its TOML: raises ScenarioError if invalid."""
    again = parse(tomllib.loads(dumps(scenario)), scenario.path)
    assert again == scenario
    return again


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), base=st.sampled_from([REFERENCE, ONCHAIN]))
def test_every_drawn_schedule_and_each_reduction_is_a_valid_scenario(
    seed: int, base: Scenario
) -> None:
    schedule = valid(draw_schedule(RandomChoices(seed), base, EVERYTHING))
    assert len(schedule.faults) <= EVERYTHING.faults
    assert sum(len(g.nodes) for g in schedule.byzantine) <= EVERYTHING.byzantine
    if not base.uses_bank():
        assert not any(f.kind.startswith("bank-") for f in schedule.faults)
    for reduced in smaller(schedule):
        valid(reduced)
        assert schedule_size(reduced) < schedule_size(schedule)


def test_the_same_seed_draws_the_same_schedule_and_others_differ() -> None:
    budget = dataclasses.replace(EVERYTHING, faults=3)
    first = [draw_schedule(RandomChoices(f"7/{i}"), REFERENCE, budget) for i in range(20)]
    again = [draw_schedule(RandomChoices(f"7/{i}"), REFERENCE, budget) for i in range(20)]
    assert first == again
    assert len({dumps(s) for s in first}) == 20


def test_the_default_budget_keeps_byzantine_members_within_f() -> None:
    for i in range(200):
        schedule = draw_schedule(RandomChoices(i), REFERENCE, Budget())
        assert sum(len(g.nodes) for g in schedule.byzantine) <= REFERENCE.committee.f
        assert all(f.kind in Budget().kinds for f in schedule.faults)


def test_an_explore_table_is_read_and_checked() -> None:
    text = (REPO_ROOT / "scenarios" / "reference.toml").read_text()
    raw = tomllib.loads(text + '\n[explore]\nfaults = 1\nkinds = ["drop"]\nbyzantine = 2\n')
    budget = parse(raw).explore
    assert (budget.faults, budget.kinds, budget.byzantine) == (1, ("drop",), 2)
    bad = tomllib.loads(text + '\n[explore]\nkinds = ["meteor"]\n')
    with pytest.raises(ValueError, match=r"explore.kinds: unknown fault 'meteor'"):
        parse(bad)
    bad = tomllib.loads(text + "\n[explore]\nbyzantine = 9\n")
    with pytest.raises(ValueError, match=r"explore.byzantine: 9 Byzantine members"):
        parse(bad)


def test_drawn_faults_and_members_join_the_scenarios_own_within_the_budget() -> None:
    # The base brings a slow bank and an equivocating member 3: f = 1 is used up, so member
    # faults may only hit member 3 and no coalition is added.
    base = load(REPO_ROOT / "scenarios" / "equivocation-default-threshold.toml")
    kinds = ("pause-node", "lying-rpc", "partition", "bank-latency", "bank-outage")
    for i in range(200):
        schedule = valid(draw_schedule(RandomChoices(i), base, Budget(faults=3, kinds=kinds)))
        assert schedule.faults[: len(base.faults)] == base.faults
        assert schedule.byzantine == base.byzantine
        assert faulty_members(schedule) == {3}
    wider = Budget(faults=3, kinds=kinds, byzantine=2)
    seen = set()
    for i in range(200):
        schedule = valid(draw_schedule(RandomChoices(i), base, wider))
        assert len(faulty_members(schedule)) <= 2 and 3 in faulty_members(schedule)
        seen.add(len(faulty_members(schedule)))
    assert seen == {1, 2}
