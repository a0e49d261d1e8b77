"""Twins in a node's real world (``node.twins``): the provisioned twin copy has the
member's keys and a transport identity of its own, its config says where every endpoint
is, each mistake in it is one line, and the member-indexed transport sends a frame for a
twinned member to both of its copies and delivers a copy's frame as the member's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from node.assemble import AssemblyError, assemble
from node.config import NodeConfigError, load, parse
from node.identity import load_identity_file
from node.provision import make_keys, twin_keys, write_committee
from node.transport import InboundFrame, Transport, TransportMetrics
from node.twins import MemberTransport
from tests.node.test_node_config import TARGETS


def provision(tmp_path: Path) -> list[Path]:
    members = make_keys(4, 7, [4001, 4002, 4003, 4004])
    asked: list[int] = []

    def targets_for(endpoint: int) -> list[dict[str, Any]]:
        asked.append(endpoint)
        return TARGETS

    paths = write_committee(
        tmp_path,
        members,
        f=1,
        mode="single-chain-onchain",
        targets_for=targets_for,
        twins=[twin_keys(members[2], 4005)],
    )
    assert asked == [0, 1, 2, 3, 4]  # by endpoint: the twin copy is endpoint n + 0
    return paths


def test_a_provisioned_twin_signs_as_the_member_and_speaks_as_itself(tmp_path: Path) -> None:
    paths = provision(tmp_path)
    assert [p.parent.name for p in paths] == ["node0", "node1", "node2", "node3", "node2b"]
    first, twin = load(paths[2]), load(paths[4])
    assert (first.index, first.twin, first.endpoint) == (2, False, 2)
    assert (twin.index, twin.twin, twin.endpoint) == (2, True, 4)
    assert twin.member_of == first.member_of == (0, 1, 2, 3, 2)
    assert twin.endpoint_addresses == first.endpoint_addresses
    # The member's protocol keys, a transport identity of its own, a data dir of its own.
    assert first.identity_key.read_text() == twin.identity_key.read_text()
    assert (
        json.loads(first.keystore.read_text())["pubkey"]
        == json.loads(twin.keystore.read_text())["pubkey"]
    )
    assert twin.transport_key is not None and first.transport_key is None
    peer = load_identity_file(twin.transport_key).peer_id_text
    assert peer != load_identity_file(first.identity_key).peer_id_text
    assert twin.endpoint_addresses[4].endswith(f"/p2p/{peer}")
    assert twin.data_dir != first.data_dir


def test_a_twin_process_assembles_with_its_own_transport_identity(tmp_path: Path) -> None:
    paths = provision(tmp_path)
    parts = assemble(load(paths[4]), pumps={})
    try:
        assert parts.transport.self_index == 4
        assert parts.runtime.transport.self_index == 2  # the driver speaks as member 2
        assert parts.peer_id == load_identity_file(paths[4].parent / "transport.key").peer_id_text
    finally:
        parts.close()
    # A first copy given the twin's transport key is not the committee's entry for it.
    raw = json.loads(paths[2].read_text())
    raw["transport_key"] = str(paths[4].parent / "transport.key")
    with pytest.raises(AssemblyError, match="names peer"):
        assemble(parse(raw, paths[2]), pumps={})


@pytest.mark.parametrize(
    ("mutate", "key", "words"),
    [
        (lambda c: c["committee"].pop("twins"), "twin", "no entry for member 2"),
        (lambda c: c.pop("transport_key"), "transport_key", "missing for a twin copy"),
        (
            lambda c: c["committee"]["twins"][0].update(member=7),
            "committee.twins[0].member",
            "not a member index",
        ),
        (
            lambda c: c["committee"]["twins"][0].update(address="/ip4/127.0.0.1/tcp/1"),
            "committee.twins[0].address",
            "no /p2p/",
        ),
    ],
)
def test_each_twin_mistake_is_one_line(tmp_path: Path, mutate: Any, key: str, words: str) -> None:
    path = provision(tmp_path)[4]
    raw = json.loads(path.read_text())
    mutate(raw)
    with pytest.raises(NodeConfigError) as info:
        parse(raw, path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: ") and words in message and "\n" not in message


class Endpoints(Transport):
    """An endpoint-indexed transport that records what it was asked to send."""

    def __init__(self, self_index: int, size: int, inbound: list[InboundFrame]) -> None:
        self._self, self._size = self_index, size
        self.sent: list[tuple[int, bytes]] = []
        self.inbound = inbound
        self.up = frozenset(i for i in range(size) if i != self_index)

    self_index = property(lambda self: self._self)
    committee_size = property(lambda self: self._size)
    max_frame_size = property(lambda self: 1024)

    def send(self, peer_index: int, payload: bytes) -> None:
        self._check_peer(peer_index)
        self.sent.append((peer_index, payload))

    async def receive(self) -> InboundFrame:
        return self.inbound.pop(0)

    def connected_peers(self) -> frozenset[int]:
        return self.up

    def metrics(self) -> TransportMetrics:
        return TransportMetrics(self._self, (), 0, 0, 0)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()


def test_a_frame_for_a_twinned_member_goes_to_both_copies_and_comes_back_as_the_member() -> None:
    # Members 0..3, member 2's twin copy at endpoint 4; this is member 0.
    inner = Endpoints(0, 5, [InboundFrame(4, b"b"), InboundFrame(2, b"a"), InboundFrame(3, b"c")])
    members = MemberTransport(inner, (0, 1, 2, 3, 2))
    assert (members.self_index, members.committee_size) == (0, 4)
    members.send(2, b"x")
    members.send(3, b"y")
    members.broadcast(b"z")
    assert inner.sent == [
        (2, b"x"),
        (4, b"x"),
        (3, b"y"),
        (1, b"z"),
        (2, b"z"),
        (4, b"z"),
        (3, b"z"),
    ]
    got = [trio.run(members.receive) for _ in range(3)]
    assert got == [
        InboundFrame(2, b"b", sender_twin=True),
        InboundFrame(2, b"a"),
        InboundFrame(3, b"c"),
    ]
    assert members.connected_peers() == frozenset({1, 2, 3})
    with pytest.raises(ValueError):
        members.send(0, b"to myself")


def test_the_two_copies_of_a_member_never_message_each_other() -> None:
    # This is member 2's twin copy (endpoint 4); its first copy is endpoint 2.
    inner = Endpoints(4, 5, [InboundFrame(2, b"from my other copy"), InboundFrame(1, b"ok")])
    members = MemberTransport(inner, (0, 1, 2, 3, 2))
    assert members.self_index == 2
    members.broadcast(b"z")
    assert [peer for peer, _ in inner.sent] == [0, 1, 3]
    assert trio.run(members.receive) == InboundFrame(1, b"ok")  # the sibling's is skipped
    assert members.connected_peers() == frozenset({0, 1, 3})
