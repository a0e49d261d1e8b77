"""Lint and types, in the default test run (so CI runs them through the README's command):
ruff over the whole tree, and ``mypy --strict`` over the sans-I/O cores and the simulated
world (the modules the pyproject's strict override names)."""

from __future__ import annotations

import subprocess
import sys

from chain_adapters.build import REPO_ROOT

#: Held to ``mypy --strict`` (pyproject.toml's override lists the same modules).
STRICT = (
    "consensus",
    "node/driver.py",
    "node/legs.py",
    "node/modes.py",
    "node/dvp.py",
    "node/trace.py",
    "scenarios/sim",
    "scenarios/checks.py",
    "scenarios/history.py",
    "chain_adapters/model.py",
    "chain_adapters/gas.py",
    "bank_adapter/ledger.py",
    "processes",
    "native",
)


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300
    )


def test_ruff_finds_nothing() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout[-4000:]


def test_the_code_is_formatted() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout[-4000:]


def test_mypy_strict_is_clean_on_the_cores_and_the_simulated_world() -> None:
    result = run("mypy", *STRICT)
    assert result.returncode == 0, result.stdout[-4000:]
