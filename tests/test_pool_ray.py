"""dvpsim.pool on a Ray cluster: the same seeds give the same simulations as local workers.

The slow test starts a one-machine Ray cluster on loopback from this checkout's .venv (its
own temp dir and free ports, stopped through the PID of the ``ray start --block`` that
owns it), runs drawn explore schedules through local workers and through the cluster,
both as a driver (``HOST:PORT``) and through Ray Client (``ray://HOST:PORT``), and holds
the history digests equal. The default run checks only the one-line error for an address
where nothing answers: without Ray installed that is "not installed" and how to install it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from chain_adapters.build import REPO_ROOT
from dvpsim import ray_pool
from dvpsim.pool import Pool, PoolError
from processes import ManagedProcess, start_process
from scenarios.schedules import RandomChoices, draw_schedule
from scenarios.schema import load
from scenarios.sim.run import SimRun

SEEDS = list(range(12))


def explore_digest(seed: int) -> str:
    """The history digest of the reference scenario (3 settlements) under the schedule
    explore would draw from ``seed``: a real simulation, as explore runs it."""
    base = load(REPO_ROOT / "scenarios" / "reference.toml")
    base = dataclasses.replace(base, settlements=dataclasses.replace(base.settlements, count=3))
    scenario = draw_schedule(RandomChoices(seed), base, base.explore)
    with tempfile.TemporaryDirectory(prefix="dvpsim-pool-") as out:
        digest = SimRun(scenario, Path(out), crypto="fast").run().summary["history_digest"]
    assert isinstance(digest, str)
    return digest


@dataclasses.dataclass(frozen=True)
class ExploreDigestObject:
    """``explore_digest`` as a picklable callable object, as explore hands its checks over."""

    def __call__(self, seed: int) -> str:
        return explore_digest(seed)


def fails_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"no three here\nsecond line {x}")
    return x


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_address_where_nothing_answers_is_one_line() -> None:
    port = free_port()  # closed again: nothing listens there
    started = time.monotonic()
    with pytest.raises(PoolError) as raised:
        Pool(jobs=2, cluster=f"127.0.0.1:{port}")
    message = str(raised.value)
    assert "\n" not in message
    if importlib.util.find_spec("ray") is None:
        assert message.startswith("--cluster needs Ray, which is not installed")
        assert "pip install -r requirements-cluster.lock" in message
    else:
        assert message.startswith(f"--cluster 127.0.0.1:{port}: nothing answers at")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "ray:/127.0.0.1:1", "127.0.0.1:0", "a b:1", "h:99999"]
)
def test_a_malformed_address_is_one_line(address: str) -> None:
    with pytest.raises(PoolError, match=r"^--cluster .*: not a Ray address; give HOST:PORT"):
        Pool(cluster=address)


def _wait_for_port(head: ManagedProcess, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.running(), f"ray start exited {head.returncode}:\n{head.log_tail()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the Ray head did not open port {port} in {timeout:g} s")


def _left_behind(temp_dir: Path) -> list[str]:
    """Processes still running from this cluster (named by its temp dir), zombies aside."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        if str(temp_dir) in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(f"{process.pid} {cmdline[:120]}")
    return found


@contextlib.contextmanager
def ray_head(temp_dir: Path, pythonpath: str) -> Iterator[tuple[str, str]]:
    """A one-machine Ray cluster on loopback, from this .venv, in ``temp_dir``, with
    ``pythonpath`` for its workers; yields its two addresses and stops it through the PID
    of the ``ray start --block`` that owns every process of it."""
    gcs, client = free_port(), free_port()
    head = start_process(
        "ray-head",
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            f"--ray-client-server-port={client}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        temp_dir / "head.log",
        env={
            # Loopback only, as dvpsim.ray_pool joins a loopback address.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            # Ray's Client server forks a server per client while its gRPC threads run,
            # and the child now and then dies in gRPC's fork handler (the client then
            # fails after 40 s); without gRPC's fork support it does not (README).
            "GRPC_ENABLE_FORK_SUPPORT": "false",
            "PYTHONPATH": pythonpath,
        },
    )
    try:
        _wait_for_port(head, gcs, 60)
        _wait_for_port(head, client, 60)
        yield f"127.0.0.1:{gcs}", f"ray://127.0.0.1:{client}"
    finally:
        ray_pool.disconnect()
        head.stop(timeout=30)
    assert _left_behind(temp_dir) == []
    shutil.rmtree(temp_dir, ignore_errors=True)  # kept when the test failed: its logs


