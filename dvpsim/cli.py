"""The `dvpsim` command line: one entry point for every user-facing action.

Subcommands import their module only when they run, so `dvpsim --help` stays fast
and a part that is not built yet fails with one line instead of an ImportError.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

# dvpsim bench NAME -> module in dvpsim.benchmarks with `run(quick: bool) -> dict`
# (and the keyword of each option in BENCH_OPTIONS that names it)
BENCHMARKS = {
    "verifier": "Gas per certificate verification (BLS vs ECDSA) and Python BLS timings",
    "settle-gas": "Gas per settlement for each mode and batch size, and of a duplicate transmission",
    "bank": "Bank service throughput and latency",
    "consensus": "Certified rounds per second in the in-memory harness",
    "e2e": "End-to-end latency and throughput with real node processes",
    "sim": "Simulated seconds per wall second, settlements per second and runs per minute in sim",
    "explore": "Schedules per minute dvpsim explore runs on two cores, fast and real crypto",
    "backlog": "CPU per consensus round at 100 and at 10,000 open settlements",
    "overload": "Capacity, then goodput, latency and aborts at 1x-3x of it with real node processes",
}
# a stop signal dropped in a finalizer is sent again after this many seconds
REDELIVER_S = 0.05
# bench options that only some benchmarks take: option -> the benchmarks that take it
BENCH_OPTIONS = {"hog": ("overload",), "n31": ("e2e",)}


def _terminate_on_sigterm() -> None:
    """SIGTERM becomes SystemExit, so that `finally` blocks and atexit stop every process
    we started; Ctrl-C is KeyboardInterrupt as usual.

    Python runs a signal's handler wherever the main thread is, and when that is a
    finalizer (a ``weakref.finalize`` callback, a ``__del__``), the exception is printed as
    "Exception ignored" and dropped: a stopped benchmark went on with its next run. An
    unraisable-exception hook sees the dropped SystemExit or KeyboardInterrupt and sends
    the signal again a moment later, when the main thread is elsewhere."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    previous = sys.unraisablehook

    def redeliver(unraisable: Any) -> None:
        exc = unraisable.exc_value
        if isinstance(exc, SystemExit) and exc.code == 128 + signal.SIGTERM:
            _signal_again(signal.SIGTERM)
        elif isinstance(exc, KeyboardInterrupt):
            _signal_again(signal.SIGINT)
        previous(unraisable)

    sys.unraisablehook = redeliver


def _signal_again(signum: int) -> None:
    timer = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()


def cmd_doctor(args: argparse.Namespace) -> int:
    from dvpsim import doctor

    return doctor.main()


def cmd_setup(args: argparse.Namespace) -> int:
    from dvpsim import install

    return install.main()


def cmd_build(args: argparse.Namespace) -> int:
    from chain_adapters import build

    try:
        artifacts = build.compile_contracts(use_cache=not args.force)
    except build.CompileError as exc:
        print(f"dvpsim build: {exc}", file=sys.stderr)
        return 1
    for name, artifact in sorted(artifacts.items()):
        print(
            f"{name:28s} {len(artifact.deployed_bytecode) // 2 - 1:6d} bytes  ({artifact.source})"
        )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    options = {}
    for option, takers in BENCH_OPTIONS.items():
        if getattr(args, option):
            if args.name not in takers:
                print(
                    f"dvpsim bench: --{option} applies to {', '.join(takers)} only, "
                    f"not {args.name}",
                    file=sys.stderr,
                )
                return 2
            options[option] = True
    module_name = "dvpsim.benchmarks." + args.name.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print(f"dvpsim bench: benchmark {args.name!r} is not built yet", file=sys.stderr)
            return 2
        raise
    results = module.run(quick=args.quick, **options)
    if args.json:
        Path(args.json).write_text(
            json.dumps(results, indent=2, sort_keys=True, default=str) + "\n"
        )
        print(f"wrote {args.json}")
    return 0


