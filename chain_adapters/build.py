"""Compile dvpsim's Solidity contracts with the pinned solcjs, and cache the artifacts.

Every contract under ``chain_adapters/contracts/`` is compiled in one standard-JSON
call to the npm ``solc`` package (solcjs; native solc cannot be downloaded here). The
compiler version and the settings (``evmVersion``, optimizer) are pinned below, and the
artifacts (ABI, creation and runtime bytecode) are cached under a hash of the sources, the
settings and the compiler version, so a second build is a file read: in ``build/contracts/``
of a checkout, in the user cache directory when dvpsim is installed, or in
``$DVPSIM_BUILD_DIR``. solcjs is found as :mod:`chain_adapters.toolchain` says.

solcjs has two habits this module hides: it prints a line ("Cannot retry compilation
with SMT ...") before its JSON on stdout, and it exits 0 when the sources do not compile.
Errors come back as :class:`CompileError` whose text is ``File.sol:LINE: message``.

This module never deploys anything and never talks to a chain.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain_adapters import toolchain
from chain_adapters.toolchain import REPO_ROOT, SOLC_VERSION

CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
EVM_VERSION = "prague"

SETTINGS: dict[str, Any] = {
    "evmVersion": EVM_VERSION,
    "optimizer": {"enabled": True, "runs": 1000},
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}


class CompileError(Exception):
    """The contracts did not compile; ``str(e)`` lists ``File.sol:LINE: message`` lines."""


class ToolchainMissing(CompileError):
    """The pinned solcjs (npm) or Node.js is not installed."""


@dataclass(frozen=True)
class Artifact:
    name: str
    source: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str


def _toolchain() -> tuple[str, Path]:
    """Node.js and the pinned solcjs, or :class:`ToolchainMissing` saying how to get them."""
    try:
        return toolchain.node_path(), toolchain.solcjs_path()
    except toolchain.ToolNotFound as exc:
        raise ToolchainMissing(str(exc)) from exc


def read_sources(contracts_dir: Path = CONTRACTS_DIR) -> dict[str, str]:
    """All ``.sol`` files under ``contracts_dir``, keyed by their path relative to it."""
    sources = {}
    for path in sorted(contracts_dir.rglob("*.sol")):
        sources[path.relative_to(contracts_dir).as_posix()] = path.read_text()
    return sources


def _cache_key(sources: dict[str, str]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"solc": SOLC_VERSION, "settings": SETTINGS}, sort_keys=True).encode())
    for name, text in sorted(sources.items()):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:24]


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, max(offset, 0)) + 1


def _format_errors(errors: list[dict[str, Any]], sources: dict[str, str]) -> str:
    lines = []
    for error in errors:
        location = error.get("sourceLocation") or {}
        file = location.get("file")
        message = f"{error.get('type', 'Error')}: {error.get('message', '').strip()}"
        if file in sources:
            lines.append(f"{file}:{_line_of(sources[file], location.get('start', 0))}: {message}")
        elif file:
            lines.append(f"{file}: {message}")
        else:
            lines.append(message)
    return "\n".join(lines)


def _parse_solcjs_stdout(stdout: str) -> dict[str, Any]:
    # solcjs may print informational lines before its JSON document.
    start = stdout.find("{")
    if start < 0:
        raise CompileError(f"solcjs printed no JSON: {stdout.strip()[:200]}")
    try:
        result: dict[str, Any] = json.loads(stdout[start:])
    except json.JSONDecodeError as exc:
        raise CompileError(f"solcjs printed malformed JSON: {exc}") from exc
    return result


def compile_sources(sources: dict[str, str], *, timeout: float = 300.0) -> dict[str, Artifact]:
    """Compile ``sources`` (name -> text) with solcjs; raises :class:`CompileError`."""
    node, solc = _toolchain()
    request = {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": SETTINGS,
    }
    # solcjs calls process.exit() right after writing its answer: into a pipe, everything
    # past the first 64 KiB is lost. A regular file receives all of it.
    # Its stdin is read with readFileSync(0), which fails with EAGAIN on a pipe that is not
    # filled yet: give it a file too.
    with (
        tempfile.TemporaryFile(mode="w+") as out,
        tempfile.TemporaryFile(mode="w+") as request_file,
    ):
        request_file.write(json.dumps(request))
        request_file.seek(0)
        proc = subprocess.run(
            [node, str(solc), "--standard-json", "--base-path", str(CONTRACTS_DIR)],
            stdin=request_file,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
        )
        out.seek(0)
        stdout = out.read()
    if proc.returncode != 0:
        raise CompileError(f"solcjs exited {proc.returncode}: {proc.stderr.strip()[:300]}")
    result = _parse_solcjs_stdout(stdout)
    errors = [e for e in result.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise CompileError(_format_errors(errors, sources))
    artifacts: dict[str, Artifact] = {}
    for source, contracts in result.get("contracts", {}).items():
        for name, output in contracts.items():
            if name in artifacts:
                raise CompileError(
                    f"{source}: contract name {name} also defined in {artifacts[name].source}"
                )
            artifacts[name] = Artifact(
                name=name,
                source=source,
                abi=output["abi"],
                bytecode="0x" + output["evm"]["bytecode"]["object"],
                deployed_bytecode="0x" + output["evm"]["deployedBytecode"]["object"],
            )
    return artifacts


def build_dir() -> Path:
    """The artifact cache: ``$DVPSIM_BUILD_DIR``, else ``build/contracts`` of a checkout,
    else ``contracts/`` in the user cache directory (never inside site-packages)."""
    override = os.environ.get("DVPSIM_BUILD_DIR")
    if override:
        return Path(override)
    if toolchain.is_checkout():
        return REPO_ROOT / "build" / "contracts"
    return toolchain.cache_dir() / "contracts"


def compile_contracts(
    contracts_dir: Path = CONTRACTS_DIR, *, use_cache: bool = True
) -> dict[str, Artifact]:
    """Compile every contract of dvpsim, using the artifact cache when it is current."""
    sources = read_sources(contracts_dir)
    if not sources:
        raise CompileError(f"no .sol files under {contracts_dir}")
    cache = build_dir() / f"{_cache_key(sources)}.json"
    if use_cache and cache.exists():
        try:
            data = json.loads(cache.read_text())
            return {name: Artifact(**fields) for name, fields in data.items()}
        except (json.JSONDecodeError, TypeError):
            pass  # a torn or stale cache file is rebuilt below
    artifacts = compile_sources(sources)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({n: a.__dict__ for n, a in artifacts.items()}))
    os.replace(tmp, cache)  # atomic: a concurrent reader never sees half a file
    return artifacts


def main() -> int:
    import sys

    try:
        artifacts = compile_contracts(use_cache="--force" not in sys.argv)
    except CompileError as exc:
        print(exc, file=sys.stderr)
        return 1
    for name, artifact in sorted(artifacts.items()):
        print(
            f"{name:28s} {len(artifact.deployed_bytecode) // 2 - 1:6d} bytes  ({artifact.source})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
