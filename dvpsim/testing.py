"""dvpsim for your own property-based tests: Hypothesis strategies for committees,
workloads, faults, Byzantine coalitions and whole schedules, a function that runs a
scenario in sim and returns its history and verdicts, and a pytest fixture.

A complete example (``docs/TESTING.md`` holds it; the project's own suite runs it)::

    from hypothesis import given, settings
    from dvpsim.testing import assert_checks_hold, bundled, run_sim, schedules

    @settings(max_examples=25, deadline=None)
    @given(schedules(bundled("reference")))
    def test_every_check_holds_within_f(scenario):
        assert_checks_hold(run_sim(scenario))

The strategies draw through ``scenarios.schedules``, the vocabulary ``dvpsim explore`` uses:
a schedule a property finds and one explore finds are made by the same rules, and both are
ordinary scenarios. Hypothesis shrinks what it drew (fewer faults, fewer Byzantine members
and behaviours, smaller numbers); ``assert_checks_hold`` fails with the scenario as TOML,
seed included, so the shrunk example Hypothesis prints can be saved to a file and replayed
with ``dvpsim sim FILE``.

Runs use the fast crypto stand-in by default (``crypto="real"`` for BLS and Ed25519); what a
fast run finds, re-run with real crypto before you report it (``confirm_real``).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import py_ecc  # noqa: F401  # raises the recursion limit when imported: now, not mid-example
from hypothesis import strategies as st

from scenarios.checks import CHECK_NAMES
from scenarios.dump import dumps
from scenarios.schedules import draw_byzantine, draw_faults, draw_schedule
from scenarios.schema import Budget, Byzantine, Committee, Fault, Scenario, Settlements, load

__all__ = [
    "CheckFailed",
    "SimResult",
    "assert_checks_hold",
    "bundled",
    "coalitions",
    "committees",
    "confirm_real",
    "faults",
    "run_sim",
    "schedules",
    "workloads",
]

T = TypeVar("T")


class HypothesisChoices:
    """``scenarios.schedules.Choices`` answered by Hypothesis draws (so Hypothesis can
    shrink each answer)."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def number(self, lo: float, hi: float) -> float:
        # Milliseconds, as explore draws them: a number written as TOML reads back as itself.
        return self.draw(st.integers(round(lo * 1000), round(hi * 1000))) / 1000

    def pick(self, options: Sequence[T]) -> T:
        return self.draw(st.sampled_from(options))

    def coin(self) -> bool:
        return self.draw(st.booleans())

    def subset(self, options: Sequence[T], lo: int, hi: int) -> tuple[T, ...]:
        chosen = self.draw(
            st.sets(st.integers(0, len(options) - 1), min_size=lo, max_size=min(hi, len(options)))
        )
        return tuple(x for i, x in enumerate(options) if i in chosen)


def bundled(name: str) -> Scenario:
    """A scenario shipped with dvpsim, by name (``"reference"``) or by path."""
    from chain_adapters.build import REPO_ROOT

    path = Path(name)
    if path.suffix != ".toml":
        path = REPO_ROOT / "scenarios" / f"{name}.toml"
    return load(path)


# --------------------------------------------------------------------------- strategies


def committees(
    sizes: Sequence[int] = (4, 5, 7), *, thresholds: str = "safe"
) -> st.SearchStrategy[Committee]:
    """Committees of the given sizes with f = floor((n-1)/3); ``thresholds="safe"`` keeps
    the default t, ``"any"`` draws t from f+1 to n (below the safe floor marked unsafe)."""

    @st.composite
    def draw(draw: st.DrawFn) -> Committee:
        n = draw(st.sampled_from(sizes))
        f = (n - 1) // 3
        safe = Committee(n=n, f=f)
        if thresholds == "safe":
            return safe
        t = draw(st.integers(f + 1, n))
        return Committee(n=n, f=f, threshold=t, unsafe_allow_low_threshold=t < safe.t)

    return draw()


