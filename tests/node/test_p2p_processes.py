"""Transport tests across real node processes on 127.0.0.1 (scripts/p2p_echo.py)."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from tests.node.p2p_harness import Cluster, EchoProcess

FRAMES_PER_PEER = 300


def test_four_processes_exchange_all_to_all_without_loss(tmp_path: Path) -> None:
    with Cluster(4, "all-to-all", tmp_path) as cluster:
        nodes = [cluster.start(i) for i in range(4)]
        for node in nodes:
            assert node.request("links", cmd="wait_links", timeout=30)["ok"]
        # Idle (links up, no traffic yet), measured from outside the process.
        idle_rss = [psutil.Process(node.pid).memory_info().rss for node in nodes]
        print(f"idle RSS per node process (MiB): {[r >> 20 for r in idle_rss]}")
        assert max(idle_rss) < 150 * 2**20
        for node in nodes:
            node.send(cmd="send", count=FRAMES_PER_PEER, size=200)
        for node in nodes:
            node.expect("sent", timeout=60)
        for node in nodes:
            got = node.request(
                "received", cmd="wait_received", per_peer=FRAMES_PER_PEER, timeout=60
            )
            assert got["ok"], got
        for node in nodes:
            stats = node.request("stats", cmd="stats")
            others = {str(i) for i in range(4) if i != node.index}
            assert stats["distinct"] == {k: FRAMES_PER_PEER for k in others}
            assert stats["duplicates"] == 0
            metrics = stats["metrics"]
            assert metrics["malformed"] == 0
            assert metrics["dropped_outbound"] == 0
            assert metrics["dropped_inbound"] == 0
            assert metrics["rate_limited"] == 0
            assert metrics["frames_out"] == 3 * FRAMES_PER_PEER
            print(
                f"node {node.index} after a {3 * FRAMES_PER_PEER}-frame burst: one-way ms "
                f"{stats['one_way_ms']}, RSS {stats['rss_bytes'] >> 20} MiB"
            )


def _exchange(
    nodes: dict[int, EchoProcess], count: int, start: int, expect: dict[int, int]
) -> None:
    """Every node sends `count` frames (seq from `start`) to every other; check totals."""
    for node in nodes.values():
        node.send(cmd="send", count=count, start=start, size=64)
    for node in nodes.values():
        node.expect("sent", timeout=60)
    for index, node in nodes.items():
        got = node.request("received", cmd="wait_received", per_peer=expect[index], timeout=60)
        assert got["ok"], (index, got)


def test_peer_killed_with_sigkill_and_restarted_reconnects(tmp_path: Path) -> None:
    with Cluster(3, "reconnect", tmp_path, backoff_max=1.0) as cluster:
        nodes = {i: cluster.start(i) for i in range(3)}
        for node in nodes.values():
            assert node.request("links", cmd="wait_links", timeout=30)["ok"]
        _exchange(nodes, count=50, start=0, expect={0: 50, 1: 50, 2: 50})

        # Member 1 both accepts (from 0) and opens (to 2): both directions must recover.
        nodes[1].kill9()
        for index in (0, 2):
            stats = nodes[index].request("stats", cmd="stats")
            # Links notice the dead peer (FIN/RST from the kernel), not a timeout.
            for _ in range(200):
                if not stats["metrics"]["peers"]["1"]["link_up"]:
                    break
                time.sleep(0.05)
                stats = nodes[index].request("stats", cmd="stats")
            assert not stats["metrics"]["peers"]["1"]["link_up"]

        restarted = time.monotonic()
        nodes[1] = cluster.start(1)  # same identity, same port
        for node in nodes.values():
            # Bounded by the generous command timeout, not asserted as a duration.
            links = node.request("links", cmd="wait_links", timeout=30, **{"to": None})
            assert links["ok"], links
        print(
            f"restart to all links up: {time.monotonic() - restarted:.2f} s (process start included)"
        )
        # Fresh sequence numbers: 0 and 2 now hold 100 distinct from each other and from 1.
        _exchange(nodes, count=50, start=1000, expect={0: 100, 1: 50, 2: 100})
        for index in (0, 2):
            peer1 = nodes[index].request("stats", cmd="stats")["metrics"]["peers"]["1"]
            assert peer1["reconnects"] >= 1
            assert peer1["link_up"]
