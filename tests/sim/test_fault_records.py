"""Every fault begins and ends in the history: undone after its duration, at once for an
instant one (a reorg), or with the run for one still in force when the run ends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chain_adapters.build import REPO_ROOT
from scenarios.faults import FaultRecords
from scenarios.history import History
from scenarios.schema import Fault, load
from scenarios.sim.run import SimRun
from tests.sim.test_network_faults import run_with

WITH_FAULTS = sorted(p for p in (REPO_ROOT / "scenarios").glob("*.toml") if load(p).faults)


def fault_lines(records: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    return [(r["phase"], r["kind"], r["node"]) for r in records if r["event"] == "fault"]


def test_a_reorg_ends_as_it_begins_and_a_fault_to_the_end_ends_with_the_run(
    tmp_path: Path,
) -> None:
    _, records, _ = run_with(
        tmp_path,
        Fault("reorg", 2.0, value=2.0, leg="A"),
        Fault("lying-rpc", 1.0, node=1, lie="hide-locks"),  # no duration: to the end
        Fault("stop-node", 1.5, node=2),  # stays down
    )
    lines = [r for r in records if r["event"] in ("fault", "run-end")]
    reorg = [r for r in lines if r["event"] == "fault" and r["kind"] == "reorg"]
    assert [r["phase"] for r in reorg] == ["begin", "end"] and reorg[0]["t"] == reorg[1]["t"]
    assert reorg[0]["replaced"] == 2
    assert lines[-1]["event"] == "run-end"
    closing = lines[-3:-1]
    assert {(r["kind"], r["phase"], r.get("run_end")) for r in closing} == {
        ("lying-rpc", "end", True),
        ("stop-node", "end", True),
    }
    assert all(r["t"] == lines[-1]["t"] for r in closing)


@pytest.mark.parametrize("path", WITH_FAULTS, ids=[p.stem for p in WITH_FAULTS])
def test_every_fault_of_a_shipped_scenario_begins_and_ends(path: Path, tmp_path: Path) -> None:
    SimRun(load(path), tmp_path, crypto="fast").run()
    records = [json.loads(line) for line in (tmp_path / "history.jsonl").open()]
    lines = fault_lines(records)
    begun = [(kind, node) for phase, kind, node in lines if phase == "begin"]
    ended = [(kind, node) for phase, kind, node in lines if phase == "end"]
    assert sorted(begun, key=repr) == sorted(ended, key=repr), lines
    assert len(begun) == len(load(path).faults)


def test_after_the_run_ended_nothing_begins_or_ends(tmp_path: Path) -> None:
    history = History(tmp_path / "history.jsonl", lambda: 0.0)
    records = FaultRecords(history)
    outage = Fault("rpc-outage", 1.0, duration=5.0, node=0)
    assert records.begin(outage)
    records.close()
    assert not records.begin(Fault("pause-node", 9.0, duration=1.0, node=1))
    assert not records.end(outage)  # already ended with the run
    history.close()
    text = (tmp_path / "history.jsonl").read_text()
    assert text.count('"fault"') == 2 and '"run_end":true' in text and "pause-node" not in text
