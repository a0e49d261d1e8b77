"""`dvpsim bench overload`: what the committee does with more work than it can settle.

Real runs of the throughput case of `dvpsim bench e2e` (multi-chain messaging: escrow on
a local chain, payment at the bank, n = 4 node processes over libp2p, blocks every
0.25 s), each a full `dvpsim run` with its checks, the locks sent at a fixed rate by a
generator that never waits for a receipt (``RealRun(fire_and_forget=True)``), the chain's
admission on (``ADMISSION_FLOOR``: a settlement the committee's pace would not serve in
time is refused at its lock, ``SettlementRefused``, and counted as refused, not aborted):

1. **capacity**: the highest offered rate at which at least 99% of the settlements commit,
   none aborts at its deadline, the last one ends within half the window (at least 5 s)
   after the load stops (a run shorter than the deadline hides a growing backlog from the
   deadline: the drain shows it), and the committee keeps pace while the load lasts: in
   the window's second half at least 95% of the offered rate commits per second (the
   *steady* rate; a backlog that grows for a whole window still drains within the
   allowance above, so without this a rate the committee cannot sustain would count, and
   every multiple of it would be measured against an inflated capacity). Each run offers
   its rate as long as the overload runs do (40 s; 10 s with ``--quick``): the committee
   kept a higher pace for 10 s than for 40 (in 10 s runs 240/s held, where 40 s at 240/s
   committed 203/s, every settlement after a drain), so a capacity found in shorter runs
   than the loads' is one the 1x load does not sustain. Doubling from ``START_RATE`` while
   a rate holds, then bisecting between the last rate that held and the first that did
   not; the number of runs is bounded, each run by its time limit.
2. **overload**: 1x, 1.5x, 2x and 3x the capacity offered for a fixed window; per load
   the offered rate (and the rate the generator really drove), goodput (committed per
   second from the first lock to the last settlement ended: the window and its drain),
   p50/p99 latency, committed, aborts by reason (read from the history: a bank rejection,
   the deadline passed, other), settlements still open at the time limit, backpressure
   figures when the summary has them (``n/a`` otherwise), observation headroom (largest
   observation against ``timing.max_observation_bytes``, settlements left out), and CPU
   seconds per settlement per process role when the summary has them.
3. ``--hog``: the 1x load again beside a busy loop pinned to one core (a child started
   and stopped here by PID): goodput and report gas per settlement against the quiet 1x.

Targets (issue 15), printed beside the figures and never asserted: at 2x, goodput at
least 90% of capacity and no deadline aborts from starvation; with ``--hog``, goodput at
least 40% of quiet and gas per settlement within 1.2x of quiet.

It uses only what a run already writes (``RealRun``, ``scenarios.schema.parse``, the
summary's keys and the history's lines), reading newer keys only when present, so that
it also measures older versions of the code. Everything it starts is stopped by PID.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from processes import start_process
from scenarios.real import RealRun
from scenarios.schema import Scenario, parse

START_RATE = 40.0  # settlements/s: the capacity search's first rate
CEILING_RATE = 640.0  # the search never offers more
LOADS = (1.0, 1.5, 2.0, 3.0)  # multiples of the capacity offered
COMMITTED_SHARE = 0.99  # a rate holds when this share commits and no deadline aborts,
DRAIN_SHARE = 0.5  # and the last settlement ends within this share of the window after it,
DRAIN_FLOOR_S = 5.0  # or within this many seconds (a short window still has p99 latency)
STEADY_SHARE = 0.95  # and, in the window's second half, this share of the rate commits per second
BISECT_TOLERANCE = 0.1  # the search stops when the bracket is this narrow (relative)
# The asset chain's admission floor in every run (``chains.admission_floor``): up to this
# many open settlements are admitted unchecked; beyond it the coordinator refuses one the
# committee's pace over the last 10 s would not serve within half its time (0: off).
ADMISSION_FLOOR = 1024
# Words of summary keys that carry the nodes' backpressure figures (refused, queued work).
BACKPRESSURE_WORDS = ("refused", "queued", "backpressure", "shed")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How long each part runs (``--quick`` shortens all of them)."""

    trial_window_s: float  # seconds of load per capacity-search run
    load_window_s: float  # seconds of load per overload run
    deadline_s: int  # each settlement's deadline after it is driven
    max_trials: int  # runs the capacity search may make
    bisections: int


# The search's runs are as long as the loads' (module docstring).
FULL = Sizes(trial_window_s=40.0, load_window_s=40.0, deadline_s=30, max_trials=7, bisections=3)
# Four quick trials: 40, 80, 160/s, then one bisection (the steady rule makes 160/s fail
# on a 2-core machine, and three trials would stop at 80/s, half the capacity).
QUICK = Sizes(trial_window_s=10.0, load_window_s=10.0, deadline_s=20, max_trials=4, bisections=1)


