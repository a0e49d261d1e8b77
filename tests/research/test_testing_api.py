"""``dvpsim.testing``: the example in docs/TESTING.md runs as written; lowered to t = f + 1
it fails, shrinks, and the TOML it prints replays the violation in ``dvpsim sim``; every
strategy draws valid scenarios; the pytest plugin's fixture runs one."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain_adapters.build import REPO_ROOT
from dvpsim.testing import (
    CheckFailed,
    SimResult,
    bundled,
    coalitions,
    committees,
    faults,
    schedules,
    toml_of_failure,
    workloads,
)
from scenarios.dump import dumps
from scenarios.schema import Scenario, parse

DOC = REPO_ROOT / "docs" / "TESTING.md"
BASE_LINE = 'BASE = bundled("equivocation-default-threshold")'


def docs_example() -> str:
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert code is not None, "docs/TESTING.md has no python example"
    assert BASE_LINE in code.group(1)
    return code.group(1)


def run_example(code: str) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(code, str(DOC), "exec"), namespace)
    tests = [v for k, v in namespace.items() if k.startswith("test_")]
    assert len(tests) == 1
    tests[0]()


def test_the_docs_example_runs_as_written() -> None:
    run_example(docs_example())


def test_the_docs_example_fails_at_t_f_plus_1_and_its_toml_replays(tmp_path: Path) -> None:
    low = (
        "import dataclasses\n"
        "from scenarios.schema import Committee\n"
        "BASE = dataclasses.replace(BASE, committee=Committee("
        "n=4, f=1, threshold=2, unsafe_allow_low_threshold=True))\n"
    )
    code = docs_example().replace(BASE_LINE, BASE_LINE + "\n" + low)
    with pytest.raises(CheckFailed) as failure:
        run_example(code)
    message = str(failure.value)
    assert "no-conflicting-certificates: invalid" in message or "atomicity: invalid" in message
    text = toml_of_failure(message)
    scenario = parse(tomllib.loads(text))
    assert scenario.committee.t == 2 and scenario.expect
    # Shrunk: no fault beyond the scenario's own slow bank is needed.
    assert [f.kind for f in scenario.faults] == ["bank-latency"]
    path = tmp_path / "counterexample.toml"
    path.write_text(text)
    replay = subprocess.run(
        [sys.executable, "-m", "dvpsim.cli", "sim", str(path), "--crypto", "fast",
         "--out", str(tmp_path / "replay")],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stdout + replay.stderr  # expect met: shown again


REFERENCE = bundled("reference")


def reads_back(scenario: Scenario) -> None:
    assert parse(tomllib.loads(dumps(scenario)), scenario.path) == scenario


@settings(max_examples=40, deadline=None)
@given(
    committee=committees((4, 7, 10), thresholds="any"),
    workload=workloads(REFERENCE),
    drawn_faults=faults(REFERENCE),
    coalition=coalitions(REFERENCE),
    schedule=schedules(REFERENCE, committee=committees((4, 7)), workload=workloads(REFERENCE)),
)
def test_every_strategy_draws_valid_scenarios(
    committee: Any, workload: Any, drawn_faults: Any, coalition: Any, schedule: Scenario
) -> None:
    import dataclasses

    assert committee.n >= 3 * committee.f + 1 and committee.f + 1 <= committee.t <= committee.n
    reads_back(dataclasses.replace(REFERENCE, committee=committee))
    assert 1 <= workload.count <= REFERENCE.settlements.count
    reads_back(dataclasses.replace(REFERENCE, settlements=workload))
    reads_back(dataclasses.replace(REFERENCE, faults=drawn_faults))
    assert sum(len(g.nodes) for g in coalition) <= REFERENCE.committee.f
    reads_back(dataclasses.replace(REFERENCE, byzantine=coalition))
    reads_back(schedule)


@settings(max_examples=2, deadline=None)
@given(seed=st.integers(0, 100))
def test_the_plugin_fixture_runs_a_scenario(dvpsim_sim: Any, seed: int) -> None:
    import dataclasses

    small = dataclasses.replace(
        REFERENCE, seed=seed, settlements=dataclasses.replace(REFERENCE.settlements, count=4)
    )
    result: SimResult = dvpsim_sim(small)
    assert result.crypto == "fast" and result.verdicts["atomicity"] == "valid"
    assert sum(1 for _ in result.events("settlement")) == 4
    (run,) = result.events("run")
    assert run["seed"] == seed and run["world"] == "sim"
