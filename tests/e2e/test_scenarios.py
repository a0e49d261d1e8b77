"""End to end: `dvpsim run` on the shipped scenarios, with real chains, bank and node
processes, each held against `dvpsim sim` on the same scenario.

Each of the four settlement modes commits and aborts (insufficient funds, a missed
deadline) and ends with every party's balances exactly as the committed settlements say;
the kill-and-restart scenario passes its checks; the unsafe self-refunding variant makes
the checks fail and the command exit non-zero.

Real against sim (the differential of the two worlds): every scenario gives the same
status for each check in both, and, for the reference case and each mode without faults,
the same committed and aborted settlements and every party's same final token and bank
balances (native gas is not among them).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from chain_adapters.build import REPO_ROOT
from chain_adapters.localchain import free_port
from consensus import bls
from consensus.devkeys import rogue_public_key
from node.provision import make_keys, write_committee
from scenarios.real import RealRun
from scenarios.schema import load
from scenarios.sim.run import SimRun
from tests.run_schemas import assert_run_folder_conforms

pytestmark = pytest.mark.e2e
SCENARIOS = REPO_ROOT / "scenarios"


def _run(name: str, out: Path) -> dict[str, Any]:
    report = RealRun(load(SCENARIOS / f"{name}.toml"), out).run()
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(report.summary, default=str))
    assert (out / "history.jsonl").stat().st_size > 0
    # Every real run's folder holds to the published JSON Schemas (docs/schemas/), and
    # its secrets (keys, passwords, client secrets) are its owner's alone.
    assert_run_folder_conforms(out)
    secrets = [
        *out.glob("committee/*/password"),
        *out.glob("committee/*/bls.keystore"),
        *out.glob("committee/*/config.json"),  # the transmitter keys
        *out.glob("bank/clients.json"),
    ]
    assert secrets
    assert {path: path.stat().st_mode & 0o777 for path in secrets} == dict.fromkeys(secrets, 0o600)
    return summary


def _sim(name: str, out: Path) -> dict[str, Any]:
    report = SimRun(load(SCENARIOS / f"{name}.toml"), out).run()
    return report.summary


def _leg_steps(run_dir: Path) -> Counter[tuple[str, str, str, str]]:
    """Every "leg" record of a run's history: (settlement, leg, step, phase), counted."""
    steps: Counter[tuple[str, str, str, str]] = Counter()
    for line in (run_dir / "history.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["event"] == "leg":
            steps[(record["settlement"], record["leg"], record["step"], record["phase"])] += 1
    return steps


def _statuses(summary: dict[str, Any]) -> dict[str, str]:
    return {name: check["status"] for name, check in summary["checks"].items()}


def _assert_same_outcome(real: dict[str, Any], sim: dict[str, Any]) -> None:
    """Both worlds settled the same workload the same way."""
    assert _statuses(sim) == _statuses(real)
    assert sim["committed_ids"] == real["committed_ids"]
    assert sim["aborted_ids"] == real["aborted_ids"]
    assert sim["balances"] == real["balances"]


def _assert_balances(summary: dict[str, Any]) -> None:
    assert summary["balances"], "no party balances were checked"
    for balance in summary["balances"]:
        assert balance["expected"] == balance["actual"], balance


@pytest.mark.parametrize(
    "name", ["single-chain-onchain", "single-chain-bank", "multi-chain-token", "reference"]
)
def test_mode_commits_and_aborts_with_exact_balances(name: str, tmp_path: Path) -> None:
    summary = _run(name, tmp_path / name)
    scenario = load(SCENARIOS / f"{name}.toml")
    failing = sum(f.count for f in scenario.settlements.fail)
    assert summary["passed"], summary["checks"]
    assert summary["ended"] == summary["settlements"] == scenario.settlements.count
    assert summary["committed"] == scenario.settlements.count - failing
    assert summary["aborted"] == failing > 0
    _assert_balances(summary)
    seller = next(
        b for b in summary["balances"] if b["party"] == "seller" and b["asset"] == "asset"
    )
    opening = scenario.accounts[0].asset
    assert seller["actual"] == opening - summary["committed"] * scenario.settlements.asset_amount
    _assert_same_outcome(summary, _sim(name, tmp_path / f"{name}-sim"))
    # The two histories tell the same story of every leg: the same steps, as often.
    assert _leg_steps(tmp_path / name) == _leg_steps(tmp_path / f"{name}-sim")


def test_node_killed_and_restarted_mid_run(tmp_path: Path) -> None:
    summary = _run("kill-restart", tmp_path / "kill")
    assert summary["passed"], summary["checks"]
    assert summary["committed"] == summary["settlements"]
    _assert_balances(summary)
    history = [
        json.loads(line) for line in (tmp_path / "kill" / "history.jsonl").read_text().splitlines()
    ]
    restarted = [
        e["node"]
        for e in history
        if e["event"] == "fault" and e["phase"] == "end" and e["kind"] == "kill-node"
    ]
    assert restarted == [2, 0]
    assert _statuses(_sim("kill-restart", tmp_path / "kill-sim")) == _statuses(summary)
    # Every node, the two restarted ones included, signed at most one side of each settlement.
    for index in range(4):
        db = sqlite3.connect(
            tmp_path / "kill" / "committee" / f"node{index}" / "data" / "safety.sqlite"
        )
        signed: dict[bytes, set[int]] = {}
        for sid, action in db.execute("SELECT settlement_id, action FROM decisions"):
            signed.setdefault(bytes(sid), set()).add(action)
        db.close()
        assert signed, f"node {index} signed nothing"
        assert all(actions != {1, 2} for actions in signed.values()), (
            f"node {index} signed COMMIT and ABORT"
        )


@pytest.mark.parametrize(
    "name",
    [
        "unsafe-colluding-liars",
        "colluding-liars-f",
        # about 25 s each: kept for the slow run
        pytest.param("self-refund-safe", marks=pytest.mark.slow),
        pytest.param("unsafe-reorg-below-confirmations", marks=pytest.mark.slow),
        pytest.param("reorg-within-confirmations", marks=pytest.mark.slow),
        pytest.param("unsafe-lying-rpc", marks=pytest.mark.slow),  # 65 s
        "lying-rpc-f",
        # 40 to 50 s each
        pytest.param("unsafe-equivocation-low-threshold", marks=pytest.mark.slow),
        pytest.param("equivocation-default-threshold", marks=pytest.mark.slow),
        pytest.param("unsafe-wipe-equivocation", marks=pytest.mark.slow),
        pytest.param("equivocation-store-kept", marks=pytest.mark.slow),
    ],
)
def test_the_unsafe_catalogue_and_its_twins_meet_their_expectations_in_both_worlds(
    name: str, tmp_path: Path
) -> None:
    """Byzantine members in real node processes: f+1 colluding liars break atomicity and
    validity, f change nothing; anvil's own reorg deeper than the confirmations breaks
    them too, confirmations beyond it keep them; the safe escrow passes where the
    self-refunding one fails (test_unsafe_self_refund_breaks_atomicity_and_the_command_says_so);
    an equivocating leader gets a COMMIT and an ABORT certified for one settlement with
    t = f+1, or with a member whose safety store was wiped, and neither with the default
    t and every safety store kept."""
    summary = _run(name, tmp_path / name)
    assert summary["expectation_met"], summary["expectation_differences"]
    assert _statuses(_sim(name, tmp_path / f"{name}-sim")) == _statuses(summary)


# Slow (26 s): the sim side runs in tests/test_report.py, real frames in test_network_faults_real.
@pytest.mark.slow
def test_network_faults_heal_and_every_check_passes_in_both_worlds(tmp_path: Path) -> None:
    summary = _run("network-faults", tmp_path / "net")
    assert summary["passed"], summary["checks"]
    assert summary["committed"] == summary["settlements"]
    sim = _sim("network-faults", tmp_path / "net-sim")
    assert _statuses(sim) == _statuses(summary)
    assert sim["committed_ids"] == summary["committed_ids"]


def test_bank_outage_errors_and_duplicate_callbacks_change_no_outcome(tmp_path: Path) -> None:
    summary = _run("bank-faults", tmp_path / "bank")
    scenario = load(SCENARIOS / "bank-faults.toml")
    failing = sum(f.count for f in scenario.settlements.fail)
    assert summary["passed"], summary["checks"]
    assert summary["ended"] == summary["settlements"]
    assert summary["committed"] == scenario.settlements.count - failing
    _assert_balances(summary)
    # The faults bit: nodes saw the bank refuse or fail reports and retried them.
    warnings = [
        json.loads(line)["msg"]
        for index in range(scenario.committee.n)
        for line in (tmp_path / "bank" / "committee" / f"node{index}" / "node.log")
        .read_text()
        .splitlines()
        if '"warning"' in line
    ]
    assert "bank refused the report" in warnings
    sim = _sim("bank-faults", tmp_path / "bank-sim")
    assert _statuses(sim) == _statuses(summary)
    assert sim["committed"] == summary["committed"]


# Slow (31 s): the same scenario's verdict and exit code in sim: tests/sim/test_catalogue.py, test_sim_cli.py.
@pytest.mark.slow
def test_unsafe_self_refund_breaks_atomicity_and_the_command_says_so(tmp_path: Path) -> None:
    out = tmp_path / "unsafe"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dvpsim.cli",
            "run",
            str(SCENARIOS / "unsafe-self-refund.toml"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    # The scenario expects exactly this break (expect = ["atomicity"]): exit 0.
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["expectation_met"] and summary["expect"] == ["atomicity"]
    assert summary["checks"]["atomicity"]["status"] == "invalid"
    assert (
        "committed on one leg and aborted on another" in summary["checks"]["atomicity"]["witness"]
    )
    assert "FAILED" in result.stdout
    sim = _sim("unsafe-self-refund", tmp_path / "unsafe-sim")
    assert _statuses(sim) == _statuses(summary)
    assert "committed on one leg and aborted on another" in sim["checks"]["atomicity"]["witness"]


def test_a_rogue_key_is_refused_by_the_chain_and_by_every_node(tmp_path: Path) -> None:
    """rogue-key.toml: member 3 publishes g*x less the others' keys with x's proof of
    possession. Anvil's coordinator refuses it in admitKeys (InvalidProofOfPossession):
    `dvpsim run` ends in one line and exit 2 before any node starts, so no certificate is
    made anywhere. A node process given the same key in its committee refuses it too."""
    path = SCENARIOS / "rogue-key.toml"
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "dvpsim.cli", "run", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    line = result.stderr.strip()
    assert "\n" not in line
    assert line.startswith(
        f"dvpsim run: {path}: byzantine[0].rogue_key: member 3 publishes a rogue BLS key"
    )
    assert "refused by chain A's admitKeys (InvalidProofOfPossession(3))" in line
    events = [json.loads(x)["event"] for x in (out / "history.jsonl").read_text().splitlines()]
    assert "chain" in events and "node-start" not in events and "certified" not in events
    # The same key in a node's committee config: the node process refuses to start.
    members = make_keys(4, 1, [free_port() for _ in range(4)])
    rogue = rogue_public_key(members[3].bls_secret, [m.bls_public_key for m in members[:3]])
    configs = write_committee(
        tmp_path / "committee", members, f=1, mode="single-chain-onchain", targets_for=lambda i: []
    )
    raw = json.loads(configs[0].read_text())
    raw["committee"]["members"][3]["bls_public_key"] = "0x" + rogue.hex()
    raw["committee"]["members"][3]["bls_pop"] = "0x" + bls.pop_prove(members[3].bls_secret).hex()
    configs[0].write_text(json.dumps(raw))
    node = subprocess.run(
        [sys.executable, "-m", "node", "--config", str(configs[0])],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert node.returncode == 2, node.stderr
    assert node.stderr.strip().count("\n") == 0
    assert f"{configs[0]}: committee.members[3].bls_pop: does not prove possession" in node.stderr


def test_bad_scenario_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text((SCENARIOS / "reference.toml").read_text().replace("f = 1", "f = 2"))
    result = subprocess.run(
        [sys.executable, "-m", "dvpsim.cli", "run", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"dvpsim run: {bad}: committee.f: f = 2 is too large for n = 4 (n >= 3f+1): lower f or raise n"
    )


@pytest.mark.slow
def test_reference_case_with_sixteen_nodes(tmp_path: Path) -> None:
    summary = _run("reference-n16", tmp_path / "n16")
    assert summary["passed"], summary["checks"]
    _assert_balances(summary)
    _assert_same_outcome(summary, _sim("reference-n16", tmp_path / "n16-sim"))
