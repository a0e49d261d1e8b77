"""What `dvpsim run` and `dvpsim sim` share: the scenario they are given (a path or a
bundled name, ``--set`` overrides, ``--seed``), the run folder (``--out``, ``--force``),
what they print (``--json``, ``-q``, ``-v``) and the exit code.

Exit codes (README, "Exit codes"):

- 0: the run showed what its scenario expects (by default every check valid and every
  settlement ended; an unsafe scenario names the checks that must fail);
- 1: it did not, and a check decided so (a check invalid that should be valid, or valid
  that should be invalid), or ``--check-determinism`` found two different histories;
- 2: bad input (one line, no traceback);
- 3: undecided: only settlements left open or checks that could not decide (unknown)
  stand between the run and its expectation (1 takes precedence);
- 4: an internal error (one line; the traceback is written to the run folder's
  ``error.log``, or to a temporary file when there is no run folder yet).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

EXIT_MET: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNDECIDED: Final = 3
EXIT_INTERNAL: Final = 4
ERROR_LOG: Final = "error.log"


class UsageError(Exception):
    """Bad input: ``str(e)`` is the one line the user reads (exit 2)."""


@dataclass(frozen=True)
class RunOptions:
    """The options `run` and `sim` share (``dvpsim.cli`` adds them to both)."""

    overrides: tuple[str, ...] = ()  # --set KEY=VALUE, in order
    seed: str | None = None  # --seed, as typed
    json: bool = False  # the summary, alone, on stdout
    verbosity: int = 0  # -1 quiet, 0 normal, 1 verbose
    force: bool = False  # replace an earlier run in --out


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


def load_scenario(name_or_path: str, options: RunOptions) -> Any:
    """The effective scenario: the file (or bundled name) with ``--set`` and ``--seed``
    applied, validated; UsageError with the one line on any mistake."""
    from scenarios import overrides
    from scenarios.schema import ScenarioError

    try:
        seed = parse_seed(options.seed)
        scenario, _data = overrides.load(overrides.resolve(name_or_path), options.overrides, seed)
    except (ValueError, ScenarioError) as exc:  # ScenarioError is a ValueError
        raise UsageError(str(exc)) from None
    return scenario


def default_out(stem: str) -> Path:
    """``runs/STEM-TIME``, with a counter when a run of the same second holds that name."""
    base = Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, count = base, 1
    while out.exists():
        count += 1
        out = base.with_name(f"{base.name}-{count}")
    return out


def prepare_out(out: Path, force: bool) -> None:
    """Make ``out`` an empty run folder. A folder that holds anything is refused unless
    ``force``; then only an earlier run's folder (its history starts with run-start) is
    emptied. UsageError (one line) otherwise."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: a file, not a folder: give a folder for the run")
    try:
        out.mkdir(parents=True, exist_ok=True)
        entries = sorted(out.iterdir())
    except OSError as exc:
        raise UsageError(
            f"--out {out}: cannot be used ({exc.strerror}): give a folder you can write"
        ) from None
    if not entries:
        return
    if not force:
        raise UsageError(
            f"--out {out}: not empty: give a new folder, or --force to replace the earlier "
            "run in it"
        )
    if not starts_with_run_start(out / "history.jsonl"):
        raise UsageError(
            f"--out {out}: not a run folder (no history.jsonl that starts with a run-start "
            "record), so --force leaves it alone: give another folder"
        )
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def starts_with_run_start(history: Path) -> bool:
    try:
        with history.open(encoding="utf-8") as lines:
            first = json.loads(lines.readline())
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and first.get("event") == "run-start"


def exit_code(summary: dict[str, Any]) -> int:
    """The exit code of a run from its summary (module docstring)."""
    if summary["expectation_met"]:
        return EXIT_MET
    must_fail = set() if summary["expect"] == "pass" else set(summary["expect"])
    for name, verdict in summary["checks"].items():
        want = "invalid" if name in must_fail else "valid"
        if verdict["status"] in ("valid", "invalid") and verdict["status"] != want:
            return EXIT_FAILED
    return EXIT_UNDECIDED


