"""`dvpsim explore SCENARIO`: random schedules within the scenario's budget, run in sim on
every core, and each violation shrunk to a minimal schedule that `dvpsim sim` replays.

Schedule ``i`` of an exploration with seed ``S`` is drawn by
``scenarios.schedules.draw_schedule`` from ``RandomChoices(f"{S}/{i}")`` within the
scenario's ``[explore]`` budget: the same seed and count give the same schedules and the
same findings on any number of workers (and on a cluster). Schedules run with the fast
crypto stand-in by default.

A violation is a check that came out invalid. The first schedule of each distinct set of
invalid checks is written at once to ``found/`` (nothing found is lost if the exploration
is stopped), then shrunk (``shrink``): the one-step reductions of
``scenarios.schedules.smaller`` are tried, all of one step at a time on the workers, and the
first that keeps the primary check invalid is kept, until none does. The minimal schedule is
re-run with real crypto; only a schedule whose real run shows the same invalid checks is
reported, written as ``counterexample-K.toml``: an ordinary scenario with its seed and
``expect`` set to those checks, so ``dvpsim sim FILE`` replays it and exits 0 when it shows
the violation again.

Exit codes: 0 nothing found; 1 a violation found (and confirmed), or a run that raised
(written to ``found/error-I.toml``); 2 bad input;
130 interrupted (what was found so far is written).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import resource
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scenarios.checks import CHECK_NAMES
from scenarios.dump import dumps
from scenarios.schedules import RandomChoices, draw_schedule, schedule_size, smaller
from scenarios.schema import Scenario

__all__ = [
    "Counterexample",
    "Exploration",
    "draw",
    "minimal_counterexample",
    "run_checks",
    "shrink",
]

EXIT_VIOLATION = 1
EXIT_USAGE = 2
#: The first item of a result whose run raised (the second is the exception, one line).
ERROR = "error"
#: What one schedule's run may take in a worker before it counts as an error.
RUN_WALL_S = 60
RUN_MEMORY_GIB = 4
#: The most runs one shrink may spend.
SHRINK_RUNS = 400


def run_checks(job: tuple[Scenario, str]) -> tuple[str, ...]:
    """The checks that came out invalid when ``scenario`` ran in sim with ``crypto``, in
    ``CHECK_NAMES`` order (a module-level function: the pool's workers call it)."""

    return tuple(n for n, status in statuses(job).items() if status == "invalid")


def statuses(job: tuple[Scenario, str]) -> dict[str, str]:
    """Each check's status (valid, invalid, unknown) when ``scenario`` ran in sim with
    ``crypto``, in ``CHECK_NAMES`` order."""
    from scenarios.sim.run import SimRun

    scenario, crypto = job
    with tempfile.TemporaryDirectory(prefix="dvpsim-explore-") as tmp:
        checks = SimRun(scenario, Path(tmp), crypto=crypto).run().summary["checks"]
    return {name: checks[name]["status"] for name in CHECK_NAMES}


def draw(base: Scenario, seed: int, index: int) -> Scenario:
    """Schedule ``index`` of the exploration of ``base`` with ``seed``."""
    schedule = draw_schedule(RandomChoices(f"{seed}/{index}"), base, base.explore)
    return dataclasses.replace(schedule, name=f"{base.name}-schedule-{index}")


Runner = Callable[[list[Scenario]], list[tuple[str, ...]]]


def serial_runner(crypto: str) -> Runner:
    """Run candidates one after another in this process."""
    return lambda scenarios: [run_checks((s, crypto)) for s in scenarios]


def pool_runner(pool: Any, crypto: str) -> Runner:
    """Run candidates on a ``dvpsim.pool.Pool``, results in the candidates' order."""

    def run(scenarios: list[Scenario]) -> list[tuple[str, ...]]:
        results: dict[int, tuple[str, ...]] = {}
        jobs = [(i, s) for i, s in enumerate(scenarios)]
        for (i, _), violated in pool.imap_unordered(_indexed_checks(crypto), jobs):
            results[i] = violated
        return [results[i] for i in range(len(scenarios))]

    return run


@dataclass(frozen=True)
class _indexed_checks:  # noqa: N801 - a picklable function object
    crypto: str

    def __call__(self, job: tuple[int, Scenario]) -> tuple[str, ...]:
        guarded = _guard_worker()
        try:
            return run_checks((job[1], self.crypto))
        except MemoryError:
            return (ERROR, f"MemoryError: the run needed more than {RUN_MEMORY_GIB} GiB")
        except Exception as exc:  # a crash of the simulation is a finding, not the end
            return (ERROR, f"{type(exc).__name__}: {exc}")
        finally:
            if guarded:
                signal.alarm(0)


def _guard_worker() -> bool:
    """In a local worker process: bound what one run may take (``RUN_WALL_S`` seconds,
    ``RUN_MEMORY_GIB`` of address space), so a schedule that makes the simulation blow up
    is recorded as an error, not a machine brought down. False elsewhere."""
    if multiprocessing.parent_process() is None:
        return False
    limit = RUN_MEMORY_GIB * 2**30
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))

    def too_long(signum: int, frame: object) -> None:
        raise TimeoutError(f"the run took more than {RUN_WALL_S} s of wall time")

    signal.signal(signal.SIGALRM, too_long)
    signal.alarm(RUN_WALL_S)
    return True


