"""Node configs for a committee across machines: members, listen address, callbacks,
metrics and targets on any one IPv4 address or host; every bad address one line, and
nothing ever on every interface (0.0.0.0). The default stays 127.0.0.1."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from node.assemble import AssemblyError, assemble
from node.cli import main as node_main
from node.config import NodeConfigError, load
from node.provision import make_keys, write_committee
from tests.node.test_node_config import TARGETS

BANK = {
    "name": "bank",
    "leg": "bank",
    "kind": "bank",
    "chain_id": 1,
    "verifier": "0x" + "33" * 20,
    "config_count": 1,
    "t": 3,
    "url": "http://10.9.0.1:9545",
    "client_id": "node-0",
    "client_secret": "s" * 32,
    "webhook_listen": "10.9.0.2:9600",
}
HOSTS = ["10.9.0.2", "10.9.0.3", "192.168.7.4", "127.0.0.1"]


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Member 0's config in a committee on four addresses, its targets on another host
    (made once: the cases below edit copies)."""
    tmp_path = tmp_path_factory.mktemp("committee")
    members = [
        dataclasses.replace(m, host=h)
        for m, h in zip(make_keys(4, 7, [4001, 4002, 4003, 4004]), HOSTS, strict=True)
    ]
    chain = {**TARGETS[0], "url": "https://rpc.chain-a.example:8545/v1"}
    paths = write_committee(
        tmp_path,
        members,
        f=1,
        mode="multi-chain-messaging",
        targets_for=lambda i: [dict(chain), dict(BANK)],
    )
    return dict(json.loads(paths[0].read_text()))


def _load(tmp_path: Path, raw: dict[str, Any]) -> Any:
    path = tmp_path / "node0" / "config.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(raw))
    return load(path)


def test_a_committee_on_four_addresses_loads(tmp_path: Path, external: dict[str, Any]) -> None:
    config = _load(tmp_path, copy.deepcopy(external))
    assert config.listen == "/ip4/10.9.0.2/tcp/4001" and config.metrics == "10.9.0.2:0"
    assert [a.split("/")[2] for a in config.endpoint_addresses] == HOSTS
    assert [t.url for t in config.targets] == [
        "https://rpc.chain-a.example:8545/v1",
        "http://10.9.0.1:9545",
    ]
    assert config.targets[1].webhook_listen == "10.9.0.2:9600"


def test_the_default_is_loopback(tmp_path: Path) -> None:
    paths = write_committee(
        tmp_path,
        make_keys(4, 7, [4001, 4002, 4003, 4004]),
        f=1,
        mode="single-chain-onchain",
        targets_for=lambda i: [dict(TARGETS[0])],
    )
    config = load(paths[2])
    assert config.listen == "/ip4/127.0.0.1/tcp/4003" and config.metrics == "127.0.0.1:0"
    assert all(a.startswith("/ip4/127.0.0.1/tcp/") for a in config.endpoint_addresses)


def _member(i: int, address: str) -> Any:
    return lambda c: c["committee"]["members"][i].update(address=address)


PEER = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"


