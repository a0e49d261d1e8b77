"""Every shipped scenario meets its own expectation in the simulated world: the safe ones
pass every check, the unsafe catalogue fails exactly the checks each names (its safe
twins pass). The same files in real mode: tests/e2e/test_scenarios.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain_adapters.build import REPO_ROOT
from scenarios.schema import load
from scenarios.sim.run import SimRun

SHIPPED = sorted((REPO_ROOT / "scenarios").glob("*.toml"))
#: The unsafe catalogue: each unsafe scenario, the checks it must fail, its safe twin.
CATALOGUE = [
    ("unsafe-self-refund", ("atomicity",), "self-refund-safe"),
    ("unsafe-colluding-liars", ("atomicity", "validity"), "colluding-liars-f"),
    ("unsafe-reorg-below-confirmations", ("atomicity", "validity"), "reorg-within-confirmations"),
    ("unsafe-lying-rpc", ("atomicity", "validity", "liveness"), "lying-rpc-f"),
    ("unsafe-twins", ("no-conflicting-certificates",), "twins-default-threshold"),
]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_scenario_meets_its_expectation_in_sim(path: Path, tmp_path: Path) -> None:
    report = SimRun(load(path), tmp_path / path.stem, crypto="fast").run()
    assert report.ok, report.summary["expectation_differences"]


@pytest.mark.parametrize(("unsafe", "fails", "twin"), CATALOGUE)
def test_the_catalogue_names_what_breaks_and_its_twin_passes(
    unsafe: str, fails: tuple[str, ...], twin: str
) -> None:
    assert load(REPO_ROOT / "scenarios" / f"{unsafe}.toml").expect == fails
    assert load(REPO_ROOT / "scenarios" / f"{twin}.toml").expect == ()