def _run_options(args: argparse.Namespace) -> Any:
    from dvpsim.runcli import RunOptions

    return RunOptions(
        overrides=tuple(args.set or ()),
        seed=args.seed,
        json=args.json,
        verbosity=args.verbosity,
        force=args.force,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from dvpsim.run import main as run_main

    return run_main(args.scenario, args.out, args.hosts, _run_options(args))


def cmd_sim(args: argparse.Namespace) -> int:
    from dvpsim.sim import main as sim_main

    return sim_main(
        args.scenario, args.out, _run_options(args), args.crypto, args.check_determinism
    )


def cmd_scenarios(args: argparse.Namespace) -> int:
    from scenarios.overrides import bundled

    listed = bundled()
    width = max((len(name) for name, _ in listed), default=0)
    for name, description in listed:
        print(f"{name:{width}s}  {description}")
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from dvpsim.sweep import main as sweep_main

    return sweep_main(args.grid, args.out, args.jobs, args.cluster, args.seeds)


def cmd_explore(args: argparse.Namespace) -> int:
    from dvpsim.explore import main as explore_main

    return explore_main(args)


def cmd_report(args: argparse.Namespace) -> int:
    from dvpsim.report import ReportError, write_report

    try:
        written = write_report(Path(args.run_dir), Path(args.out) if args.out else None)
    except ReportError as exc:
        print(f"dvpsim report: {exc}", file=sys.stderr)
        return 2
    print(written)
    return 0


def _delegate(module_name: str, what: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                print(f"dvpsim: {what} is not built yet", file=sys.stderr)
                return 2
            raise
        return int(module.main(args.rest))

    return run


def _add_run_options(command: argparse.ArgumentParser, world: str) -> None:
    """The options `run` and `sim` share (``dvpsim.runcli``)."""
    command.add_argument(
        "scenario",
        help="scenario file (TOML), or the name of a bundled one (`dvpsim scenarios`), "
        "e.g. reference",
    )
    command.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a scenario key before validation (repeatable); VALUE is TOML, array "
        "tables by index: --set committee.n=7 --set committee.f=2 --set chains.0.block_time=0.5",
    )
    command.add_argument("--seed", metavar="S", help="override the scenario's seed (an integer)")
    command.add_argument(
        "--out",
        metavar="DIR",
        help=f"run folder for history, summary and logs, new or empty "
        f"(default runs/NAME-{'sim-' if world == 'sim' else ''}TIME)",
    )
    command.add_argument(
        "--force",
        action="store_true",
        help="--out may hold an earlier run: remove its files first (only a folder whose "
        "history.jsonl starts with run-start)",
    )
    command.add_argument(
        "--json",
        action="store_true",
        help="print only the summary, as JSON, on stdout (everything else on stderr)",
    )
    loudness = command.add_mutually_exclusive_group()
    loudness.add_argument(
        "-q",
        "--quiet",
        dest="verbosity",
        action="store_const",
        const=-1,
        default=0,
        help="print only errors and the final verdict line",
    )
    loudness.add_argument(
        "-v",
        "--verbose",
        dest="verbosity",
        action="store_const",
        const=1,
        help="also print where the run comes from and a line per progress step",
    )


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose subcommands answer an unknown option with their own usage."""

    def parse_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            command = self._commands.get(getattr(parsed, "command", None) or "", self)
            command.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed

    _commands: dict[str, argparse.ArgumentParser] = {}


def build_parser() -> argparse.ArgumentParser:
    from scenarios.provenance import dvpsim_version

    parser = _Parser(
        prog="dvpsim",
        description="Oracle-coordinated Delivery-versus-Payment settlement: run it for real, simulate it, break it.",
        epilog="Exit codes of run and sim: 0 expectation met, 1 not met, 2 bad input, "
        "3 undecided (settlements open, a check unknown), 4 internal error.",
    )
    parser.add_argument("--version", action="version", version=f"dvpsim {dvpsim_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser._commands = sub.choices

    doctor = sub.add_parser(
        "doctor", help="check the toolchain: compile, start anvil, probe the BLS precompiles"
    )
    doctor.set_defaults(func=cmd_doctor)

    setup = sub.add_parser(
        "setup",
        help="install the pinned solcjs and anvil with npm (into a checkout's node_modules, "
        "else the user cache directory) and build the contracts; quick when done",
    )
    setup.set_defaults(func=cmd_setup)

    run = sub.add_parser(
        "run", help="run a scenario for real: chains, bank, node processes, checks"
    )
    _add_run_options(run, "run")
    run.add_argument(
        "--hosts",
        metavar="FILE",
        help="hosts file (TOML): the addresses the chains, the bank and each node listen on, "
        "and how each node process starts; default: everything on 127.0.0.1 (docs/DEPLOY.md)",
    )
    run.set_defaults(func=cmd_run)

    sim = sub.add_parser(
        "sim",
        help="simulate a scenario: every node, the chains and the bank in one process, "
        "on a virtual clock; a seed replays the run exactly",
    )
    _add_run_options(sim, "sim")
    sim.add_argument(
        "--crypto",
        default="real",
        metavar="real|fast",
        help="real BLS and Ed25519 (default), or fast keyed hashes for exploration "
        "(simulation only; confirm findings with real crypto)",
    )
    sim.add_argument(
        "--check-determinism",
        action="store_true",
        help="run twice and compare the history digests (exit 1 if they differ)",
    )
    sim.set_defaults(func=cmd_sim)

    sweep = sub.add_parser(
        "sweep",
        help="run a grid of simulated scenarios (n, f, t, Byzantine members, network, reorgs) "
        "and draw where safety and liveness hold (CSV, phase-diagram PNG, HTML)",
    )
    sweep.add_argument("grid", help="grid file (TOML), e.g. scenarios/grids/default.toml")
    sweep.add_argument("--out", metavar="DIR", help="output folder (default runs/sweep-NAME-TIME)")
    sweep.add_argument(
        "--jobs", type=int, metavar="J", help="worker processes (default one per core)"
    )
    sweep.add_argument(
        "--cluster", metavar="ADDRESS", help="run the cells on a worker cluster at ADDRESS"
    )
    sweep.add_argument(
        "--seeds", type=int, metavar="S", help="seeds per cell (default: the grid's seeds)"
    )
    sweep.set_defaults(func=cmd_sweep)

    explore = sub.add_parser(
        "explore",
        help="run random fault and adversary schedules in sim, shrink each violation to a "
        "minimal scenario",
        description="Draw random schedules within the scenario's [explore] budget, run them in "
        "sim on every core, and shrink each violation found to a minimal scenario file that "
        "`dvpsim sim` replays (confirmed with real crypto). Exit 0: nothing found; 1: a "
        "violation (or a run that raised) found; 2: bad input.",
    )
    explore.add_argument(
        "scenario",
        help="scenario file (TOML), or a bundled scenario's name, whose [explore] table is "
        "the budget",
    )
    limit = explore.add_mutually_exclusive_group()
    limit.add_argument(
        "--budget", type=int, metavar="N", help="run N schedules (default 200 without --time)"
    )
    limit.add_argument("--time", metavar="T", help="run schedules for T (e.g. 90s, 5m)")
    explore.add_argument("--jobs", type=int, metavar="J", help="worker processes (default: cores)")
    explore.add_argument(
        "--seed", metavar="S", help="exploration seed (default: the scenario's seed)"
    )
    explore.add_argument(
        "--crypto",
        default="fast",
        metavar="fast|real",
        help="crypto of the schedules (default fast; findings are confirmed with real)",
    )
    explore.add_argument(
        "--cluster", metavar="ADDRESS", help="run on a Ray cluster at ADDRESS (see README)"
    )
    explore.add_argument(
        "--out", metavar="DIR", help="output folder (default runs/explore-NAME-TIME)"
    )
    explore.set_defaults(func=cmd_explore)
    report = sub.add_parser(
        "report",
        help="write one self-contained HTML page of a run: node and settlement-leg lanes, "
        "fault windows, latency CDF, messages per round, verdicts and their witnesses",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run folder of dvpsim run or sim")
    report.add_argument(
        "--out", metavar="FILE", help="where to write the page (default RUN_DIR/report.html)"
    )
    report.set_defaults(func=cmd_report)

    scenarios = sub.add_parser(
        "scenarios", help="list the bundled scenarios, which run and sim take by name"
    )
    scenarios.set_defaults(func=cmd_scenarios)

    completion = sub.add_parser(
        "completion",
        help='print a shell completion script: eval "$(dvpsim completion bash)"',
    )
    completion.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")
    completion.set_defaults(func=cmd_completion)

    build = sub.add_parser("build", help="compile the Solidity contracts (cached by source hash)")
    build.add_argument("--force", action="store_true", help="ignore the artifact cache")
    build.set_defaults(func=cmd_build)

    bench = sub.add_parser("bench", help="run a benchmark and print its figures")
    bench.add_argument(
        "name",
        choices=sorted(BENCHMARKS),
        help="; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items()),
    )
    bench.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    bench.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    bench.add_argument(
        "--hog",
        action="store_true",
        help="overload only: repeat the 1x load beside a busy loop pinned to one core",
    )
    bench.add_argument(
        "--n31",
        action="store_true",
        help="e2e only: add the long latency case with n = 31 (10 settlements at 1/s)",
    )
    bench.set_defaults(func=cmd_bench)

    bank = sub.add_parser(
        "bank", help="the bank payment service (try `dvpsim bank serve --help`)", add_help=False
    )
    bank.add_argument("rest", nargs=argparse.REMAINDER)
    bank.set_defaults(func=_delegate("bank_adapter.cli", "the bank service"))

    node = sub.add_parser(
        "node", help="run one oracle node (try `dvpsim node --help`)", add_help=False
    )
    node.add_argument("rest", nargs=argparse.REMAINDER)
    node.set_defaults(func=_delegate("node.cli", "the oracle node"))
    return parser


DELEGATED = {
    "bank": ("bank_adapter.cli", "the bank service"),
    "node": ("node.cli", "the oracle node"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        # These subcommands own their options (`dvpsim node --config F`, `--help`...).
        module, what = DELEGATED[argv[0]]
        return int(_delegate(module, what)(argparse.Namespace(rest=argv[1:])))
    _terminate_on_sigterm()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("dvpsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`dvpsim scenarios | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as exc:  # a bug: one line and exit 4, the traceback in a file
        from dvpsim.runcli import internal_error

        return internal_error(f"dvpsim {args.command}", exc, None)


if __name__ == "__main__":
    sys.exit(main())
