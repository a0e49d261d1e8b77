"""`dvpsim sweep GRID.toml`: a phase diagram of where the protocol stays safe and live.

A grid (``docs/SWEEP.md``) names a base scenario and axes: the committee size n, its f, the
threshold t, how many members are Byzantine and which coalition they form, network delay
and drop, and chain confirmations against a reorg's depth. Every cell, one point of the
product of the axes, runs S seeds in the simulated world with fast crypto (``Pool``
workers). A cell is *unsafe* when some seed breaks a check; every unsafe cell's first
failing seed is shrunk to its minimal counterexample (``dvpsim.explore``), a scenario file
the cell links to, which real crypto must confirm.

Each cell is held to the theory (``Theory``), necessary conditions for each kind of
failure: n >= 3f+1; conflicting certificates need b >= 2t - n Byzantine signers (two
quorums of t intersect in 2t - n members); a false fact can be certified only when the
liars reach f+1 (a fact counts once f+1 members observed it); liveness needs t <= n - b
when the b faulty members do not sign, and 2f+1 <= n - b (a round's leader waits for 2f+1
observations); a reorg can undo a lock that was acted on only when it is deeper than the
confirmations. A violation outside what the theory allows is reported as such.

Outputs in the out folder: ``cells.csv`` (one row per cell), ``runs.csv`` (one row per
seed), ``phase-diagram.png``, ``index.html`` and ``counterexamples/``. This module reads
the grid and builds scenarios with ``dataclasses.replace``; it never edits a scenario file.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import math
import os
import re
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scenarios.checks import CHECK_NAMES
from scenarios.schema import (
    SCENARIO_BEHAVIOURS,
    Byzantine,
    Committee,
    Fault,
    Scenario,
    ScenarioError,
    _Reader,
    load,
    read_toml,
)

if TYPE_CHECKING:
    from dvpsim.pool import Pool

__all__ = [
    "Cell",
    "Grid",
    "GridError",
    "Sweep",
    "Theory",
    "cell_scenario",
    "load_grid",
    "main",
    "run_sweep",
]

EXIT_OUTSIDE_THEORY = 1
EXIT_USAGE = 2

#: Behaviours whose members send no usable share: they count against liveness.
NON_SIGNING = ("silent", "withhold-shares", "invalid-shares")
#: Behaviours that tell other members facts that did not happen.
LYING = ("lie",)
#: Checks whose failure means value moved wrongly (drawn as "atomicity broken").
VALUE_CHECKS = ("atomicity", "conservation", "exactly-once", "validity")
#: One letter per check in the diagram's cells.
LETTERS = {
    "atomicity": "A",
    "conservation": "S",
    "exactly-once": "X",
    "no-conflicting-certificates": "C",
    "validity": "V",
    "liveness": "L",
}
#: Cell outcomes, worst first, with their colours in the diagram and the page.
OUTCOMES = {
    "conflicting": ("#7b3294", "conflicting certificates"),
    "atomicity": ("#d7191c", "atomicity or validity broken"),
    "liveness": ("#fdae61", "liveness lost (safe)"),
    "unknown": ("#bababa", "unknown verdicts"),
    "ok": ("#1a9641", "safe and live"),
}


class GridError(ScenarioError):
    """A grid file is invalid; ``str(e)`` is one line: file, key, problem, fix."""


@dataclass(frozen=True)
class Coalition:
    """One ``[[coalitions]]`` table: what the Byzantine members of a cell run, and the base
    scenario of its cells when it needs one of its own (an equivocation needs a slow bank);
    the grid's ``settlements`` and ``time_limit`` apply only to the grid's base."""

    name: str
    behaviours: tuple[str, ...]
    lie: str = "claim-payment"
    base: Path | None = None


@dataclass(frozen=True)
class Grid:
    path: Path
    name: str
    base: Path
    seeds: int
    n: tuple[int, ...]
    f: tuple[str, ...]  # expressions in n ("max" = floor((n-1)/3))
    byzantine: tuple[str, ...]  # expressions in n and f, or one "LO..HI" range
    thresholds: tuple[str, ...]  # expressions in n and f, "default" = floor((n+f)/2)+1
    coalitions: tuple[Coalition, ...]
    # An axis left out () keeps the base's faults of its kind; one given replaces them.
    delay_ms: tuple[float, ...] = ()
    jitter_ms: float = 0.0
    drop: tuple[float, ...] = ()
    network_window: float = 10.0
    confirmations: tuple[int, ...] = ()  # () keeps the base's
    reorg_depth: tuple[int, ...] = ()
    reorg_at: float = 5.0
    block_time: float = -1.0  # < 0 keeps the base's
    settlements: int = 0  # 0 keeps the base's
    time_limit: float = 0.0  # 0 keeps the base's
    unsafe_allow_low_n: bool = False


@dataclass(frozen=True, order=True)
class Cell:
    """One point of the grid. ``coalition`` is "" when no member is Byzantine."""

    n: int
    f: int
    t: int
    byzantine: int
    coalition: str
    delay_ms: float = 0.0
    drop: float = 0.0
    confirmations: int = 0
    reorg_depth: int = 0

    @property
    def id(self) -> str:
        who = f"-{self.coalition}" if self.coalition else ""
        net = f"-d{self.delay_ms:g}-p{self.drop:g}" if self.delay_ms or self.drop else ""
        chain = (
            f"-c{self.confirmations}-r{self.reorg_depth}"
            if self.reorg_depth or self.confirmations
            else ""
        )
        return f"n{self.n}-f{self.f}-t{self.t}-b{self.byzantine}{who}{net}{chain}"

    @property
    def panel(self) -> tuple[int, int]:
        return (self.n, self.f)

    @property
    def row(self) -> tuple[float, float, int, int]:
        return (self.delay_ms, self.drop, self.confirmations, self.reorg_depth)


@dataclass(frozen=True)
class Theory:
    """What the theory allows in a cell: each a necessary condition for its failure."""

    resilient: bool  # n >= 3f+1
    conflicting_possible: bool  # b >= 2t - n
    false_fact_possible: bool  # liars >= f+1
    live_expected: bool  # t <= n - non-signing and 2f+1 <= n - non-signing
    reorg_possible: bool  # reorg depth > confirmations

    @classmethod
    def of(cls, cell: Cell, coalition: Coalition | None) -> Theory:
        behaviours = coalition.behaviours if coalition else ()
        b = cell.byzantine
        liars = b if any(x in LYING for x in behaviours) else 0
        mute = b if any(x in NON_SIGNING for x in behaviours) else 0
        return cls(
            resilient=cell.n >= 3 * cell.f + 1,
            conflicting_possible=b >= 2 * cell.t - cell.n,
            false_fact_possible=liars >= cell.f + 1,
            live_expected=cell.t <= cell.n - mute and 2 * cell.f + 1 <= cell.n - mute,
            reorg_possible=cell.reorg_depth > cell.confirmations,
        )

    def allows(self, check: str) -> bool:
        """May ``check`` fail in this cell without contradicting the theory?"""
        value_wrong = self.false_fact_possible or self.reorg_possible or not self.resilient
        if check == "no-conflicting-certificates":
            return self.conflicting_possible or not self.resilient
        if check == "liveness":
            # A stalled run, or a wrong fact that leaves a leg waiting for ever.
            return not self.live_expected or value_wrong or self.conflicting_possible
        return value_wrong or self.conflicting_possible


@dataclass
class CellResult:
    cell: Cell
    seeds: list[int] = field(default_factory=list)
    invalid: dict[str, int] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    first_failing_seed: int | None = None
    violated: tuple[str, ...] = ()  # the checks the first failing seed broke
    counterexample: str = ""  # path relative to the out folder
    confirmed_real: bool | None = None

    @property
    def outcome(self) -> str:
        if self.invalid.get("no-conflicting-certificates"):
            return "conflicting"
        if any(self.invalid.get(c) for c in VALUE_CHECKS):
            return "atomicity"
        if self.invalid.get("liveness"):
            return "liveness"
        if any(self.unknown.values()):
            return "unknown"
        return "ok"

    @property
    def unsafe(self) -> bool:
        return any(self.invalid.values())

    def label(self) -> str:
        letters = "".join(LETTERS[c] for c in CHECK_NAMES if self.invalid.get(c))
        failing = max(self.invalid.values(), default=0)
        return f"{letters or 'ok'}\n{failing}/{len(self.seeds)}" if letters else "ok"


@dataclass
class Sweep:
    grid: Grid
    cells: list[CellResult]
    coalitions: dict[str, Coalition]
    out_dir: Path
    wall_s: float = 0.0
    runs: list[dict[str, Any]] = field(default_factory=list)

    def theory(self, cell: Cell) -> Theory:
        return Theory.of(cell, self.coalitions.get(cell.coalition))

    def outside_theory(self, result: CellResult) -> list[str]:
        theory = self.theory(result.cell)
        return [c for c in CHECK_NAMES if result.invalid.get(c) and not theory.allows(c)]

    @property
    def ok(self) -> bool:
        """Every violation inside the theory, every unsafe cell confirmed with real crypto."""
        return all(
            not self.outside_theory(r) and (not r.unsafe or r.confirmed_real) for r in self.cells
        )


# --- the grid file ------------------------------------------------------------------

_GRID_KEYS: dict[str, type] = {
    "name": str,
    "base": str,
    "seeds": int,
    "n": list,
    "f": list,
    "byzantine": object,
    "thresholds": list,
    "coalitions": list,
    "delay_ms": list,
    "jitter_ms": float,
    "drop": list,
    "network_window": float,
    "confirmations": list,
    "reorg_depth": list,
    "reorg_at": float,
    "block_time": float,
    "settlements": int,
    "time_limit": float,
    "unsafe_allow_low_n": bool,
}
_TERM = re.compile(r"^(\d*)(n|f|ceil\(n/2\)|floor\(n/2\)|max|default)?$")
_RANGE = re.compile(r"^([^.]+)\.\.([^.]+)$")


def evaluate(expression: str, n: int, f: int | None = None) -> int:
    """An axis value: a sum of terms (``3``, ``n``, ``2f``, ``ceil(n/2)``, ``floor(n/2)``,
    ``max`` = floor((n-1)/3), ``default`` = floor((n+f)/2)+1) joined by + and -; ValueError
    with the reason."""
    text = expression.replace(" ", "")
    if not text:
        raise ValueError("empty expression")
    total = 0
    for sign, term in re.findall(r"([+-]?)([^+-]+)", text):
        match = _TERM.match(term)
        if match is None or not (match.group(1) or match.group(2)):
            raise ValueError(f"{term!r} is not a number, n, f, ceil(n/2), max or default")
        factor = int(match.group(1)) if match.group(1) else 1
        name = match.group(2)
        if name in ("f", "default") and f is None:
            raise ValueError(f"{term!r} needs f, which this axis is used to choose")
        value = {
            None: 1,
            "n": n,
            "f": f,
            "ceil(n/2)": math.ceil(n / 2),
            "floor(n/2)": n // 2,
            "max": (n - 1) // 3,
            "default": (n + (f or 0)) // 2 + 1,
        }[name]
        assert value is not None
        total += (-1 if sign == "-" else 1) * factor * value
    if re.sub(r"[+-]?[^+-]+", "", text):
        raise ValueError(f"{expression!r} is not a sum of terms")
    return total


class _GridReader(_Reader):
    """The scenario schema's reader, its one-line errors as :class:`GridError`."""

    def fail(self, key: str, problem: str, fix: str) -> GridError:
        return GridError(f"{self.path}: {key}: {problem}: {fix}")

    def items(
        self, key: str, raw: Any, kind: type, minimum: float | None = None
    ) -> tuple[Any, ...]:
        if not isinstance(raw, list) or not raw:
            raise self.fail(key, f"{raw!r} is not a non-empty array", f"write {key} = [...]")
        values = tuple(self.value(key, item, kind) for item in raw)
        for value in values:
            if minimum is not None and value < minimum:
                raise self.fail(key, f"{value} is below {minimum:g}", f"give values >= {minimum:g}")
        if len(set(values)) != len(values):
            raise self.fail(key, "a value is listed twice", "list each value once")
        return values

    def expressions(self, key: str, raw: Any) -> tuple[str, ...]:
        if not isinstance(raw, list) or not raw:
            raise self.fail(key, f"{raw!r} is not a non-empty array", f"write {key} = [...]")
        return tuple(
            str(self.value(key, item, str) if isinstance(item, str) else self.value(key, item, int))
            for item in raw
        )


