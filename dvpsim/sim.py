"""`dvpsim sim SCENARIO [--seed S] [--out DIR] [--crypto real|fast] [--check-determinism]`:
one simulated run with the same outputs and exit codes as `dvpsim run`.

Exit codes: 0 when the run showed what its scenario expects (``expect``; by default every
check valid and every settlement ended); 1 when it did not (which check differed, the seed
and the command that replays the run are printed); 2 when the scenario, the seed or an option is wrong (one line, no traceback);
3 when ``--check-determinism`` found two runs of one seed that differ.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NONDETERMINISTIC = 3


def _error(message: str) -> int:
    print(f"dvpsim sim: {message}", file=sys.stderr)
    return EXIT_USAGE


def parse_seed(text: str | None) -> int | None:
    """The seed option, or None; ValueError with the one-line reason."""
    if text is None:
        return None
    try:
        seed = int(text, 0)
    except ValueError:
        raise ValueError(
            f"--seed {text!r} is not an integer: give a whole number, e.g. --seed 7"
        ) from None
    if not 0 <= seed < 2**63:
        raise ValueError(f"--seed {seed} is out of range: give 0 <= seed < 2**63")
    return seed


def replay_command(scenario_path: str, seed: int, crypto: str) -> str:
    parts = ["dvpsim", "sim", scenario_path, "--seed", str(seed)]
    if crypto != "real":
        parts += ["--crypto", crypto]
    return " ".join(shlex.quote(p) for p in parts)


def main(
    scenario_path: str,
    out: str | None,
    seed_text: str | None = None,
    crypto: str = "real",
    check_determinism: bool = False,
) -> int:
    import dataclasses

    from rich.console import Console

    from dvpsim.run import print_expectation, summary_table
    from scenarios.schema import ScenarioError, load
    from scenarios.sim.run import CRYPTO_SUITES, SimRun

    try:
        seed = parse_seed(seed_text)
    except ValueError as exc:
        return _error(str(exc))
    if crypto not in CRYPTO_SUITES:
        return _error(f"--crypto {crypto!r} is unknown: use one of {', '.join(CRYPTO_SUITES)}")
    try:
        scenario = load(scenario_path)
    except ScenarioError as exc:
        return _error(str(exc))
    if seed is not None:
        scenario = dataclasses.replace(scenario, seed=seed)
    out_dir = (
        Path(out) if out else Path("runs") / f"{scenario.name}-sim-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    console = Console()
    try:
        report = SimRun(scenario, out_dir, crypto=crypto).run()
        if check_determinism:
            again = SimRun(scenario, out_dir / "determinism-check", crypto=crypto).run()
    except ScenarioError as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        print("dvpsim sim: interrupted", file=sys.stderr)
        return 130
    summary: dict[str, Any] = report.summary
    console.print(summary_table(summary))
    print_expectation(console, summary)
    console.print(
        f"simulated {summary['sim_duration_s']} s in {summary['wall_s']} s wall "
        f"({crypto} crypto); history digest {report.digest[:16]}"
    )
    # Paths and commands are printed unwrapped, so they can be copied whole.
    console.print(
        f"history: {out_dir / 'history.jsonl'}  summary: {out_dir / 'summary.json'}",
        soft_wrap=True,
    )
    if check_determinism:
        if again.digest != report.digest:
            console.print(
                f"[red]NOT DETERMINISTIC[/]: seed {scenario.seed} gave history digests "
                f"{report.digest[:16]} and {again.digest[:16]}; compare "
                f"{out_dir / 'history.jsonl'} with {again.out_dir / 'history.jsonl'}",
                soft_wrap=True,
            )
            return EXIT_NONDETERMINISTIC
        console.print(f"deterministic: two runs gave history digest {report.digest[:16]}")
    if not report.ok:
        console.print(
            f"seed {scenario.seed}; replay with: "
            f"{replay_command(scenario_path, scenario.seed, crypto)}",
            soft_wrap=True,
        )
        return EXIT_FAILED
    return 0