def shrink(
    scenario: Scenario, primary: str, run: Runner, *, budget: int = SHRINK_RUNS
) -> tuple[Scenario, int]:
    """The smallest schedule reachable from ``scenario`` by one-step reductions that keeps
    check ``primary`` invalid, and the runs it took. Greedy: each step runs every
    reduction of the current schedule and takes the first (boldest) that still fails."""
    current, runs = scenario, 0
    while runs < budget:
        candidates = list(smaller(current))[: budget - runs]
        if not candidates:
            break
        results = run(candidates)
        runs += len(candidates)
        kept = next((c for c, v in zip(candidates, results, strict=True) if primary in v), None)
        if kept is None:
            break
        current = kept
    return current, runs


@dataclass
class Counterexample:
    """A minimal schedule that makes checks invalid, confirmed (or not) with real crypto."""

    path: Path
    scenario: Scenario
    violated: tuple[str, ...]
    confirmed_real: bool
    found_size: tuple[int, int, float, int]
    runs: int

    @property
    def size(self) -> tuple[int, int, float, int]:
        return schedule_size(self.scenario)

    def describe(self) -> dict[str, Any]:
        faults, actions, seconds, settlements = self.size
        return {
            "path": str(self.path),
            "violated": list(self.violated),
            "confirmed_real": self.confirmed_real,
            "seed": self.scenario.seed,
            "faults": faults,
            "byzantine_members_and_behaviours": actions,
            "fault_seconds": seconds,
            "settlements": settlements,
            "found_size": list(self.found_size),
            "shrink_runs": self.runs,
        }


def minimal_counterexample(
    scenario: Scenario,
    out_path: Path,
    *,
    crypto: str = "fast",
    run: Runner | None = None,
    violated: tuple[str, ...] | None = None,
) -> Counterexample | None:
    """Shrink ``scenario`` (with its seed) to a minimal schedule that keeps its first
    invalid check invalid, confirm that with real crypto, and write it to ``out_path`` as a
    scenario whose ``expect`` is the checks it breaks. None when ``scenario`` breaks no
    check. ``violated``: its invalid checks when already known (saves a run)."""
    run = run or serial_runner(crypto)
    if violated is None:
        violated = run([scenario])[0]
    if not violated:
        return None
    minimal, runs = shrink(scenario, violated[0], run)
    shown = statuses((minimal, crypto)) if crypto != "real" else None
    real = statuses((minimal, "real"))
    final = tuple(n for n, status in (shown or real).items() if status == "invalid")
    confirmed = real.get(violated[0]) == "invalid" and (shown is None or real == shown)
    unknown = tuple(n for n, status in (shown or real).items() if status == "unknown")
    named = dataclasses.replace(minimal, name=out_path.stem, expect=final)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(_header(scenario, minimal, final, confirmed, unknown) + dumps(named))
    return Counterexample(
        out_path, named, final, confirmed, schedule_size(scenario), runs + 1 + (shown is not None)
    )


def _header(
    found: Scenario,
    minimal: Scenario,
    violated: tuple[str, ...],
    real: bool,
    unknown: tuple[str, ...],
) -> str:
    f0, a0, s0, n0 = schedule_size(found)
    f1, a1, s1, n1 = schedule_size(minimal)
    # expect says "these fail, every other check passes": a check that cannot be judged
    # (unknown: a settlement left open) makes the replay's exit 1 although it fails the same.
    replay = (
        "exit 0 = violation shown again"
        if not unknown
        else f"the same checks fail; exit 1 because {', '.join(unknown)} cannot be judged "
        "(unknown), which expect cannot say"
    )
    return (
        f"# A minimal schedule dvpsim explore found: it makes {', '.join(violated)} invalid.\n"
        f"# {'Confirmed' if real else 'NOT confirmed'} with real crypto. Shrunk from {f0} faults, "
        f"{a0} Byzantine members+behaviours, {s0} fault-seconds, {n0} settlements\n"
        f"# to {f1} faults, {a1} Byzantine members+behaviours, {s1} fault-seconds, "
        f"{n1} settlements.\n# Replay: dvpsim sim THIS_FILE ({replay})\n"
    )


