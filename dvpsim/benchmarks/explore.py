"""`dvpsim bench explore`: schedules per minute that ``dvpsim explore`` runs on two cores.

Each case runs the exploration engine itself (``dvpsim.explore.explore`` on a
``dvpsim.pool.Pool`` of two worker processes), timed from the first schedule drawn to the
last result, after a warm-up exploration on another seed that starts the workers and
imports everything (the figure a long exploration sees). Cases:

- the reference scenario (n = 4, 20 settlements) with its default budget (up to two
  faults and f Byzantine members), fast crypto: target >= 1,000 schedules per minute;
- the same with real crypto (the figure explore's confirmations run at);
- ``explore-beyond-f.toml`` (f+1 faulty members), fast crypto: its violating schedules run
  to the time limit, because a settlement left open never ends.

Printed beside each: the mean simulated seconds per schedule (first lock to last final
leg) and how many schedules broke a check.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["run"]

TARGET_PER_MINUTE = 1000


def _case(scenario_name: str, crypto: str, count: int) -> dict[str, Any]:
    from chain_adapters.build import REPO_ROOT
    from dvpsim.explore import explore
    from dvpsim.pool import Pool
    from scenarios.schema import load

    base = load(REPO_ROOT / "scenarios" / f"{scenario_name}.toml")
    pool: Pool[Any, Any] = Pool(2)
    explore(base, seed=10_000, count=4, seconds=None, pool=pool, crypto=crypto)  # warm-up
    started = time.perf_counter()
    state = explore(base, seed=1, count=count, seconds=None, pool=pool, crypto=crypto)
    wall = time.perf_counter() - started
    return {
        "scenario": scenario_name,
        "crypto": crypto,
        "schedules": state.schedules,
        "wall_s": round(wall, 2),
        "per_minute": round(state.schedules / wall * 60, 1),
        "violating": state.violating,
        "errors": state.errors,
        "workers": 2,
    }


def run(quick: bool) -> dict[str, Any]:
    """Measure, print a table, return the figures (see the module docstring)."""
    console = Console()
    cases = [
        ("reference", "fast", 60 if quick else 600, f">= {TARGET_PER_MINUTE}/min"),
        ("reference", "real", 20 if quick else 120, "printed"),
        ("explore-beyond-f", "fast", 30 if quick else 300, "printed"),
    ]
    results: dict[str, Any] = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    table = Table(title="dvpsim bench explore (two worker processes)")
    for column in (
        "scenario",
        "crypto",
        "schedules",
        "wall s",
        "per minute",
        "violating",
        "target",
    ):
        table.add_column(column, justify="left" if column in ("scenario", "crypto") else "right")
    for name, crypto, count, target in cases:
        console.print(f"[bold]{name}[/] ({crypto} crypto, {count} schedules) ...")
        figures = _case(name, crypto, count)
        results[f"{name} {crypto}"] = figures
        verdict = target
        if target.startswith(">="):
            met = figures["per_minute"] >= TARGET_PER_MINUTE and not figures["errors"]
            verdict = f"{target}: {'met' if met else 'NOT met'}"
        table.add_row(
            name,
            crypto,
            str(figures["schedules"]),
            f"{figures['wall_s']:.2f}",
            f"{figures['per_minute']:.0f}",
            str(figures["violating"]),
            verdict,
        )
    console.print(table)
    import native

    console.print(f"machine: {platform.machine()}, {os.cpu_count()} cpus; {native.status()}")
    return results
