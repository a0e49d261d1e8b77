"""Network faults from scenario files, in the simulated world: each one shows in the
message records (sent, received, lost), not only in its own fault records, and the
run's checks still pass once it heals."""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections import Counter, defaultdict, deque
from pathlib import Path
from typing import Any

import pytest

from chain_adapters.build import REPO_ROOT
from scenarios.schema import Fault, load
from scenarios.sim.run import SimReport, SimRun

REFERENCE = REPO_ROOT / "scenarios" / "reference.toml"
AT, FOR = 1.0, 3.0  # the fault window, seconds after the drive began


def run_with(tmp: Path, *faults: Fault) -> tuple[SimReport, list[dict[str, Any]], float]:
    """The reference case (8 settlements, one a second: the run outlasts the window)
    under ``faults``; its report, its history records and when the drive began."""
    base = load(REFERENCE)
    scenario = dataclasses.replace(
        base,
        settlements=dataclasses.replace(base.settlements, count=8, arrival_rate=1.0, fail=()),
        faults=faults,
    )
    report = SimRun(scenario, tmp / "run", crypto="fast").run()
    records = [json.loads(line) for line in (tmp / "run" / "history.jsonl").open()]
    drive = next(r["t"] for r in records if r["event"] == "drive-start")
    return report, records, drive


def messages(records: list[dict[str, Any]], event: str, start: float, end: float) -> list[Any]:
    return [r for r in records if r["event"] == event and start <= r["t"] < end]


def window(drive: float) -> tuple[float, float]:
    return drive + AT, drive + AT + FOR


def test_a_partition_lets_no_message_cross_until_it_heals(tmp_path: Path) -> None:
    report, records, drive = run_with(tmp_path, Fault("partition", AT, duration=FOR, side=(0, 1)))
    start, end = window(drive)
    side = {0, 1}
    crossing = [
        r for r in messages(records, "recv", start, end) if (r["from"] in side) != (r["to"] in side)
    ]
    assert crossing == []
    lost = messages(records, "lost", start, end)
    assert lost and all(r["why"] == "partition" for r in lost)
    after = messages(records, "recv", end + 0.5, end + 5)
    assert any((r["from"] in side) != (r["to"] in side) for r in after), "it never healed"
    kinds = [(r["phase"], r["kind"]) for r in records if r["event"] == "fault"]
    assert kinds == [("begin", "partition"), ("end", "partition")]
    assert report.ok, report.summary["checks"]


def test_a_one_way_partition_loses_only_what_its_side_sends(tmp_path: Path) -> None:
    report, records, drive = run_with(
        tmp_path, Fault("partition", AT, duration=FOR, side=(3,), one_way=True)
    )
    start, end = window(drive)
    received = messages(records, "recv", start, end)
    assert not [r for r in received if r["from"] == 3]
    assert [r for r in received if r["to"] == 3], "messages to the side must still arrive"
    assert report.ok, report.summary["checks"]


def test_an_isolated_member_neither_sends_nor_receives(tmp_path: Path) -> None:
    report, records, drive = run_with(tmp_path, Fault("isolate", AT, duration=FOR, node=2))
    start, end = window(drive)
    assert not [r for r in messages(records, "recv", start, end) if 2 in (r["from"], r["to"])]
    assert report.ok, report.summary["checks"]


def test_drop_on_chosen_links_loses_those_messages_only(tmp_path: Path) -> None:
    report, records, drive = run_with(
        tmp_path, Fault("drop", AT, duration=FOR, value=1.0, from_nodes=(0,), to_nodes=(1,))
    )
    start, end = window(drive)
    lost = messages(records, "lost", start, end)
    assert lost and {(r["from"], r["to"], r["why"]) for r in lost} == {(0, 1, "drop")}
    assert not [r for r in messages(records, "recv", start, end) if (r["from"], r["to"]) == (0, 1)]
    assert [r for r in messages(records, "recv", start, end) if (r["from"], r["to"]) == (1, 0)]
    assert report.ok, report.summary["checks"]


def latencies(records: list[dict[str, Any]], start: float, end: float) -> list[float]:
    """Per message sent in [start, end): receive time minus send time (links are FIFO
    here: no reordering fault)."""
    sent: dict[tuple[Any, ...], deque[float]] = defaultdict(deque)
    out = []
    for r in records:
        key = (r.get("from"), r.get("to"), r.get("kind"), r.get("epoch"), r.get("round"))
        if r["event"] == "send":
            sent[key].append(r["t"])
        elif r["event"] == "recv" and sent[key]:
            t0 = sent[key].popleft()
            if start <= t0 < end:
                out.append(r["t"] - t0)
    return out


