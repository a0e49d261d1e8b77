"""Twins in real node processes: member 2 runs as two processes with its BLS keystore and
identity seed, separate safety stores, and a libp2p identity each (``node.twins``). The
scenario keys that place the twin copy in network faults ("2b") act on the frames the
processes send, shown by the messages the nodes traced. On two sides of a partition with
t = f+1 each side certifies its own report for one round; with the default t neither
side certifies until it heals. Each run is held against the simulated world too
(tests/sim/test_twins.py has the same checks in sim)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from chain_adapters.build import REPO_ROOT
from scenarios.real import RealRun
from scenarios.schema import Byzantine, Fault, Scenario, load
from scenarios.sim.run import SimRun

pytestmark = pytest.mark.e2e
SCENARIOS = REPO_ROOT / "scenarios"
#: Frames already in flight when a window opens, and the plan's look-up period.
EDGE_S = 0.3


def _run(tmp: Path, scenario: Scenario) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A real run and its history; the simulated run of the same scenario gives every
    check the same status."""
    summary = RealRun(scenario, tmp / "real").run().summary
    records = [json.loads(line) for line in (tmp / "real" / "history.jsonl").open()]
    sim = SimRun(scenario, tmp / "sim", crypto="fast").run().summary
    statuses = {n: c["status"] for n, c in summary["checks"].items()}
    assert statuses == {n: c["status"] for n, c in sim["checks"].items()}
    return summary, records


def _window(records: list[dict[str, Any]]) -> tuple[float, float]:
    """The first fault's window as the nodes applied it: their plan counts from the drive's
    start, the runner's record of the fault comes a poll later; frames in flight and the
    plan's look-up period blur both edges."""
    begin = next(r for r in records if r["event"] == "fault" and r["phase"] == "begin")
    return begin["t"] + EDGE_S, begin["t"] + begin["duration"] - EDGE_S


def _copy(record: dict[str, Any], end: str) -> str:
    """The copy at one end of a message record ("from" or "to"): "2" or "2b"."""
    return f"{record[end]}{'b' if record.get(f'{end}_twin') else ''}"


def _assert_two_processes_for_member_2(committee: Path) -> None:
    """The member's keys in both, a transport identity and a safety store of each's own."""
    first, twin = committee / "node2", committee / "node2b"
    assert (first / "identity.key").read_text() == (twin / "identity.key").read_text()
    keystores = [json.loads((d / "bls.keystore").read_text())["pubkey"] for d in (first, twin)]
    assert keystores[0] == keystores[1]
    peers = [json.loads((d / "ready.json").read_text())["peer_id"] for d in (first, twin)]
    assert peers[0] != peers[1]
    for home in (first, twin):
        db = sqlite3.connect(home / "data" / "safety.sqlite")
        (signed,) = db.execute("SELECT COUNT(*) FROM decisions").fetchone()
        db.close()
        assert signed > 0, f"{home.name} signed nothing"


@pytest.mark.slow  # real node processes: 15-25 s; the default run keeps the others
def test_a_twin_process_is_reached_as_the_member_and_a_fault_isolates_it_alone(
    tmp_path: Path,
) -> None:
    base = load(SCENARIOS / "reference.toml")
    scenario = dataclasses.replace(
        base,
        settlements=dataclasses.replace(base.settlements, count=8, arrival_rate=1.0, fail=()),
        byzantine=(Byzantine((2,), ("twins",)),),
        faults=(Fault("isolate", 1.0, node="2b", duration=3.0),),
    )
    summary, records = _run(tmp_path, scenario)
    assert summary["passed"], summary["checks"]
    starts = sorted(
        (r["node"], r.get("twin", False)) for r in records if r["event"] == "node-start"
    )
    assert starts == [(0, False), (1, False), (2, False), (2, True), (3, False)]
    _assert_two_processes_for_member_2(tmp_path / "real" / "committee")
    start, end = _window(records)
    received = [r for r in records if r["event"] == "recv"]
    # Before the fault, what the others send member 2 reaches both processes.
    before = [r for r in received if r["t"] < start - EDGE_S]
    for member_2 in ("2", "2b"):
        assert {_copy(r, "from") for r in before if _copy(r, "to") == member_2} == {"0", "1", "3"}
    # Isolated, the twin process hears nothing and is heard by no one; the first is not.
    inside = [r for r in received if start <= r["t"] < end]
    assert not [r for r in inside if "2b" in (_copy(r, "from"), _copy(r, "to"))]
    assert {_copy(r, "from") for r in inside if r["to"] == 0} >= {"1", "2", "3"}
    tried = [r for r in records if r["event"] == "send" and start <= r["t"] < end]
    assert [r for r in tried if _copy(r, "to") == "2b"], "nobody tried to reach the twin"


SIDE_A, SIDE_B = {"0", "1", "2"}, {"2b", "3", "4"}  # and member 5 alone


def _reports(records: list[dict[str, Any]], start: float, end: float) -> dict[Any, set[str]]:
    reports: defaultdict[tuple[str, int, int], set[str]] = defaultdict(set)
    for r in records:
        if r["event"] == "certified" and start <= r["t"] < end:
            reports[(r["target"], r["epoch"], r["round"])].add(json.dumps(r["decisions"]))
    return reports


@pytest.mark.slow  # seven node processes: about 50 s
def test_twin_processes_on_two_sides_of_a_partition_certify_two_reports_for_one_round(
    tmp_path: Path,
) -> None:
    summary, records = _run(tmp_path, load(SCENARIOS / "unsafe-twins.toml"))
    assert summary["expectation_met"], summary["expectation_differences"]
    witness = summary["checks"]["no-conflicting-certificates"]["witness"]
    assert witness.startswith("two reports for ") and "member(s) 2 signed both" in witness
    _assert_two_processes_for_member_2(tmp_path / "real" / "committee")
    start, end = _window(records)
    received = [r for r in records if r["event"] == "recv" and start <= r["t"] < end]
    ends = [{_copy(r, "from"), _copy(r, "to")} for r in received]
    assert not [e for e in ends if e & SIDE_A and e & SIDE_B or "5" in e]
    # Each process of member 2 led its side through the same rounds of epoch 2.
    proposals: defaultdict[tuple[int, int], set[str]] = defaultdict(set)
    for r in received:
        if r["kind"] == "proposal":
            proposals[(r["epoch"], r["round"])].add(_copy(r, "from"))
    assert any(sources == {"2", "2b"} for sources in proposals.values()), proposals
    split = {k: v for k, v in _reports(records, start, end).items() if len(v) > 1}
    assert split, "no round got two reports"


@pytest.mark.slow  # seven node processes: about 50 s
def test_with_the_default_threshold_neither_side_of_twin_processes_certifies(
    tmp_path: Path,
) -> None:
    summary, records = _run(tmp_path, load(SCENARIOS / "twins-default-threshold.toml"))
    assert summary["expectation_met"], summary["expectation_differences"]
    start, end = _window(records)
    # Each side kept talking within itself (its copy of member 2 included), and neither
    # side's three members reached t = 4: nothing was certified until the partition healed.
    talk = {
        frozenset((_copy(r, "from"), _copy(r, "to")))
        for r in records
        if r["event"] == "recv" and start <= r["t"] < end
    }
    assert any(pair <= SIDE_A and "2" in pair for pair in talk)
    assert any(pair <= SIDE_B and "2b" in pair for pair in talk)
    assert not [pair for pair in talk if pair & SIDE_A and pair & SIDE_B]
    assert not _reports(records, start, end)
    assert summary["ended"] == summary["settlements"]
