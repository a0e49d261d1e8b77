"""``scenarios.dump``: every shipped scenario, and drawn variations of one, survive the trip
to TOML and back unchanged."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain_adapters.build import REPO_ROOT
from scenarios.dump import dumps
from scenarios.schema import Fault, Scenario, load, parse

SHIPPED = sorted((REPO_ROOT / "scenarios").glob("*.toml"))


def round_trip(scenario: Scenario) -> Scenario:
    return parse(tomllib.loads(dumps(scenario)), scenario.path)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_scenario_reads_back_equal(path: Path) -> None:
    scenario = load(path)
    assert round_trip(scenario) == scenario


def test_a_fault_writes_only_its_kinds_keys() -> None:
    scenario = load(REPO_ROOT / "scenarios" / "reference.toml")
    isolate = Fault("isolate", 1.5, node=2, duration=0.75)
    text = dumps(dataclasses.replace(scenario, faults=(isolate,)))
    block = text.split("[[faults]]\n", 1)[1]
    assert block == 'kind = "isolate"\nat = 1.5\nnode = 2\nduration = 0.75\n'


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**63 - 1),
    time_limit=st.floats(1.0, 1e4),
    value=st.floats(0.001, 1.0),
    at=st.floats(0.0, 1e3),
    name=st.text(min_size=1, max_size=20),
)
def test_drawn_values_read_back_equal(
    seed: int, time_limit: float, value: float, at: float, name: str
) -> None:
    base = load(REPO_ROOT / "scenarios" / "reference.toml")
    scenario = dataclasses.replace(
        base,
        name=name,
        seed=seed,
        time_limit=time_limit,
        faults=(Fault("drop", at, duration=1.0, value=value, from_nodes=(0, 1)),),
    )
    assert round_trip(scenario) == scenario
