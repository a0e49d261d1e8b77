"""``dvpsim explore``: schedules drawn from the seed alone (the same findings on one worker
or two), a violation shrunk to a minimal scenario confirmed with real crypto, that scenario
replayed by ``dvpsim sim``, and bad input refused in one line."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from chain_adapters.build import REPO_ROOT
from dvpsim.explore import Exploration, draw, explore, minimal_counterexample, run_checks
from dvpsim.pool import Pool
from scenarios.schedules import schedule_size
from scenarios.schema import Budget, load, parse

BEYOND_F = load(REPO_ROOT / "scenarios" / "explore-beyond-f.toml")
# A smaller workload keeps the default run quick; the budget is the shipped one.
SMALL = dataclasses.replace(
    BEYOND_F,
    time_limit=45.0,
    settlements=dataclasses.replace(BEYOND_F.settlements, count=6, arrival_rate=4.0),
)


def test_a_schedule_depends_only_on_the_seed_and_its_index() -> None:
    assert [draw(SMALL, 5, i) for i in range(10)] == [draw(SMALL, 5, i) for i in range(10)]
    assert draw(SMALL, 5, 3) != draw(SMALL, 6, 3)
    for i in range(50):
        schedule = draw(SMALL, 5, i)
        assert sum(len(g.nodes) for g in schedule.byzantine) <= 2
        assert len(schedule.faults) <= 2


def test_one_worker_and_two_find_the_same_violations() -> None:
    def findings(jobs: int) -> Exploration:
        return explore(SMALL, seed=3, count=3, seconds=None, pool=Pool(jobs), crypto="fast")

    one, two = findings(1), findings(2)
    assert one.schedules == two.schedules == 3
    assert one.by_checks == two.by_checks
    assert {k: i for k, (i, _) in one.first.items()} == {k: i for k, (i, _) in two.first.items()}


def test_a_violation_shrinks_to_a_minimal_scenario_that_sim_replays(tmp_path: Path) -> None:
    # f+1 = 2 liars that claim payments, two faults and a silent member's behaviour on top:
    # more than the violation needs.
    from scenarios.schema import Byzantine, Fault

    found = dataclasses.replace(
        SMALL,
        seed=12,
        byzantine=(Byzantine((1, 3), ("lie", "withhold-shares"), "claim-payment"),),
        faults=(
            Fault("delay", 0.5, duration=2.0, value=50.0, jitter=5.0),
            Fault("pause-node", 3.0, node=0, duration=1.5),
        ),
    )
    violated = run_checks((found, "fast"))
    assert "atomicity" in violated
    example = minimal_counterexample(found, tmp_path / "minimal.toml", violated=violated)
    assert example is not None and example.confirmed_real
    assert "atomicity" in example.violated
    assert schedule_size(example.scenario) < schedule_size(found)
    faults, actions, _, settlements = example.size
    # Two liars with one behaviour. A proposal carries a quorum of 2f+1 = 3 of the 4
    # observations, in an order keyed by the round, so both liars are carried only in some
    # rounds: the violation may need a third settlement to reach one of them.
    assert faults == 0 and actions == 3 and settlements <= 3
    # The file is an ordinary scenario: the schema reads it, sim replays it (exit 0: the
    # violation it expects is shown again), and it names its checks in expect.
    text = example.path.read_text()
    assert parse(tomllib.loads(text)).expect == example.violated
    replay = subprocess.run(
        [sys.executable, "-m", "dvpsim.cli", "sim", str(example.path), "--crypto", "fast",
         "--out", str(tmp_path / "replay")],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stdout + replay.stderr


def test_a_scenario_that_breaks_nothing_has_no_counterexample(tmp_path: Path) -> None:
    assert minimal_counterexample(SMALL, tmp_path / "none.toml") is None
    assert not (tmp_path / "none.toml").exists()


def explore_cli(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dvpsim.cli", "explore", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def explore_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from dvpsim.cli import main

    code = main(["explore", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scenarios/nope.toml"], "no such file"),
        (["scenarios/reference.toml", "--time", "soon"], "--time 'soon' is not a duration"),
        (["scenarios/reference.toml", "--budget", "0"], "--budget 0"),
        (["scenarios/reference.toml", "--seed", "x"], "--seed 'x' is not an integer"),
        (["scenarios/reference.toml", "--jobs", "0"], "--jobs 0"),
        (["scenarios/reference.toml", "--crypto", "slow"], "--crypto 'slow' is unknown"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = explore_in_process(capsys, *args)
    assert code == 2
    assert err.count("\n") == 1 and message in err, err


def test_the_command_explores_and_reports(tmp_path: Path) -> None:
    # Within f (the default budget) nothing breaks: exit 0, the figures written.
    scenario = tmp_path / "small.toml"
    from scenarios.dump import dumps

    scenario.write_text(dumps(dataclasses.replace(SMALL, explore=Budget(faults=1))))
    result = explore_cli(str(scenario), "--budget", "4", "--jobs", "2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "explore.json").read_text())
    assert summary["schedules"] == 4 and summary["violating_schedules"] == 0
    assert "4 schedules in" in result.stdout and "per minute" in result.stdout
    assert not list(tmp_path.glob("counterexample-*.toml"))
    again = explore_cli(str(scenario), "--budget", "1", "--out", str(tmp_path))
    assert again.returncode == 2 and "already holds an exploration" in again.stderr


@pytest.mark.slow
def test_the_command_finds_shrinks_and_confirms_beyond_f(tmp_path: Path) -> None:
    result = explore_cli(
        "scenarios/explore-beyond-f.toml", "--budget", "60", "--seed", "1", "--out", str(tmp_path)
    )
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads((tmp_path / "explore.json").read_text())
    assert summary["violating_schedules"] > 0
    examples = summary["counterexamples"]
    assert examples and all(c["confirmed_real"] for c in examples)
    for c in examples:
        scenario = load(c["path"])
        assert scenario.explore == BEYOND_F.explore
        assert c["faults"] <= 2 and scenario.expect == tuple(c["violated"])
        found = sorted((tmp_path / "found").glob("schedule-*.toml"))
        assert found


def test_a_run_that_raises_in_a_worker_is_recorded_as_an_error_not_the_end() -> None:
    from dvpsim.explore import ERROR, _indexed_checks

    with Pool(1) as pool:
        [(_, result)] = list(pool.imap_unordered(_indexed_checks("no-such-crypto"), [(0, SMALL)]))
    assert result[0] == ERROR and "unknown crypto suite 'no-such-crypto'" in result[1]
    state = Exploration(SMALL, 1, "fast")
    assert state.record(0, SMALL, result) and state.errors == 1 and state.violating == 0