def load_grid(path: str | Path) -> Grid:
    """Read and validate a grid file and every cell it makes; raises :class:`GridError`."""
    path = Path(path)
    raw = read_toml(path, "grid", "see scenarios/grids/", GridError)
    reader = _GridReader(path)
    for key in raw:
        if key not in _GRID_KEYS:
            raise reader.fail(
                key, "unknown key", f"remove it or use one of {', '.join(sorted(_GRID_KEYS))}"
            )
    for key in ("base", "n", "thresholds", "byzantine"):
        if key not in raw:
            raise reader.fail(key, "missing", f"add {key} (docs/SWEEP.md)")
    kwargs: dict[str, Any] = {"path": path}
    kwargs["name"] = reader.value("name", raw.get("name", path.stem), str)
    base = Path(os.path.normpath(path.parent / reader.value("base", raw["base"], str)))
    kwargs["base"] = base
    kwargs["seeds"] = reader.value("seeds", raw.get("seeds", 5), int)
    if kwargs["seeds"] < 1:
        raise reader.fail("seeds", f"{kwargs['seeds']} seeds", "give at least 1")
    kwargs["n"] = reader.items("n", raw["n"], int, minimum=1)
    kwargs["f"] = reader.expressions("f", raw.get("f", ["max"]))
    kwargs["thresholds"] = reader.expressions("thresholds", raw["thresholds"])
    byzantine = raw["byzantine"]
    if isinstance(byzantine, str):
        kwargs["byzantine"] = (byzantine,)
    else:
        kwargs["byzantine"] = reader.expressions("byzantine", byzantine)
    for key, kind, minimum in (
        ("delay_ms", float, 0.0),
        ("drop", float, 0.0),
        ("confirmations", int, 0),
        ("reorg_depth", int, 0),
    ):
        if key in raw:
            kwargs[key] = reader.items(key, raw[key], kind, minimum)
    if any(p > 1 for p in kwargs.get("drop", ())):
        raise reader.fail("drop", "a probability above 1", "give values in 0..1")
    for key in ("jitter_ms", "network_window", "reorg_at", "block_time", "time_limit"):
        if key in raw:
            kwargs[key] = reader.value(key, raw[key], float)
            if kwargs[key] < 0:
                raise reader.fail(key, f"{kwargs[key]} is negative", "give a value >= 0")
    if "settlements" in raw:
        kwargs["settlements"] = reader.value("settlements", raw["settlements"], int)
        if kwargs["settlements"] < 1:
            raise reader.fail("settlements", f"{kwargs['settlements']}", "give at least 1")
    kwargs["unsafe_allow_low_n"] = reader.value(
        "unsafe_allow_low_n", raw.get("unsafe_allow_low_n", False), bool
    )
    kwargs["coalitions"] = _coalitions(reader, raw.get("coalitions", []))
    if kwargs.get("network_window", 10.0) <= 0 and any(kwargs.get("delay_ms", ())) | any(
        kwargs.get("drop", (0,))
    ):
        raise reader.fail(
            "network_window", "0 s", "network faults must heal: give a positive window"
        )
    grid = Grid(**kwargs)
    _load_base(grid)
    cells(grid)  # every cell must be possible
    return grid