@dataclass
class Exploration:
    """What an exploration ran and found so far."""

    base: Scenario
    seed: int
    crypto: str
    schedules: int = 0
    violating: int = 0
    errors: int = 0
    by_checks: dict[tuple[str, ...], int] = field(default_factory=dict)
    first: dict[tuple[str, ...], tuple[int, Scenario]] = field(default_factory=dict)
    wall_s: float = 0.0

    def record(self, index: int, schedule: Scenario, violated: tuple[str, ...]) -> bool:
        """Count one result; True when it is the first of its kind."""
        self.schedules += 1
        if not violated:
            return False
        if violated[0] == ERROR:
            self.errors += 1
            return True
        self.violating += 1
        self.by_checks[violated] = self.by_checks.get(violated, 0) + 1
        earlier = self.first.get(violated)
        if earlier is None or index < earlier[0]:
            new = earlier is None
            self.first[violated] = (index, schedule)
            return new
        return False

    @property
    def per_minute(self) -> float:
        return 60.0 * self.schedules / self.wall_s if self.wall_s else 0.0


def explore(
    base: Scenario,
    *,
    seed: int,
    count: int | None,
    seconds: float | None,
    pool: Any,
    crypto: str = "fast",
    on_result: Callable[[Exploration, int, Scenario, tuple[str, ...]], None] | None = None,
    state: Exploration | None = None,
) -> Exploration:
    """Run schedules 0, 1, ... of ``base`` until ``count`` ran or ``seconds`` passed
    (recorded in ``state``, which holds what ran so far if this is interrupted)."""
    state = state or Exploration(base, seed, crypto)
    started = time.perf_counter()

    def indexes() -> Iterator[int]:
        i = 0
        while (count is None or i < count) and (
            seconds is None or time.perf_counter() - started < seconds
        ):
            yield i
            i += 1

    jobs = ((i, draw(base, seed, i)) for i in indexes())
    for (index, schedule), violated in pool.imap_unordered(_indexed_checks(crypto), jobs):
        state.record(index, schedule, violated)
        state.wall_s = time.perf_counter() - started
        if on_result is not None:
            on_result(state, index, schedule, violated)
    state.wall_s = time.perf_counter() - started
    return state


# --------------------------------------------------------------------------- command line


def _error(message: str) -> int:
    print(f"dvpsim explore: {message}", file=sys.stderr)
    return EXIT_USAGE


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1h`` as seconds; ValueError with the one-line reason."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    body, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1.0)
    try:
        value = float(body) * unit
    except ValueError:
        raise ValueError(f"--time {text!r} is not a duration: give e.g. 90, 90s, 5m") from None
    if not 0 < value < float("inf"):
        raise ValueError(f"--time {text!r} must be a positive duration")
    return value


