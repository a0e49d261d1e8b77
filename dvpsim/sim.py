"""`dvpsim sim SCENARIO [--seed S] [--out DIR] [--crypto real|fast] [--check-determinism]
[options]`: one simulated run with the same outputs, options and exit codes as `dvpsim run`
(``dvpsim.runcli``: 0 the expectation met, 1 not met, 2 bad input, 3 undecided, 4 internal
error). A run that misses its expectation prints its seed and the command that replays it;
``--check-determinism`` runs twice and exits 1 when the two history digests differ.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from dvpsim.runcli import (
    EXIT_FAILED,
    EXIT_MET,
    EXIT_USAGE,
    Output,
    RunOptions,
    UsageError,
    default_out,
    exit_code,
    internal_error,
    load_scenario,
    parse_seed,
    prepare_out,
)

__all__ = ["main", "parse_seed", "replay_command"]


def _error(message: str) -> int:
    print(f"dvpsim sim: {message}", file=sys.stderr)
    return EXIT_USAGE


def replay_command(
    scenario_path: str, seed: int, crypto: str, overrides: tuple[str, ...] = ()
) -> str:
    parts = ["dvpsim", "sim", scenario_path, "--seed", str(seed)]
    if crypto != "real":
        parts += ["--crypto", crypto]
    for override in overrides:
        parts += ["--set", override]
    return " ".join(shlex.quote(p) for p in parts)


def main(
    scenario_path: str,
    out: str | None,
    options: RunOptions | None = None,
    crypto: str = "real",
    check_determinism: bool = False,
) -> int:
    from dvpsim.run import print_expectation, summary_table
    from scenarios.schema import ScenarioError
    from scenarios.sim.run import CRYPTO_SUITES, SimRun

    options = options or RunOptions()
    output = Output("dvpsim sim", options)
    if crypto not in CRYPTO_SUITES:
        return _error(f"--crypto {crypto!r} is unknown: use one of {', '.join(CRYPTO_SUITES)}")
    try:
        scenario = load_scenario(scenario_path, options)
        out_dir = Path(out) if out else default_out(f"{scenario.name}-sim")
        prepare_out(out_dir, options.force)
    except UsageError as exc:
        return _error(str(exc))
    output.origin(scenario, out_dir)
    try:
        with output.progress() as progress:
            report = SimRun(
                scenario, out_dir, crypto=crypto, progress=progress, overrides=options.overrides
            ).run()
            if check_determinism:
                again = SimRun(
                    scenario,
                    out_dir / "determinism-check",
                    crypto=crypto,
                    overrides=options.overrides,
                ).run()
    except ScenarioError as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        print("dvpsim sim: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, the traceback in the run folder
        return internal_error("dvpsim sim", exc, out_dir)
    summary: dict[str, Any] = report.summary
    if not output.quiet:
        output.console.print(summary_table(summary))
        print_expectation(output.console, summary)
    output.say(
        f"simulated {summary['sim_duration_s']} s in {summary['wall_s']} s wall "
        f"({crypto} crypto); history digest {report.digest[:16]}"
    )
    # Paths and commands are printed unwrapped, so they can be copied whole.
    output.say(f"history: {out_dir / 'history.jsonl'}  summary: {out_dir / 'summary.json'}")
    code = exit_code(summary)
    reason = None
    if check_determinism:
        if again.digest != report.digest:
            output.console.print(
                f"[red]NOT DETERMINISTIC[/]: seed {scenario.seed} gave history digests "
                f"{report.digest[:16]} and {again.digest[:16]}; compare "
                f"{out_dir / 'history.jsonl'} with {again.out_dir / 'history.jsonl'}"
            )
            code, reason = EXIT_FAILED, "not deterministic: two runs of one seed differ"
        else:
            output.say(f"deterministic: two runs gave history digest {report.digest[:16]}")
    if code != EXIT_MET:
        output.say(
            f"seed {scenario.seed}; replay with: "
            f"{replay_command(scenario_path, scenario.seed, crypto, options.overrides)}"
        )
    return output.finish(summary, code, reason)
