"""Network faults in a real run: the same scenario keys as in sim, acting on the encoded
frames node processes send (``node.netfaults``), shown by the messages the nodes traced.

One run of the reference case holds a partition window and then a delay window. During
the partition no frame crosses it; during the delay every message takes the delay
longer, measured from the nodes' own send and receive records (the figures are printed:
how precisely a real run applies an injected delay)."""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from chain_adapters.build import REPO_ROOT
from dvpsim.report import read_run, write_report
from scenarios.real import RealRun
from scenarios.schema import Fault, load

pytestmark = pytest.mark.e2e

PARTITION = (1.0, 3.0)  # at, duration (seconds after the drive began)
DELAY = (5.0, 3.0)
DELAY_MS = 100.0
#: Frames already in flight when a window opens, and the plan's look-up period.
EDGE_S = 0.3


def _latencies(records: list[dict[str, Any]], start: float, end: float) -> list[float]:
    """Receive minus send time of each message sent once in [start, end) and received
    once (a message resent under the same header, or lost, cannot be paired)."""
    times: dict[tuple[Any, ...], dict[str, list[float]]] = defaultdict(
        lambda: {"send": [], "recv": []}
    )
    for r in records:
        if r["event"] in ("send", "recv"):
            key = (r["from"], r["to"], r["kind"], r["epoch"], r.get("round"))
            times[key][r["event"]].append(r["t"])
    return [
        t["recv"][0] - t["send"][0]
        for t in times.values()
        if len(t["send"]) == len(t["recv"]) == 1 and start <= t["send"][0] < end
    ]


def _run(tmp: Path, count: int, *faults: Fault) -> tuple[dict[str, Any], list[Any], float]:
    """The reference case, ``count`` settlements one a second, under ``faults``: its
    summary, its history records and when the drive began (run seconds)."""
    base = load(REPO_ROOT / "scenarios" / "reference.toml")
    scenario = dataclasses.replace(
        base,
        settlements=dataclasses.replace(base.settlements, count=count, arrival_rate=1.0, fail=()),
        faults=faults,
    )
    report = RealRun(scenario, tmp / "run").run()
    records = [json.loads(line) for line in (tmp / "run" / "history.jsonl").open()]
    drive = next(r["t"] for r in records if r["event"] == "drive-start")
    return report.summary, records, drive


def test_partition_and_delay_act_on_the_frames_real_nodes_send(tmp_path: Path) -> None:
    summary, records, drive = _run(
        tmp_path,
        10,
        Fault("partition", PARTITION[0], duration=PARTITION[1], side=(0, 1)),
        Fault("delay", DELAY[0], duration=DELAY[1], value=DELAY_MS),
    )
    faults = [(r["phase"], r["kind"]) for r in records if r["event"] == "fault"]
    assert faults == [
        ("begin", "partition"),
        ("end", "partition"),
        ("begin", "delay"),
        ("end", "delay"),
    ]

    start, end = drive + PARTITION[0], drive + sum(PARTITION)
    side = {0, 1}
    crossing = [
        r
        for r in records
        if r["event"] == "recv"
        and start + EDGE_S <= r["t"] < end
        and (r["from"] in side) != (r["to"] in side)
    ]
    assert crossing == [], crossing[:3]
    tried = [
        r
        for r in records
        if r["event"] == "send"
        and start + EDGE_S <= r["t"] < end
        and (r["from"] in side) != (r["to"] in side)
    ]
    assert tried, "no member tried to cross the partition"

    d_start, d_end = drive + DELAY[0], drive + sum(DELAY)
    inside = _latencies(records, d_start + EDGE_S, d_end)
    outside = _latencies(records, end + 0.5, d_start)
    shift = statistics.median(inside) - statistics.median(outside)
    errors = sorted(abs(x - statistics.median(outside) - DELAY_MS / 1000) for x in inside)
    print(
        f"delay {DELAY_MS:.0f} ms: median shift {shift * 1000:.1f} ms over {len(inside)} "
        f"messages; |error| p50 {errors[len(errors) // 2] * 1000:.1f} ms, "
        f"p90 {errors[int(len(errors) * 0.9)] * 1000:.1f} ms"
    )
    assert shift >= 0.8 * DELAY_MS / 1000, "the delay was not applied"
    assert summary["passed"], summary["checks"]


def _on_links(records: list[dict[str, Any]], event: str, start: float, end: float) -> list[Any]:
    return [r for r in records if r["event"] == event and start <= r["t"] < end]


