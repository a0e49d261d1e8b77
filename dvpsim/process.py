"""Start dvpsim's own child processes and stop them by PID: the one way the project does it.

Node processes, the bank service and (through ``chain_adapters.localchain``) anvil are
started with their output in a log file and with ``PR_SET_PDEATHSIG``, so the kernel
stops them if their owner dies without cleaning up. :meth:`ManagedProcess.stop` sends
SIGTERM, waits, then SIGKILL; :meth:`kill` is SIGKILL at once (fault injection). Every
process started here is stopped at interpreter exit if it still runs. This module never
signals a process it did not start.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the child when its parent dies.

    Linux ties this to the *thread* that forked the child: start long-lived processes
    from a thread that lives as long as they should (the main thread, or one that waits).
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


_live: dict[int, ManagedProcess] = {}
_lock = threading.Lock()


@dataclass
class ManagedProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL now (a crash, for fault injection), and reap it."""
        if self.running():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        with _lock:
            _live.pop(self.pid, None)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; returns the exit code."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        with _lock:
            _live.pop(self.pid, None)
        return self.process.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_python(
    name: str,
    module: str,
    args: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    """Run ``python -m module args...`` with this interpreter, output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            preexec_fn=die_with_parent,
        )
    managed = ManagedProcess(name, process, log_path)
    with _lock:
        _live[process.pid] = managed
    return managed


def stop_all() -> None:
    with _lock:
        live = list(_live.values())
    for managed in live:
        managed.stop(timeout=3)


atexit.register(stop_all)
