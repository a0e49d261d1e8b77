"""`dvpsim sweep`: the grid file and its one-line errors, the cells it makes, the theory a
cell is held to, a tiny grid run end to end through the console script, and (slow) the
default grid, whose unsafe region must be the one the theory lines draw."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from chain_adapters.build import REPO_ROOT
from dvpsim import cli
from dvpsim.sweep import (
    Cell,
    Coalition,
    GridError,
    Theory,
    cell_scenario,
    cells,
    evaluate,
    load_grid,
    run_sweep,
)
from scenarios.dump import dumps
from scenarios.schema import load, parse

DEFAULT_GRID = REPO_ROOT / "scenarios" / "grids" / "default.toml"
REFERENCE = REPO_ROOT / "scenarios" / "reference.toml"
LIARS = REPO_ROOT / "scenarios" / "unsafe-colluding-liars.toml"
EQUIVOCATION = REPO_ROOT / "scenarios" / "unsafe-equivocation-low-threshold.toml"


def grid_file(tmp: Path, body: str, base: Path = REFERENCE) -> Path:
    path = tmp / "grid.toml"
    path.write_text(f'name = "t"\nbase = "{base}"\n{body}')
    return path


TINY = """
settlements = 1
time_limit = 15
seeds = 1
n = [4]
thresholds = ["default"]
byzantine = [0, 2]
[[coalitions]]
name = "liars"
behaviours = ["lie"]
"""


def test_axis_expressions() -> None:
    assert evaluate("f+1", 7, 2) == 3
    assert evaluate("n-f", 10, 3) == 7
    assert evaluate("default", 10, 1) == 6
    assert evaluate("ceil(n/2)", 7) == 4
    assert evaluate("max", 10) == 3
    assert evaluate("2f+1", 7, 2) == 5
    with pytest.raises(ValueError, match="needs f"):
        evaluate("f+1", 4)
    with pytest.raises(ValueError, match="is not a number"):
        evaluate("g+1", 4, 1)


def test_the_default_grid_has_the_axes_the_issue_names() -> None:
    grid = load_grid(DEFAULT_GRID)
    all_cells = cells(grid)
    assert grid.seeds >= 5
    assert {c.n for c in all_cells} == {4, 7, 10}
    for n in (4, 7, 10):
        f = (n - 1) // 3
        mine = [c for c in all_cells if c.n == n and c.f == f]
        assert {c.byzantine for c in mine} == set(range(0, -(-n // 2) + 1))
        assert {c.t for c in mine} == {f + 1, (n + f) // 2 + 1, n - f}
    assert {c.coalition for c in all_cells} == {"", "liars", "silent"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'n = [4]\nf = [2]\nthresholds = ["default"]\nbyzantine = [0]',
            "f: the cell n = 4, f = 2 is impossible (n >= 3f+1): lower f, or set "
            "unsafe_allow_low_n = true to study it",
        ),
        (
            "n = [4]\nthresholds = [5]\nbyzantine = [0]",
            "thresholds: t = 5 at n = 4, f = 1 is outside f+1..n = 2..4",
        ),
        ('n = [4]\nthresholds = ["default"]\nbyzantine = [5]', "5 Byzantine members at n = 4"),
        ('n = [4]\nthresholds = ["default"]\nbyzantine = [1]', "no coalition"),
        ('n = [4]\nthresholds = ["t+1"]\nbyzantine = [0]', "'t' is not a number"),
        ('n = [4]\nthresholds = ["default"]\nbyzantine = [0]\nsize = 3', "size: unknown key"),
        ('n = [4]\nthresholds = ["default"]\nbyzantine = [0]\ndrop = [1.5]', "drop: "),
        ('n = [4]\nthresholds = ["default"]', "byzantine: missing"),
        ('n = [4]\nthresholds = ["default"]\nbyzantine = [0]\nseeds = 0', "seeds: "),
        (
            'n = [4]\nthresholds = ["default"]\nbyzantine = [1]\n'
            '[[coalitions]]\nname = "x"\nbehaviours = ["gossip"]',
            "unknown behaviour 'gossip'",
        ),
    ],
)
def test_a_bad_grid_is_one_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(GridError) as caught:
        load_grid(grid_file(tmp_path, body))
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_a_cell_below_3f_plus_1_is_allowed_when_the_grid_marks_it(tmp_path: Path) -> None:
    body = 'n = [4]\nf = [2]\nthresholds = ["n"]\nbyzantine = [0]\nunsafe_allow_low_n = true'
    grid = load_grid(grid_file(tmp_path, body))
    assert [(c.n, c.f, c.t) for c in cells(grid)] == [(4, 2, 4)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ((), "impossible (n >= 3f+1)"),
        (("--cluster", "127.0.0.1:6379"), "--cluster"),  # Ray missing, or no cluster there
        (("--seeds", "0"), "--seeds 0: give at least 1"),
        (("--jobs", "0"), "--jobs 0: give at least 1 worker"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: tuple[str, ...], message: str
) -> None:
    f = "2" if not options else "1"
    path = grid_file(tmp_path, f'n = [4]\nf = [{f}]\nthresholds = ["default"]\nbyzantine = [0]')
    assert cli.main(["sweep", str(path), "--out", str(tmp_path / "out"), *options]) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("dvpsim sweep: ")
    assert message in captured.err
    assert not (tmp_path / "out").exists()


def test_a_cell_scenario_is_the_base_with_the_cells_committee_coalition_and_faults(
    tmp_path: Path,
) -> None:
    body = (
        'settlements = 6\nn = [7]\nf = [2]\nthresholds = ["f+1"]\nbyzantine = [3]\n'
        "delay_ms = [150]\ndrop = [0.1]\nconfirmations = [2]\nreorg_depth = [4]\n"
        '[[coalitions]]\nname = "liars"\nbehaviours = ["lie"]\nlie = "claim-lock"\n'
    )
    grid = load_grid(grid_file(tmp_path, body))
    (cell,) = cells(grid)
    scenario = cell_scenario(grid, load(REFERENCE), cell, seed=9)
    assert scenario.seed == 9
    assert (scenario.committee.n, scenario.committee.f, scenario.committee.t) == (7, 2, 3)
    assert scenario.committee.unsafe_allow_low_threshold
    assert [(g.nodes, g.behaviours, g.lie) for g in scenario.byzantine] == [
        ((4, 5, 6), ("lie",), "claim-lock")
    ]
    kinds = {f.kind: f for f in scenario.faults}
    assert kinds["delay"].value == 150 and kinds["delay"].duration == grid.network_window
    assert kinds["drop"].value == 0.1
    assert kinds["reorg"].value == 4 and kinds["reorg"].leg == "A"
    assert scenario.chains[0].confirmations == 2
    assert scenario.settlements.count == 6
    # A cell's scenario is an ordinary scenario: it passes the schema's own checks.
    assert parse(tomllib.loads(dumps(scenario))) == dataclasses.replace(
        scenario, path=Path("<scenario>")
    )


def test_the_theory_lines() -> None:
    liars = Coalition("liars", ("lie",))
    silent = Coalition("silent", ("silent",))
    # f+1 liars can make a false fact; f cannot
    assert Theory.of(Cell(7, 2, 5, 3, "liars"), liars).false_fact_possible
    assert not Theory.of(Cell(7, 2, 5, 2, "liars"), liars).false_fact_possible
    # silent members: t <= n - b, and 2f+1 observations from the rest
    assert Theory.of(Cell(10, 1, 6, 4, "silent"), silent).live_expected
    assert not Theory.of(Cell(10, 1, 6, 5, "silent"), silent).live_expected
    assert not Theory.of(Cell(7, 2, 3, 3, "silent"), silent).live_expected  # 2f+1 = 5 > 4
    # conflicting certificates need b >= 2t - n
    assert Theory.of(Cell(4, 1, 2, 0, ""), None).conflicting_possible
    assert not Theory.of(Cell(4, 1, 3, 1, "silent"), silent).conflicting_possible
    assert not Theory.of(Cell(4, 1, 3, 1, "silent"), silent).allows("atomicity")
    # a reorg deeper than the confirmations
    assert Theory.of(Cell(4, 1, 3, 0, "", confirmations=1, reorg_depth=12), None).reorg_possible
    assert not Theory.of(Cell(4, 1, 3, 0, "", confirmations=13, reorg_depth=12), None).allows(
        "validity"
    )
    assert Theory.of(Cell(4, 2, 4, 0, ""), None).resilient is False


def test_a_tiny_grid_end_to_end(tmp_path: Path) -> None:
    """Through the console script, as a user runs it: its workers start without the
    project's root on their path (native keeps its compiled tree off sys.path for them)."""
    path = grid_file(tmp_path, TINY, base=LIARS)
    out = tmp_path / "out"
    script = Path(sys.executable).parent / "dvpsim"
    result = subprocess.run(
        [str(script), "sweep", str(path), "--out", str(out), "--jobs", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "2 cells, 2 runs, 1 unsafe (1 confirmed with real crypto)" in result.stderr
    rows = {r["cell"]: r for r in csv.DictReader((out / "cells.csv").open())}
    assert rows["n4-f1-t3-b0"]["outcome"] == "ok"
    unsafe = rows["n4-f1-t3-b2-liars"]
    assert unsafe["outcome"] == "atomicity"
    assert unsafe["atomicity_invalid"] == "1" and unsafe["false_fact_possible"] == "True"
    assert unsafe["confirmed_real"] == "True"
    counterexample = load(out / unsafe["counterexample"])
    assert "atomicity" in counterexample.expect
    assert [g.nodes for g in counterexample.byzantine] == [(2, 3)]
    assert (out / "phase-diagram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text()
    assert f'href="{unsafe["counterexample"]}"' in page
    assert json.loads((out / "sweep.json").read_text())["ok"] is True


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_default_grid_breaks_exactly_where_the_theory_lines_say(tmp_path: Path) -> None:
    grid = load_grid(DEFAULT_GRID)
    sweep = run_sweep(grid, tmp_path)
    assert len(sweep.cells) == len(cells(grid))
    for result in sweep.cells:
        cell, theory = result.cell, sweep.theory(result.cell)
        assert not sweep.outside_theory(result), cell.id
        seeds = len(result.seeds)
        assert seeds == grid.seeds
        if cell.coalition == "liars":
            # a false fact, certified: value moves for a payment never made
            broken = result.invalid.get("atomicity", 0)
            assert broken == (seeds if theory.false_fact_possible else 0), cell.id
        if cell.coalition == "silent":
            lost = result.invalid.get("liveness", 0)
            assert lost == (0 if theory.live_expected else seeds), cell.id
            assert result.outcome in ("ok", "liveness"), cell.id
        if cell.byzantine == 0:
            assert result.outcome == "ok", cell.id
        if result.unsafe:
            assert result.confirmed_real, cell.id
            assert (tmp_path / result.counterexample).is_file(), cell.id
    assert sweep.ok
    assert (tmp_path / "phase-diagram.png").is_file()


def test_a_coalition_with_a_base_of_its_own_has_its_own_cells(tmp_path: Path) -> None:
    body = (
        'n = [4]\nthresholds = ["f+1"]\nbyzantine = [0, 1]\n'
        '[[coalitions]]\nname = "liars"\nbehaviours = ["lie"]\n'
        f'[[coalitions]]\nname = "eq"\nbehaviours = ["equivocate"]\nbase = "{EQUIVOCATION}"\n'
    )
    grid = load_grid(grid_file(tmp_path, body))
    assert sorted(c.id for c in cells(grid)) == [
        "n4-f1-t2-b0",
        "n4-f1-t2-b0-eq",
        "n4-f1-t2-b1-eq",
        "n4-f1-t2-b1-liars",
    ]
    (eq,) = [c for c in cells(grid) if c.id == "n4-f1-t2-b1-eq"]
    scenario = cell_scenario(grid, load(EQUIVOCATION), eq, seed=6)
    assert scenario.faults == load(EQUIVOCATION).faults  # its slow bank
    assert [g.nodes for g in scenario.byzantine] == [(3,)]


def test_an_axis_the_grid_gives_replaces_the_bases_faults_of_its_kind(tmp_path: Path) -> None:
    reorg = REPO_ROOT / "scenarios" / "unsafe-reorg-below-confirmations.toml"
    base = load(reorg)
    kept = load_grid(
        grid_file(tmp_path, 'n = [4]\nthresholds = ["default"]\nbyzantine = [0]', reorg)
    )
    (cell,) = cells(kept)
    assert (cell.reorg_depth, cell.confirmations) == (12, 1)  # the base's own
    assert Theory.of(cell, None).reorg_possible
    assert cell_scenario(kept, base, cell, 1).faults == base.faults
    body = 'n = [4]\nthresholds = ["default"]\nbyzantine = [0]\nreorg_depth = [0, 3]\ndrop = [0.2]'
    replaced = load_grid(grid_file(tmp_path, body, reorg))
    scenarios = {c.reorg_depth: cell_scenario(replaced, base, c, 1) for c in cells(replaced)}
    assert [(f.kind, f.value) for f in scenarios[0].faults] == [("drop", 0.2)]
    assert [(f.kind, f.value) for f in scenarios[3].faults] == [("drop", 0.2), ("reorg", 3.0)]


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "scenarios" / "grids").glob("*.toml")))
def test_every_shipped_grid_loads(path: Path) -> None:
    assert cells(load_grid(path))
