"""Node config files: a good one loads; each mistake is one line naming file, key and fix."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from py_ecc.bls.g2_primitives import G1_to_pubkey, pubkey_to_G1
from py_ecc.optimized_bls12_381.optimized_curve import add, neg

from consensus import bls
from node.config import NodeConfigError, load
from node.provision import make_keys, write_committee

#: One chain target, as a node config lists it (tests/node/test_twins.py uses it too).
TARGETS = [
    {
        "name": "chain-A",
        "leg": "A",
        "kind": "evm",
        "chain_id": 31337,
        "verifier": "0x" + "22" * 20,
        "config_count": 1,
        "t": 3,
        "url": "http://127.0.0.1:8545",
        "transmitter_key": "0x" + "01" * 32,
    }
]


def _config(tmp_path: Path) -> dict[str, Any]:
    members = make_keys(4, 7, [4001, 4002, 4003, 4004])
    targets = copy.deepcopy(TARGETS)  # the cases below edit it
    paths = write_committee(
        tmp_path, members, f=1, mode="single-chain-onchain", targets_for=lambda i: targets
    )
    return dict(json.loads(paths[0].read_text()))


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "node0" / "config.json"
    path.write_text(json.dumps(raw))
    return path


def test_generated_config_loads(tmp_path: Path) -> None:
    config = load(_write(tmp_path, _config(tmp_path)))
    assert config.n == 4 and config.f == 1 and config.targets[0].t == 3
    assert config.keystore == tmp_path / "node0" / "bls.keystore"


@pytest.mark.parametrize(
    ("mutate", "key", "words"),
    [
        (lambda c: c.update(colour=1), "colour", "unknown key"),
        (lambda c: c["committee"].update(f=2), "committee.f", "too large"),
        (lambda c: c.update(index=9), "index", "not a member index"),
        (
            lambda c: c["committee"]["members"][1].update(bls_public_key="0x1234"),
            "committee.members[1].bls_public_key",
            "2 bytes, expected 48",
        ),
        (
            lambda c: c["committee"]["members"][1].pop("bls_pop"),
            "committee.members[1].bls_pop",
            "missing",
        ),
        (
            # Member 0's proof given for member 1's key.
            lambda c: c["committee"]["members"][1].update(
                bls_pop=c["committee"]["members"][0]["bls_pop"]
            ),
            "committee.members[1].bls_pop",
            "does not prove possession",
        ),
        (
            lambda c: c["committee"]["members"][2].update(address="/ip4/127.0.0.1/tcp/1"),
            "committee.members[2].address",
            "no /p2p/",
        ),
        (lambda c: c["targets"][0].update(url="ftp://x"), "targets[0].url", "not an http(s) URL"),
        (lambda c: c["targets"][0].pop("transmitter_key"), "targets[0].transmitter_key", "missing"),
        (lambda c: c["targets"][0].update(leg="B"), "targets", "needs targets for legs"),
        (
            lambda c: c["targets"][0].update(kind="ftp"),
            "targets[0].kind",
            'unknown kind \'ftp\': use "evm", "bank" or "file"',
        ),
        (lambda c: c.update(mode="teleport"), "mode", "unknown mode"),
        (lambda c: c["timing"].update(delta_round="fast"), "timing.delta_round", "wrong type"),
    ],
)
def test_each_mistake_is_one_line(tmp_path: Path, mutate: Any, key: str, words: str) -> None:
    raw = _config(tmp_path)
    mutate(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(NodeConfigError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: ") and words in message and "\n" not in message


def test_a_rogue_key_is_refused_whatever_proof_comes_with_it(tmp_path: Path) -> None:
    """The rogue-key set-up: member 3 publishes pk_r = a*G - (pk_0 + pk_1 + pk_2), so the
    committee's aggregate key is a*G and member 3 alone could sign for all four. It knows
    no secret of pk_r, so no proof it can make verifies, and the node refuses the key."""
    raw = _config(tmp_path)
    members = raw["committee"]["members"]
    others = [pubkey_to_G1(bytes.fromhex(m["bls_public_key"][2:])) for m in members[:3]]
    attacker_sk = 0x1234567
    honest_sum = others[0]
    for point in others[1:]:
        honest_sum = add(honest_sum, point)
    rogue = add(pubkey_to_G1(bls.sk_to_pk(attacker_sk)), neg(honest_sum))
    members[3]["bls_public_key"] = "0x" + bytes(G1_to_pubkey(rogue)).hex()
    # The attack is real: the attacker's lone signature verifies as all four members'.
    keys = [bytes.fromhex(m["bls_public_key"][2:]) for m in members]
    assert bls.fast_aggregate_verify(keys, b"m" * 32, bls.sign(attacker_sk, b"m" * 32))
    for proof in (bls.pop_prove(attacker_sk), members[0]["bls_pop"][2:], "00" * 96):
        members[3]["bls_pop"] = "0x" + (proof.hex() if isinstance(proof, bytes) else proof)
        path = _write(tmp_path, raw)
        with pytest.raises(NodeConfigError) as info:
            load(path)
        assert str(info.value).startswith(f"{path}: committee.members[3].bls_pop: ")


def test_node_process_rejects_a_bad_config_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "node", "--config", str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no such file" in result.stderr


def test_wrong_keystore_password_is_one_line(tmp_path: Path) -> None:
    raw = _config(tmp_path)
    path = _write(tmp_path, raw)
    (path.parent / "password").write_text("not the password\n")
    result = subprocess.run(
        [sys.executable, "-m", "node", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "password" in result.stderr and "Traceback" not in result.stderr


def test_dvpsim_node_passes_its_options_through(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dvpsim.cli", "node", "--config", str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "no such file" in result.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "dvpsim.cli", "node", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert helped.returncode == 0 and "--config" in helped.stdout
