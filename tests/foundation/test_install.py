"""dvpsim installed, not only cloned: where solcjs, anvil and the build cache are found,
`dvpsim setup`, and (slow) the wheel in a fresh virtual environment running the demo from
a folder outside the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from chain_adapters import build, toolchain
from chain_adapters.build import REPO_ROOT
from dvpsim import install

NODE = shutil.which("node")  # before any test narrows the PATH


def _tool_tree(prefix: Path, solc_version: str = toolchain.SOLC_VERSION) -> tuple[Path, Path]:
    """An npm prefix laid out as npm lays it out, with files at the places looked at."""
    solc = prefix / "node_modules" / "solc"
    solc.mkdir(parents=True)
    (solc / "solc.js").write_text("#!/usr/bin/env node\n")
    (solc / "solc.js").chmod(0o755)
    (solc / "package.json").write_text(json.dumps({"name": "solc", "version": solc_version}))
    anvil_dir = prefix / "node_modules" / "@foundry-rs" / toolchain.platform_package() / "bin"
    anvil_dir.mkdir(parents=True)
    (anvil_dir / "anvil").write_text("#!/bin/sh\n")
    (anvil_dir / "anvil").chmod(0o755)
    return solc / "solc.js", anvil_dir / "anvil"


@pytest.fixture
def no_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No DVPSIM_ override, and a PATH holding only an empty folder of our own."""
    for name in ("DVPSIM_SOLCJS", "DVPSIM_ANVIL", "DVPSIM_BUILD_DIR"):
        monkeypatch.delenv(name, raising=False)
    on_path = tmp_path / "bin"
    on_path.mkdir()
    monkeypatch.setenv("PATH", str(on_path))
    return on_path


