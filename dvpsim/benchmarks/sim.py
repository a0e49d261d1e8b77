"""`dvpsim bench sim`: how fast the simulated world runs the shipped scenarios.

Every case runs in a fresh Python process of its own, pinned to one core, and times
``SimRun(...)`` from construction to the end of ``run()``; the interpreter's start and
imports are not timed. A case runs its scenario twice: first on another seed (the "cold"
figure: the first run of a process, imports finishing, caches empty), then the timed run
on the scenario's seed. The timed run is what explore and sweep see after their first
run; nothing it computes was remembered from the first, because every key, report and
signature depends on the seed. Both figures are printed. Figures:

- the reference scenario (n = 4, 20 settlements) with real crypto as-is, with real crypto
  memoized process-wide (the default of ``dvpsim sim``), and with the fast stand-in: the
  simulated span (first lock to the last leg that became final, virtual seconds) divided
  by the wall time. Targets: >= 20x with real crypto, >= 100x with fast crypto;
- the same at n = 16 and n = 31 (f = 5, 10; threshold by the safe default): the ratio;
- n = 4 with 1,000 settlements arriving at 10/s: settlements per wall-clock second;
- seeded reference runs per minute on two cores (two worker processes, different seeds),
  with real and with fast crypto.

Every case runs the native build (``native``: the hot modules compiled by mypyc) when it
is current; the fast reference case runs once more interpreted (``DVPSIM_NATIVE=0``), the
baseline the native build is measured against in the same sitting.

CPU time is printed beside wall time: on a shared machine other processes can take the
CPU, and then wall exceeds CPU. Every parameter that shapes a figure is in the returned
dict.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["run"]

_CASE = r"""
import dataclasses, json, os, sys, tempfile, time
from pathlib import Path
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from scenarios.sim.run import SimRun
from dvpsim.benchmarks.sim import variant
spec = json.loads(sys.argv[1])
def timed(scenario):
    with tempfile.TemporaryDirectory(prefix="dvpsim-bench-sim-") as tmp:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        report = SimRun(scenario, Path(tmp), crypto=sys.argv[2]).run()
        return report, time.perf_counter() - wall0, time.process_time() - cpu0
scenario = variant(**spec)
# The first run of a fresh process, on another seed ("cold"), then the timed run: its seed
# was never run in this process, so none of its results can have been remembered.
_, cold_wall, _ = timed(dataclasses.replace(scenario, seed=scenario.seed + 1000))
report, wall, cpu = timed(scenario)
s = report.summary
import native
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "cold_wall_s": cold_wall, "build": native.status(),
    "span_s": s["simulated_span_s"], "settlements": s["settlements"], "ended": s["ended"],
    "passed": s["passed"], "messages_per_settlement": s["messages_per_settlement"]}))
