"""Liveness after heal, in the simulated world: at most f members down, every settlement ends
within its bound; f+1 down, none can, and the check says so with its witness."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chain_adapters.build import REPO_ROOT
from scenarios.accounting import heal_at, liveness_bound
from scenarios.schema import Fault, load
from scenarios.sim.run import SimReport, SimRun

REFERENCE = REPO_ROOT / "scenarios" / "reference.toml"


def run_with_stopped(tmp: Path, stopped: int) -> SimReport:
    """The reference case with three settlements, ``stopped`` members stopped for good as
    the drive begins (a stopped member stays down: it counts toward f)."""
    base = load(REFERENCE)
    scenario = dataclasses.replace(
        base,
        time_limit=90.0,
        settlements=dataclasses.replace(base.settlements, count=3, fail=()),
        faults=tuple(Fault("stop-node", 0.0, node=i) for i in range(stopped)),
    )
    return SimRun(scenario, tmp / f"stopped-{stopped}", crypto="fast").run()


def test_with_f_members_down_every_settlement_ends_within_its_bound(tmp_path: Path) -> None:
    report = run_with_stopped(tmp_path, stopped=1)
    assert report.summary["checks"]["liveness"] == {"status": "valid", "witness": ""}
    assert report.ok


def test_with_f_plus_one_members_down_liveness_is_invalid_with_its_witness(
    tmp_path: Path,
) -> None:
    report = run_with_stopped(tmp_path, stopped=2)
    liveness = report.summary["checks"]["liveness"]
    assert liveness["status"] == "invalid", liveness
    witness = liveness["witness"]
    assert "still open when the run stopped at" in witness
    assert "+ bound 22.460 s" in witness and "max(heal" in witness
    assert report.summary["ended"] == 0 and not report.ok


def test_the_bound_follows_the_delta_parameters() -> None:
    base = load(REFERENCE)
    slower = dataclasses.replace(
        base, timing=dataclasses.replace(base.timing, delta_progress=base.timing.delta_progress + 1)
    )
    # f + 1 = 2 leaders may time out: each second of DeltaProgress counts twice.
    assert liveness_bound(slower) == pytest.approx(liveness_bound(base) + 2)
    stages = dataclasses.replace(
        base, timing=dataclasses.replace(base.timing, delta_stage=base.timing.delta_stage + 1)
    )
    # Three certified steps (PREPARE, COMMIT, COMMIT after the bank), two stages each.
    assert liveness_bound(stages) == pytest.approx(liveness_bound(base) + 3 * 2)


def test_heal_is_the_end_of_the_last_fault_window() -> None:
    base = load(REFERENCE)
    windows = (Fault("kill-node", 2.0, node=1, duration=3.0), Fault("stop-node", 9.0, node=2))
    assert heal_at(dataclasses.replace(base, faults=windows), 10.0) == 19.0
    assert heal_at(dataclasses.replace(base, faults=windows[:1]), 10.0) == 15.0
    forever = (Fault("bank-latency", 1.0, value=500.0),)
    assert heal_at(dataclasses.replace(base, faults=forever), 10.0) == float("inf")
    assert heal_at(base, 10.0) == 10.0