@pytest.mark.parametrize(
    ("mutate", "key", "words"),
    [
        (lambda c: c.update(listen="/ip4/0.0.0.0/tcp/4001"), "listen", "not one interface's"),
        (lambda c: c.update(listen="/ip6/::1/tcp/4001"), "listen", "not an /ip4/ADDRESS/tcp/PORT"),
        (lambda c: c.update(listen="/ip4/10.9.0.2/udp/4001"), "listen", "not an /ip4/"),
        (lambda c: c.update(listen="/ip4/10.9.0.2/tcp/70000"), "listen", "not in 0..65535"),
        (lambda c: c.update(listen="/dns/node0.example/tcp/1"), "listen", "not an /ip4/"),
        (
            _member(1, f"/ip4/10.9.0.300/tcp/4002/p2p/{PEER}"),
            "committee.members[1].address",
            "'10.9.0.300' is not an IPv4 address",
        ),
        (
            _member(1, f"/ip4/10.9.0.3/tcp/0/p2p/{PEER}"),
            "committee.members[1].address",
            "port '0'",
        ),
        (
            _member(2, f"/ip4/255.255.255.255/tcp/4003/p2p/{PEER}"),
            "committee.members[2].address",
            "not one interface's address",
        ),
        (
            _member(3, "/ip4/127.0.0.1/tcp/4004/p2p/QmNotAPeer!"),
            "committee.members[3].address",
            "is not a libp2p peer id",
        ),
        (
            _member(3, f"/ip4/127.0.0.1/tcp/4004/ws/p2p/{PEER}"),
            "committee.members[3].address",
            "not an /ip4/ADDRESS/tcp/PORT",
        ),
        (
            lambda c: c["targets"][0].update(url="http://:8545"),
            "targets[0].url",
            "not an http(s) URL",
        ),
        (
            lambda c: c["targets"][0].update(url="http://10.9.0.1:99999"),
            "targets[0].url",
            "bad port",
        ),
        (
            lambda c: c["targets"][1].update(url="http://10.9.0.1 :9545"),
            "targets[1].url",
            "not a usable URL",
        ),
        (
            lambda c: c["targets"][1].update(webhook_listen="0.0.0.0:9600"),
            "targets[1].webhook_listen",
            "not one interface's address",
        ),
        (
            lambda c: c["targets"][1].update(webhook_listen="9600"),
            "targets[1].webhook_listen",
            "not HOST:PORT",
        ),
        (lambda c: c.update(metrics="0.0.0.0:9100"), "metrics", "not one interface's address"),
        (lambda c: c.update(metrics="localhost:9100"), "metrics", "not an IPv4 address"),
    ],
)
def test_each_bad_address_is_one_line(
    tmp_path: Path, external: dict[str, Any], mutate: Any, key: str, words: str
) -> None:
    raw = copy.deepcopy(external)
    mutate(raw)
    path = tmp_path / "node0" / "config.json"
    with pytest.raises(NodeConfigError) as info:
        _load(tmp_path, raw)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert words in message and "\n" not in message, message


#: An address no machine here has (TEST-NET-1, RFC 5737).
ELSEWHERE = "192.0.2.1"


def _file_committee(tmp_path: Path, **change: str) -> Path:
    """Member 0's config with a dry-run file target, its keys edited by ``change``."""
    facts = tmp_path / "facts.json"
    facts.write_text("{}")
    target = {**TARGETS[0], "kind": "file", "url": f"file://{facts}"}
    target.pop("transmitter_key")
    paths = write_committee(
        tmp_path,
        make_keys(4, 7, [4001, 4002, 4003, 4004]),
        f=1,
        mode="single-chain-onchain",
        targets_for=lambda i: [dict(target)],
    )
    raw = json.loads(paths[0].read_text())
    raw.update(change)
    paths[0].write_text(json.dumps(raw))
    return paths[0]


def test_a_node_told_to_listen_on_another_machines_address_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dvpsim node` (its main, in this process): exit 2 and one line, no traceback."""
    path = _file_committee(tmp_path, listen=f"/ip4/{ELSEWHERE}/tcp/4001")
    logger = logging.getLogger("dvpsim")
    kept = (logger.handlers[:], logger.level, logger.propagate)
    try:
        assert node_main(["--config", str(path)]) == 2
    finally:
        logger.handlers[:], logger.level, logger.propagate = kept
    err = capsys.readouterr().err
    assert err.startswith(f"dvpsim node: {path}: cannot listen on /ip4/{ELSEWHERE}/tcp/4001: "), err
    assert err.count("\n") == 1, err


def test_metrics_on_another_machines_address_is_one_line(tmp_path: Path) -> None:
    config = load(_file_committee(tmp_path, metrics=f"{ELSEWHERE}:0"))
    with pytest.raises(AssemblyError) as info:
        assemble(config)
    message = str(info.value)
    assert message.startswith(f"{config.path}: metrics: cannot listen on {ELSEWHERE}:0 (")
    assert "\n" not in message