def verdict_line(
    command: str, summary: dict[str, Any], code: int, reason: str | None = None
) -> str:
    """The last line a run prints, in every verbosity; ``reason`` overrides the summary's."""
    if reason is not None:
        return f"{command}: {reason}: exit {code}"
    if code == EXIT_MET:
        expect = summary["expect"]
        wanted = "pass" if expect == "pass" else "fail " + ", ".join(expect)
        return f"{command}: expectation met ({wanted}): exit 0"
    what = "expectation not met" if code == EXIT_FAILED else "undecided"
    return f"{command}: {what}: {'; '.join(summary['expectation_differences'])}: exit {code}"


def internal_error(command: str, exc: BaseException, folder: Path | None) -> int:
    """One line for an unexpected exception, its traceback written to ``folder/error.log``
    (or a temporary file); exit 4."""
    text = "".join(traceback.format_exception(exc))
    path: Path | None = None
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / ERROR_LOG
            path.write_text(text)
        except OSError:
            path = None
    if path is None:
        with tempfile.NamedTemporaryFile(
            "w", prefix="dvpsim-error-", suffix=".log", delete=False
        ) as handle:
            handle.write(text)
            path = Path(handle.name)
    detail = " ".join(str(exc).split())[:200]
    print(
        f"{command}: internal error ({type(exc).__name__}: {detail}); traceback in {path}",
        file=sys.stderr,
    )
    return EXIT_INTERNAL


class Output:
    """Where a run's text goes. The summary table and the paths go to stdout, or to
    stderr with ``--json`` (stdout then holds the summary alone); quiet keeps only errors
    and the verdict line; verbose adds the run's origin and a line per progress step."""

    def __init__(self, command: str, options: RunOptions) -> None:
        self.command = command
        self.options = options
        self.console = Console(stderr=options.json, soft_wrap=True)

    @property
    def quiet(self) -> bool:
        return self.options.verbosity < 0

    @property
    def verbose(self) -> bool:
        return self.options.verbosity > 0

    def say(self, text: str) -> None:
        """Normal output (not in quiet mode)."""
        if not self.quiet:
            self.console.print(text)

    def detail(self, text: str) -> None:
        """Verbose output only."""
        if self.verbose:
            self.console.print(text, markup=False)

    def origin(self, scenario: Any, out: Path) -> None:
        from scenarios.provenance import dvpsim_version, scenario_sha256

        self.detail(
            f"{self.command}: dvpsim {dvpsim_version()}, scenario {scenario.path} "
            f"(sha256 {scenario_sha256(scenario)[:16]}), seed {scenario.seed}, "
            f"overrides {list(self.options.overrides)}, run folder {out}"
        )

    @contextmanager
    def progress(self) -> Iterator[Callable[[str, int, int], None]]:
        """A progress callback: bars (normal, on a terminal), lines (verbose), or nothing."""
        if self.quiet:
            yield lambda _what, _done, _total: None
            return
        if self.verbose:
            seen: dict[str, int] = {}

            def line(what: str, done: int, total: int) -> None:
                if seen.get(what) != done:
                    seen[what] = done
                    self.console.print(f"{self.command}: {what} {done}/{total}", markup=False)

            yield line
            return
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bars:
            tasks: dict[str, Any] = {}

            def bar(what: str, done: int, total: int) -> None:
                if what not in tasks:
                    tasks[what] = bars.add_task(what, total=total)
                bars.update(tasks[what], completed=done, total=total)

            yield bar

    def finish(self, summary: dict[str, Any], code: int, reason: str | None = None) -> int:
        """The summary on stdout with ``--json``, then the verdict line; returns ``code``."""
        if self.options.json:
            stream: TextIO = sys.stdout
            stream.write(json.dumps(summary, indent=2, default=str) + "\n")
            stream.flush()
        self.console.print(verdict_line(self.command, summary, code, reason), markup=False)
        return code
