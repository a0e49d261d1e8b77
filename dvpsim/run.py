"""`dvpsim run SCENARIO [--out DIR] [--hosts FILE]`: one real-mode run with progress and a
summary table; with a hosts file (``scenarios.hosts``) its parts listen on the addresses
it names instead of 127.0.0.1.

The exit code says whether the run showed what its scenario expects (``expect``): 0 when
it did (by default: every check valid and every settlement ended; an unsafe scenario names
the checks that must fail), 1 when it did not (the lines after the table say which check
differed), 2 when the scenario or the set-up is wrong (one line, no traceback).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def summary_table(summary: dict[str, Any]) -> Table:
    command = "sim" if summary.get("world") == "sim" else "run"
    table = Table(
        title=f"dvpsim {command}: {summary['scenario']} ({summary['mode']}, n={summary['n']}, f={summary['f']}, t={summary['t']})"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f} s"

    rows = [
        ("settlements", str(summary["settlements"])),
        ("ended", str(summary["ended"])),
        ("committed", str(summary["committed"])),
        ("aborted", f"{summary['aborted']} ({summary['expected_to_fail']} meant to fail)"),
        ("latency p50 (lock to release)", seconds(summary["latency_p50_s"])),
        ("latency p99 (lock to release)", seconds(summary["latency_p99_s"])),
        ("gas per settlement (certified reports)", f"{summary['gas_per_settlement_reports']:,}"),
        ("gas per settlement (parties' locks)", f"{summary['gas_per_settlement_parties']:,}"),
        ("messages per settlement", str(summary["messages_per_settlement"])),
        ("wall time", f"{summary['wall_s']} s"),
    ]
    if summary.get("world") == "sim":
        rows.append(
            ("simulated time (first lock to last final leg)", seconds(summary["simulated_span_s"]))
        )
        rows.append(("gas figures", str(summary["gas_source"])))
    for name, value in rows:
        table.add_row(name, value)
    for invariant, verdict in summary["checks"].items():
        colour = {"valid": "green", "invalid": "red"}.get(verdict["status"], "yellow")
        text = f"[{colour}]{verdict['status']}[/]" + (
            f" {verdict['witness']}" if verdict["witness"] else ""
        )
        table.add_row(f"check: {invariant}", text)
    table.add_row("checks", "[green]PASSED[/]" if summary["passed"] else "[red]FAILED[/]")
    expect = summary["expect"]
    wanted = expect if expect == "pass" else "fail " + ", ".join(expect)
    table.add_row(
        "expectation",
        f"[green]met[/] ({wanted})"
        if summary["expectation_met"]
        else f"[red]NOT MET[/] ({wanted})",
    )
    return table


def print_expectation(console: Console, summary: dict[str, Any]) -> None:
    """After the table: each way the run differs from what its scenario expects."""
    for line in summary["expectation_differences"]:
        console.print(f"[red]expectation not met[/]: {line}", soft_wrap=True)


def main(scenario_path: str, out: str | None, hosts_path: str | None = None) -> int:
    from chain_adapters.build import CompileError
    from chain_adapters.evm import RpcError
    from chain_adapters.localchain import ChainError
    from scenarios.hosts import LOCAL, HostsError, load_hosts
    from scenarios.real import RealRun, RunError
    from scenarios.schema import ScenarioError, load

    console = Console()
    try:
        scenario = load(scenario_path)
        hosts = LOCAL if hosts_path is None else load_hosts(hosts_path, scenario.endpoints)
    except (ScenarioError, HostsError) as exc:
        print(f"dvpsim run: {exc}", file=sys.stderr)
        return 2
    out_dir = (
        Path(out) if out else Path("runs") / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        tasks: dict[str, Any] = {}

        def report(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = progress.add_task(what, total=total)
            progress.update(tasks[what], completed=done, total=total)

        try:
            result = RealRun(scenario, out_dir, report, hosts=hosts).run()
        except (RunError, ChainError, CompileError, RpcError) as exc:
            print(f"dvpsim run: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("dvpsim run: interrupted; everything it started was stopped", file=sys.stderr)
            return 130
    console.print(summary_table(result.summary))
    print_expectation(console, result.summary)
    console.print(
        f"history: {out_dir / 'history.jsonl'}  summary: {out_dir / 'summary.json'}",
        soft_wrap=True,
    )
    return 0 if result.ok else 1