def _coalitions(reader: _GridReader, raw: Any) -> tuple[Coalition, ...]:
    if not isinstance(raw, list):
        raise reader.fail("coalitions", "not an array of tables", "write [[coalitions]] tables")
    out: list[Coalition] = []
    for i, item in enumerate(raw):
        key = f"coalitions[{i}]"
        if not isinstance(item, dict):
            raise reader.fail(key, "not a table", "write [[coalitions]] tables")
        unknown = set(item) - {"name", "behaviours", "lie", "base"}
        if unknown:
            raise reader.fail(
                f"{key}.{sorted(unknown)[0]}", "unknown key", "use name, behaviours, lie, base"
            )
        if "name" not in item or "behaviours" not in item:
            raise reader.fail(
                key, "needs name and behaviours", 'e.g. name = "liars", behaviours = ["lie"]'
            )
        name = reader.value(f"{key}.name", item["name"], str)
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
            raise reader.fail(f"{key}.name", f"{name!r}", "use lower-case letters, digits and -")
        behaviours = tuple(
            reader.value(f"{key}.behaviours", b, str) for b in item["behaviours"] or [None]
        )
        for behaviour in behaviours:
            if behaviour not in SCENARIO_BEHAVIOURS:
                raise reader.fail(
                    f"{key}.behaviours",
                    f"unknown behaviour {behaviour!r}",
                    f"use {', '.join(SCENARIO_BEHAVIOURS)}",
                )
        lie = reader.value(f"{key}.lie", item.get("lie", "claim-payment"), str)
        base = None
        if "base" in item:
            base = Path(
                os.path.normpath(
                    reader.path.parent / reader.value(f"{key}.base", item["base"], str)
                )
            )
        out.append(Coalition(name, behaviours, lie, base))
    if len({c.name for c in out}) != len(out):
        raise reader.fail("coalitions", "two coalitions share a name", "name each once")
    return tuple(out)


