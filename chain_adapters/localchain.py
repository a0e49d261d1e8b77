"""Start and stop local EVM chains (anvil) for dvpsim: the one way the project does it.

Every runner, benchmark and test that needs a chain goes through :func:`start_chain`.
A chain is an anvil process from the pinned npm package ``@foundry-rs/anvil`` (found as
:mod:`chain_adapters.toolchain` says), bound
to 127.0.0.1 (or one address given, for nodes on other machines: docs/DEPLOY.md) on a
free port, with a given chain id and ``--hardfork prague`` (without
Prague the EIP-2537 BLS12-381 precompiles silently return nothing). Its output goes
to a log file.

A chain is a :class:`processes.ManagedProcess`, stopped by its PID: when its ``with``
block ends (normally, on an exception or on Ctrl-C), at interpreter exit for chains still
running, and by the kernel if this process dies without cleaning up (``PR_SET_PDEATHSIG``);
``processes`` does all three. This module never signals a process it did not start.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chain_adapters import toolchain
from processes import ManagedProcess, start_process

HARDFORK = "prague"
ANVIL_VERSION = toolchain.ANVIL_VERSION
DEFAULT_CHAIN_ID = 31337
# anvil's default mnemonic ("test test ... junk") gives these well-known dev accounts.
DEV_PRIVATE_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)


class ChainError(Exception):
    """A local chain could not be started, or stopped answering."""


def anvil_path() -> Path:
    """The anvil binary: ``$DVPSIM_ANVIL``, a checkout's ``node_modules``, the user cache
    directory (`dvpsim setup`), the PATH: :func:`chain_adapters.toolchain.anvil_path`."""
    try:
        return toolchain.anvil_path()
    except toolchain.ToolNotFound as exc:
        raise ChainError(str(exc)) from exc


def anvil_version(path: Path | None = None) -> str:
    out = subprocess.run(
        [str(path or anvil_path()), "--version"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].replace("anvil Version:", "").strip() if first else "unknown"


_LOWEST_PORT = 15000
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now, for a process that binds it a little later.

    The port is drawn outside the kernel's ephemeral range: a port the kernel picked (bind
    to port 0) goes back into that pool, where an outgoing connection or another port-0
    listener can take it before its owner binds it. That happened: a node lost its
    webhook port and the run could not start. Ports handed out by this process are not
    handed out again."""
    low, high = _ephemeral_range()
    if low - _LOWEST_PORT >= 1000:
        candidates = range(_LOWEST_PORT, low)
    elif 65535 - high >= 1000:
        candidates = range(high + 1, 65536)
    else:  # no room outside the ephemeral range: let the kernel choose
        candidates = range(0)
    rng = random.SystemRandom()
    for _ in range(200 if candidates else 0):
        port = rng.choice(candidates)
        with _handed_out_lock:
            if port in _handed_out:
                continue
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((host, port))
            except OSError:
                continue
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def rpc_call(url: str, method: str, params: list[Any] | None = None, timeout: float = 5.0) -> Any:
    """One JSON-RPC call over HTTP with the standard library (no web3 needed)."""
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
    ).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.loads(response.read())
    if "error" in reply:
        raise ChainError(
            f"{method} failed at {url}: {reply['error'].get('message', reply['error'])}"
        )
    return reply["result"]


@dataclass
class LocalChain:
    """A running anvil process. Use as a context manager, or call :meth:`stop`."""

    chain_id: int
    port: int
    process: ManagedProcess
    block_time: float | None = None
    started_in: float = 0.0
    host: str = "127.0.0.1"
    _w3: Any = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def running(self) -> bool:
        return self.process.running()

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        return rpc_call(self.rpc_url, method, params)

    def web3(self) -> Any:
        """A web3.py client for this chain (created once)."""
        if self._w3 is None:
            from web3 import Web3

            self._w3 = Web3(Web3.HTTPProvider(self.rpc_url, request_kwargs={"timeout": 30}))
        return self._w3

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        if not self.rpc("evm_revert", [snapshot_id]):
            raise ChainError(f"evm_revert({snapshot_id}) refused by chain {self.chain_id}")

    def log_tail(self, lines: int = 20) -> str:
        return self.process.log_tail(lines)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop this anvil by its PID: SIGTERM, then SIGKILL if it lingers."""
        self.process.stop(timeout)

    def __enter__(self) -> LocalChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_chain(
    chain_id: int = DEFAULT_CHAIN_ID,
    *,
    block_time: float | None = None,
    log_dir: Path | None = None,
    accounts: int = 10,
    hardfork: str = HARDFORK,
    startup_timeout: float = 15.0,
    extra_args: tuple[str, ...] = (),
    host: str = "127.0.0.1",
) -> LocalChain:
    """Start anvil on ``host`` (127.0.0.1, or one interface's address that nodes on other
    machines reach) and return once it answers JSON-RPC with ``chain_id``.

    ``hardfork`` other than Prague exists for tests that show what breaks without it.
    """
    binary = anvil_path()
    log_dir = log_dir or Path(tempfile.gettempdir()) / "dvpsim-chains"
    log_dir.mkdir(parents=True, exist_ok=True)
    last_error = "no attempt made"
    for _attempt in range(3):  # a free port can be taken between probe and bind: retry
        port = free_port(host)
        log_path = log_dir / f"anvil-{chain_id}-{port}.log"
        # --max-persisted-states 0: anvil keeps its recent states in memory only. By
        # default it writes older ones under ~/.foundry/anvil/tmp and removes them only on
        # a clean exit: a chain stopped by signal (or by the kernel when its owner dies)
        # left hundreds of MB a run there, tens of GB over a day of test runs.
        args = [
            str(binary), "--host", host, "--port", str(port), "--chain-id", str(chain_id),
            "--hardfork", hardfork, "--accounts", str(accounts), "--max-persisted-states", "0",
            *extra_args,
        ]  # fmt: skip
        if block_time is not None:
            args += ["--block-time", str(block_time)]
        begun = time.monotonic()
        process = start_process(f"anvil-{chain_id}", args, log_path)
        chain = LocalChain(
            chain_id=chain_id, port=port, process=process, block_time=block_time, host=host
        )
        try:
            _wait_until_ready(chain, startup_timeout)
        except ChainError as exc:
            last_error = str(exc)
            chain.stop()
            continue
        except BaseException:
            chain.stop()  # Ctrl-C while waiting must not leave a chain behind
            raise
        chain.started_in = time.monotonic() - begun
        return chain
    raise ChainError(f"anvil did not start for chain id {chain_id}: {last_error}")


def _wait_until_ready(chain: LocalChain, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not chain.running():
            raise ChainError(
                f"anvil exited with code {chain.process.returncode}: {chain.log_tail(3)}"
            )
        try:
            answered = int(chain.rpc("eth_chainId"), 16)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            answered = None
        if answered is not None:
            if answered != chain.chain_id:
                raise ChainError(
                    f"anvil on port {chain.port} answers chain id {answered}, expected {chain.chain_id}"
                )
            return
        if time.monotonic() > deadline:
            raise ChainError(
                f"anvil on port {chain.port} did not answer within {timeout:.0f} s (log: {chain.log_path})"
            )
        time.sleep(0.02)