def short_temp_dir() -> Path:
    # Under /tmp and short: Ray's socket paths live under it and must fit in 107 bytes.
    return Path(tempfile.mkdtemp(prefix="dvpsim-ray-", dir="/tmp"))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_ray_cluster_gives_the_digests_local_workers_give() -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.fail("Ray is not installed: scripts/test-slow.sh installs requirements-cluster.lock")
    workers: Pool[int, str] = Pool(jobs=2)
    local = dict(workers.imap_unordered(explore_digest, SEEDS))
    assert len(set(local.values())) == len(SEEDS)  # different schedules, different runs

    # The workers import this test module (explore_digest) as local workers do.
    with ray_head(short_temp_dir(), pythonpath=str(REPO_ROOT)) as addresses:
        for address in addresses:
            pool: Pool[int, str] = Pool(cluster=address)
            assert pool.jobs == 2 and pool.where == f"Ray cluster {address} (2 at a time)"
            for func in (explore_digest, ExploreDigestObject()):
                assert dict(pool.imap_unordered(func, SEEDS)) == local, (address, func)
            # A caller that stops early leaves nothing running: the rest is cancelled.
            for _ in pool.imap_unordered(explore_digest, SEEDS):
                break
            one: Pool[int, int] = Pool(jobs=1, cluster=address)
            with pytest.raises(PoolError) as raised:
                dict(one.imap_unordered(fails_on_three, range(5)))
            assert str(raised.value) == (
                f"on the Ray cluster {address}: fails_on_three(3) raised ValueError: "
                "no three here (the same item fails the same way without --cluster, "
                "with its traceback)"
            )
            ray_pool.disconnect()


def _edit_processes(shadow: Path) -> None:
    shutil.copytree(REPO_ROOT / "processes", shadow / "processes")
    managed = shadow / "processes" / "managed.py"
    managed.write_text(managed.read_text() + "\n# edited\n")


def _break_dvpsim(shadow: Path) -> None:
    (shadow / "dvpsim").mkdir(parents=True)
    (shadow / "dvpsim" / "__init__.py").write_text('raise ImportError("no dvpsim here")\n')


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("shadowing", "refusal"),
    [
        (
            _edit_processes,
            r"the cluster's workers run other dvpsim sources \([0-9a-f]{12}, here "
            r"[0-9a-f]{12}\); start it from this checkout's \.venv",
        ),
        (
            _break_dvpsim,
            r"the cluster's workers cannot run dvpsim \(ImportError: no dvpsim here\); start the "
            r"cluster from a dvpsim checkout's \.venv \(README: Running on a Ray cluster\)",
        ),
    ],
    ids=["other-sources", "no-dvpsim"],
)
def test_a_cluster_whose_workers_run_other_code_is_refused(
    monkeypatch: pytest.MonkeyPatch, shadowing: Callable[[Path], None], refusal: str
) -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.fail("Ray is not installed: scripts/test-slow.sh installs requirements-cluster.lock")
    temp_dir = short_temp_dir()
    # The workers find the shadow's packages before this checkout's (a driver also lends
    # them its working directory, so that must not be the checkout either).
    monkeypatch.chdir(temp_dir)
    shadowing(temp_dir / "shadow")
    with ray_head(temp_dir, pythonpath=str(temp_dir / "shadow")) as addresses:
        for address in addresses:
            with pytest.raises(PoolError) as raised:
                Pool(cluster=address)
            assert re.fullmatch(f"--cluster {re.escape(address)}: {refusal}", str(raised.value))
