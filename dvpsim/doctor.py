"""`dvpsim doctor`: check that this machine can build and run dvpsim, and say what is missing.

It compiles the contracts, starts an anvil chain, deploys a small contract, asks the
EIP-2537 BLS12-381 pairing precompile one question whose answer is true and one whose
answer is false, stops the chain and prints a table of what it found. Every failed
check prints one line: what is missing and how to fix it. The exit code is 0 only when
every check passed.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from rich.console import Console
from rich.table import Table

import native
from chain_adapters import build, localchain, toolchain


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float


class DoctorFailure(Exception):
    """A check failed; the message is the one-line fix shown to the user."""


def pairing_inputs() -> tuple[bytes, bytes]:
    """EIP-2537 pairing inputs: e(G1, G2)·e(-G1, G2) == 1 (true) and e(G1, G2) == 1 (false)."""
    from py_ecc.optimized_bls12_381 import G1, G2, neg, normalize

    from consensus.eip2537 import encode_g1_affine, encode_g2_affine

    def g1_point(point: object) -> bytes:
        x, y = normalize(point)  # type: ignore[arg-type]
        return encode_g1_affine((int(x), int(y)))

    x2, y2 = normalize(G2)  # type: ignore[arg-type]
    g2 = encode_g2_affine(
        ((int(x2.coeffs[0]), int(x2.coeffs[1])), (int(y2.coeffs[0]), int(y2.coeffs[1])))
    )
    g1, minus_g1 = g1_point(G1), g1_point(neg(G1))
    return g1 + g2 + minus_g1 + g2, g1 + g2


def _timed(checks: list[Check], name: str, body: Callable[[], str]) -> None:
    began = time.monotonic()
    try:
        detail = body()
    except DoctorFailure as exc:
        checks.append(Check(name, False, str(exc), time.monotonic() - began))
        raise
    checks.append(Check(name, True, detail, time.monotonic() - began))


def run_checks() -> list[Check]:
    """Run every check in order; stop at the first failure (later checks depend on it)."""
    checks: list[Check] = []
    state: dict[str, object] = {}

    def python() -> str:
        if sys.version_info[:2] != (3, 11):
            raise DoctorFailure(
                f"Python {platform.python_version()} found, dvpsim needs 3.11: install dvpsim into a Python 3.11 environment"
            )
        versions = []
        for dist in ("dvpsim", "web3", "pyblst", "py-ecc", "libp2p"):
            try:
                versions.append(f"{dist} {metadata.version(dist)}")
            except metadata.PackageNotFoundError as exc:
                raise DoctorFailure(
                    f"Python package {dist} is not installed: pip install -r requirements.lock (a checkout: scripts/setup.sh)"
                ) from exc
        # The native build is optional (without it the same code runs interpreted, slower);
        # it is made from a checkout's native/ package, so an installed wheel runs interpreted.
        compiled = (
            native.status()
            if toolchain.is_checkout()
            else "native build: none (an installed wheel runs interpreted)"
        )
        return f"Python {platform.python_version()}; " + ", ".join(versions) + f"; {compiled}"

    def node() -> str:
        try:
            exe = toolchain.node_path()
        except toolchain.ToolNotFound as exc:
            raise DoctorFailure(str(exc)) from exc
        return (
            "Node.js "
            + subprocess.run(
                [exe, "--version"], capture_output=True, text=True, check=False
            ).stdout.strip()
        )

    def solcjs() -> str:
        try:
            return f"solcjs {toolchain.SOLC_VERSION} at {toolchain.solcjs_path()}"
        except toolchain.ToolNotFound as exc:
            raise DoctorFailure(str(exc)) from exc

    def compile_contracts() -> str:
        try:
            artifacts = build.compile_contracts()
        except build.CompileError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "unknown error"
            raise DoctorFailure(f"contracts do not compile: {first}") from exc
        state["artifacts"] = artifacts
        return f"solcjs {build.SOLC_VERSION}, evmVersion {build.EVM_VERSION}: {len(artifacts)} contracts, cached in {build.build_dir()}"

    def start() -> str:
        try:
            binary = localchain.anvil_path()
            chain = localchain.start_chain(31337)
        except localchain.ChainError as exc:
            raise DoctorFailure(str(exc)) from exc
        state["chain"] = chain
        return f"anvil {localchain.anvil_version(binary)} ({binary}) pid {chain.pid} on 127.0.0.1:{chain.port}, hardfork {localchain.HARDFORK}, ready in {chain.started_in * 1000:.0f} ms"

    def deploy_probe() -> str:
        from chain_adapters.deploy import deploy

        chain = state["chain"]
        assert isinstance(chain, localchain.LocalChain)
        artifacts = state["artifacts"]
        assert isinstance(artifacts, dict)
        probe = deploy(chain.web3(), artifacts["PrecompileProbe"])
        state["probe"] = probe
        return f"PrecompileProbe at {probe.address}"

    def precompile(expected: bool) -> Callable[[], str]:
        def check() -> str:
            probe = state["probe"]
            true_input, false_input = pairing_inputs()
            try:
                answer = probe.functions.pairingCheck(
                    true_input if expected else false_input
                ).call()  # type: ignore[attr-defined]
            except Exception as exc:  # a revert here means the precompile is absent
                raise DoctorFailure(
                    f"EIP-2537 pairing precompile did not answer ({type(exc).__name__}): the chain must run with --hardfork prague"
                ) from exc
            if answer is not expected:
                raise DoctorFailure(
                    f"EIP-2537 pairing check returned {answer}, expected {expected}: the chain's BLS12-381 precompile is wrong; use anvil {localchain.ANVIL_VERSION}"
                )
            return f"e(G1,G2)*e(-G1,G2)==1 -> {answer}" if expected else f"e(G1,G2)==1 -> {answer}"

        return check

    def stop() -> str:
        chain = state.pop("chain")
        assert isinstance(chain, localchain.LocalChain)
        chain.stop()
        if chain.running():
            raise DoctorFailure(
                f"anvil pid {chain.pid} still running after stop: kill it with `kill {chain.pid}`"
            )
        return f"pid {chain.pid} stopped"

    steps: list[tuple[str, Callable[[], str]]] = [
        ("python", python),
        ("node.js", node),
        ("solcjs", solcjs),
        ("compile", compile_contracts),
        ("chain start", start),
        ("deploy", deploy_probe),
        ("pairing true", precompile(True)),
        ("pairing false", precompile(False)),
        ("chain stop", stop),
    ]
    try:
        for name, body in steps:
            _timed(checks, name, body)
    except DoctorFailure:
        pass
    finally:
        chain = state.get("chain")
        if isinstance(chain, localchain.LocalChain):
            chain.stop()
    return checks


def main(console: Console | None = None) -> int:
    console = console or Console()
    checks = run_checks()
    table = Table(title="dvpsim doctor")
    table.add_column("check")
    table.add_column("result")
    table.add_column("ms", justify="right")
    table.add_column("detail")
    for check in checks:
        table.add_row(
            check.name,
            "[green]ok[/]" if check.ok else "[red]FAIL[/]",
            f"{check.seconds * 1000:.0f}",
            check.detail,
        )
    console.print(table)
    failed = [c for c in checks if not c.ok]
    if failed:
        print(f"dvpsim doctor: {failed[0].name}: {failed[0].detail}", file=sys.stderr)
        return 1
    console.print("[green]all checks passed[/]")
    return 0