# --------------------------------------------------------------------------- the search


@dataclass(frozen=True, slots=True)
class Trial:
    """One short run of the capacity search."""

    rate: float  # offered settlements per second
    settlements: int
    committed: int
    deadline_aborts: int
    window_s: float  # how long the rate was offered
    ended_s: float | None  # from the first lock to the last settlement ended
    steady_per_s: float | None = None  # committed per second in the window's second half

    @property
    def holds(self) -> bool:
        """The committee kept up with this rate: (nearly) everything committed, nothing
        expired, it kept pace while the load lasted, and no backlog was left to drain
        when the load stopped."""
        return (
            self.settlements > 0
            and self.committed >= COMMITTED_SHARE * self.settlements
            and self.deadline_aborts == 0
            and self.ended_s is not None
            and self.ended_s <= self.window_s + max(DRAIN_SHARE * self.window_s, DRAIN_FLOOR_S)
            and (self.steady_per_s is None or self.steady_per_s >= STEADY_SHARE * self.rate)
        )


@dataclass(frozen=True, slots=True)
class CapacitySearch:
    capacity: float | None  # the highest rate that held; None when none did
    trials: tuple[Trial, ...]  # in the order they ran


def find_capacity(
    measure: Callable[[float], Trial],
    *,
    start: float = START_RATE,
    ceiling: float = CEILING_RATE,
    floor: float = 1.0,
    max_trials: int = FULL.max_trials,
    bisections: int = FULL.bisections,
    tolerance: float = BISECT_TOLERANCE,
) -> CapacitySearch:
    """The highest rate ``measure`` says holds: up by doubling from ``start`` (down by
    halving when ``start`` fails, not below ``floor``), then at most ``bisections``
    bisections of the bracket until it is ``tolerance`` (relative) narrow; never more
    than ``max_trials`` measurements, never above ``ceiling``."""
    trials: list[Trial] = []

    def holds(rate: float) -> bool:
        trial = measure(rate)
        trials.append(trial)
        return trial.holds

    good: float | None = None
    bad: float | None = None
    rate = min(start, ceiling)
    while len(trials) < max_trials:
        if not holds(rate):
            bad = rate
            break
        good = rate
        if rate >= ceiling:
            break
        rate = min(ceiling, rate * 2)
    while good is None and bad is not None and len(trials) < max_trials and bad / 2 >= floor:
        rate = bad / 2
        if holds(rate):
            good = rate
        else:
            bad = rate
    steps = 0
    while (
        good is not None
        and bad is not None
        and steps < bisections
        and len(trials) < max_trials
        and bad - good > tolerance * good
    ):
        middle = round((good + bad) / 2, 1)
        if holds(middle):
            good = middle
        else:
            bad = middle
        steps += 1
    return CapacitySearch(good, tuple(trials))


# --------------------------------------------------------------------------- one run


def messaging_scenario(
    name: str,
    n: int,
    f: int,
    count: int,
    rate: float,
    delta_round: float,
    time_limit: float,
    block_time: float = 0.0,
    deadline: int = 120,
    admission_floor: int = 0,
) -> Scenario:
    """The reference mode's benchmark case (escrow on one local chain, payment at the
    bank): ``count`` settlements at ``rate`` per second, each with ``deadline`` seconds,
    the chain's admission floor ``admission_floor`` (0: none); the cases of `dvpsim bench
    e2e` and the runs of this benchmark."""
    raw = {
        "name": name,
        "mode": "multi-chain-messaging",
        "time_limit": time_limit,
        "seed": 7,
        "committee": {"n": n, "f": f},
        "timing": {
            "delta_progress": max(3.0, 10 * delta_round),
            "delta_resend": 0.5,
            "delta_round": delta_round,
            "delta_grace": 0.02,
            "delta_stage": 1.0,
        },
        "chains": [
            {
                "name": "rwa-chain",
                "chain_id": 31337,
                "block_time": block_time,
                "admission_floor": admission_floor,
            }
        ],
        "bank": {"start": True},
        "accounts": [
            {"name": "seller", "asset": 10 * count + 10},
            {"name": "buyer", "bank_balance": 100 * count + 100},
        ],
        "settlements": {
            "count": count,
            "asset_amount": 10,
            "payment_amount": 100,
            "deadline": deadline,
            "arrival_rate": rate,
        },
    }
    return parse(raw, Path(f"<bench {name}>"))