def main(args: Any) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from dvpsim.pool import Pool, PoolError
    from dvpsim.sim import parse_seed
    from scenarios.overrides import resolve
    from scenarios.schema import ScenarioError, load
    from scenarios.sim.run import CRYPTO_SUITES, check_simulable

    console = Console(stderr=False)
    try:
        seed = parse_seed(args.seed)
        seconds = parse_duration(args.time) if args.time is not None else None
    except ValueError as exc:
        return _error(str(exc))
    if args.budget is not None and args.budget < 1:
        return _error(f"--budget {args.budget}: give the number of schedules to run (>= 1)")
    if args.crypto not in CRYPTO_SUITES:
        return _error(f"--crypto {args.crypto!r} is unknown: use one of {', '.join(CRYPTO_SUITES)}")
    count = args.budget if args.budget is not None or seconds is not None else 200
    try:
        base = load(resolve(args.scenario))  # a file, or a bundled scenario's name
        check_simulable(base)
        pool = Pool(args.jobs, args.cluster)
    except (ScenarioError, PoolError) as exc:
        return _error(str(exc))
    seed = base.seed if seed is None else seed
    out = Path(args.out or f"runs/explore-{base.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.is_file() or (out / "explore.json").exists() or (out / "found").exists():
        return _error(
            f"--out {out}: already holds an exploration (or is a file): give a new folder, "
            "so two explorations' findings never mix"
        )
    out.mkdir(parents=True, exist_ok=True)
    found_dir = out / "found"
    limit = f"{count} schedules" if count is not None else f"{seconds:g} s"
    console.print(
        f"exploring {base.path} (seed {seed}, {limit}, {args.crypto} crypto) on {pool.where}; "
        f"budget: {base.explore.faults} faults, "
        f"{base.explore.members(base.committee.f)} Byzantine members",
        soft_wrap=True,
    )
    progress = Progress(
        TextColumn("[bold]explore"),
        BarColumn(),
        TextColumn("{task.completed} schedules"),
        TextColumn("{task.fields[rate]:.1f}/s"),
        TextColumn("[red]{task.fields[violations]} violations"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )

    def on_result(state: Exploration, index: int, schedule: Scenario, v: tuple[str, ...]) -> None:
        rate = state.schedules / state.wall_s if state.wall_s else 0.0
        progress.update(task, completed=state.schedules, rate=rate, violations=state.violating)
        if v and v[0] == ERROR:
            found_dir.mkdir(exist_ok=True)
            (found_dir / f"error-{index}.toml").write_text(
                f"# the simulation raised {v[1]}\n".replace("\n", " ").rstrip()
                + "\n"
                + dumps(schedule)
            )
            progress.console.print(f"[red]schedule {index} raised[/] {v[1]}", soft_wrap=True)
        elif v and state.first.get(v, (None,))[0] == index:
            found_dir.mkdir(exist_ok=True)
            (found_dir / f"schedule-{index}.toml").write_text(
                f"# found by dvpsim explore: {', '.join(v)} invalid ({args.crypto} crypto)\n"
                + dumps(dataclasses.replace(schedule, expect=v))
            )

    interrupted = False
    state = Exploration(base, seed, args.crypto)
    with progress:
        task = progress.add_task("explore", total=count, rate=0.0, violations=0)
        try:
            explore(
                base,
                seed=seed,
                count=count,
                seconds=seconds,
                pool=pool,
                crypto=args.crypto,
                on_result=on_result,
                state=state,
            )
        except KeyboardInterrupt:
            interrupted = True
        except PoolError as exc:
            return _error(str(exc))
    console.print(
        f"{state.schedules} schedules in {state.wall_s:.1f} s: {state.per_minute:.0f} per minute; "
        f"{state.violating} violated a check"
        + (f"; [red]{state.errors} raised[/] (see {found_dir})" if state.errors else "")
    )
    counterexamples: list[Counterexample] = []
    if not interrupted:
        runner = pool_runner(pool, args.crypto)
        for k, (violated, (index, schedule)) in enumerate(sorted(state.first.items()), 1):
            console.print(
                f"shrinking schedule {index} ({', '.join(violated)} invalid, "
                f"{state.by_checks[violated]} schedules like it)..."
            )
            example = minimal_counterexample(
                schedule,
                out / f"counterexample-{k}.toml",
                crypto=args.crypto,
                run=runner,
                violated=violated,
            )
            if example is None:
                continue
            counterexamples.append(example)
            faults, actions, secs, settlements = example.size
            verdict = "confirmed with real crypto" if example.confirmed_real else "NOT confirmed"
            console.print(
                f"  {example.path}: {faults} faults, {actions} Byzantine members+behaviours, "
                f"{secs} fault-seconds, {settlements} settlements ({example.runs} runs); "
                f"{verdict}; replay: dvpsim sim {shlex.quote(str(example.path))}",
                soft_wrap=True,
            )
    summary = {
        "scenario": str(base.path),
        "seed": seed,
        "crypto": args.crypto,
        "workers": pool.where,
        "schedules": state.schedules,
        "wall_s": round(state.wall_s, 3),
        "schedules_per_minute": round(state.per_minute, 1),
        "violating_schedules": state.violating,
        "errors": state.errors,
        "by_checks": {",".join(k): v for k, v in sorted(state.by_checks.items())},
        "counterexamples": [c.describe() for c in counterexamples],
        "interrupted": interrupted,
    }
    (out / "explore.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"summary: {out / 'explore.json'}", soft_wrap=True)
    if interrupted:
        return 130
    found = any(c.confirmed_real for c in counterexamples) or state.errors
    return EXIT_VIOLATION if found else 0
