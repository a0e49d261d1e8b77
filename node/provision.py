"""Provision a local committee: keys, keystores and one config file per node.

`dvpsim run` and the tests use this to make a committee of n nodes in a folder:

    out/node<i>/identity.key    Ed25519 seed (libp2p identity and observation signing key)
    out/node<i>/bls.keystore    EIP-2335 keystore of the BLS key (cheap KDF: local use only)
    out/node<i>/password        the keystore password
    out/node<i>/config.json     the node config (node.config)
    out/node<i>/data/           the node's safety store

and, for a member that runs as twins (``node.twins``), its twin copy's folder
``out/node<i>b/``: the member's identity seed and BLS keystore (it signs as the member),
``transport.key`` (a libp2p identity of its own), its own config and an empty safety store.

Keys come from a seeded generator so a scenario's committee is reproducible; that is
fine for local runs and simulations and wrong for anything real (the generated files
say so in their description).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consensus import bls, keystore
from consensus.devkeys import dev_leader_selection_key, dev_member_secrets
from consensus.identity import identity_key_from_seed, public_key_bytes
from node.identity import identity_from_seed, write_identity_file
from processes import ManagedProcess, start_process, start_python
from processes.private import write_private


@dataclass(frozen=True)
class MemberKeys:
    index: int
    seed: bytes  # Ed25519
    bls_secret: int
    bls_public_key: bytes
    identity_public_key: bytes
    peer_id: str
    port: int
    # The address it listens on and its peers dial (libp2p), where it takes the bank's
    # callbacks and serves metrics: 127.0.0.1, or one interface's address on its machine.
    host: str = "127.0.0.1"
    # A twin copy (node.twins): the member's keys above, with a transport identity of its
    # own (peer_id is that identity's).
    transport_seed: bytes | None = None

    @property
    def twin(self) -> bool:
        return self.transport_seed is not None

    @property
    def label(self) -> str:
        """Its folder's and process's name: node<i>, or node<i>b for a twin copy."""
        return f"node{self.index}{'b' if self.twin else ''}"

    def pop(self) -> bytes:
        return bls.pop_prove(self.bls_secret)


def make_keys(n: int, seed: int, ports: Sequence[int]) -> list[MemberKeys]:
    members = []
    for secrets in dev_member_secrets(n, seed):
        identity = identity_from_seed(secrets.identity_seed)
        members.append(
            MemberKeys(
                index=secrets.index,
                seed=secrets.identity_seed,
                bls_secret=secrets.bls_secret,
                bls_public_key=bls.sk_to_pk(secrets.bls_secret),
                identity_public_key=public_key_bytes(identity_key_from_seed(secrets.identity_seed)),
                peer_id=identity.peer_id_text,
                port=ports[secrets.index],
            )
        )
    return members


def twin_keys(member: MemberKeys, port: int) -> MemberKeys:
    """The twin copy of ``member``: its keys, a transport identity of its own (derived
    from its seed: reproducible, local use only) and ``port``."""
    transport_seed = hashlib.sha256(b"dvpsim/twin-transport/" + member.seed).digest()
    return dataclasses.replace(
        member,
        peer_id=identity_from_seed(transport_seed).peer_id_text,
        port=port,
        transport_seed=transport_seed,
    )


def member_address(member: MemberKeys) -> str:
    return f"/ip4/{member.host}/tcp/{member.port}/p2p/{member.peer_id}"


def write_committee(
    out: Path,
    members: Sequence[MemberKeys],
    *,
    f: int,
    mode: str,
    targets_for: Callable[[int], list[dict[str, Any]]],
    timing: dict[str, Any] | None = None,
    leader_selection_key: bytes | None = None,
    allow_unsafe_threshold: bool = False,
    log_level: str = "info",
    trace_messages: bool = False,
    fault_plan: str | None = None,
    byzantine_for: Callable[[int], dict[str, Any] | None] = lambda i: None,
    twins: Sequence[MemberKeys] = (),
) -> list[Path]:
    """Write every member's files, then every twin copy's (``twin_keys``); returns the
    config paths in endpoint order (the members, then the twins). ``targets_for`` is
    asked by endpoint (n + j for the j-th twin copy), ``byzantine_for`` by member."""
    leader_key = leader_selection_key or dev_leader_selection_key([m.seed for m in members])
    committee: dict[str, Any] = {
        "f": f,
        "leader_selection_key": "0x" + leader_key.hex(),
        "members": [
            {
                "identity_key": "0x" + m.identity_public_key.hex(),
                "bls_public_key": "0x" + m.bls_public_key.hex(),
                "bls_pop": "0x" + m.pop().hex(),
                "address": member_address(m),
            }
            for m in members
        ],
    }
    if twins:
        committee["twins"] = [{"member": t.index, "address": member_address(t)} for t in twins]
    paths = []
    for endpoint, m in enumerate([*members, *twins]):
        home = out / m.label
        home.mkdir(parents=True, exist_ok=True)
        identity_file = home / "identity.key"
        if not identity_file.exists():
            write_identity_file(identity_file, m.seed)
        if m.transport_seed is not None and not (home / "transport.key").exists():
            write_identity_file(home / "transport.key", m.transport_seed)
        password = hashlib.sha256(b"dvpsim/password/" + m.seed).hexdigest()[:24]
        write_private(home / "password", password + "\n")
        store = keystore.encrypt_bls_key(
            m.bls_secret,
            password,
            kdf="pbkdf2",
            cost=keystore.TEST_PBKDF2,
            description="dvpsim local committee key: never use for real value",
        )
        if not (home / "bls.keystore").exists():
            keystore.save(home / "bls.keystore", store)
        config = {
            "index": m.index,
            "mode": mode,
            "keystore": "bls.keystore",
            "password_file": "password",
            "identity_key": "identity.key",
            "committee": committee,
            "targets": targets_for(endpoint),
            "listen": f"/ip4/{m.host}/tcp/{m.port}",
            "data_dir": "data",
            "metrics": f"{m.host}:0",
            "timing": timing or {},
            "allow_unsafe_threshold": allow_unsafe_threshold,
            "log_level": log_level,
            "trace_messages": trace_messages,
        }
        if fault_plan is not None:
            config["fault_plan"] = fault_plan
        if m.twin:
            config["twin"] = True
            config["transport_key"] = "transport.key"
        byzantine = byzantine_for(m.index)
        if byzantine is not None:
            config["byzantine"] = byzantine
        path = home / "config.json"
        write_private(path, json.dumps(config, indent=2))  # transmitter keys
        paths.append(path)
    return paths


class NodeStartError(RuntimeError):
    """A node process exited or stayed silent during start-up; one line with its log."""


def start_node(index: int | str, config_path: Path, launcher: Sequence[str] = ()) -> ManagedProcess:
    """Launch ``python -m node`` for a provisioned config; its ready file and log sit
    beside the config (``ready.json``, ``node.log``). ``index``: the member's, or "2b"
    for a twin copy (the process's name). ``launcher``: a command prefix the process
    starts under (e.g. ``ip netns exec NAME``), which must run it in place: the process
    is stopped by its PID."""
    ready = config_path.parent / "ready.json"
    ready.unlink(missing_ok=True)
    args = ["--config", str(config_path), "--ready-file", str(ready)]
    log = config_path.parent / "node.log"
    if not launcher:
        return start_python(f"node{index}", "node", args, log)
    return start_process(f"node{index}", [*launcher, sys.executable, "-m", "node", *args], log)


def wait_node_ready(
    index: int | str, proc: ManagedProcess, config_path: Path, timeout: float = 60.0
) -> dict[str, Any]:
    """The node's ready file (pid, peer id, listen addresses, metrics port) once written;
    NodeStartError if the process exits first or ``timeout`` seconds pass."""
    ready = config_path.parent / "ready.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            return dict(json.loads(ready.read_text()))
        if not proc.running():
            raise NodeStartError(f"node {index} exited during start-up: {proc.log_tail(3)}")
        time.sleep(0.05)
    raise NodeStartError(f"node {index} did not start within {timeout:.0f} s (log {proc.log_path})")