def _values(grid: Grid, key: str, expressions: tuple[str, ...], n: int, f: int | None) -> list[int]:
    """An axis's values for one n (and f): expressions, or one ``LO..HI`` range."""
    out: list[int] = []
    for expression in expressions:
        try:
            bounds = _RANGE.match(expression.replace(" ", ""))
            if bounds:
                lo, hi = (evaluate(x, n, f) for x in bounds.groups())
                out.extend(range(lo, hi + 1))
            else:
                out.append(evaluate(expression, n, f))
        except ValueError as exc:
            raise GridError(f"{grid.path}: {key}: {exc}: see docs/SWEEP.md for the terms") from None
    return sorted(set(out))


def cells(grid: Grid) -> list[Cell]:
    """Every cell of the grid, in order; GridError for an impossible one."""
    out: list[Cell] = []
    where = f"{grid.path}"
    own_base = [c.name for c in grid.coalitions if c.base is not None]
    # the grid's base has cells only when a coalition runs on it (or there is none)
    shared = [""] if len(own_base) < len(grid.coalitions) or not grid.coalitions else []
    for n in grid.n:
        for f in _values(grid, "f", grid.f, n, None):
            if f < 0:
                raise GridError(f"{where}: f: f = {f} at n = {n} is negative: give f >= 0")
            if n < 3 * f + 1 and not grid.unsafe_allow_low_n:
                raise GridError(
                    f"{where}: f: the cell n = {n}, f = {f} is impossible (n >= 3f+1): "
                    "lower f, or set unsafe_allow_low_n = true to study it"
                )
            for t in _values(grid, "thresholds", grid.thresholds, n, f):
                if not f + 1 <= t <= n:
                    raise GridError(
                        f"{where}: thresholds: t = {t} at n = {n}, f = {f} is outside "
                        f"f+1..n = {f + 1}..{n}: give thresholds within it"
                    )
                for b in _values(grid, "byzantine", grid.byzantine, n, f):
                    if not 0 <= b <= n:
                        raise GridError(
                            f"{where}: byzantine: {b} Byzantine members at n = {n} is "
                            f"impossible: give 0..n"
                        )
                    if b and not grid.coalitions:
                        raise GridError(
                            f"{where}: coalitions: {b} Byzantine members but no coalition: "
                            "add a [[coalitions]] table"
                        )
                    # Cells without Byzantine members are shared by the coalitions that
                    # run on the grid's base; one with a base of its own has its own.
                    for coalition in (
                        [c.name for c in grid.coalitions] if b else [*shared, *own_base]
                    ):
                        base = _load_base(grid, coalition)
                        confirmations_axis = grid.confirmations or (
                            base.chains[0].confirmations if base.chains else 0,
                        )
                        # without the axis, a cell's depth is the base's deepest reorg
                        depth_axis = grid.reorg_depth or (_base_reorg(base),)
                        for delay in grid.delay_ms or (0.0,):
                            for drop in grid.drop or (0.0,):
                                for depth in depth_axis:
                                    for confirmations in confirmations_axis:
                                        out.append(
                                            Cell(
                                                n,
                                                f,
                                                t,
                                                b,
                                                coalition,
                                                delay,
                                                drop,
                                                confirmations,
                                                depth,
                                            )
                                        )
    return out


def _own_base(grid: Grid, coalition: str) -> Path | None:
    """The base a coalition's cells run on when it names one."""
    return next((c.base for c in grid.coalitions if c.name == coalition), None)


def _base_reorg(base: Scenario) -> int:
    """The deepest reorg of chain A among the base's own faults (0: none)."""
    return max(
        (int(f.value) for f in base.faults if f.kind == "reorg" and f.leg in ("", "A")), default=0
    )


def _load_base(grid: Grid, coalition: str = "") -> Scenario:
    """The base scenario of a coalition's cells ("": the grid's own)."""
    own = _own_base(grid, coalition)
    try:
        base = load(own or grid.base)
    except ScenarioError as exc:
        raise GridError(f"{grid.path}: base: {exc}") from None
    if own is None and grid.settlements > base.settlements.count:
        raise GridError(
            f"{grid.path}: settlements: {grid.settlements} is more than the base's "
            f"{base.settlements.count}: give at most that"
        )
    if any(grid.reorg_depth) and not base.chains:
        raise GridError(f"{grid.path}: reorg_depth: the base has no chain: pick another base")
    return base


# --- cell scenarios and runs ----------------------------------------------------------


