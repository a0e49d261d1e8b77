"""`dvpsim bench e2e`: end-to-end latency and throughput of real runs (the reference mode).

Runs of the reference case (escrow on a local chain, payment at the bank, node processes
over libp2p), each a full `dvpsim run` with its checks:

- latency at n = 4 and at n = 16: settlements arriving at a gentle rate; p50/p99 from the
  mined escrow lock to the runner seeing the asset released;
- throughput at n = 4 (125/s offered) and at n = 16 (30/s offered), for 60 s (10 s with
  --quick): locks signed at their due time and sent by a few threads without waiting
  for receipts (``scenarios.real.LockPipeline``: the load generator keeps its pace whatever
  the chain does), blocks every
  0.25 s (many transactions per block, as on a real chain), reports batching up to 128
  decisions; settlements ended per second from the first lock to the last release, and
  that window;
- with ``--n31``, latency at n = 31 (10 settlements at 1/s; it takes minutes): p50 and
  messages per settlement;
- per run, the peak RSS of a node process, and CPU seconds per ended settlement of each
  process role over the drive (a node process on average, the bank, anvil, the runner
  that drives the load), when the run's summary has them.

Targets (issue 15): latency n = 4 p50 <= 0.3 s, n = 16 p50 <= 0.8 s; throughput n = 4 at
least 120/s sustained for 60 s, n = 16 at least 25/s; n = 31 p50 <= 5 s and at most 2,000
messages per settlement. The figures are printed beside them; nothing here asserts them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dvpsim.benchmarks.overload import cpu_per_settlement, messaging_scenario
from scenarios.real import RealRun


def run(quick: bool = False, n31: bool = False) -> dict[str, Any]:
    console = Console(width=200)
    cases = [
        (
            "latency n=4",
            messaging_scenario("bench-latency-n4", 4, 1, 10 if quick else 30, 5.0, 0.2, 120),
            False,
        ),
        (
            "latency n=16",
            messaging_scenario("bench-latency-n16", 16, 5, 6 if quick else 20, 2.0, 0.5, 240),
            False,
        ),
        (
            "throughput n=4",
            messaging_scenario(
                "bench-throughput-n4",
                4,
                1,
                1250 if quick else 7500,
                125.0,
                0.2,
                200 if quick else 400,
                block_time=0.25,
            ),
            True,
        ),
        (
            "throughput n=16",
            messaging_scenario(
                "bench-throughput-n16",
                16,
                5,
                300 if quick else 1800,
                30.0,
                0.5,
                200 if quick else 400,
                block_time=0.25,
            ),
            True,
        ),
    ]
    if n31:
        cases.append(
            (
                "latency n=31",
                messaging_scenario("bench-latency-n31", 31, 10, 10, 1.0, 0.5, 600),
                False,
            )
        )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dvpsim-bench-e2e-") as tmp:
        for label, scenario, fire_and_forget in cases:
            console.print(
                f"[bold]{label}[/]: {scenario.settlements.count} settlements at {scenario.settlements.arrival_rate}/s ..."
            )
            report = RealRun(
                scenario, Path(tmp) / scenario.name, fire_and_forget=fire_and_forget
            ).run()
            summary = report.summary
            results[label] = {
                key: summary[key]
                for key in (
                    "settlements",
                    "ended",
                    "committed",
                    "latency_p50_s",
                    "latency_p99_s",
                    "throughput_per_s",
                    "throughput_window_s",
                    "node_rss_peak_mb",
                    "messages_per_settlement",
                    "observation_largest_bytes",
                    "observation_left_out",
                    "gas_per_settlement_reports",
                    "passed",
                    "wall_s",
                )
            }
            # Newer keys, read only when the run's summary has them.
            results[label]["cpu_s_per_settlement"] = summary.get("cpu_s_per_settlement")
            results[label]["offered_per_s"] = scenario.settlements.arrival_rate
            results[label]["driven_per_s"] = (summary.get("generator") or {}).get("driven_per_s")
    table = Table(title="dvpsim bench e2e (reference mode, real processes)")
    for column in (
        "case",
        "offered/s (driven)",
        "ended/total",
        "p50 s",
        "p99 s",
        "ended/s",
        "over s",
        "peak RSS MiB/node",
        "msgs/settlement",
        "largest obs. B",
        "CPU s/settl. node/bank/anvil/driver",
        "checks",
        "target",
    ):
        table.add_column(
            column,
            justify="right" if column not in ("case", "target", "checks") else "left",
            overflow="fold",
        )
    targets = {
        "latency n=4": "p50 <= 0.3 s",
        "latency n=16": "p50 <= 0.8 s",
        "throughput n=4": ">= 120/s for 60 s",
        "throughput n=16": ">= 25/s",
        "latency n=31": "p50 <= 5 s, <= 2,000 msgs/settlement",
    }
    for label, r in results.items():
        table.add_row(
            label,
            f"{r['offered_per_s']:g} ({'n/a' if r['driven_per_s'] is None else r['driven_per_s']})",
            f"{r['ended']}/{r['settlements']}",
            str(r["latency_p50_s"]),
            str(r["latency_p99_s"]),
            str(r["throughput_per_s"]),
            str(r["throughput_window_s"]),
            str(r["node_rss_peak_mb"]),
            str(r["messages_per_settlement"]),
            f"{r['observation_largest_bytes']} ({r['observation_left_out']} waited)",
            cpu_per_settlement(r["cpu_s_per_settlement"]),
            "passed" if r["passed"] else "FAILED",
            targets[label],
        )
    console.print(table)
    return {"quick": quick, "cases": results}