@pytest.mark.slow  # about 30 s
def test_isolate_drop_duplicate_and_reorder_act_on_real_frames(tmp_path: Path) -> None:
    windows = {"isolate": 1.0, "drop": 4.0, "duplicate": 7.0, "reorder": 10.0}
    summary, records, drive = _run(
        tmp_path,
        14,
        Fault("isolate", windows["isolate"], duration=2.0, node=2),
        Fault("drop", windows["drop"], duration=2.0, value=1.0, from_nodes=(0,), to_nodes=(1,)),
        Fault("duplicate", windows["duplicate"], duration=2.0, value=1.0),
        Fault("reorder", windows["reorder"], duration=2.0, value=0.5),
    )

    def span(kind: str) -> tuple[float, float]:
        return drive + windows[kind] + EDGE_S, drive + windows[kind] + 2.0

    received = _on_links(records, "recv", *span("isolate"))
    assert received and not [r for r in received if 2 in (r["from"], r["to"])]

    received = _on_links(records, "recv", *span("drop"))
    assert not [r for r in received if (r["from"], r["to"]) == (0, 1)]
    assert [r for r in received if (r["from"], r["to"]) == (1, 0)], "only 0 -> 1 is dropped"

    start, end = span("duplicate")
    counts: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: {"send": 0, "recv": 0})
    for r in records:
        if r["event"] in ("send", "recv") and r["kind"] != "new-epoch":
            counts[(r["from"], r["to"], r["kind"], r["epoch"], r.get("round"))][r["event"]] += 1
    sent_inside = {
        (r["from"], r["to"], r["kind"], r["epoch"], r.get("round"))
        for r in _on_links(records, "send", start, end - EDGE_S)
        if r["kind"] != "new-epoch"
    }
    assert sent_inside and all(counts[k]["recv"] == 2 * counts[k]["send"] for k in sent_inside)

    start, end = span("reorder")
    sent_order: dict[tuple[int, int], list[Any]] = defaultdict(list)
    for r in _on_links(records, "send", start, end):
        sent_order[(r["from"], r["to"])].append((r["kind"], r["epoch"], r.get("round")))
    recv_order: dict[tuple[int, int], list[Any]] = defaultdict(list)
    for r in _on_links(records, "recv", start, end + 1.0):
        recv_order[(r["from"], r["to"])].append((r["kind"], r["epoch"], r.get("round")))
    overtaken = [
        link
        for link, order in sent_order.items()
        if [m for m in recv_order[link] if m in order]
        != [m for m in order if m in recv_order[link]]
    ]
    assert overtaken, "no frame arrived behind a later one"
    assert summary["passed"], summary["checks"]

    # The run's report page: a lane per settlement leg, per node, and per fault window.
    page = write_report(tmp_path / "run")
    view = read_run(tmp_path / "run")
    legs = {(r["settlement"], r["leg"]) for r in records if r["event"] == "leg"}
    assert {(lane.settlement, lane.leg) for lane in view.legs} == legs
    assert len(legs) == 2 * summary["settlements"]
    assert [lane.node for lane in view.nodes] == ["0", "1", "2", "3"]
    assert sorted(w.kind for w in view.faults) == sorted(windows)
    assert len(view.latencies) == summary["committed"] and view.messages_per_round
    text = page.read_text()
    assert text.count('class="lane leg-lane"') == len(legs)
    assert text.count('class="fault"') == len(windows)
    print(f"report of the real run: {page}")


@pytest.mark.slow  # about 20 s
def test_pause_and_an_unsafe_wipe_restart_act_on_real_node_processes(tmp_path: Path) -> None:
    summary, records, drive = _run(
        tmp_path,
        10,
        Fault("pause-node", 1.0, duration=3.0, node=2),
        Fault("unsafe-wipe-restart", 5.0, duration=2.0, node=1),
        Fault("delay", 1.0, duration=3.0, value=1.0),  # nodes trace their messages
    )
    # SIGSTOP: the paused node reads and sends nothing; SIGCONT: it catches up.
    start, end = drive + 1.0 + EDGE_S, drive + 4.0
    assert not [r for r in _on_links(records, "recv", start, end) if r["to"] == 2]
    assert not [r for r in _on_links(records, "send", start, end) if r["from"] == 2]
    assert [r for r in _on_links(records, "send", end, end + 3.0) if r["from"] == 2]
    # The wiped node came back with an empty safety store and took part again.
    begin = [r for r in records if r["event"] == "fault" and r["kind"] == "unsafe-wipe-restart"]
    assert begin[0]["unsafe"] is True
    assert [r for r in _on_links(records, "send", drive + 8.0, drive + 12.0) if r["from"] == 1]
    assert summary["passed"], summary["checks"]


@pytest.mark.slow  # about 16 s
def test_a_node_process_whose_clock_runs_fast_times_out_more_often(tmp_path: Path) -> None:
    summary, records, drive = _run(
        tmp_path, 8, Fault("clock", 1.0, duration=4.0, node=2, value=0.0, drift=1.0)
    )
    start, end = drive + 1.0 + EDGE_S, drive + 5.0
    resends = Counter(
        r["from"] for r in _on_links(records, "send", start, end) if r["kind"] == "new-epoch"
    )
    assert resends[2] >= 1.5 * max(resends[i] for i in (0, 1, 3)) > 0, resends
    assert summary["passed"], summary["checks"]


def test_during_an_rpc_outage_a_node_process_sees_nothing_new_on_chain(tmp_path: Path) -> None:
    summary, records, drive = _run(tmp_path, 8, Fault("rpc-outage", 1.0, duration=3.0, node=0))
    start, end = drive + 1.0 + 0.5, drive + 4.0  # its watcher's last poll may land late

    def seen(node: int) -> int:
        return sum(
            r["settlements"]
            for r in _on_links(records, "observation", start, end)
            if r["node"] == node
        )

    assert seen(0) < min(seen(i) for i in (1, 2, 3)), [seen(i) for i in range(4)]
    assert summary["passed"], summary["checks"]