def cell_scenario(grid: Grid, base: Scenario, cell: Cell, seed: int) -> Scenario:
    """The base scenario with the cell's committee, coalition (the last b members),
    network faults, confirmations, reorg and seed."""
    safe = (cell.n + cell.f) // 2 + 1
    committee = Committee(
        n=cell.n,
        f=cell.f,
        threshold=0 if cell.t == safe else cell.t,
        unsafe_allow_low_threshold=cell.t < safe,
    )
    byzantine: tuple[Byzantine, ...] = ()
    if cell.byzantine:
        coalition = next(c for c in grid.coalitions if c.name == cell.coalition)
        byzantine = (
            Byzantine(
                nodes=tuple(range(cell.n - cell.byzantine, cell.n)),
                behaviours=coalition.behaviours,
                lie=coalition.lie,
            ),
        )
    # an axis the grid gives replaces the base's faults of its kind
    replaced = {
        kind
        for kind, axis in (
            ("delay", grid.delay_ms),
            ("drop", grid.drop),
            ("reorg", grid.reorg_depth),
        )
        if axis
    }
    faults = [f for f in base.faults if f.kind not in replaced]
    if cell.delay_ms:
        faults.append(
            Fault(
                "delay",
                0.0,
                duration=grid.network_window,
                value=cell.delay_ms,
                jitter=grid.jitter_ms,
            )
        )
    if cell.drop:
        faults.append(Fault("drop", 0.0, duration=grid.network_window, value=cell.drop))
    if cell.reorg_depth and grid.reorg_depth:
        faults.append(Fault("reorg", grid.reorg_at, leg="A", value=float(cell.reorg_depth)))
    chains = base.chains
    if chains:
        first = chains[0]
        first = dataclasses.replace(
            first,
            confirmations=cell.confirmations,
            block_time=first.block_time if grid.block_time < 0 else grid.block_time,
        )
        chains = (first, *chains[1:])
    settlements = base.settlements
    own_base = _own_base(grid, cell.coalition) is not None
    if grid.settlements and not own_base:
        count = grid.settlements
        settlements = dataclasses.replace(
            settlements,
            count=count,
            fail=tuple(
                dataclasses.replace(x, count=max(1, x.count * count // settlements.count))
                for x in settlements.fail
            ),
        )
    return dataclasses.replace(
        base,
        name=f"{grid.name}-{cell.id}",
        seed=seed,
        committee=committee,
        byzantine=byzantine,
        faults=tuple(faults),
        chains=chains,
        settlements=settlements,
        time_limit=base.time_limit if own_base else grid.time_limit or base.time_limit,
        expect=(),
    )


@dataclass(frozen=True)
class Job:
    """One seed of one cell, for a worker."""

    cell: Cell
    seed: int
    scenario: Scenario
    crypto: str = "fast"


def run_job(job: Job) -> tuple[dict[str, str], float]:
    """Run one seed in the simulated world: each check's status, and the wall time."""
    from scenarios.sim.run import SimRun

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dvpsim-sweep-") as tmp:
        report = SimRun(job.scenario, Path(tmp), crypto=job.crypto).run()
    statuses = {name: str(v["status"]) for name, v in report.summary["checks"].items()}
    return statuses, time.perf_counter() - started


@dataclass(frozen=True)
class Unsafe:
    """An unsafe cell's first failing seed and the checks it broke."""

    cell: Cell
    scenario: Scenario
    violated: tuple[str, ...]


@dataclass(frozen=True)
class Family:
    """Unsafe cells that differ only in their Byzantine members (fewest first), for one
    worker: shrinking the cell with b members passes through the cell with b - 1, so the
    runs one shrink made serve the next (``_Remembered``)."""

    cells: tuple[Unsafe, ...]
    out_dir: Path


class _Remembered:
    """An explore runner that runs each distinct scenario once (names aside)."""

    def __init__(self, crypto: str) -> None:
        self.crypto = crypto
        self.seen: dict[str, tuple[str, ...]] = {}

    def __call__(self, scenarios: list[Scenario]) -> list[tuple[str, ...]]:
        from dvpsim.explore import run_checks
        from scenarios.dump import dumps

        out = []
        for scenario in scenarios:
            key = dumps(dataclasses.replace(scenario, name=""))
            if key not in self.seen:
                self.seen[key] = run_checks((scenario, self.crypto))
            out.append(self.seen[key])
        return out


def confirm_family(family: Family) -> list[tuple[Cell, str, bool]]:
    """Each unsafe cell's minimal counterexample (``dvpsim.explore``): its failing seed
    shrunk with fast crypto, then run with real crypto, which must break the same checks;
    written with those checks as its expectation. (cell, path, confirmed with real crypto)."""
    from dvpsim.explore import minimal_counterexample

    runner = _Remembered("fast")
    out = []
    for unsafe in family.cells:
        path = family.out_dir / f"{unsafe.scenario.name}.toml"
        found = minimal_counterexample(
            unsafe.scenario, path, crypto="fast", run=runner, violated=unsafe.violated
        )
        out.append((unsafe.cell, str(path), bool(found and found.confirmed_real)))
    return out


#: ``progress(stage, done, total, detail)``: a stage's count went up.
Progress = Callable[[str, int, int, str], None]


def run_sweep(
    grid: Grid,
    out_dir: Path,
    *,
    pool: Pool[Any, Any] | None = None,
    seeds: int | None = None,
    progress: Progress | None = None,
) -> Sweep:
    """Run every cell's seeds, then confirm and shrink each unsafe cell; write the outputs.
    ``pool``: a ``dvpsim.pool.Pool`` (default: local workers, one per core)."""
    if pool is None:
        from dvpsim.pool import Pool

        with Pool[Any, Any]() as local:
            return run_sweep(grid, out_dir, pool=local, seeds=seeds, progress=progress)
    started = time.perf_counter()
    bases = {c: _load_base(grid, c) for c in ["", *(c.name for c in grid.coalitions)]}
    count = seeds or grid.seeds
    results = {cell: CellResult(cell) for cell in cells(grid)}
    work = []
    for cell in results:
        base = bases[cell.coalition]
        for k in range(count):
            work.append(Job(cell, base.seed + k, cell_scenario(grid, base, cell, base.seed + k)))
    sweep = Sweep(grid, [], {c.name: c for c in grid.coalitions}, out_dir)
    cells_done = 0
    for done, (job, (statuses, wall)) in enumerate(pool.imap_unordered(run_job, work), 1):
        result = results[job.cell]
        result.seeds.append(job.seed)
        result.wall_s += wall
        for check, status in statuses.items():
            if status == "invalid":
                result.invalid[check] = result.invalid.get(check, 0) + 1
            elif status == "unknown":
                result.unknown[check] = result.unknown.get(check, 0) + 1
        broken = tuple(c for c in CHECK_NAMES if statuses.get(c) == "invalid")
        if broken and (result.first_failing_seed is None or job.seed < result.first_failing_seed):
            result.first_failing_seed, result.violated = job.seed, broken
        sweep.runs.append(
            {"cell": job.cell.id, "seed": job.seed, "wall_s": round(wall, 3), **statuses}
        )
        cells_done += len(result.seeds) == count
        if progress:
            progress("runs", done, len(work), f"{cells_done}/{len(results)} cells")
    families: dict[tuple[Any, ...], list[Unsafe]] = {}
    for r in sorted(results.values(), key=lambda r: r.cell):
        if r.unsafe:
            cell = r.cell
            scenario = cell_scenario(grid, bases[cell.coalition], cell, r.first_failing_seed or 0)
            key = (cell.n, cell.f, cell.t, cell.coalition, cell.row)
            families.setdefault(key, []).append(Unsafe(cell, scenario, r.violated))
    work_families = [
        Family(tuple(sorted(f, key=lambda u: u.cell.byzantine)), out_dir / "counterexamples")
        for f in families.values()
    ]
    total = sum(len(f.cells) for f in work_families)
    confirmed = 0
    for _, found in pool.imap_unordered(confirm_family, work_families):
        for cell, path, real in found:
            result = results[cell]
            result.counterexample = str(Path(path).relative_to(out_dir))
            result.confirmed_real = real
            confirmed += 1
        if progress:
            progress("unsafe cells shrunk and confirmed", confirmed, total, "")
    sweep.cells = sorted(results.values(), key=lambda r: r.cell)
    sweep.runs.sort(key=lambda r: (r["cell"], r["seed"]))
    sweep.wall_s = time.perf_counter() - started
    write_outputs(sweep)
    return sweep


# --- outputs -----------------------------------------------------------------------

_THEORY_COLUMNS = (
    "resilient",
    "conflicting_possible",
    "false_fact_possible",
    "live_expected",
    "reorg_possible",
)


def cell_rows(sweep: Sweep) -> list[dict[str, Any]]:
    rows = []
    for result in sweep.cells:
        cell = result.cell
        coalition = sweep.coalitions.get(cell.coalition)
        theory = sweep.theory(cell)
        row: dict[str, Any] = {
            "cell": cell.id,
            "n": cell.n,
            "f": cell.f,
            "t": cell.t,
            "byzantine": cell.byzantine,
            "coalition": cell.coalition,
            "behaviours": " ".join(coalition.behaviours) if coalition else "",
            "delay_ms": cell.delay_ms,
            "drop": cell.drop,
            "confirmations": cell.confirmations,
            "reorg_depth": cell.reorg_depth,
            "seeds": len(result.seeds),
            "outcome": result.outcome,
        }
        for check in CHECK_NAMES:
            row[f"{check}_invalid"] = result.invalid.get(check, 0)
            row[f"{check}_unknown"] = result.unknown.get(check, 0)
        for name in _THEORY_COLUMNS:
            row[name] = getattr(theory, name)
        row["outside_theory"] = " ".join(sweep.outside_theory(result))
        row["counterexample"] = result.counterexample
        row["confirmed_real"] = "" if result.confirmed_real is None else result.confirmed_real
        row["wall_s"] = round(result.wall_s, 3)
        rows.append(row)
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["cell"])
        writer.writeheader()
        writer.writerows(rows)


def write_outputs(sweep: Sweep) -> None:
    sweep.out_dir.mkdir(parents=True, exist_ok=True)
    rows = cell_rows(sweep)
    _write_csv(sweep.out_dir / "cells.csv", rows)
    _write_csv(sweep.out_dir / "runs.csv", sweep.runs)
    draw(sweep, sweep.out_dir / "phase-diagram.png")
    (sweep.out_dir / "index.html").write_text(page(sweep, rows))
    (sweep.out_dir / "sweep.json").write_text(
        json.dumps(
            {
                "grid": str(sweep.grid.path),
                "cells": len(sweep.cells),
                "runs": len(sweep.runs),
                "unsafe_cells": sum(r.unsafe for r in sweep.cells),
                "confirmed_real": sum(bool(r.confirmed_real) for r in sweep.cells),
                "outside_theory": [r.cell.id for r in sweep.cells if sweep.outside_theory(r)],
                "wall_s": round(sweep.wall_s, 1),
                "ok": sweep.ok,
            },
            indent=2,
        )
        + "\n"
    )


def _row_title(sweep: Sweep, coalition: str, row: tuple[float, float, int, int]) -> str:
    c = sweep.coalitions.get(coalition)
    who = f"{coalition} ({', '.join(c.behaviours)})" if c else "no Byzantine members"
    if c and c.base:
        who += f" on {c.base.stem}"
    delay, drop, confirmations, depth = row
    parts = [who]
    if delay:
        parts.append(f"delay {delay:g} ms")
    if drop:
        parts.append(f"drop {drop:g}")
    if depth:
        # the reorg line: deeper than the confirmations, it can undo a lock acted on
        relation = ">" if depth > confirmations else "≤"
        parts.append(f"reorg {depth} {relation} {confirmations} confirmations")
    elif confirmations:
        parts.append(f"{confirmations} confirmations")
    return "; ".join(parts)


#: The theory lines: (label, colour, line style, relevant behaviours or None for all, the
#: side of the line where the condition holds, as a predicate of (n, f, b, t)).
THEORY_LINES: tuple[
    tuple[str, str, Any, tuple[str, ...] | None, Callable[[int, int, int, int], bool]], ...
] = (
    ("n ≥ 3b+1: b members tolerated (left)", "black", "-", None, lambda n, f, b, t: n >= 3 * b + 1),
    (
        "liars ≥ f+1: a false fact can be certified (right)",
        "#d7191c",
        ":",
        LYING,
        lambda n, f, b, t: b >= f + 1,
    ),
    (
        "b ≥ 2t − n: conflicting certificates possible (below)",
        "#7b3294",
        "--",
        None,
        lambda n, f, b, t: b >= 2 * t - n,
    ),
    (
        "t ≤ n − b: enough signers for liveness (below)",
        "#e66101",
        "-.",
        NON_SIGNING,
        lambda n, f, b, t: t <= n - b,
    ),
    (
        "2f+1 ≤ n − b: a round's observations (left)",
        "#0571b0",
        (0, (1, 2)),
        NON_SIGNING,
        lambda n, f, b, t: 2 * f + 1 <= n - b,
    ),
)


def _boundary(
    ax: Any,
    bs: list[int],
    ts: list[int],
    line: tuple[int, int, Callable[[int, int, int, int], bool]],
    offset: float,
    **style: Any,
) -> None:
    """Draw the staircase between the cells where the line's condition ``holds(n, f, b, t)``
    is true and where it is not."""
    n, f, condition = line

    def holds(b: int, t: int) -> bool:
        return condition(n, f, b, t)

    for i, b in enumerate(bs):
        for j, t in enumerate(ts):
            here = holds(b, t)
            if i + 1 < len(bs) and holds(bs[i + 1], t) != here:
                x = i + 0.5 + offset
                ax.plot([x, x], [j - 0.5, j + 0.5], **style)
            if j + 1 < len(ts) and holds(b, ts[j + 1]) != here:
                y = j + 0.5 + offset
                ax.plot([i - 0.5, i + 0.5], [y, y], **style)


def draw(sweep: Sweep, path: Path) -> None:
    """The phase diagram: one row of panels per coalition (and network or chain setting),
    one column per (n, f); in each panel the Byzantine members b across, the threshold t
    up, a square per cell coloured by its outcome, and the theory lines between the cells
    on either side of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    panels = sorted({r.cell.panel for r in sweep.cells})
    settings = sorted({r.cell.row for r in sweep.cells})
    names = [c.name for c in sweep.grid.coalitions] or [""]
    rows = [(name, setting) for name in names for setting in settings]
    by_key: dict[tuple[Any, ...], CellResult] = {}
    for result in sweep.cells:
        cell = result.cell
        # a cell without Byzantine members belongs to the row of every coalition on its base
        shared = [c.name for c in sweep.grid.coalitions if c.base is None] or [""]
        for name in [cell.coalition] if cell.coalition else shared:
            by_key[(name, cell.row, cell.panel, cell.byzantine, cell.t)] = result
    # A row of panels per coalition and setting while there are several (n, f); with one or
    # two, the panels wrap into up to four columns, each titled with its row.
    by_row = len(panels) >= 3
    ncols = len(panels) if by_row else min(len(rows) * len(panels), 4)
    nrows = math.ceil(len(rows) * len(panels) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.3 * ncols + 0.4, 3.0 * nrows + 1.5), squeeze=False
    )
    for ax in axes.flat[len(rows) * len(panels) :]:
        ax.set_axis_off()
    for i, (coalition, setting) in enumerate(rows):
        behaviours = sweep.coalitions[coalition].behaviours if coalition else ()
        for j, (n, f) in enumerate(panels):
            ax = axes.flat[i * len(panels) + j]
            here = {k[3:]: r for k, r in by_key.items() if k[:3] == (coalition, setting, (n, f))}
            if not here:
                ax.set_axis_off()
                continue
            bs = sorted({b for b, _ in here})
            ts = sorted({t for _, t in here})
            for (b, t), result in here.items():
                x, y = bs.index(b), ts.index(t)
                ax.add_patch(
                    Rectangle((x - 0.46, y - 0.46), 0.92, 0.92, color=OUTCOMES[result.outcome][0])
                )
                dark = result.outcome in ("conflicting", "atomicity", "ok")
                ax.text(
                    x,
                    y,
                    result.label(),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                    zorder=3,
                )
            for k, (_, colour, style, relevant, holds) in enumerate(THEORY_LINES):
                strong = relevant is None or any(x in relevant for x in behaviours)
                _boundary(
                    ax,
                    bs,
                    ts,
                    (n, f, holds),
                    0.05 * (k - 2),
                    color=colour,
                    ls=style,
                    lw=2.4 if strong else 1.0,
                    alpha=1.0 if strong else 0.35,
                    zorder=2,
                )
            ax.set_xlim(-0.5, len(bs) - 0.5)
            ax.set_ylim(-0.5, len(ts) - 0.5)
            ax.set_xticks(range(len(bs)), [str(b) for b in bs])
            ax.set_yticks(range(len(ts)), [str(t) for t in ts])
            ax.set_xlabel("Byzantine members b", fontsize=8)
            ax.set_ylabel("threshold t", fontsize=8)
            if not by_row:
                heading = f"{_row_title(sweep, coalition, setting)}: n = {n}, f = {f}"
                ax.set_title("\n".join(textwrap.wrap(heading, 40)), fontsize=8)
                continue
            ax.set_title(f"n = {n}, f = {f}", fontsize=9)
            if j == 0:
                title = ax.annotate(
                    _row_title(sweep, coalition, setting),
                    (0, 1.16),
                    xycoords="axes fraction",
                    fontsize=10,
                    fontweight="bold",
                )
                title.set_in_layout(False)  # a long row title must not squeeze the panels
    legend = [Patch(color=c, label=label) for c, label in OUTCOMES.values()] + [
        Line2D([], [], color=colour, ls=style, lw=2.0, label=label)
        for label, colour, style, _, _ in THEORY_LINES
    ]
    fig.legend(
        handles=legend,
        loc="lower center",
        ncol=min(5, max(2, ncols)),
        fontsize=8,
        frameon=False,
    )
    seeds = max((len(r.seeds) for r in sweep.cells), default=0)
    key = (
        "A atomicity, V validity, C conflicting certificates, L liveness, S conservation, "
        "X exactly-once: failing seeds / seeds; faint lines concern other coalitions"
    )
    fig.suptitle(
        f"dvpsim sweep {sweep.grid.name}: {len(sweep.cells)} cells x {seeds} seeds\n"
        + "\n".join(textwrap.wrap(key, int(28 * ncols + 12))),
        fontsize=9,
    )
    bottom = 0.9 / (3.0 * nrows + 1.5)
    fig.tight_layout(rect=(0, bottom, 1, 0.97), h_pad=2.5)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def page(sweep: Sweep, rows: list[dict[str, Any]]) -> str:
    """The HTML page: the diagram, the theory, and one table row per cell."""
    e = html.escape
    legend = "".join(
        f'<span class="key" style="background:{c}"></span>{e(label)} '
        for c, label in OUTCOMES.values()
    )
    head = [
        "cell",
        "coalition",
        "n",
        "f",
        "t",
        "b",
        "seeds",
        "outcome",
        "failing checks",
        "theory allows",
        "outside theory",
        "counterexample",
        "real crypto",
    ]
    body = []
    for result, row in zip(sweep.cells, rows, strict=True):
        theory = sweep.theory(result.cell)
        failing = ", ".join(f"{c} {k}/{len(result.seeds)}" for c, k in result.invalid.items() if k)
        allowed = ", ".join(c for c in CHECK_NAMES if theory.allows(c)) or "nothing"
        link = (
            f'<a href="{e(result.counterexample)}">{e(Path(result.counterexample).name)}</a>'
            if result.counterexample
            else ""
        )
        real = {None: "", True: "confirmed", False: "NOT confirmed"}[result.confirmed_real]
        color = OUTCOMES[result.outcome][0]
        cells_html = [
            e(result.cell.id),
            e(row["coalition"] or "-"),
            str(row["n"]),
            str(row["f"]),
            str(row["t"]),
            str(row["byzantine"]),
            str(row["seeds"]),
            f'<span class="key" style="background:{color}"></span>{e(result.outcome)}',
            e(failing),
            e(allowed),
            e(row["outside_theory"]),
            link,
            real,
        ]
        body.append(
            f'<tr id="{e(result.cell.id)}">'
            + "".join(f"<td>{c}</td>" for c in cells_html)
            + "</tr>"
        )
    unsafe = sum(r.unsafe for r in sweep.cells)
    confirmed = sum(bool(r.confirmed_real) for r in sweep.cells)
    outside = [r.cell.id for r in sweep.cells if sweep.outside_theory(r)]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dvpsim sweep {e(sweep.grid.name)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1400px; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 6px; text-align: left; }}
.key {{ display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em; vertical-align: middle; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>dvpsim sweep {e(sweep.grid.name)}</h1>
<p>Grid <code>{e(str(sweep.grid.path))}</code> on base <code>{e(str(sweep.grid.base))}</code>:
{len(sweep.cells)} cells, {len(sweep.runs)} simulated runs with fast crypto, {unsafe} unsafe cells,
{confirmed} of them confirmed with real crypto, each linked to its counterexample; {sweep.wall_s:.0f} s wall.
Violations outside the theory: {e(", ".join(outside)) if outside else "none"}.</p>
<p>{legend}</p>
<img src="phase-diagram.png" alt="phase diagram: Byzantine members across, threshold up, one panel per n and f">
<h2>The theory lines</h2>
<ul>
<li><b>n &ge; 3f+1</b>: the committee tolerates at most floor((n&minus;1)/3) faulty members.</li>
<li><b>Conflicting certificates</b> (COMMIT and ABORT for one settlement) need two quorums of t, which
share at least 2t &minus; n members: possible only when the Byzantine signers reach 2t &minus; n.</li>
<li><b>A false fact</b> counts once f+1 members observed it: it can be certified only when the liars reach f+1.</li>
<li><b>Liveness</b> needs t &le; n minus the members that do not sign, and a round's 2f+1 observations from
the members that answer.</li>
<li><b>A reorg</b> can undo a lock the committee acted on only when it is deeper than the confirmations.</li>
</ul>
<p>Each is a necessary condition: a violation where the theory does not allow it is listed above as
outside the theory. Replay a counterexample with <code>dvpsim sim FILE --crypto real</code>.</p>
<h2>Cells</h2>
<p>CSV: <a href="cells.csv">cells.csv</a> (one row per cell), <a href="runs.csv">runs.csv</a> (one row per seed).</p>
<table><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>
{chr(10).join(body)}
</table></body></html>
"""


# --- the command ----------------------------------------------------------------------


def _error(message: str) -> int:
    print(f"dvpsim sweep: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(
    grid_path: str,
    out: str | None = None,
    jobs: int | None = None,
    cluster: str | None = None,
    seeds: int | None = None,
) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from dvpsim.pool import Pool, PoolError

    if seeds is not None and seeds < 1:
        return _error(f"--seeds {seeds}: give at least 1")
    try:
        grid = load_grid(grid_path)
    except GridError as exc:
        return _error(str(exc))
    try:
        pool: Pool[Any, Any] = Pool(jobs, cluster)  # joins a cluster now: fails before any run
    except PoolError as exc:
        return _error(str(exc))
    out_dir = (
        Path(out) if out else Path("runs") / f"sweep-{grid.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    console = Console(stderr=True)
    all_cells = cells(grid)
    per_cell = seeds or grid.seeds
    console.print(
        f"sweep {grid.name}: {len(all_cells)} cells x {per_cell} seeds = "
        f"{len(all_cells) * per_cell} runs (fast crypto), then each unsafe cell shrunk and confirmed with real crypto"
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[cells]}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        tasks: dict[str, Any] = {}

        since: dict[str, float] = {}

        def progress(what: str, done: int, total: int, detail: str) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total, cells="", rate="")
                since[what] = time.perf_counter()
            elapsed = max(time.perf_counter() - since[what], 1e-9)
            bar.update(tasks[what], completed=done, cells=detail, rate=f"{done / elapsed:.1f}/s")

        try:
            with pool:
                sweep = run_sweep(grid, out_dir, pool=pool, seeds=seeds, progress=progress)
        except (PoolError, ScenarioError) as exc:  # a cell the simulation refuses, too
            return _error(str(exc))
    unsafe = [r for r in sweep.cells if r.unsafe]
    console.print(
        f"{len(sweep.cells)} cells, {len(sweep.runs)} runs, {len(unsafe)} unsafe "
        f"({sum(bool(r.confirmed_real) for r in unsafe)} confirmed with real crypto) "
        f"in {sweep.wall_s:.0f} s"
    )
    for result in sweep.cells:
        if sweep.outside_theory(result):
            console.print(
                f"[red]outside the theory[/]: {result.cell.id} broke {', '.join(sweep.outside_theory(result))}"
            )
        if result.unsafe and not result.confirmed_real:
            console.print(f"[red]not confirmed with real crypto[/]: {result.cell.id}")
    print(f"{out_dir / 'index.html'}  {out_dir / 'cells.csv'}  {out_dir / 'phase-diagram.png'}")
    return 0 if sweep.ok else EXIT_OUTSIDE_THEORY
