"""Where explore and sweep run on a Ray cluster: ``Pool(jobs, cluster=ADDRESS)``'s backend.

``connect(address)`` joins a running Ray cluster, as a driver on one of its machines
(``HOST:PORT``, the head's GCS port) or from anywhere through its Ray Client server
(``ray://HOST:PORT``); ``RayCluster.submit`` runs ``func(item)`` as a Ray task and hands
back a ``concurrent.futures.Future``, so ``dvpsim.pool`` keeps one loop, one bound on the
calls in flight, for both backends.

Ray is an optional extra (``requirements-cluster.lock``): it is imported here, and only
when a cluster address is given. The cluster's workers import ``func`` by its module, so
they must run dvpsim's code: a cluster started from a dvpsim checkout's ``.venv`` has it.
Before anything runs, one task on the cluster reports the digest of the dvpsim sources
its workers import; a cluster whose sources differ from this process's is refused, since
"the same seeds give the same results" holds only for the same code.

Everything a user can meet is one line, a ``ClusterError`` (``dvpsim.pool`` raises it as
its ``PoolError``): Ray not installed, an address that is malformed or answers nothing
within ``CONNECT_TIMEOUT`` seconds, workers that cannot import dvpsim or run other
sources, a call that failed on the cluster. It never starts a Ray instance of its own:
an address that answers nothing is an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import ipaddress
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "CONNECT_TIMEOUT",
    "ClusterError",
    "RayCluster",
    "connect",
    "disconnect",
    "source_digest",
]

T = TypeVar("T")
R = TypeVar("R")

#: Seconds to reach a cluster (the TCP connection and Ray's own handshake together).
CONNECT_TIMEOUT = 15.0

#: dvpsim's top-level packages: the code a worker runs (pyproject.toml's package list).
PACKAGES = (
    "native",
    "processes",
    "consensus",
    "chain_adapters",
    "bank_adapter",
    "node",
    "scenarios",
    "dvpsim",
)

#: A host name, an IPv4 address, or an IPv6 address (given in brackets).
_HOST = re.compile(r"[A-Za-z0-9.-]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")

_INSTALL = "install the cluster extra: .venv/bin/python -m pip install -r requirements-cluster.lock"


class ClusterError(RuntimeError):
    """The cluster cannot run the calls (one line: what and the fix)."""


def source_digest() -> str:
    """SHA-256 over every ``.py`` file of dvpsim's packages, as this process imports them."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            digest.update(f"{package}: missing\0".encode())
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(root.rglob("*.py")):
            relative = path.relative_to(root.parent).as_posix()
            digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def parse_address(address: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of ``HOST:PORT`` or ``ray://HOST:PORT`` (scheme "" or "ray")."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "", address
    host, _, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
    if (
        scheme not in ("", "ray")
        or not _HOST.fullmatch(host)
        or not port.isdigit()
        or not 0 < int(port) < 65536
    ):
        raise ClusterError(
            f"--cluster {address}: not a Ray address; give HOST:PORT (the head's GCS port, "
            "from a machine of the cluster) or ray://HOST:PORT (its Ray Client server)"
        )
    return scheme, host, int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class RayCluster:
    """A connection to a Ray cluster: its address, its CPUs, and calls run on it."""

    def __init__(self, address: str, cpus: int) -> None:
        self.address = address
        self.cpus = cpus
        self._ray: Any = sys.modules["ray"]
        self._call: Any = None
        self._refs: dict[Future[Any], Any] = {}

    def submit(self, func: Callable[[T], R], item: T) -> Future[R]:
        """``func(item)`` as a Ray task; the future holds its result or a one-line ClusterError."""
        if self._call is None:
            # One remote function for every callable: Ray takes functions, not callable
            # objects (explore hands over a picklable one), so ``func`` travels as an argument.
            self._call = self._ray.remote(_call)
        ref = self._call.remote(func, item)
        future: Future[R] = Future()
        future.set_running_or_notify_cancel()
        self._refs[future] = ref
        name = getattr(func, "__qualname__", type(func).__qualname__)

        def settle(done: Future[Any]) -> None:
            self._refs.pop(future, None)
            try:
                future.set_result(done.result())
            except BaseException as e:  # every failure on the cluster becomes one line
                future.set_exception(self._failure(e, name, item))

        ref.future().add_done_callback(settle)
        return future

    def cancel(self, future: Future[Any]) -> None:
        """Stop a call that is still queued or running on the cluster."""
        ref = self._refs.pop(future, None)
        if ref is not None:
            with contextlib.suppress(Exception):  # finished or gone: nothing left to stop
                self._ray.cancel(ref)

    def _failure(self, error: BaseException, name: str, item: object) -> ClusterError:
        shown = repr(item)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        if isinstance(error, self._ray.exceptions.RayTaskError):
            cause = error.cause if error.cause is not None else error
            return ClusterError(
                f"on the Ray cluster {self.address}: {name}({shown}) raised "
                f"{type(cause).__name__}: {_first_line(cause)} "
                "(the same item fails the same way without --cluster, with its traceback)"
            )
        return ClusterError(
            f"on the Ray cluster {self.address}: {name}({shown}) was lost: "
            f"{type(error).__name__}: {_first_line(error)}"
        )


def _call(func: Callable[[T], R], item: T) -> R:
    """What a Ray task runs: ``func(item)``."""
    return func(item)


def _check_installed() -> None:
    if importlib.util.find_spec("ray") is None:
        raise ClusterError(f"--cluster needs Ray, which is not installed: {_INSTALL}")


def _reachable(host: str, port: int, address: str, deadline: float) -> None:
    try:
        with socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic())):
            pass
    except OSError as e:
        raise ClusterError(
            f"--cluster {address}: nothing answers at {host}:{port} ({e.strerror or e}); "
            "start the cluster (README: Running on a Ray cluster) or fix the address"
        ) from None


