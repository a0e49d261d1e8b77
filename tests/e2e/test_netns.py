"""A committee across machines, on one machine: every part in a network namespace of its own.

The test (as root) makes a bridge in a namespace of its own and one namespace per part,
each joined to the bridge by a veth pair and given an address of 10.213.X.0/24: the
runner, anvil and the bank in one (``services``), each node process in its own. It runs
`dvpsim run SCENARIO --hosts FILE` inside the services namespace; the hosts file starts
each node under ``ip netns exec`` its namespace. A node there has no address but its own
and loopback, so every message between members, every RPC call, bank request and bank
callback crosses the bridge over the addresses the configs name (docs/DEPLOY.md). Nothing
is made in the root namespace; every namespace (and with it every veth and the bridge) is
removed in ``finally``, also when the run fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from chain_adapters.build import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

N = 4
SETTLEMENTS = 6  # one meant to fail for lack of funds
RUN_TIMEOUT_S = 300

SCENARIO = f"""
name = "netns"
mode = "multi-chain-messaging"
time_limit = 90
seed = 1

[committee]
n = {N}
f = 1

[timing]
delta_progress = 3.0
delta_resend = 0.5
delta_round = 0.2
delta_grace = 0.02
delta_stage = 1.0

[[chains]]
name = "rwa-chain"
chain_id = 31337

[bank]
start = true
currency = "USD"

[[accounts]]
name = "seller"
asset = 1000

[[accounts]]
name = "buyer"
bank_balance = 1000000

[[accounts]]
name = "poor-buyer"
bank_balance = 0

[settlements]
count = {SETTLEMENTS}
asset_amount = 10
payment_amount = 25000
deadline = 30
arrival_rate = 5
[[settlements.fail]]
count = 1
reason = "insufficient-funds"
"""


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class Namespaces:
    """The namespaces of one test: a bridge namespace, and one namespace per part joined to
    its bridge by a veth pair (``eth0`` inside, ``v<k>`` on the bridge)."""

    def __init__(self, tag: str, subnet: str) -> None:
        self.tag, self.subnet = tag, subnet  # subnet: "10.213.X"
        self.bridge = f"{tag}-br"
        self.made: list[str] = []

    def create(self, names: list[str]) -> dict[str, str]:
        """Each named namespace with its address (10.213.X.1, .2, ...), by name."""
        self._add(self.bridge)
        _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge, "link", "set", "br0", "up")
        addresses = {}
        for k, name in enumerate(names):
            self._add(name)
            address = f"{self.subnet}.{k + 1}"
            _ip("-n", self.bridge, "link", "add", f"v{k}", "type", "veth", "peer", "name", "eth0",
                "netns", name)  # fmt: skip
            _ip("-n", self.bridge, "link", "set", f"v{k}", "master", "br0", "up")
            _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            addresses[name] = address
        return addresses

    def _add(self, name: str) -> None:
        _ip("netns", "add", name)
        self.made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def remove(self) -> list[str]:
        """Stop what still runs in them (only this test's processes can), delete them (their
        veth pairs and the bridge go with them); returns the names still listed."""
        for name in self.made:
            pids = subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        listed = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, timeout=30
        ).stdout
        return [line.split()[0] for line in listed.splitlines() if line.startswith(self.tag)]


def _require_root_and_ip() -> None:
    if shutil.which("ip") is None:
        pytest.fail("tests/e2e/test_netns.py needs the `ip` command (iproute2): install it")
    if os.geteuid() != 0:
        pytest.fail(
            "tests/e2e/test_netns.py makes network namespaces and veth pairs: run it as root"
        )


def test_a_committee_across_namespaces_settles(tmp_path: Path) -> None:
    _require_root_and_ip()
    tag = f"dvpsim-t{os.getpid()}"
    spaces = Namespaces(tag, f"10.213.{os.getpid() % 250 + 1}")
    services = f"{tag}-s"
    nodes = [f"{tag}-n{i}" for i in range(N)]
    out = tmp_path / "run"
    try:
        addresses = spaces.create([services, *nodes])
        scenario = tmp_path / "netns.toml"
        scenario.write_text(SCENARIO)
        hosts = tmp_path / "hosts.toml"
        hosts.write_text(
            f'services = "{addresses[services]}"\n'
            + "".join(
                f'\n[[nodes]]\nhost = "{addresses[name]}"\n'
                f'exec = ["ip", "netns", "exec", "{name}"]\n'
                for name in nodes
            )
        )
        began = time.monotonic()
        dvpsim = Path(sys.executable).parent / "dvpsim"
        done = subprocess.run(
            ["ip", "netns", "exec", services, str(dvpsim), "run", str(scenario),
             "--out", str(out), "--hosts", str(hosts)],
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=REPO_ROOT,
        )  # fmt: skip
        elapsed = time.monotonic() - began
        assert done.returncode == 0, (
            f"dvpsim run exited {done.returncode} after {elapsed:.0f} s:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        _assert_settled(out, addresses, services, nodes)
    finally:
        left = spaces.remove()
    assert not left, f"namespaces left behind: {left}"


def _assert_settled(out: Path, addresses: dict[str, str], services: str, nodes: list[str]) -> None:
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settlements"] == SETTLEMENTS and summary["ended"] == SETTLEMENTS
    assert summary["committed"] == SETTLEMENTS - 1 and summary["aborted"] == 1
    assert {name: c["status"] for name, c in summary["checks"].items()} == dict.fromkeys(
        summary["checks"], "valid"
    ), summary["checks"]
    assert summary["expectation_met"]
    records = [json.loads(line) for line in (out / "history.jsonl").open()]
    # The services listened on the services namespace's address, not loopback ...
    services_url = f"http://{addresses[services]}:"
    assert all(
        r["url"].startswith(services_url) for r in records if r["event"] in ("chain", "bank")
    )
    # ... and each node on its own namespace's: binding an address the namespace does not
    # have fails, so a node that started ran in its namespace.
    for i, name in enumerate(nodes):
        node = out / "committee" / f"node{i}"
        config: dict[str, Any] = json.loads((node / "config.json").read_text())
        ready = json.loads((node / "ready.json").read_text())
        host = addresses[name]
        assert config["listen"].startswith(f"/ip4/{host}/tcp/")
        assert [a.split("/p2p/")[0] for a in ready["listen"]] == [config["listen"]]
        assert config["committee"]["members"][i]["address"].startswith(f"/ip4/{host}/tcp/")
        bank = next(t for t in config["targets"] if t["kind"] == "bank")
        assert bank["webhook_listen"].startswith(f"{host}:")
        assert all(t["url"].startswith(services_url) for t in config["targets"])
    # Every member accepted certificates signed by t = 3 members: shares crossed the bridge.
    signers = {
        r["node"]: bin(r["signers"]).count("1") for r in records if r["event"] == "certified"
    }
    assert set(signers) == set(range(N)) and min(signers.values()) >= 3, signers
