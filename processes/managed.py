"""Start a child process, stop it by its PID: the one way dvpsim does it.

Anvil chains, the bank service and oracle node processes are all started here. Each child

- runs with ``PR_SET_PDEATHSIG`` (:func:`die_with_parent`), so the kernel sends it SIGTERM
  if its owner dies without cleaning up (SIGKILL, a crash). The kernel watches the *thread*
  that started the child, not the process: a child started from a worker thread is stopped
  when that thread ends, so start long-lived children from one that outlives them;
- reads stdin from ``/dev/null`` and writes stdout and stderr to a log file it appends to;
  a child that announces itself on stdout (the bank prints the URL it listens on) is
  started with ``ready_prefix``: its first stdout line is read and checked, and the rest of
  its stdout is copied to the log;
- is recorded in one process-wide registry and stopped at interpreter exit if it still
  runs (normal exit, an exception, Ctrl-C).

:meth:`ManagedProcess.stop` is SIGTERM, a bounded wait, then SIGKILL; :meth:`ManagedProcess.kill`
is SIGKILL at once (a crash, for fault injection). Both reap the child.

This module must never signal a process it did not start: every signal goes through the
``subprocess.Popen`` of a child started here, which sends nothing once the child has been
reaped (so a recycled PID is never hit), and :func:`stop_all` only walks the registry.
It sits at the bottom of dvpsim's layers and imports nothing of dvpsim's.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "ManagedProcess",
    "ProcessStartError",
    "die_with_parent",
    "start_process",
    "start_python",
    "stop_all",
]

_PR_SET_PDEATHSIG = 1
# A ready line longer than this is not a ready line; stop reading instead of buffering forever.
_READY_LINE_LIMIT = 64 * 1024


def _load_prctl() -> Callable[..., int] | None:
    # Loaded once, in the parent: dlopen() in the forked child of a threaded parent can
    # deadlock on a loader lock another thread held at fork time.
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_prctl = _load_prctl()


def die_with_parent() -> None:
    """``preexec_fn``: the kernel sends SIGTERM to the child when its parent dies.

    Linux ties this to the *thread* that forked the child, not to the process: a child
    started from a thread is sent SIGTERM when that thread ends, even though the process
    lives on. Start long-lived processes from a thread that lives as long as they should
    (the main thread, or one that waits). Does nothing where ``prctl`` does not exist.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_setup(parent_pid: int) -> None:
    die_with_parent()
    if os.getppid() != parent_pid:
        # The parent died between fork and prctl: no signal will come, so go now.
        os._exit(1)


class ProcessStartError(RuntimeError):
    """A child exited, stayed silent or printed something else before its ready line.

    The child has been killed and reaped; ``process`` is kept for its exit code and log.
    """

    def __init__(self, message: str, process: ManagedProcess) -> None:
        super().__init__(message)
        self.process = process


@dataclass(eq=False)
class ManagedProcess:
    """A child started by :func:`start_process`; stopped only through its own Popen."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_line: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the child has ended (``-N`` for signal N), else None."""
        return self.process.poll()

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to end by itself and reap it; TimeoutExpired after ``timeout``."""
        code = self.process.wait(timeout=timeout)
        _forget(self)
        return code

    def kill(self) -> int:
        """SIGKILL now (a crash, for fault injection), and reap it."""
        self.process.kill()  # sends nothing once the child has been reaped
        code = self.process.wait(timeout=10)
        _forget(self)
        return code

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self._reap_or_kill(timeout)

    def _reap_or_kill(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=10)
        _forget(self)
        return code

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()


def _forget(managed: ManagedProcess) -> None:
    with _live_lock:
        _live.discard(managed)


def start_process(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ready_prefix: str | None = None,
    ready_timeout: float = 30.0,
) -> ManagedProcess:
    """Start ``argv`` with its output appended to ``log_path`` and return it registered.

    ``env`` is added to this process's environment. With ``ready_prefix`` the child's
    stdout is a pipe: this waits up to ``ready_timeout`` s for its first line, which must
    start with ``ready_prefix`` (it is kept as ``ready_line``); otherwise the child is
    killed and :class:`ProcessStartError` raised. Later stdout goes to the log.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdout=log if ready_prefix is None else subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            preexec_fn=functools.partial(_child_setup, os.getpid()),
        )
    managed = ManagedProcess(name, process, log_path)
    with _live_lock:
        _live.add(managed)
    if ready_prefix is not None:
        try:
            _await_ready_line(managed, ready_prefix, ready_timeout)
        except BaseException:
            managed.kill()  # Ctrl-C while waiting must not leave the child behind either
            assert process.stdout is not None
            process.stdout.close()
            raise
    return managed


def start_python(
    name: str,
    module: str,
    args: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ready_prefix: str | None = None,
    ready_timeout: float = 30.0,
) -> ManagedProcess:
    """``python -m module args...`` with this interpreter, through :func:`start_process`."""
    return start_process(
        name,
        [sys.executable, "-m", module, *args],
        log_path,
        env=env,
        cwd=cwd,
        ready_prefix=ready_prefix,
        ready_timeout=ready_timeout,
    )


def _await_ready_line(managed: ManagedProcess, prefix: str, timeout: float) -> None:
    stdout = managed.process.stdout
    assert stdout is not None
    fd = stdout.fileno()
    buffered = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buffered:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or len(buffered) > _READY_LINE_LIMIT:
            raise ProcessStartError(
                f"{managed.name} printed no ready line within {timeout:g} s", managed
            )
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:  # EOF: the child closed stdout, most likely by exiting
            with contextlib.suppress(subprocess.TimeoutExpired):
                managed.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            code = managed.process.returncode
            ended = "closed its stdout" if code is None else f"exited with code {code}"
            raise ProcessStartError(f"{managed.name} {ended} before its ready line", managed)
        buffered += chunk
    line, _, rest = buffered.partition(b"\n")
    text = line.decode(errors="replace").rstrip("\r")
    if not text.startswith(prefix):
        raise ProcessStartError(
            f"{managed.name} printed {text[:200]!r} where a line starting {prefix!r} was due",
            managed,
        )
    managed.ready_line = text
    # An unread pipe fills up and blocks the child's next print; copy the rest to the log.
    threading.Thread(
        target=_copy_to_log,
        args=(stdout, line + b"\n" + rest, managed.log_path),
        name=f"{managed.name}-stdout",
        daemon=True,
    ).start()


def _copy_to_log(stdout: IO[bytes], first: bytes, log_path: Path) -> None:
    fd = stdout.fileno()
    try:
        with open(log_path, "ab", buffering=0) as log:
            log.write(first)
            while chunk := os.read(fd, 65536):
                log.write(chunk)
    except OSError:
        pass
    finally:
        stdout.close()


def stop_all(timeout: float = 3.0) -> None:
    """Stop every child started here and not stopped yet (run at exit): SIGTERM to all of
    them at once, up to ``timeout`` s in all for them to exit, then SIGKILL."""
    with _live_lock:
        live = list(_live)
    for managed in live:
        managed.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for managed in live:
        # One that even SIGKILL cannot end (uninterruptible sleep) must not spare the rest.
        with contextlib.suppress(subprocess.TimeoutExpired):
            managed._reap_or_kill(max(0.0, deadline - time.monotonic()))


atexit.register(stop_all)
