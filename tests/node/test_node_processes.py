"""Real node processes over libp2p: they certify, transmit, survive SIGKILL, never conflict.

These use the dry-run ``file`` target so they exercise the node itself (config, keys,
consensus, libp2p, safety store, metrics, signals) without chains; the chain-backed
committee tests live beside the EVM adapter's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from consensus.report import (
    Action,
    Certificate,
    CommitteeConfig,
    Decision,
    Report,
    verify_certificate,
)
from tests.node.committee_harness import Committee, wait_for
from tests.prometheus_text import PROCESS_METRICS, histogram_quantile
from tests.prometheus_text import scrape as scrape_families

pytestmark = pytest.mark.e2e

VERIFIER = "0x" + "11" * 20


def _facts(path: Path, entries: list[tuple[str, str, str]]) -> None:
    path.write_text(
        json.dumps(
            [
                {"settlement_id": sid, "leg": "A", "kind": kind, "terms_hash": terms}
                for sid, kind, terms in entries
            ]
        )
    )


def _transmitted(out: Path) -> list[dict[str, Any]]:
    lines = []
    for file in sorted(out.glob("facts.chain-A.node*.jsonl")):
        for line in file.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                lines.append(json.loads(line))
    return lines


def _decisions(out: Path) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for line in _transmitted(out):
        for sid, action, _terms in line["decisions"]:
            seen.setdefault(sid, set()).add(action)
    return seen


def _committee(tmp_path: Path, n: int, f: int) -> Committee:
    facts = tmp_path / "facts.json"
    _facts(facts, [])
    t = (n + f) // 2 + 1

    def targets(_i: int) -> list[dict[str, Any]]:
        return [
            {
                "name": "chain-A",
                "leg": "A",
                "kind": "file",
                "chain_id": 1,
                "verifier": VERIFIER,
                "config_count": 1,
                "t": t,
                "url": f"file://{facts}",
            }
        ]

    return Committee(tmp_path, n, f, "single-chain-onchain", targets)


def test_four_nodes_certify_survive_sigkill_and_never_conflict(tmp_path: Path) -> None:
    committee = _committee(tmp_path, 4, 1)
    facts = tmp_path / "facts.json"
    s1, s2, terms = "a1" * 32, "b2" * 32, "cc" * 32
    try:
        committee.start_all()
        infos = [committee.ready(i) for i in range(4)]
        _facts(facts, [(s1, "PREPARED", terms)])
        wait_for(
            lambda: "COMMIT" in _decisions(tmp_path).get(s1, set()), 30, "a certified COMMIT for s1"
        )

        # Every transmitted certificate verifies against the committee's configuration.
        cfg = CommitteeConfig(
            1,
            bytes.fromhex(VERIFIER[2:]),
            1,
            tuple(m.bls_public_key for m in committee.members),
            1,
            3,
        )
        line = _transmitted(tmp_path)[0]
        report = Report(
            bytes.fromhex(line["config_digest"]),
            line["epoch"],
            line["round"],
            tuple(
                Decision(bytes.fromhex(a), Action[b], bytes.fromhex(c))
                for a, b, c in line["decisions"]
            ),
        )
        verify_certificate(
            Certificate(report, line["signers"], bytes.fromhex(line["signature"])), cfg
        )

        # Metrics endpoint on 127.0.0.1.
        def scrape() -> dict[str, float]:
            body = (
                urllib.request.urlopen(
                    f"http://127.0.0.1:{infos[0]['metrics_port']}/metrics", timeout=5
                )
                .read()
                .decode()
            )
            return {
                line.split()[0]: float(line.split()[-1])
                for line in body.splitlines()
                if line.startswith("dvpsim_") and "{" not in line
            }

        metrics = wait_for(
            lambda: (m := scrape()).get("dvpsim_certificates_total", 0) >= 1 and m,
            20,
            "node 0 to count a certificate",
        )
        assert metrics["dvpsim_messages_in_total"] > 0 and metrics["dvpsim_messages_out_total"] > 0
        assert metrics["dvpsim_persists_total"] >= 1
        assert metrics["dvpsim_settlements_refused_total"] == 0  # no admission here
        # Latencies are histograms (a p99 can be computed), and process_* metrics are there.
        families = scrape_families(f"http://127.0.0.1:{infos[0]['metrics_port']}/metrics")
        for name in (
            "dvpsim_certify_latency_seconds",
            "dvpsim_transmit_latency_seconds",
            "dvpsim_settlement_latency_seconds",
        ):
            assert families[name].type == "histogram", name
        p99 = histogram_quantile(families["dvpsim_certify_latency_seconds"], 0.99)
        assert 0 < p99 <= 30, p99
        for name in PROCESS_METRICS:
            assert name in families, f"{name} missing from node 0's metrics"

        # Idle memory of a node process (printed for the issue note).
        rss = [psutil.Process(info["pid"]).memory_info().rss / 2**20 for info in infos]
        print(f"node RSS MiB: {[round(r, 1) for r in rss]}")
        assert max(rss) < 150

        # SIGKILL node 1, then ask for an ABORT of s1 (it conflicts with the certified COMMIT)
        # and a COMMIT of s2; restart node 1 and let the committee run.
        committee.procs[1].kill()
        _facts(facts, [(s1, "EXPIRED", terms), (s2, "PREPARED", terms)])
        wait_for(
            lambda: "COMMIT" in _decisions(tmp_path).get(s2, set()),
            30,
            "COMMIT for s2 with node 1 down",
        )
        committee.start(1)
        committee.ready(1)
        restarted_before = len(committee.signed_decisions(1))
        _facts(
            facts, [(s1, "EXPIRED", terms), (s2, "PREPARED", terms), ("d4" * 32, "PREPARED", terms)]
        )
        wait_for(
            lambda: "COMMIT" in _decisions(tmp_path).get("d4" * 32, set()),
            30,
            "COMMIT for a new settlement after the restart",
        )
        wait_for(
            lambda: len(committee.signed_decisions(1)) > restarted_before,
            30,
            "node 1 signing again after its restart",
        )
    finally:
        codes = committee.stop_all()
    assert all(code == 0 for code in codes.values()), codes  # SIGTERM is a clean stop
    decided = _decisions(tmp_path)
    assert decided[s1] == {"COMMIT"}, "an ABORT was certified after a COMMIT"
    for i in range(4):
        per_settlement: dict[bytes, set[int]] = {}
        for sid, action, _ in committee.signed_decisions(i):
            per_settlement.setdefault(sid, set()).add(action)
        assert all(actions != {1, 2} for actions in per_settlement.values()), (
            f"node {i} signed both COMMIT and ABORT"
        )


def test_sigterm_stops_a_node_within_two_seconds(tmp_path: Path) -> None:
    committee = _committee(tmp_path, 4, 1)
    try:
        committee.start_all()
        committee.ready(0)
        proc = committee.procs[0]
        began = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        proc.process.wait(timeout=10)
        elapsed = time.monotonic() - began
        print(f"SIGTERM to exit: {elapsed:.2f} s")
        assert proc.process.returncode == 0
        assert elapsed < 2.0  # the bound on a clean stop, not a speed benchmark
    finally:
        committee.stop_all()


def test_seven_nodes_with_two_stopped_still_certify(tmp_path: Path) -> None:
    committee = _committee(tmp_path, 7, 2)
    facts = tmp_path / "facts.json"
    try:
        for i in range(7):
            if i not in (2, 5):
                committee.start(i)
        for i in (0, 1, 3, 4, 6):
            committee.ready(i)
        _facts(facts, [("e5" * 32, "PREPARED", "cc" * 32)])
        wait_for(
            lambda: "COMMIT" in _decisions(tmp_path).get("e5" * 32, set()),
            60,
            "a certificate from 5 of 7 nodes",
        )
    finally:
        committee.stop_all()
