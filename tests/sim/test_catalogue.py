"""Every shipped scenario meets its own expectation in the simulated world: the safe ones
pass every check, the unsafe catalogue fails exactly the checks each names (its safe
twins pass). The same files in real mode: tests/e2e/test_scenarios.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from chain_adapters.build import REPO_ROOT
from scenarios.schema import ScenarioError, load
from scenarios.sim.run import SimRun

#: Every shipped scenario that runs (rogue-key.toml must be refused: below).
SHIPPED = sorted(
    p for p in (REPO_ROOT / "scenarios").glob("*.toml") if load(p).rogue_member() is None
)
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


def test_a_rogue_key_is_refused_in_one_line_and_nothing_runs(tmp_path: Path) -> None:
    """Member 3 publishes g*x less the others' keys (the aggregate would be g*x) with the
    only proof it can make, x's: the committee's proof-of-possession check refuses it
    before any member starts. Real mode: tests/e2e/test_scenarios.py."""
    path = REPO_ROOT / "scenarios" / "rogue-key.toml"
    scenario = load(path)
    assert scenario.rogue_member() == (3, "byzantine[0].rogue_key")
    with pytest.raises(ScenarioError, match="proof of possession of member 3 does not verify"):
        SimRun(scenario, tmp_path / "api", crypto="fast")
    result = subprocess.run(
        [sys.executable, "-m", "dvpsim.cli", "sim", str(path), "--out", str(tmp_path / "cli")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and result.stdout == ""
    assert line.startswith(
        f"dvpsim sim: {path}: byzantine[0].rogue_key: member 3 publishes a rogue BLS key"
    )
    assert "refused by the committee's proof-of-possession check" in line
    assert line.endswith("remove rogue_key to run, or give member 3 a key it holds")