def scenario(name: str, rate: float, window_s: float, deadline_s: int) -> Scenario:
    """The throughput case of `dvpsim bench e2e` at ``rate`` for ``window_s`` seconds; the
    time limit leaves room for the window, every deadline and the last aborts to land."""
    count = max(2, math.ceil(rate * window_s))
    time_limit = window_s + deadline_s + 30
    return messaging_scenario(
        name, 4, 1, count, rate, 0.2, time_limit, 0.25, deadline_s, ADMISSION_FLOOR
    )


def abort_reasons(history: Sequence[Mapping[str, Any]], aborted: Sequence[str]) -> dict[str, int]:
    """Why each aborted settlement aborted, from a run's history lines: "deadline" (its
    escrow was refunded, or the bank rejected its payment, at or after its deadline: the
    bank rejects an expired instruction too), "bank rejection" (the bank rejected its
    payment before the deadline: no funds, an unknown account), "other"."""
    started_at = 0.0
    deadlines: dict[str, float] = {}
    ended: dict[str, float] = {}  # the first refund or bank rejection, run seconds
    rejected: set[str] = set()
    for line in history:
        event = line.get("event")
        if event == "run-start":
            started_at = float(line["started_at"])
        elif event == "settlement":
            deadlines[line["settlement"]] = float(line["deadline"])
        elif (
            event == "leg"
            and line.get("phase") == "ok"
            and line.get("step") in ("refund", "reject")
        ):
            sid = line["settlement"]
            ended[sid] = min(ended.get(sid, math.inf), float(line["t"]))
            if line["step"] == "reject":
                rejected.add(sid)
    reasons: dict[str, int] = {}
    for sid in aborted:
        if sid in ended and sid in deadlines and started_at + ended[sid] >= deadlines[sid]:
            reason = "deadline"
        elif sid in rejected:
            reason = "bank rejection"
        else:
            reason = "other"
        reasons[reason] = reasons.get(reason, 0) + 1
    return reasons


def steady_per_s(history: Sequence[Mapping[str, Any]], window_s: float) -> float | None:
    """Settlements committed per second in the second half of the load window (from the
    first settlement driven): each committed settlement counted once, when its last
    ``release`` or ``pay`` step was done. None without a settlement driven."""
    first: float | None = None
    done: dict[str, float] = {}
    for line in history:
        event = line.get("event")
        if event == "settlement" and first is None:
            first = float(line["t"])
        elif (
            event == "leg" and line.get("phase") == "ok" and line.get("step") in ("release", "pay")
        ):
            done[line["settlement"]] = max(done.get(line["settlement"], 0.0), float(line["t"]))
    if first is None or window_s <= 0:
        return None
    begin, end = first + window_s / 2, first + window_s
    return round(sum(1 for t in done.values() if begin <= t < end) / (window_s / 2), 1)


