"""Start `scripts/p2p_echo.py` node processes on 127.0.0.1 and talk to them, for the transport tests.

Each process gets a deterministic identity and a port chosen up front, so a killed node
can be restarted with the same identity and address. Every process is stopped by its
PID when the cluster closes, whatever happened in the test.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from chain_adapters.localchain import free_port
from node.identity import NodeIdentity, identity_from_seed, seed_from_label

REPO = Path(__file__).resolve().parents[2]
ECHO_SCRIPT = REPO / "scripts" / "p2p_echo.py"


@dataclass
class EchoProcess:
    index: int
    proc: subprocess.Popen[bytes]
    events: queue.Queue[dict[str, Any]]
    stderr_path: Path
    ready: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, **msg: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"node {self.index} sent no {event!r} event within {timeout} s; "
                    f"stderr tail: {self.stderr_tail()}"
                )
            try:
                msg = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if msg.get("event") == "exited":
                raise AssertionError(
                    f"node {self.index} exited while waiting for {event!r}; "
                    f"stderr tail: {self.stderr_tail()}"
                )
            if msg.get("event") == event:
                return msg

    def request(self, event: str, timeout: float = 30.0, **msg: Any) -> dict[str, Any]:
        self.send(**msg)
        return self.expect(event, timeout)

    def stderr_tail(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "<no stderr>"

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(cmd="quit")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def _pump(stdout: IO[bytes], events: queue.Queue[dict[str, Any]]) -> None:
    for raw in stdout:
        try:
            events.put(json.loads(raw))
        except json.JSONDecodeError:
            events.put({"event": "noise", "line": raw.decode(errors="replace")})
    events.put({"event": "exited"})


class Cluster:
    """n committee members; `start(i)` runs member i as a process (others may be in-test)."""

    def __init__(self, n: int, label: str, log_dir: Path, backoff_max: float = 1.0) -> None:
        self.n = n
        self.identities: list[NodeIdentity] = [
            identity_from_seed(seed_from_label(f"{label}-{i}")) for i in range(n)
        ]
        self.seeds = [seed_from_label(f"{label}-{i}") for i in range(n)]
        self.ports = [free_port() for _ in range(n)]
        self.committee = [
            f"/ip4/127.0.0.1/tcp/{self.ports[i]}/p2p/{self.identities[i].peer_id_text}"
            for i in range(n)
        ]
        self.log_dir = log_dir
        self.backoff_max = backoff_max
        self.procs: dict[int, EchoProcess] = {}
        self._starts = 0

    def start(self, index: int, *extra: str) -> EchoProcess:
        self._starts += 1
        stderr_path = self.log_dir / f"node{index}-{self._starts}.stderr"
        argv = [
            sys.executable,
            str(ECHO_SCRIPT),
            "--index",
            str(index),
            "--seed-hex",
            self.seeds[index].hex(),
            "--listen",
            f"/ip4/127.0.0.1/tcp/{self.ports[index]}",
            "--backoff-max",
            str(self.backoff_max),
            *extra,
        ]
        for entry in self.committee:
            argv += ["--peer", entry]
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=REPO
            )
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(target=_pump, args=(proc.stdout, events), daemon=True).start()
        echo = EchoProcess(index, proc, events, stderr_path)
        self.procs[index] = echo
        echo.ready = echo.expect("ready", timeout=60)
        return echo

    def close(self) -> None:
        for echo in list(self.procs.values()):
            echo.stop()
        self.procs.clear()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# Raw libp2p peers driven from synchronous tests


class TrioThread:
    """A trio loop on a background thread; tests submit coroutines to it with `run`.

    It lets one libp2p host and its connections outlive single Hypothesis examples.
    """

    def __init__(self) -> None:
        import trio

        self._trio = trio
        self._token: Any = None
        self._nursery: Any = None
        self._stop: Any = None
        started = threading.Event()
        self._error: BaseException | None = None

        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                started.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()

        def target() -> None:
            try:
                trio.run(main)
            except BaseException as error:  # surfaced by close()
                self._error = error
            finally:
                started.set()

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()
        started.wait(timeout=30)

    def run(self, afn: Any, *args: Any) -> Any:
        return self._trio.from_thread.run(afn, *args, trio_token=self._token)

    async def start_background(self, afn: Any, *args: Any) -> Any:
        return await self._nursery.start(afn, *args)

    def close(self) -> None:
        if self._token is not None and self._thread.is_alive():
            self._trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(timeout=30)


def raw_host(identity: NodeIdentity, security: str) -> Any:
    """A libp2p host with `identity` offering `security`: "noise", "plaintext" or
    "plaintext-first" (plaintext proposed before Noise)."""
    from libp2p import NOISE_PROTOCOL_ID, PLAINTEXT_PROTOCOL_ID, NoiseTransport, new_host
    from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
    from libp2p.network.config import RetryConfig
    from libp2p.security.insecure.transport import InsecureTransport

    kp = identity.key_pair
    noise = NoiseTransport(kp, noise_privkey=new_x25519_key_pair().private_key)
    plain = InsecureTransport(kp)
    sec_opt: dict[Any, Any] = {
        "noise": {NOISE_PROTOCOL_ID: noise},
        "plaintext": {PLAINTEXT_PROTOCOL_ID: plain},
        "plaintext-first": {PLAINTEXT_PROTOCOL_ID: plain, NOISE_PROTOCOL_ID: noise},
    }[security]
    host = new_host(key_pair=kp, sec_opt=sec_opt, muxer_preference="YAMUX")
    host.get_network().retry_config = RetryConfig(max_retries=0)
    return host


async def serve_host(host: Any, *, task_status: Any) -> None:
    """Run `host` until the cancel scope handed to `task_status` is cancelled."""
    import multiaddr
    import trio

    with trio.CancelScope() as scope:
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            task_status.started(scope)
            await trio.sleep_forever()


def peer_info(entry: str) -> Any:
    import multiaddr
    from libp2p.peer.peerinfo import info_from_p2p_addr

    return info_from_p2p_addr(multiaddr.Multiaddr(entry))
