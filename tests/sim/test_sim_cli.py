"""`dvpsim sim` as a user meets it: exit codes, one-line errors, the replay command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from chain_adapters.build import REPO_ROOT

SCENARIOS = REPO_ROOT / "scenarios"


def sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dvpsim.cli", "sim", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )


def variant(tmp: Path, name: str, old: str, new: str) -> Path:
    text = (SCENARIOS / "reference.toml").read_text()
    assert old in text
    path = tmp / f"{name}.toml"
    path.write_text(text.replace(old, new))
    return path


def test_a_passing_run_exits_0_and_writes_the_run_folder(tmp_path: Path) -> None:
    result = sim(str(SCENARIOS / "single-chain-onchain.toml"), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED" in result.stdout
    assert (tmp_path / "run" / "history.jsonl").stat().st_size > 0
    assert (tmp_path / "run" / "summary.json").exists()


def test_an_unsafe_scenario_that_fails_the_check_it_names_exits_0(tmp_path: Path) -> None:
    result = sim(str(SCENARIOS / "unsafe-self-refund.toml"), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stdout + result.stderr
    words = " ".join(result.stdout.split())
    assert "checks │ FAILED" in words
    assert "met (fail atomicity)" in words
    assert "expectation not met" not in words


def test_a_run_that_misses_its_expectation_exits_1_with_the_check_seed_and_replay(
    tmp_path: Path,
) -> None:
    # The safe reference case passes every check, so expecting atomicity to fail is unmet.
    path = variant(tmp_path, "expects-a-break", "seed = ", 'expect = ["atomicity"]\nseed = ')
    result = sim(str(path), "--out", str(tmp_path / "run"), "--crypto", "fast")
    assert result.returncode == 1, result.stdout + result.stderr
    words = " ".join(result.stdout.split())
    assert "NOT MET (fail atomicity)" in words
    assert "expectation not met: atomicity: expected invalid, got valid" in words
    command = f"dvpsim sim {path} --seed 1 --crypto fast"
    assert f"seed 1; replay with: {command}\n" in result.stdout  # one line, unwrapped


def test_a_run_that_breaks_an_invariant_it_does_not_name_exits_1(tmp_path: Path) -> None:
    text = (SCENARIOS / "unsafe-self-refund.toml").read_text()
    path = tmp_path / "no-expectation.toml"
    path.write_text(text.replace('expect = ["atomicity"]\n', ""))
    result = sim(str(path), "--out", str(tmp_path / "run"), "--crypto", "fast")
    assert result.returncode == 1, result.stdout + result.stderr
    words = " ".join(result.stdout.split())
    assert "expectation not met: atomicity: expected valid, got invalid (0x" in words
    assert "committed on one leg and aborted on another" in words


def test_check_determinism_runs_twice_and_compares(tmp_path: Path) -> None:
    result = sim(
        str(SCENARIOS / "single-chain-bank.toml"),
        "--out",
        str(tmp_path / "run"),
        "--seed",
        "9",
        "--check-determinism",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deterministic: two runs gave history digest" in result.stdout


def test_a_seed_that_is_not_an_integer_is_one_line_and_exit_2() -> None:
    result = sim(str(SCENARIOS / "reference.toml"), "--seed", "abc")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "dvpsim sim: --seed 'abc' is not an integer: give a whole number, e.g. --seed 7"
    )
    assert result.stdout == ""


def test_a_key_only_a_real_run_can_honour_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = variant(
        tmp_path,
        "external",
        "chain_id = 31337",
        'chain_id = 31337\nrpc_url = "http://127.0.0.1:8545"',
    )
    result = sim(str(path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "chains[0].rpc_url: the simulation cannot reach an external chain" in result.stderr
    assert "use `dvpsim run`" in result.stderr


def test_a_workload_its_accounts_cannot_pay_for_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = variant(tmp_path, "poor", "asset = 1000", "asset = 50")
    result = sim(str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"dvpsim sim: {path}: settlements: account 'seller' holds asset = 50 but 20 "
        "settlements need 190: raise accounts.asset of 'seller' or lower settlements.count"
    )


def test_an_unknown_crypto_suite_is_one_line_and_exit_2() -> None:
    result = sim(str(SCENARIOS / "reference.toml"), "--crypto", "quantum")
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "dvpsim sim: --crypto 'quantum' is unknown: use one of real, fast"
    )