def backpressure(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary's backpressure figures (keys naming refused or queued work), if any."""
    return {
        key: value
        for key, value in sorted(summary.items())
        if any(word in key for word in BACKPRESSURE_WORDS)
    }


def figures(run: Scenario, summary: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """What the benchmark reports of one run, from its summary and history."""
    driven = sorted(float(line["t"]) for line in history if line.get("event") == "settlement")
    refused = sum(
        1
        for line in history
        if line.get("event") == "leg" and line.get("phase") == "fail" and line.get("step") == "lock"
    )
    span = driven[-1] - driven[0] if len(driven) > 1 else 0.0
    reasons = abort_reasons(history, summary.get("aborted_ids", []))
    window = summary.get("throughput_window_s")
    committed = int(summary["committed"])
    generator = summary.get("generator") or {}
    return {
        "offered_per_s": run.settlements.arrival_rate,
        "driven_per_s": round((len(driven) - 1) / span, 1) if span > 0 else None,
        "generator_lag_p99_s": generator.get("lag_p99_s"),
        "sent_lag_p99_s": generator.get("sent_lag_p99_s"),
        "locks_refused": refused,  # by the chain: those settlements never began
        "settlements": int(summary["settlements"]),
        "committed": committed,
        "aborted": int(summary["aborted"]),
        "refused": summary.get("refused"),  # by the chain's admission (newer code only)
        "abort_reasons": reasons,
        "deadline_aborts": reasons.get("deadline", 0),
        "open": int(summary["settlements"]) - int(summary["ended"]),
        "goodput_per_s": round(committed / window, 1) if window else None,
        "steady_per_s": steady_per_s(history, run.settlements.count / run.settlements.arrival_rate),
        "window_s": window,
        "latency_p50_s": summary.get("latency_p50_s"),
        "latency_p99_s": summary.get("latency_p99_s"),
        "backpressure": backpressure(summary),
        "observation_largest_bytes": summary.get("observation_largest_bytes"),
        "max_observation_bytes": run.timing.max_observation_bytes,
        "observation_left_out": summary.get("observation_left_out"),
        "gas_per_settlement_reports": summary.get("gas_per_settlement_reports"),
        "messages_per_settlement": summary.get("messages_per_settlement"),
        "cpu_s_per_settlement": summary.get("cpu_s_per_settlement"),
        "passed": summary.get("passed"),
        "wall_s": summary.get("wall_s"),
    }


class Runner:
    """Runs the benchmark's real runs one after another, in folders under ``root``,
    printing a line of progress at most every ``PROGRESS_S`` seconds."""

    PROGRESS_S = 10.0

    def __init__(self, root: Path, console: Console) -> None:
        self.root = root
        self.console = console
        self._runs = 0

    def measure(self, label: str, rate: float, window_s: float, deadline_s: int) -> dict[str, Any]:
        self._runs += 1
        name = f"overload-{self._runs}"
        run = scenario(name, rate, window_s, deadline_s)
        self.console.print(
            f"[bold]{label}[/]: {run.settlements.count} settlements at {rate:g}/s "
            f"for {window_s:g} s (deadline {deadline_s} s) ..."
        )
        shown = [0.0]

        def progress(what: str, done: int, total: int) -> None:
            now = time.monotonic()
            if what == "settlements ended" and now - shown[0] >= self.PROGRESS_S:
                shown[0] = now
                self.console.print(f"  {what}: {done}/{total}")

        out = self.root / name
        report = RealRun(run, out, progress, fire_and_forget=True).run()
        history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
        result = figures(run, report.summary, history)
        self.console.print(
            f"  {result['committed']}/{result['settlements']} committed, "
            f"{result['aborted']} aborted {result['abort_reasons'] or ''}, "
            f"{_or_na(result['refused'])} refused, {result['open']} open; "
            f"goodput {result['goodput_per_s']}/s (steady {result['steady_per_s']}/s), p50 {result['latency_p50_s']} s "
            f"({result['wall_s']} s)"
        )
        return result


def busy_core() -> int:
    """The core the hog takes: the last one this process may run on."""
    return max(os.sched_getaffinity(0))


# --------------------------------------------------------------------------- printing


def _or_na(value: Any) -> str:
    return "n/a" if value is None or value == {} else str(value)


def cpu_per_settlement(cpu: Mapping[str, Any] | None) -> str:
    """A summary's ``cpu_s_per_settlement`` as "node/bank/anvil/driver" seconds (n/a
    when the summary has none: a run of older code)."""
    if not cpu:
        return "n/a"
    return "/".join(_or_na(cpu.get(role)) for role in ("per_node", "bank", "anvil", "driver"))


def _cpu(result: Mapping[str, Any]) -> str:
    return cpu_per_settlement(result.get("cpu_s_per_settlement"))


def _print_loads(console: Console, capacity: float, loads: Sequence[Mapping[str, Any]]) -> None:
    table = Table(title=f"dvpsim bench overload (n = 4, blocks 0.25 s; capacity {capacity:g}/s)")
    columns = (
        "load", "offered/s", "driven/s", "goodput/s", "p50 s", "p99 s", "committed",
        "aborts (reasons)", "open", "refused/queued", "largest obs. B", "CPU s/settl. node/bank/anvil/driver",
        "target",
    )  # fmt: skip
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("load", "target") else "right", overflow="fold"
        )
    for result in loads:
        multiple = result["load"]
        target = ""
        if multiple == 2.0:
            target = f">= {0.9 * capacity:.1f}/s goodput, no deadline aborts"
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(result["abort_reasons"].items()))
        table.add_row(
            f"{multiple:g}x",
            f"{result['offered_per_s']:g}",
            _or_na(result["driven_per_s"]),
            _or_na(result["goodput_per_s"]),
            _or_na(result["latency_p50_s"]),
            _or_na(result["latency_p99_s"]),
            f"{result['committed']}/{result['settlements']}",
            f"{result['aborted']} ({reasons})" if reasons else str(result["aborted"]),
            str(result["open"]),
            ", ".join(f"{k}={v}" for k, v in result["backpressure"].items()) or "n/a",
            f"{_or_na(result['observation_largest_bytes'])}/{result['max_observation_bytes']} "
            f"({_or_na(result['observation_left_out'])} left out)",
            _cpu(result),
            target,
        )
    console.print(table)