def test_an_injected_delay_shifts_the_measured_latency_by_its_value(tmp_path: Path) -> None:
    _, records, drive = run_with(tmp_path, Fault("delay", AT, duration=FOR, value=100.0))
    start, end = window(drive)
    inside = statistics.median(latencies(records, start, end))
    outside = statistics.median(latencies(records, drive, start))
    assert inside - outside == pytest.approx(0.100, abs=0.002)


def test_duplicate_sends_every_message_twice(tmp_path: Path) -> None:
    report, records, drive = run_with(tmp_path, Fault("duplicate", AT, duration=FOR, value=1.0))
    start, end = window(drive)

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["from"], r["to"], r["kind"], r["epoch"], r.get("round"))

    sends: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    receipts: dict[tuple[Any, ...], int] = defaultdict(int)
    for r in records:
        if r["event"] == "send":
            sends[key(r)].append(r["t"])
        elif r["event"] == "recv":
            receipts[key(r)] += 1
    inside = [k for k, times in sends.items() if all(start <= t < end - 0.1 for t in times)]
    assert inside and all(receipts[k] == 2 * len(sends[k]) for k in inside)
    assert report.ok, report.summary["checks"]


def test_reorder_delivers_some_messages_behind_later_ones(tmp_path: Path) -> None:
    report, records, drive = run_with(tmp_path, Fault("reorder", AT, duration=FOR, value=0.5))
    start, end = window(drive)
    order: dict[tuple[int, int], list[tuple[str, int, Any]]] = defaultdict(list)
    for r in messages(records, "recv", start, end + 1):
        order[(r["from"], r["to"])].append((r["kind"], r["epoch"], r.get("round")))
    sent: dict[tuple[int, int], list[tuple[str, int, Any]]] = defaultdict(list)
    for r in messages(records, "send", start, end):
        sent[(r["from"], r["to"])].append((r["kind"], r["epoch"], r.get("round")))
    overtaken = [link for link in sent if order[link][: len(sent[link])] != sent[link]]
    assert overtaken, "no message arrived out of order"
    assert report.ok, report.summary["checks"]


def test_a_paused_member_handles_nothing_until_it_resumes_then_everything(
    tmp_path: Path,
) -> None:
    report, records, drive = run_with(tmp_path, Fault("pause-node", AT, duration=FOR, node=2))
    start, end = window(drive)
    assert not [r for r in messages(records, "recv", start, end) if r["to"] == 2]
    assert not [r for r in messages(records, "send", start, end) if r["from"] == 2]
    # What arrived meanwhile is read at once when it resumes.
    burst = [r for r in records if r["event"] == "recv" and r["to"] == 2 and r["t"] == end]
    assert len(burst) > 1
    assert report.ok, report.summary["checks"]


def test_an_unsafe_wipe_restart_is_marked_and_the_member_comes_back(tmp_path: Path) -> None:
    report, records, drive = run_with(
        tmp_path, Fault("unsafe-wipe-restart", AT, duration=FOR, node=1)
    )
    begin = next(r for r in records if r["event"] == "fault" and r["phase"] == "begin")
    assert begin["kind"] == "unsafe-wipe-restart" and begin["unsafe"] is True
    stops = [r["t"] for r in records if r["event"] == "node-stop" and r["node"] == 1]
    starts = [r["t"] for r in records if r["event"] == "node-start" and r["node"] == 1]
    assert stops == [drive + AT] and starts[-1] == drive + AT + FOR
    _, end = window(drive)
    assert [r for r in messages(records, "send", end, end + 2) if r["from"] == 1]
    assert report.ok, report.summary["checks"]


def test_during_an_rpc_outage_a_member_sees_nothing_new_on_chain(tmp_path: Path) -> None:
    report, records, drive = run_with(tmp_path, Fault("rpc-outage", AT, duration=FOR, node=0))
    start, end = window(drive)

    def seen(node: int, a: float, b: float) -> int:
        return sum(
            r["settlements"] for r in messages(records, "observation", a, b) if r["node"] == node
        )

    assert seen(0, start + 0.2, end) < min(seen(i, start + 0.2, end) for i in (1, 2, 3))
    # What it misses, it cannot transmit: it does not know those settlements' terms.
    results = [
        r.get("result")
        for r in messages(records, "transmission", start, end)
        if r["node"] == 0 and r["phase"] != "invoke"
    ]
    assert "unknown-settlement" in results
    assert report.ok, report.summary["checks"]


def test_a_node_whose_clock_runs_twice_as_fast_times_out_twice_as_often(tmp_path: Path) -> None:
    report, records, drive = run_with(
        tmp_path, Fault("clock", AT, duration=FOR, node=2, value=0.0, drift=1.0)
    )
    start, end = window(drive)
    resends = Counter(
        r["from"] for r in messages(records, "send", start, end) if r["kind"] == "new-epoch"
    )
    others = max(resends[i] for i in (0, 1, 3))
    assert resends[2] >= 1.5 * others > 0, resends  # DeltaResend by its own clock
    assert report.ok, report.summary["checks"]
