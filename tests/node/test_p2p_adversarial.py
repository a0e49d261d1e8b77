"""Hostile and misconfigured peers against real transport processes on 127.0.0.1.

Committee of 4: members 1 and 2 run as processes (scripts/p2p_echo.py); this test
process plays member 0 (which opens streams to both) and member 3 (which must not open
streams to them) with raw libp2p hosts holding those identities, plus outsiders.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.identity import identity_from_seed, seed_from_label
from node.p2p import PROTOCOL_ID
from node.transport import encode_frame
from tests.node.p2p_harness import Cluster, EchoProcess, TrioThread, peer_info, raw_host, serve_host

MAX_FRAME = 4096


@dataclass
class World:
    cluster: Cluster
    thread: TrioThread
    node1: EchoProcess
    node2: EchoProcess
    member0: Any  # raw host with member 0's identity, Noise only, kept across examples

    def peer_metrics(self, node: EchoProcess, peer: int) -> dict[str, Any]:
        metrics: dict[str, Any] = node.request("stats", cmd="stats")["metrics"]
        return dict(metrics["peers"][str(peer)], rejected_peers=metrics["rejected_peers"])

    def start_host(self, identity: Any, security: str) -> tuple[Any, Any]:
        host = raw_host(identity, security)
        scope = self.thread.run(self.thread.start_background, serve_host, host)
        return host, scope

    def stop_host(self, scope: Any) -> None:
        self.thread.run(_cancel, scope)


async def _cancel(scope: Any) -> None:
    scope.cancel()
    await trio.sleep(0)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    cluster = Cluster(4, "adversarial", tmp_path_factory.mktemp("p2p-adversarial"))
    thread = TrioThread()
    try:
        extra = ("--max-frame-size", str(MAX_FRAME))
        node1 = cluster.start(1, *extra)
        node2 = cluster.start(2, *extra)
        for node in (node1, node2):
            links = node.request("links", cmd="wait_links", to=[1 if node is node2 else 2])
            assert links["ok"], links
        world = World(cluster, thread, node1, node2, member0=None)
        world.member0, _ = world.start_host(cluster.identities[0], "noise")
        yield world
    finally:
        thread.close()
        cluster.close()


async def write_and_watch(
    host: Any, entry: str, data: bytes, half_close: bool, timeout: float = 10.0
) -> str:
    """Open a frames stream to `entry`, write `data`, report whether the far end closed it."""
    info = peer_info(entry)
    await host.connect(info)
    try:
        stream = await host.new_stream(info.peer_id, [PROTOCOL_ID])
        if data:
            await stream.write(data)
        if half_close:
            await stream.close_write()
    except Exception:
        # The far end reset the stream before the negotiation or write completed.
        return "closed"
    with trio.move_on_after(timeout):
        try:
            while await stream.read(65536):
                pass
        except Exception:
            pass  # reset by the far end: closed
        return "closed"
    await stream.reset()
    return "open"


async def write_frames_and_keep_open(host: Any, entry: str, frames: list[bytes]) -> Any:
    info = peer_info(entry)
    await host.connect(info)
    stream = await host.new_stream(info.peer_id, [PROTOCOL_ID])
    await stream.write(b"".join(encode_frame(f) for f in frames))
    return stream


async def try_dial(host: Any, entry: str) -> str:
    """Connect, open a frames stream and write a frame; say which step was refused."""
    info = peer_info(entry)
    try:
        with trio.fail_after(10):
            await host.connect(info)
    except Exception:
        return "connect-refused"
    try:
        with trio.fail_after(10):
            stream = await host.new_stream(info.peer_id, [PROTOCOL_ID])
            await stream.write(encode_frame(b"hello"))
    except Exception:
        return "stream-refused"
    await stream.reset()
    return "stream-open"


async def negotiated_security(host: Any, entry: str) -> str:
    info = peer_info(entry)
    await host.connect(info)
    conn = host.get_network().get_connections(info.peer_id)[0]
    return str(conn.get_negotiated_security_protocol())


valid_frames = st.lists(st.binary(min_size=1, max_size=64), max_size=3)
zero_length = st.binary(max_size=32).map(lambda tail: b"\x00\x00\x00\x00" + tail)
oversized = st.tuples(
    st.one_of(st.integers(MAX_FRAME + 1, MAX_FRAME + 16), st.integers(MAX_FRAME + 1, 2**32 - 1)),
    st.one_of(st.binary(max_size=64), st.sampled_from([b"\xab" * (MAX_FRAME + 64)])),
).map(lambda t: t[0].to_bytes(4, "big") + t[1])
truncated = st.one_of(
    st.binary(min_size=1, max_size=3),  # ends inside the length prefix
    st.integers(2, MAX_FRAME).flatmap(
        lambda n: st.binary(max_size=min(n - 1, 200)).map(lambda body: n.to_bytes(4, "big") + body)
    ),
)
faults = st.one_of(
    st.tuples(st.just(False), zero_length),
    st.tuples(st.just(False), oversized),
    st.tuples(st.just(True), truncated),  # half-close: the stream ends inside a frame
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(prefix=valid_frames, fault=faults)
def test_malformed_frames_close_the_stream_and_are_counted(
    world: World, prefix: list[bytes], fault: tuple[bool, bytes]
) -> None:
    half_close, bad = fault
    before = world.peer_metrics(world.node1, 0)
    data = b"".join(encode_frame(f) for f in prefix) + bad
    outcome = world.thread.run(
        write_and_watch, world.member0, world.cluster.committee[1], data, half_close
    )
    after = world.peer_metrics(world.node1, 0)
    assert outcome == "closed"
    assert after["malformed"] == before["malformed"] + 1
    # Frames before the fault were well formed and are delivered.
    assert after["frames_in"] == before["frames_in"] + len(prefix)
    assert after["bytes_in"] == before["bytes_in"] + sum(len(f) for f in prefix)


def test_node_keeps_working_after_malformed_input(world: World) -> None:
    # Member 0 sends garbage, then opens a fresh stream with good frames: delivered.
    outcome = world.thread.run(
        write_and_watch, world.member0, world.cluster.committee[1], b"\x00" * 8, False
    )
    assert outcome == "closed"
    before = world.peer_metrics(world.node1, 0)
    stream = world.thread.run(
        write_frames_and_keep_open, world.member0, world.cluster.committee[1], [b"a", b"bc"]
    )
    try:
        after = wait_frames_in(world, world.node1, 0, before["frames_in"] + 2)
        assert after["frames_in"] == before["frames_in"] + 2
        assert after["link_up"]
        assert after["malformed"] == before["malformed"]
    finally:
        world.thread.run(stream.reset)
    # And members 1 and 2 still exchange frames with each other.
    world.node1.send(cmd="send", count=20, to=[2], start=10_000)
    world.node2.send(cmd="send", count=20, to=[1], start=10_000)
    world.node1.expect("sent", 30)
    world.node2.expect("sent", 30)
    assert world.node1.request("received", cmd="wait_received", per_peer=20, **{"from": [2]})["ok"]
    assert world.node2.request("received", cmd="wait_received", per_peer=20, **{"from": [1]})["ok"]


def test_outsider_identity_is_refused_and_counted(world: World) -> None:
    outsider = identity_from_seed(seed_from_label("adversarial-outsider"))
    before = world.peer_metrics(world.node1, 2)
    host, scope = world.start_host(outsider, "noise")
    try:
        result = world.thread.run(try_dial, host, world.cluster.committee[1])
    finally:
        world.stop_host(scope)
    after = world.peer_metrics(world.node1, 2)
    # Refused in the handshake, before any muxer or stream exists.
    assert result == "connect-refused"
    assert after["rejected_peers"] >= before["rejected_peers"] + 1
    assert after["link_up"]  # the link to member 2 is untouched


def test_plaintext_only_dial_fails_even_with_a_member_identity(world: World) -> None:
    # Member 0's own key: only the missing Noise can be the reason for the refusal.
    host, scope = world.start_host(world.cluster.identities[0], "plaintext")
    try:
        result = world.thread.run(try_dial, host, world.cluster.committee[1])
    finally:
        world.stop_host(scope)
    assert result == "connect-refused"


def test_member_proposing_plaintext_first_ends_up_on_noise(world: World) -> None:
    host, scope = world.start_host(world.cluster.identities[0], "plaintext-first")
    try:
        protocol = world.thread.run(negotiated_security, host, world.cluster.committee[1])
    finally:
        world.stop_host(scope)
    assert protocol == "/noise"


def test_stream_opened_by_the_wrong_member_is_refused_and_counted(world: World) -> None:
    # Member 3 ranks above member 1, so member 1 opens their stream; 3 must not.
    before = world.peer_metrics(world.node1, 3)
    host, scope = world.start_host(world.cluster.identities[3], "noise")
    try:
        outcome = world.thread.run(
            write_and_watch, host, world.cluster.committee[1], encode_frame(b"hi"), False
        )
    finally:
        world.stop_host(scope)
    after = world.peer_metrics(world.node1, 3)
    assert outcome == "closed"
    assert after["rejected_streams"] == before["rejected_streams"] + 1
    assert after["frames_in"] == before["frames_in"]


async def closed_by_far_end(stream: Any, timeout: float = 10.0) -> bool:
    with trio.move_on_after(timeout):
        try:
            while await stream.read(65536):
                pass
        except Exception:
            pass  # reset by the far end
        return True
    return False


def wait_frames_in(world: World, node: EchoProcess, peer: int, target: int) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    metrics = world.peer_metrics(node, peer)
    while metrics["frames_in"] < target and time.monotonic() < deadline:
        time.sleep(0.05)
        metrics = world.peer_metrics(node, peer)
    return metrics


def test_new_stream_from_a_member_replaces_its_old_one(world: World) -> None:
    entry = world.cluster.committee[1]
    before = world.peer_metrics(world.node1, 0)
    first = world.thread.run(write_frames_and_keep_open, world.member0, entry, [b"on A"])
    second = None
    try:
        attached = wait_frames_in(world, world.node1, 0, before["frames_in"] + 1)
        assert attached["frames_in"] == before["frames_in"] + 1
        second = world.thread.run(write_frames_and_keep_open, world.member0, entry, [b"on B"])
        # One stream per pair: the newer one wins, the older one is closed.
        assert world.thread.run(closed_by_far_end, first)
        after = wait_frames_in(world, world.node1, 0, before["frames_in"] + 2)
        assert after["frames_in"] == before["frames_in"] + 2
        assert after["reconnects"] >= attached["reconnects"] + 1
        assert after["link_up"] and after["malformed"] == before["malformed"]
    finally:
        world.thread.run(first.reset)
        if second is not None:
            world.thread.run(second.reset)