def workloads(base: Scenario, *, most: int | None = None) -> st.SearchStrategy[Settlements]:
    """``base``'s settlements with 1 to ``most`` (default: base's count) of them, arriving at
    1 to 10 per second; planned failures scaled down with the count."""
    top = most or base.settlements.count

    @st.composite
    def draw(draw: st.DrawFn) -> Settlements:
        count = draw(st.integers(1, top))
        rate = draw(st.integers(1, 10))
        s = base.settlements
        fail, left = [], count
        for failure in s.fail:
            share = min(left, failure.count * count // max(1, s.count))
            if share:
                fail.append(dataclasses.replace(failure, count=share))
                left -= share
        return dataclasses.replace(s, count=count, arrival_rate=float(rate), fail=tuple(fail))

    return draw()


def faults(base: Scenario, budget: Budget | None = None) -> st.SearchStrategy[tuple[Fault, ...]]:
    """Fault schedules for ``base`` within ``budget`` (default: its ``[explore]`` table)."""
    return st.composite(
        lambda draw: draw_faults(HypothesisChoices(draw), base, _budget(base, budget))
    )()


def coalitions(
    base: Scenario, budget: Budget | None = None
) -> st.SearchStrategy[tuple[Byzantine, ...]]:
    """A Byzantine coalition for ``base`` within ``budget`` (default: at most f members)."""
    return st.composite(
        lambda draw: draw_byzantine(HypothesisChoices(draw), base, _budget(base, budget))
    )()


def schedules(
    base: Scenario,
    budget: Budget | None = None,
    *,
    committee: st.SearchStrategy[Committee] | None = None,
    workload: st.SearchStrategy[Settlements] | None = None,
) -> st.SearchStrategy[Scenario]:
    """Whole scenarios: ``base`` with a drawn coalition, faults and seed (and, when given,
    a drawn committee and workload)."""

    @st.composite
    def draw(draw: st.DrawFn) -> Scenario:
        scenario = base
        if committee is not None:
            scenario = dataclasses.replace(scenario, committee=draw(committee))
        if workload is not None:
            scenario = dataclasses.replace(scenario, settlements=draw(workload))
        return draw_schedule(HypothesisChoices(draw), scenario, _budget(scenario, budget))

    return draw()


def _budget(base: Scenario, budget: Budget | None) -> Budget:
    return base.explore if budget is None else budget


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class SimResult:
    """One simulated run: what it ran, its history (one dict per line), its verdicts."""

    scenario: Scenario
    crypto: str
    summary: dict[str, Any]
    history: tuple[dict[str, Any], ...]

    @property
    def verdicts(self) -> dict[str, str]:
        """Each check's status: valid, invalid or unknown."""
        return {name: c["status"] for name, c in self.summary["checks"].items()}

    @property
    def violated(self) -> tuple[str, ...]:
        """The checks that came out invalid, in the checkers' order."""
        return tuple(n for n in CHECK_NAMES if self.verdicts.get(n) == "invalid")

    def events(self, kind: str) -> Iterator[dict[str, Any]]:
        """The history lines of one event type (``docs/HISTORY.md``)."""
        return (line for line in self.history if line["event"] == kind)

    def toml(self) -> str:
        """The scenario as a file ``dvpsim sim`` replays (seed included)."""
        return dumps(self.scenario)


def run_sim(scenario: Scenario, *, crypto: str = "fast", out_dir: Path | None = None) -> SimResult:
    """Run ``scenario`` in the simulated world and return its history and verdicts (in a
    temporary folder unless ``out_dir`` is given)."""
    from scenarios.sim.run import SimRun

    def run(folder: Path) -> SimResult:
        report = SimRun(scenario, folder, crypto=crypto).run()
        with open(folder / "history.jsonl") as lines:
            history = tuple(json.loads(line) for line in lines)
        return SimResult(scenario, crypto, report.summary, history)

    if out_dir is not None:
        return run(out_dir)
    with tempfile.TemporaryDirectory(prefix="dvpsim-testing-") as tmp:
        return run(Path(tmp))


class CheckFailed(AssertionError):
    """A check came out invalid; the message holds the scenario as TOML."""


def assert_checks_hold(result: SimResult, *, allow_unknown: bool = True) -> None:
    """Fail (``CheckFailed``) if any check came out invalid (or unknown, with
    ``allow_unknown=False``), printing the scenario as TOML with its seed: save it as a file
    and ``dvpsim sim FILE`` replays the run."""
    bad = [
        f"{name}: {status}"
        for name, status in result.verdicts.items()
        if status == "invalid" or (status == "unknown" and not allow_unknown)
    ]
    if not bad:
        return
    witness = {
        name: {k: v for k, v in check.items() if k != "status"}
        for name, check in result.summary["checks"].items()
        if check["status"] != "valid"
    }
    expected = dataclasses.replace(result.scenario, expect=result.violated or ())
    raise CheckFailed(
        f"{'; '.join(bad)} ({result.crypto} crypto, seed {result.scenario.seed})\n"
        f"witness: {json.dumps(witness, default=str)[:2000]}\n"
        "the scenario, to replay with `dvpsim sim FILE`:\n"
        "----- 8< -----\n" + dumps(expected) + "----- >8 -----"
    )


def confirm_real(result: SimResult) -> SimResult:
    """The same scenario re-run with real crypto (confirm a fast finding before reporting
    it): the fast stand-in is held to give the same histories as real crypto."""
    return run_sim(result.scenario, crypto="real")


def toml_of_failure(message: str) -> str:
    """The scenario TOML inside a ``CheckFailed`` message."""
    return message.split("----- 8< -----\n", 1)[1].split("----- >8 -----", 1)[0]