def test_lookup_order_env_then_prefixes_in_order_then_path(
    tmp_path: Path, no_overrides: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "checkout", tmp_path / "cache"
    solc2, anvil2 = _tool_tree(second)
    assert toolchain.solcjs_path([first, second]) == solc2
    assert toolchain.anvil_path([first, second]) == anvil2
    solc1, anvil1 = _tool_tree(first)
    assert toolchain.solcjs_path([first, second]) == solc1
    assert toolchain.anvil_path([first, second]) == anvil1
    monkeypatch.setenv("DVPSIM_SOLCJS", str(solc2))
    monkeypatch.setenv("DVPSIM_ANVIL", str(anvil2))
    assert toolchain.solcjs_path([first, second]) == solc2
    assert toolchain.anvil_path([first, second]) == anvil2


def test_path_is_last_and_solcjs_there_only_at_the_pinned_version(
    tmp_path: Path, no_overrides: Path
) -> None:
    global_npm = tmp_path / "global"
    solc, anvil = _tool_tree(global_npm, solc_version="0.8.19")
    (no_overrides / "solcjs").symlink_to(solc)  # as `npm install -g solc` links it
    (no_overrides / "anvil").symlink_to(anvil)
    assert toolchain.anvil_path([tmp_path / "nothing"]) == no_overrides / "anvil"
    with pytest.raises(
        toolchain.ToolNotFound, match=r"solcjs on PATH is 0\.8\.19: run `dvpsim setup`"
    ):
        toolchain.solcjs_path([tmp_path / "nothing"])
    json_file = solc.parent / "package.json"
    json_file.write_text(json.dumps({"name": "solc", "version": toolchain.SOLC_VERSION}))
    assert toolchain.solcjs_path([tmp_path / "nothing"]) == no_overrides / "solcjs"


def test_a_wrong_version_in_a_prefix_is_passed_over(tmp_path: Path, no_overrides: Path) -> None:
    _tool_tree(tmp_path / "old", solc_version="0.8.19")
    solc, _ = _tool_tree(tmp_path / "new")
    assert toolchain.solcjs_path([tmp_path / "old", tmp_path / "new"]) == solc


def test_missing_tools_point_to_dvpsim_setup(tmp_path: Path, no_overrides: Path) -> None:
    with pytest.raises(toolchain.ToolNotFound) as solc:
        toolchain.solcjs_path([tmp_path])
    with pytest.raises(toolchain.ToolNotFound) as anvil:
        toolchain.anvil_path([tmp_path])
    for error in (str(solc.value), str(anvil.value)):
        assert "run `dvpsim setup`" in error and "scripts/setup.sh" not in error
        assert str(tmp_path / "node_modules") in error and "\n" not in error


def test_bad_overrides_are_one_line_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVPSIM_SOLCJS", str(tmp_path / "none.js"))
    with pytest.raises(toolchain.ToolNotFound, match=r"^solcjs not found at DVPSIM_SOLCJS="):
        toolchain.solcjs_path()
    solc, _ = _tool_tree(tmp_path, solc_version="0.8.19")
    monkeypatch.setenv("DVPSIM_SOLCJS", str(solc))
    with pytest.raises(toolchain.ToolNotFound, match=r"is solcjs 0\.8\.19, dvpsim pins 0\.8\.30"):
        toolchain.solcjs_path()
    # build turns it into its own error type, which `dvpsim build` prints in one line
    with pytest.raises(build.ToolchainMissing, match="dvpsim pins"):
        build.compile_sources({"A.sol": "contract A {}"})


def test_build_cache_is_the_checkout_build_dir_unless_overridden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DVPSIM_BUILD_DIR", raising=False)
    assert toolchain.is_checkout()
    assert build.build_dir() == REPO_ROOT / "build" / "contracts"
    monkeypatch.setenv("DVPSIM_BUILD_DIR", str(tmp_path))
    assert build.build_dir() == tmp_path
    # installed (no pyproject.toml beside the packages), the cache is the user's
    assert not toolchain.is_checkout(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert toolchain.cache_dir() == tmp_path / "xdg" / "dvpsim"


def test_the_npm_pins_have_one_copy_and_the_stamp_hash_of_setup_sh() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "*package.json", "*package-lock.json"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    ).stdout.split()
    assert sorted(tracked) == [
        "chain_adapters/npm/package-lock.json",
        "chain_adapters/npm/package.json",
    ]
    pins = json.loads((toolchain.NPM_FILES_DIR / "package.json").read_text())["dependencies"]
    assert pins == {"solc": toolchain.SOLC_VERSION, "@foundry-rs/anvil": toolchain.ANVIL_VERSION}
    lock = json.loads((toolchain.NPM_FILES_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/solc"]["version"] == toolchain.SOLC_VERSION
    # the value scripts/setup.sh wrote before `dvpsim setup` existed (cat | sha256sum | cut -c1-32)
    joined = b"".join((toolchain.NPM_FILES_DIR / n).read_bytes() for n in toolchain.NPM_FILES)
    digest = subprocess.run(["sha256sum"], input=joined, capture_output=True, check=True).stdout
    assert toolchain.lock_hash() == digest.decode()[:32]


def test_setup_when_done_is_quick_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert toolchain.installed(toolchain.default_prefix()), "run scripts/setup.sh first"
    began = time.monotonic()
    assert install.main() == 0
    assert time.monotonic() - began < 3.0
    err = capsys.readouterr().err
    assert "already in" in err and "ready: " in err


def test_setup_without_node_or_npm_is_one_line(
    tmp_path: Path, no_overrides: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert install.main(tmp_path / "prefix") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dvpsim setup: Node.js not found on PATH: install Node.js 20+ (it runs solcjs)"]
    assert NODE is not None
    (no_overrides / "node").symlink_to(NODE)  # node present, npm absent
    assert install.main(tmp_path / "prefix") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dvpsim setup: npm not found on PATH: install npm beside Node.js"]


def test_setup_is_a_cli_command_with_help() -> None:
    from dvpsim.cli import build_parser

    help_text = build_parser().format_help()
    assert "setup" in help_text and "install the pinned solcjs and anvil" in help_text


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, (
        f"{cmd}: exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result  # type: ignore[no-any-return]


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_sets_up_doctors_and_runs_the_demo(tmp_path: Path) -> None:
    """pip wheel -> fresh venv (requirements.lock, then the wheel) -> dvpsim setup, doctor,
    run, from a folder outside the repository with a fresh HOME and user cache."""
    timings: dict[str, float] = {}

    def timed(name: str, cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        began = time.monotonic()
        result = _run(cmd, **kwargs)
        timings[name] = time.monotonic() - began
        print(f"{name}: {timings[name]:.1f} s", file=sys.stderr)
        return result

    # The wheel is built from the files a clone has (tracked, or new and not ignored), so a
    # stale build/ of the checkout cannot slip into it.
    source = tmp_path / "source"
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            cwd=REPO_ROOT,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for relative in filter(None, listed):
        if (REPO_ROOT / relative).is_file():
            (source / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / relative, source / relative)
    wheels = tmp_path / "wheels"
    timed(
        "wheel",
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
    )
    (wheel,) = wheels.glob("dvpsim-*.whl")
    with zipfile.ZipFile(wheel) as contents:
        names = contents.namelist()
    assert any(".dist-info/" in n and n.endswith("/LICENSE") for n in names), names
    assert "chain_adapters/npm/package-lock.json" in names and "scenarios/reference.toml" in names
    venv = tmp_path / "venv"
    timed("venv", [sys.executable, "-m", "venv", str(venv)])
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    timed("requirements", [*pip, "-r", str(REPO_ROOT / "requirements.lock")])
    timed("install wheel", [*pip, "--no-deps", str(wheel)])

    home, outside = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    outside.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DVPSIM_", "PYTHON", "VIRTUAL_ENV", "XDG_", "npm_config"))
    }
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), COLUMNS="200")
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    npm_cache = Path.home() / ".npm"
    if npm_cache.is_dir():  # npm's download cache only; dvpsim's own cache starts empty
        env["npm_config_cache"] = str(npm_cache)
    dvpsim = str(venv / "bin" / "dvpsim")

    setup = timed("setup", [dvpsim, "setup"], cwd=outside, env=env)
    cache = home / ".cache" / "dvpsim"
    assert str(cache / "npm" / "node_modules") in setup.stderr, setup.stderr
    assert (cache / "contracts").is_dir() and list((cache / "contracts").glob("*.json"))
    again = timed("setup again", [dvpsim, "setup"], cwd=outside, env=env)
    assert "already in" in again.stderr  # nothing installed again

    doctor = timed("doctor", [dvpsim, "doctor"], cwd=outside, env=env)
    assert "FAIL" not in doctor.stdout and str(cache) in doctor.stdout
    assert "an installed wheel runs interpreted" in doctor.stdout

    timed(
        "run",
        [dvpsim, "run", "reference", "--out", str(outside / "run")],  # bundled, by name
        cwd=outside,
        env=env,
    )
    summary = json.loads((outside / "run" / "summary.json").read_text())
    assert summary["checks"] and all(c["status"] == "valid" for c in summary["checks"].values())
    reconcile = timed(
        "reconcile",
        [dvpsim, "bank", "reconcile", "--db", str(outside / "run" / "bank" / "bank.db")],
        cwd=outside,
        env=env,
    )
    assert reconcile.stdout.startswith("ok: "), reconcile.stdout
    site = next((venv / "lib").glob("python3.*/site-packages"))
    assert not (site / "build").exists() and not (site / "node_modules").exists()
    print(json.dumps({k: round(v, 1) for k, v in timings.items()}), file=sys.stderr)
