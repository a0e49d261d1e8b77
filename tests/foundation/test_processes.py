"""``processes``: a child is started with its output in a log and stopped by its PID, by us,
at exit or by the kernel; a process it did not start is never signalled."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import processes
from processes import ManagedProcess, ProcessStartError, start_python

REPO_ROOT = Path(__file__).resolve().parents[2]
CHILD_MODULE = "dvpsim_test_child"
CHILD = textwrap.dedent(
    """
    import signal, sys, time

    mode = sys.argv[1]
    if mode == "ignore-sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "exit-2":
        sys.exit(2)
    if mode == "talk":
        print("to stdout", flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        print("stdin:", repr(sys.stdin.read()), flush=True)
        sys.exit(0)
    if mode == "wrong-line":
        print("something else", flush=True)
    elif mode != "silent":
        print("child ready", flush=True)
        print("after the ready line", flush=True)
    time.sleep(60)
    """
)

StartChild = Callable[..., ManagedProcess]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def start_child(tmp_path: Path) -> Iterator[StartChild]:
    """Start the child module above in ``mode``; every child is stopped at teardown."""
    (tmp_path / f"{CHILD_MODULE}.py").write_text(CHILD)
    started: list[ManagedProcess] = []

    def start(mode: str, **kw: Any) -> ManagedProcess:
        child = start_python(
            mode, CHILD_MODULE, [mode], tmp_path / f"{mode}.log", cwd=tmp_path, **kw
        )
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop(timeout=1)


def _owner_script(tmp_path: Path, body: str) -> str:
    """A Python program, run from the repository root, that starts children of its own."""
    (tmp_path / f"{CHILD_MODULE}.py").write_text(CHILD)
    head = f"""
        import atexit, subprocess, sys, time
        from pathlib import Path
        tmp = Path({str(tmp_path)!r})
        """
    return textwrap.dedent(head) + textwrap.dedent(body)


def test_stop_by_pid_is_sigterm_and_returns_the_exit_code(start_child: StartChild) -> None:
    child = start_child("plain", ready_prefix="child ready")
    assert child.ready_line == "child ready"
    assert child.running() and _alive(child.pid) and child.returncode is None
    assert child.stop() == -signal.SIGTERM
    assert child.returncode == -signal.SIGTERM
    assert not _alive(child.pid)
    # stdout after the ready line is not left in an unread pipe: it reaches the log.
    assert _eventually(lambda: "after the ready line" in child.log_path.read_text())


def test_kill_is_sigkill_and_reaps(start_child: StartChild) -> None:
    child = start_child("plain", ready_prefix="child ready")
    assert child.kill() == -signal.SIGKILL
    assert not child.running() and not _alive(child.pid)


def test_stop_sends_sigkill_when_sigterm_is_ignored(start_child: StartChild) -> None:
    child = start_child("ignore-sigterm", ready_prefix="child ready")  # ready: handler is set
    began = time.monotonic()
    assert child.stop(timeout=0.3) == -signal.SIGKILL
    assert time.monotonic() - began >= 0.3


def test_output_goes_to_the_log_and_stdin_is_empty(start_child: StartChild) -> None:
    child = start_child("talk")
    assert child.wait(timeout=10) == 0
    log = child.log_path.read_text()
    assert "to stdout" in log and "to stderr" in log and "stdin: ''" in log


@pytest.mark.parametrize(
    ("mode", "timeout", "message"),
    [
        ("exit-2", 10.0, "exit-2 exited with code 2 before its ready line"),
        ("silent", 0.3, "silent printed no ready line within 0.3 s"),
        ("wrong-line", 10.0, "wrong-line printed 'something else' where a line starting"),
    ],
)
def test_a_child_without_its_ready_line_is_killed_and_named(
    start_child: StartChild, mode: str, timeout: float, message: str
) -> None:
    with pytest.raises(ProcessStartError, match=f"^{message}") as raised:
        start_child(mode, ready_prefix="child ready", ready_timeout=timeout)
    assert not raised.value.process.running()
    assert not _alive(raised.value.process.pid)


def test_a_reaped_child_is_never_signalled_again(
    start_child: StartChild, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once reaped, its PID may belong to anyone: stop() and kill() must send nothing."""
    child = start_child("plain", ready_prefix="child ready")
    child.kill()
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    assert child.stop() == -signal.SIGKILL
    assert child.kill() == -signal.SIGKILL
    assert sent == []


def test_a_child_dies_with_the_thread_that_started_it(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG follows the forking *thread*: a child started from a thread that
    ends is sent SIGTERM by the kernel although this process lives on."""
    (tmp_path / f"{CHILD_MODULE}.py").write_text(CHILD)
    started: list[ManagedProcess] = []
    starter = threading.Thread(
        target=lambda: started.append(
            start_python("orphan", CHILD_MODULE, ["plain"], tmp_path / "o.log", cwd=tmp_path)
        )
    )
    starter.start()
    starter.join()
    try:
        assert started[0].wait(timeout=10) == -signal.SIGTERM
    finally:
        started[0].stop(timeout=1)


def test_a_child_dies_with_a_killed_owner(tmp_path: Path) -> None:
    """An owner killed with SIGKILL cannot clean up; the kernel stops its child for it."""
    script = _owner_script(
        tmp_path,
        f"""
        from processes import start_python
        child = start_python("c", {CHILD_MODULE!r}, ["plain"], tmp / "c.log", cwd=tmp)
        print(child.pid, flush=True)
        time.sleep(60)
        """,
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    try:
        assert owner.stdout is not None
        child_pid = int(owner.stdout.readline())
        assert _alive(child_pid)
        owner.kill()
        owner.wait(timeout=10)
        assert _eventually(lambda: not _alive(child_pid))
    finally:
        owner.kill()
        owner.wait(timeout=10)


def test_stop_all_and_exit_stop_only_children_started_here(tmp_path: Path) -> None:
    """In a fresh interpreter: stop_all() stops what start_python started and leaves a
    process started by plain subprocess.Popen alone; at exit a child left running is
    stopped by the registry (SIGTERM, reaped) before the interpreter goes."""
    script = _owner_script(
        tmp_path,
        f"""
        left_running = []
        # Registered before processes is imported, so it runs after processes' own stop_all.
        atexit.register(lambda: print("at exit:", left_running[0].returncode, flush=True))
        from processes import start_python, stop_all
        foreign = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        mine = start_python("mine", {CHILD_MODULE!r}, ["plain"], tmp / "m.log", cwd=tmp)
        stop_all()
        print("foreign:", foreign.poll(), "mine:", mine.returncode, flush=True)
        foreign.kill()
        foreign.wait()
        left_running.append(start_python("left", {CHILD_MODULE!r}, ["plain"], tmp / "l.log", cwd=tmp))
        """,
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"foreign: None mine: {-signal.SIGTERM}",
        f"at exit: {-signal.SIGTERM}",
    ]


def _imported_top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_processes_imports_nothing_of_dvpsim() -> None:
    """It is the bottom layer: the parts that start processes import it, never the reverse."""
    package = Path(processes.__file__).parent
    ours = {p.parent.name for p in REPO_ROOT.glob("*/__init__.py")} - {"processes"}
    forbidden = {"dvpsim", "node", "scenarios", "chain_adapters", "bank_adapter", "consensus"}
    assert forbidden <= ours
    for path in sorted(package.glob("**/*.py")):
        assert not _imported_top_level_names(path) & ours, path
