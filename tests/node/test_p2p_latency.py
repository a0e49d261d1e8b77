"""Frame latency between transport processes on loopback (measurement; slow, prints figures).

Run with: .venv/bin/pytest tests/node/test_p2p_latency.py -m slow -s
Nothing here asserts a duration; it asserts that every frame arrived and prints p50/p99.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from tests.node.p2p_harness import Cluster

PINGS = 300
SPACING_S = 0.005


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4])
def test_frame_latency_on_loopback(tmp_path: Path, n: int) -> None:
    with Cluster(n, f"latency-{n}", tmp_path) as cluster:
        nodes = [cluster.start(i) for i in range(n)]
        for node in nodes:
            assert node.request("links", cmd="wait_links", timeout=30)["ok"]
        idle_rss = [psutil.Process(node.pid).memory_info().rss >> 20 for node in nodes]
        # Round trips: node 0 pings every other member, which echo; spaced, not a burst.
        pings = nodes[0].request(
            "pings", timeout=120, cmd="ping", count=PINGS, interval=SPACING_S, size=64
        )
        assert pings["received"] == pings["expected"]
        # One way: every member sends spaced frames to every other at the same time;
        # sender and receiver share the machine's monotonic clock.
        procs = [psutil.Process(node.pid) for node in nodes]
        cpu_before = [sum(p.cpu_times()[:2]) for p in procs]
        for node in nodes:
            node.send(cmd="send", count=PINGS, size=64, interval=SPACING_S)
        for node in nodes:
            node.expect("sent", timeout=120)
        one_way = []
        for node in nodes:
            assert node.request("received", cmd="wait_received", per_peer=PINGS, timeout=60)["ok"]
            one_way.append(node.request("stats", cmd="stats")["one_way_ms"])
        cpu_s = [
            sum(p.cpu_times()[:2]) - before for p, before in zip(procs, cpu_before, strict=True)
        ]
        frames_per_node = 2 * PINGS * (n - 1)  # sent plus received
        print(
            f"\n{n} processes: RTT ms (node 0 to each peer, {PINGS} pings/peer) "
            f"p50={pings['rtt_ms']['p50']:.2f} p99={pings['rtt_ms']['p99']:.2f}; "
            f"one-way ms per receiver (all sending every {SPACING_S * 1e3:.0f} ms) "
            + ", ".join(f"p50={o['p50']:.2f} p99={o['p99']:.2f}" for o in one_way)
            + f"; CPU per frame handled (us) {[round(c / frames_per_node * 1e6) for c in cpu_s]}"
            + f"; idle RSS MiB {idle_rss}; load average {os.getloadavg()[0]:.2f}"
        )