def connect(address: str) -> RayCluster:
    """Join the Ray cluster at ``address`` within ``CONNECT_TIMEOUT`` s, and check that its
    workers run this process's dvpsim sources."""
    _, host, port = parse_address(address)
    _check_installed()
    if _is_loopback(host):
        # A cluster on loopback is one machine: Ray then keeps every address it binds and
        # dials on loopback instead of swapping in the machine's network address. Read by
        # Ray when it is first imported.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    deadline = time.monotonic() + CONNECT_TIMEOUT
    _reachable(host, port, address, deadline)
    import ray

    disconnect()
    joined: list[BaseException | None] = []

    def join() -> None:
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            joined.append(None)
        except BaseException as e:  # handed to the waiting thread, which says it in one line
            joined.append(e)

    # Ray retries a silent or foreign endpoint for minutes; wait for it on a thread and
    # give up at the deadline (the process then exits with the error).
    thread = threading.Thread(target=join, name="ray-connect", daemon=True)
    thread.start()
    thread.join(max(0.1, deadline - time.monotonic()))
    if not joined:
        raise ClusterError(
            f"--cluster {address}: no Ray cluster answered within {CONNECT_TIMEOUT:g} s "
            "(is it a Ray head's port? HOST:PORT is the GCS port, ray://HOST:PORT the "
            "Ray Client port)"
        )
    if joined[0] is not None:
        disconnect()
        raise ClusterError(
            f"--cluster {address}: cannot join the Ray cluster: {_first_line(joined[0])}"
        )
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    cpus = int(resources.get("CPU", 0))
    if cpus < 1:
        disconnect()
        raise ClusterError(f"--cluster {address}: the Ray cluster has no CPUs to run on")
    _check_sources(address)
    return RayCluster(address, cpus)


def _worker_digest(_: object) -> str:
    return source_digest()


def _check_sources(address: str) -> None:
    """Refuse a cluster whose workers cannot import dvpsim, or import other sources."""
    import ray

    ours = source_digest()
    try:
        theirs = ray.get(ray.remote(_worker_digest).remote(None), timeout=120)
    except Exception as e:
        disconnect()
        # A worker that cannot import the probe reports Ray's long RuntimeError with the
        # import's traceback in it; its last line says what failed.
        cause = getattr(e, "cause", None) or e
        lines = [line for line in str(cause).splitlines() if line.strip()]
        if len(lines) > 1:
            reason = lines[-1].strip()
        else:
            reason = f"{type(cause).__name__}: {lines[0] if lines else 'no message'}"
        raise ClusterError(
            f"--cluster {address}: the cluster's workers cannot run dvpsim "
            f"({reason}); start the cluster from a dvpsim checkout's .venv "
            "(README: Running on a Ray cluster)"
        ) from None
    if theirs != ours:
        disconnect()
        raise ClusterError(
            f"--cluster {address}: the cluster's workers run other dvpsim sources "
            f"({theirs[:12]}, here {ours[:12]}); start it from this checkout's .venv"
        )


def disconnect() -> None:
    """Leave the Ray cluster this process joined, if any (the cluster keeps running)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
