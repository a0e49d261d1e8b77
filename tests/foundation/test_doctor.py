"""`dvpsim doctor` exits 0 on a working machine and names the missing part otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chain_adapters.build import REPO_ROOT

DVPSIM = [sys.executable, "-m", "dvpsim.cli"]


def _doctor(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_extra, "COLUMNS": "200"}
    return subprocess.run(
        [*DVPSIM, "doctor"], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120
    )


def test_doctor_passes_here() -> None:
    result = _doctor({})
    assert result.returncode == 0, result.stdout + result.stderr
    for check in (
        "compile",
        "chain start",
        "deploy",
        "pairing true",
        "pairing false",
        "chain stop",
    ):
        assert check in result.stdout
    assert "FAIL" not in result.stdout
    assert "anvil 1.7.1" in result.stdout


def test_doctor_without_anvil_fails_with_one_line(tmp_path: Path) -> None:
    result = _doctor({"DVPSIM_ANVIL": str(tmp_path / "no-anvil-here")})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("dvpsim doctor: chain start: anvil not found")
    assert "Traceback" not in result.stderr


def test_readme_opens_with_two_commands_and_ci_runs_the_second() -> None:
    import re

    readme = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"```[a-z]*\n(.*?)```", readme, re.S)
    assert block is not None
    commands = [
        line.strip()
        for line in block.group(1).splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert len(commands) == 2
    ci_lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert commands[1] in ci_lines