def _ratio(a: Any, b: Any) -> float | None:
    return (
        round(a / b, 2) if isinstance(a, int | float) and isinstance(b, int | float) and b else None
    )


# --------------------------------------------------------------------------- the bench


def run(quick: bool = False, hog: bool = False) -> dict[str, Any]:
    console = Console(width=200)
    sizes = QUICK if quick else FULL
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dvpsim-bench-overload-") as tmp:
        runner = Runner(Path(tmp), console)

        def measure(rate: float) -> Trial:
            result = runner.measure("capacity search", rate, sizes.trial_window_s, sizes.deadline_s)
            return Trial(
                rate,
                result["settlements"],
                result["committed"],
                result["deadline_aborts"],
                sizes.trial_window_s,
                result["window_s"],
                result["steady_per_s"],
            )

        search = find_capacity(measure, max_trials=sizes.max_trials, bisections=sizes.bisections)
        trials = [
            {"rate": t.rate, "settlements": t.settlements, "committed": t.committed,
             "deadline_aborts": t.deadline_aborts, "ended_s": t.ended_s,
             "steady_per_s": t.steady_per_s, "holds": t.holds}
            for t in search.trials
        ]  # fmt: skip
        if search.capacity is None:
            tried = ", ".join(f"{t.rate:g}/s" for t in search.trials)
            console.print(f"[red]no rate held (tried {tried}): no capacity to overload[/]")
            return {"quick": quick, "capacity": None, "trials": trials, "loads": []}
        capacity = search.capacity
        console.print(f"[bold]capacity[/]: {capacity:g}/s ({len(trials)} runs)")
        loads = []
        for multiple in LOADS:
            result = runner.measure(
                f"{multiple:g}x capacity",
                round(capacity * multiple, 1),
                sizes.load_window_s,
                sizes.deadline_s,
            )
            loads.append({"load": multiple, **result})
        _print_loads(console, capacity, loads)
        at_2x = next(r for r in loads if r["load"] == 2.0)
        goodput_2x = _ratio(at_2x["goodput_per_s"], capacity)
        console.print(
            f"at 2x: goodput {_or_na(goodput_2x)} of capacity (target >= 0.9), "
            f"{at_2x['deadline_aborts']} deadline aborts (target 0)"
        )
        hogged = None
        if hog:
            hogged = _hog_case(runner, console, capacity, sizes, loads[0], Path(tmp))
    console.print(
        f"wall time {time.monotonic() - began:.0f} s; figures are noisy on a shared machine"
    )
    return {
        "quick": quick,
        "sizes": {
            "trial_window_s": sizes.trial_window_s,
            "load_window_s": sizes.load_window_s,
            "deadline_s": sizes.deadline_s,
        },
        "capacity": capacity,
        "trials": trials,
        "loads": loads,
        "goodput_2x_of_capacity": goodput_2x,
        "hog": hogged,
        "targets": {
            "goodput_2x_of_capacity": ">= 0.9",
            "deadline_aborts_2x": 0,
            "hog_goodput_of_quiet": ">= 0.4",
            "hog_gas_of_quiet": "<= 1.2",
        },
    }


def _hog_case(
    runner: Runner,
    console: Console,
    capacity: float,
    sizes: Sizes,
    quiet: Mapping[str, Any],
    tmp: Path,
) -> dict[str, Any]:
    """The 1x load again beside a busy loop pinned to one core (started and stopped here)."""
    core = busy_core()
    loop = f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True:\n    pass\n"
    hog = start_process("hog", [sys.executable, "-c", loop], tmp / "hog.log")
    try:
        result = runner.measure(
            f"1x capacity beside a busy loop on core {core}",
            capacity,
            sizes.load_window_s,
            sizes.deadline_s,
        )
    finally:
        hog.stop(timeout=3)
    goodput = _ratio(result["goodput_per_s"], quiet["goodput_per_s"])
    gas = _ratio(result["gas_per_settlement_reports"], quiet["gas_per_settlement_reports"])
    console.print(
        f"[bold]--hog[/]: goodput {_or_na(result['goodput_per_s'])}/s vs quiet "
        f"{_or_na(quiet['goodput_per_s'])}/s = {_or_na(goodput)} (target >= 0.4); report gas "
        f"per settlement {_or_na(result['gas_per_settlement_reports'])} vs quiet "
        f"{_or_na(quiet['gas_per_settlement_reports'])} = {_or_na(gas)}x (target <= 1.2); "
        f"CPU s/settlement node/bank/anvil/driver {_cpu(result)} vs quiet {_cpu(quiet)}"
    )
    return {"core": core, **result, "goodput_of_quiet": goodput, "gas_of_quiet": gas}
