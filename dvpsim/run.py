"""`dvpsim run SCENARIO [--out DIR] [--hosts FILE] [options]`: one real-mode run with
progress and a summary table; with a hosts file (``scenarios.hosts``) its parts listen on
the addresses it names instead of 127.0.0.1. The options it shares with `dvpsim sim`
(``--set``, ``--seed``, ``--json``, ``-q``/``-v``, ``--force``) and the exit codes (0 the
expectation met, 1 not met, 2 bad input, 3 undecided, 4 internal error) are
``dvpsim.runcli``'s; the lines after the table say which check differed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dvpsim.runcli import (
    EXIT_USAGE,
    Output,
    RunOptions,
    UsageError,
    default_out,
    exit_code,
    internal_error,
    load_scenario,
    prepare_out,
)


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


def main(
    scenario_path: str,
    out: str | None,
    hosts_path: str | None = None,
    options: RunOptions | None = None,
) -> int:
    from chain_adapters.build import CompileError
    from chain_adapters.evm import RpcError
    from chain_adapters.localchain import ChainError
    from scenarios.hosts import LOCAL, HostsError, load_hosts
    from scenarios.real import RealRun, RunError

    options = options or RunOptions()
    output = Output("dvpsim run", options)
    try:
        scenario = load_scenario(scenario_path, options)
        hosts = LOCAL if hosts_path is None else load_hosts(hosts_path, scenario.endpoints)
        out_dir = Path(out) if out else default_out(scenario.name)
        prepare_out(out_dir, options.force)
    except (UsageError, HostsError) as exc:
        print(f"dvpsim run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    output.origin(scenario, out_dir)
    try:
        with output.progress() as report:
            result = RealRun(
                scenario, out_dir, report, hosts=hosts, overrides=options.overrides
            ).run()
    except (RunError, ChainError, CompileError, RpcError) as exc:
        print(f"dvpsim run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("dvpsim run: interrupted; everything it started was stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, the traceback in the run folder
        return internal_error("dvpsim run", exc, out_dir)
    if not output.quiet:
        output.console.print(summary_table(result.summary))
        print_expectation(output.console, result.summary)
        output.say(f"history: {out_dir / 'history.jsonl'}  summary: {out_dir / 'summary.json'}")
    return output.finish(result.summary, exit_code(result.summary))