"""


def variant(
    name: str, n: int | None = None, count: int | None = None, seed: int | None = None
) -> Any:
    """A shipped scenario, optionally with another committee size, count or seed."""
    import dataclasses

    from chain_adapters.build import REPO_ROOT
    from scenarios.schema import Committee, load

    scenario = load(REPO_ROOT / "scenarios" / f"{name}.toml")
    if n is not None:
        f = (n - 1) // 3
        scenario = dataclasses.replace(scenario, committee=Committee(n=n, f=f))
    if count is not None:
        settlements = scenario.settlements
        fails = tuple(
            dataclasses.replace(x, count=max(1, x.count * count // settlements.count))
            for x in settlements.fail
        )
        accounts = tuple(
            dataclasses.replace(
                a,
                asset=a.asset * count // settlements.count + a.asset,
                bank_balance=a.bank_balance * count // settlements.count + a.bank_balance,
            )
            for a in scenario.accounts
        )
        scenario = dataclasses.replace(
            scenario,
            accounts=accounts,
            time_limit=max(scenario.time_limit, count / settlements.arrival_rate + 60),
            settlements=dataclasses.replace(settlements, count=count, fail=fails),
        )
    if seed is not None:
        scenario = dataclasses.replace(scenario, seed=seed)
    return scenario


def _case(spec: dict[str, Any], crypto: str, compiled: bool = True) -> dict[str, Any]:
    """One case in a fresh process; ``compiled=False`` runs the same sources interpreted
    (``DVPSIM_NATIVE=0``): the baseline the native build is measured against."""
    result = subprocess.run(
        [sys.executable, "-c", _CASE, json.dumps(spec), crypto],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "DVPSIM_NATIVE": "1" if compiled else "0"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"bench case {spec} {crypto} failed: {result.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    span = figures["span_s"] or 0.0
    figures["ratio"] = round(span / figures["wall_s"], 1) if figures["wall_s"] else None
    figures["cold_ratio"] = round(span / figures["cold_wall_s"], 1)
    figures["settlements_per_wall_s"] = round(figures["settlements"] / figures["wall_s"], 1)
    figures["crypto"] = crypto
    figures.update(spec)
    return figures


def _one_schedule(args: tuple[int, str]) -> bool:
    import tempfile
    from pathlib import Path

    from scenarios.sim.run import SimRun

    seed, crypto = args
    with tempfile.TemporaryDirectory(prefix="dvpsim-bench-sim-") as tmp:
        return bool(SimRun(variant("reference", seed=seed), Path(tmp), crypto=crypto).run().ok)


def _schedules_per_minute(crypto: str, count: int) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(_one_schedule, [(10_000 + i, crypto) for i in range(2)]))  # warm up
        started = time.perf_counter()
        passed = list(pool.map(_one_schedule, [(i + 1, crypto) for i in range(count)]))
        wall = time.perf_counter() - started
    return {
        "crypto": crypto,
        "schedules": count,
        "passed": sum(passed),
        "wall_s": round(wall, 2),
        "per_minute": round(count / wall * 60, 1),
    }


def run(quick: bool) -> dict[str, Any]:
    """Measure, print a table, return the figures (see the module docstring)."""
    console = Console()
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        ("reference n=4", {"name": "reference"}, "real-plain", ">= 20x"),
        ("reference n=4", {"name": "reference"}, "real", ">= 20x"),
        ("reference n=4", {"name": "reference"}, "fast", ">= 100x"),
        ("reference n=4", {"name": "reference"}, "fast", "baseline: interpreted"),
        ("reference n=16", {"name": "reference", "n": 16}, "real", "completes"),
        ("reference n=16", {"name": "reference", "n": 16}, "fast", "completes"),
        ("reference n=31", {"name": "reference", "n": 31}, "real", "completes"),
        ("reference n=31", {"name": "reference", "n": 31}, "fast", "completes"),
        (
            "n=4, 1000 settlements",
            {"name": "reference", "count": 100 if quick else 1000},
            "real",
            "settlements/s",
        ),
        (
            "n=4, 1000 settlements",
            {"name": "reference", "count": 100 if quick else 1000},
            "fast",
            "settlements/s",
        ),
    ]
    if quick:
        cases = [c for c in cases if "n=31" not in c[0] or c[2] == "fast"]
    results: dict[str, Any] = {"machine": platform.machine(), "python": platform.python_version()}
    rows = []
    for label, spec, crypto, target in cases:
        console.print(f"[bold]{label}[/] ({crypto} crypto) ...")
        compiled = not target.endswith("interpreted")
        figures = _case(spec, crypto, compiled)
        results[f"{label} {crypto}" + ("" if compiled else " interpreted")] = figures
        rows.append((label, crypto, figures, target))
    schedule_count = 6 if quick else 20
    schedules = {
        crypto: _schedules_per_minute(crypto, schedule_count) for crypto in ("real", "fast")
    }
    results["schedules_per_minute"] = schedules

    table = Table(title="dvpsim bench sim (one process per case, one core)")
    for column in (
        "case",
        "crypto",
        "ended/total",
        "simulated s",
        "wall s",
        "cpu s",
        "simulated/wall",
        "cold",
        "settlements/wall s",
        "msgs/settlement",
        "target",
    ):
        table.add_column(column, justify="right" if column not in ("case", "crypto") else "left")
    for label, crypto, f, target in rows:
        table.add_row(
            label,
            crypto,
            f"{f['ended']}/{f['settlements']}",
            f"{f['span_s']}",
            f"{f['wall_s']:.3f}",
            f"{f['cpu_s']:.3f}",
            f"{f['ratio']}x",
            f"{f['cold_ratio']}x",
            f"{f['settlements_per_wall_s']}",
            f"{f['messages_per_settlement']}",
            _verdict(target, f),
        )
    console.print(table)
    for crypto, s in schedules.items():
        console.print(
            f"seeded reference schedules on 2 cores ({crypto} crypto): {s['per_minute']}/min "
            f"({s['schedules']} runs in {s['wall_s']} s, {s['passed']} passed)"
        )
    console.print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}"
        f"; {rows[0][2]['build']} (the interpreted baseline: the same sources, DVPSIM_NATIVE=0)"
    )
    return results


def _verdict(target: str, figures: dict[str, Any]) -> str:
    if target.startswith(">="):
        want = float(target.split()[1].rstrip("x"))
        met = figures["ratio"] is not None and figures["ratio"] >= want and figures["passed"]
        return f"{target}: {'met' if met else 'NOT met'}"
    if target == "completes":
        return "completed" if figures["passed"] else "NOT completed"
    return target
