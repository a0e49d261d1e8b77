"""Every shipped scenario meets its own expectation in the simulated world: the safe ones
pass every check, the unsafe catalogue fails exactly the checks each names (its safe
twins pass). The same files in real mode: tests/e2e/test_scenarios.py."""

from __future__ import annotations

import re
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
    (
        "unsafe-equivocation-low-threshold",
        ("atomicity", "no-conflicting-certificates"),
        "equivocation-default-threshold",
    ),
    (
        "unsafe-wipe-equivocation",
        ("atomicity", "no-conflicting-certificates"),
        "equivocation-store-kept",
    ),
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


#: "0x<settlement>: COMMIT for <target> (epoch e, round r) accepted by node i at T s, and
#: ABORT for <target> (epoch e, round r) accepted by node j at T s"
_CONFLICT = re.compile(
    r"^0x[0-9a-f]{16}: COMMIT for \S+ \(epoch (\d+), round (\d+)\) accepted by node \d at "
    r"([\d.]+) s, and ABORT for \S+ \(epoch (\d+), round (\d+)\) accepted by node \d at "
    r"([\d.]+) s$"
)


@pytest.mark.parametrize(
    "unsafe", ["unsafe-equivocation-low-threshold", "unsafe-wipe-equivocation"]
)
def test_an_equivocating_leader_gets_two_certificates_for_one_settlement(
    unsafe: str, tmp_path: Path
) -> None:
    """The witness names the settlement, both certificates (target, epoch, round, who
    accepted them) and when: the COMMIT before the deadline, the ABORT after it, in two
    rounds of the equivocating leader's epoch."""
    scenario = load(REPO_ROOT / "scenarios" / f"{unsafe}.toml")
    report = SimRun(scenario, tmp_path / unsafe, crypto="fast").run()
    witness = report.summary["checks"]["no-conflicting-certificates"]["witness"]
    match = _CONFLICT.match(witness)
    assert match, witness
    commit_epoch, commit_round, commit_at, abort_epoch, abort_round, abort_at = match.groups()
    assert commit_epoch == abort_epoch == "1"
    assert int(commit_round) < int(abort_round) and float(commit_at) < float(abort_at)
    # The chain applied the ABORT, the bank the COMMIT: the seller has both.
    assert "(A=aborted, bank=committed)" in report.summary["checks"]["atomicity"]["witness"]
