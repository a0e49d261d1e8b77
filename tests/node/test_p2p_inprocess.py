"""P2PTransport instances in one trio run, over real libp2p on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
import trio

from node.identity import NodeIdentity, identity_from_seed, seed_from_label
from node.p2p import (
    P2PConfig,
    P2PConfigError,
    P2PListenError,
    P2PTransport,
    quiet_libp2p_logging,
)
from node.transport import InboundFrame, TransportClosed


def ids(n: int, label: str) -> list[NodeIdentity]:
    return [identity_from_seed(seed_from_label(f"{label}-{i}")) for i in range(n)]


def bare(identity: NodeIdentity) -> str:
    return f"/p2p/{identity.peer_id_text}"


@asynccontextmanager
async def committee(
    identities: Sequence[NodeIdentity], configs: Sequence[P2PConfig] | None = None
) -> AsyncIterator[list[P2PTransport]]:
    """Start members from the highest index down, so each opener knows where to dial."""
    n = len(identities)
    configs = configs or [P2PConfig()] * n
    addrs: dict[int, str] = {}
    transports: dict[int, P2PTransport] = {}
    async with trio.open_nursery() as nursery:
        for i in reversed(range(n)):
            entries = [addrs.get(j, bare(identities[j])) for j in range(n)]
            transport = P2PTransport(identities[i], i, entries, configs[i])
            await nursery.start(transport.run)
            addrs[i] = transport.listen_addrs()[0]
            transports[i] = transport
        ordered = [transports[i] for i in range(n)]
        with trio.fail_after(20):
            while any(len(t.connected_peers()) < n - 1 for t in ordered):
                await trio.sleep(0.01)
        yield ordered
        nursery.cancel_scope.cancel()


async def receive_n(transport: P2PTransport, count: int) -> list[InboundFrame]:
    with trio.fail_after(20):
        return [await transport.receive() for _ in range(count)]


@pytest.mark.trio
async def test_broadcast_reaches_every_member_in_order_per_sender() -> None:
    async with committee(ids(3, "inproc-bcast")) as members:
        for k in range(20):
            for member in members:
                member.broadcast(b"%d:%d" % (member.self_index, k))
        for member in members:
            frames = await receive_n(member, 2 * 20)
            for sender in range(3):
                if sender == member.self_index:
                    continue
                got = [f.payload for f in frames if f.peer_index == sender]
                assert got == [b"%d:%d" % (sender, k) for k in range(20)]
        metrics = members[0].metrics()
        assert metrics.frames_out == 40 and metrics.frames_in == 40
        assert metrics.malformed == 0 and metrics.rejected_peers == 0


@pytest.mark.trio
async def test_frames_queued_together_are_written_in_one_batch() -> None:
    async with committee(ids(2, "inproc-batch")) as (sender, receiver):
        # No checkpoint between the sends: the writer finds all 500 queued at once.
        for k in range(500):
            sender.send(1, b"%03d" % k)
        frames = await receive_n(receiver, 500)
        assert [f.payload for f in frames] == [b"%03d" % k for k in range(500)]
        peer = sender.metrics().peer(1)
        assert peer.frames_out == 500 and peer.writes_out == 1


@pytest.mark.trio
async def test_send_refuses_bad_payloads_and_indices() -> None:
    identities = ids(2, "inproc-refuse")
    transport = P2PTransport(
        identities[0],
        0,
        [bare(identities[0]), "/ip4/127.0.0.1/tcp/9/p2p/" + identities[1].peer_id_text],
        P2PConfig(max_frame_size=100),
    )
    with pytest.raises(ValueError, match="exceeds max_frame_size"):
        transport.send(1, b"x" * 101)
    with pytest.raises(ValueError, match="empty"):
        transport.send(1, b"")
    with pytest.raises(TypeError):
        transport.send(1, bytearray(b"mutable"))  # type: ignore[arg-type]
    for index in (0, 2, -1):
        with pytest.raises(ValueError, match="not another member"):
            transport.send(index, b"x")
    transport.send(1, b"x" * 100)  # exactly the limit is fine
    assert transport.metrics().frames_out == 0  # queued, not yet written


@pytest.mark.trio
async def test_outbound_buffer_is_bounded_while_a_peer_is_down_and_flushes_newest() -> None:
    identities = ids(2, "inproc-buffer")
    config = P2PConfig(outbound_max_frames=50, backoff_initial_s=0.05, backoff_max_s=0.2)
    async with trio.open_nursery() as nursery:
        # Member 1 is down: reserve an address for it by starting it later on a known port.
        acceptor = P2PTransport(identities[1], 1, [bare(i) for i in identities], config)
        await nursery.start(acceptor.run)
        addr1 = acceptor.listen_addrs()[0]
        nursery.cancel_scope.cancel()
    port = int(addr1.split("/tcp/")[1].split("/")[0])
    opener = P2PTransport(identities[0], 0, [bare(identities[0]), addr1], config)
    late = P2PTransport(
        identities[1],
        1,
        [bare(i) for i in identities],
        P2PConfig(listen_addr=f"/ip4/127.0.0.1/tcp/{port}"),
    )
    async with opener:
        for k in range(1000):
            opener.send(1, b"frame-%04d" % k)
        peer = opener.metrics().peer(1)
        assert peer.dropped_outbound == 950 and not peer.link_up
        # Two failed dials: the second would hit py-libp2p's 60 s negative dial cache
        # had the transport not cleared it, and so would every later one.
        with trio.fail_after(20):
            while opener.metrics().peer(1).dial_failures < 2:
                await trio.sleep(0.01)
        async with late:
            frames = await receive_n(late, 50)
            assert [f.payload for f in frames] == [b"frame-%04d" % k for k in range(950, 1000)]
        assert opener.metrics().peer(1).frames_out == 50


@pytest.mark.trio
async def test_inbound_rate_limit_drops_and_counts() -> None:
    identities = ids(2, "inproc-rate")
    slow = P2PConfig(rate_frames_per_s=50, burst_frames=10)
    async with committee(identities, [P2PConfig(), slow]) as (sender, receiver):
        start = trio.current_time()
        for k in range(300):
            sender.send(1, b"%d" % k)
        with trio.fail_after(20):
            while True:
                peer = receiver.metrics().peer(0)
                if peer.frames_in + peer.rate_limited == 300:
                    break
                await trio.sleep(0.01)
        elapsed = trio.current_time() - start
        assert peer.rate_limited > 0
        # The bucket's bound, whatever the timing was.
        assert peer.frames_in <= 10 + 50 * elapsed + 1
        delivered = await receive_n(receiver, peer.frames_in)
        assert [f.peer_index for f in delivered] == [0] * peer.frames_in


@pytest.mark.trio
async def test_receive_raises_once_stopped() -> None:
    async with committee(ids(2, "inproc-stop")) as members:
        pass
    with pytest.raises(TransportClosed):
        await members[0].receive()


def test_committee_configuration_errors_are_one_line() -> None:
    a, b = ids(2, "inproc-config")
    cases = [
        (lambda: P2PTransport(a, 0, [bare(a), "/ip4/127.0.0.1/tcp/1"]), "/p2p/<peer id>"),
        (lambda: P2PTransport(a, 0, [bare(a), bare(a)]), "same peer id"),
        (lambda: P2PTransport(a, 1, [bare(a), bare(b)]), "identity is"),
        (lambda: P2PTransport(a, 2, [bare(a), bare(b)]), "outside the committee"),
        (lambda: P2PTransport(a, 0, [bare(a), bare(b)]), "must dial"),
        (lambda: P2PTransport(a, 0, [bare(a)]), ">= 2"),
        (lambda: P2PConfig(listen_addr="tcp://127.0.0.1:1"), "not a multiaddr"),
        (lambda: P2PConfig(max_frame_size=0), "max_frame_size"),
        (lambda: P2PConfig(burst_bytes=10), "burst_bytes"),
        (lambda: P2PConfig(backoff_initial_s=5, backoff_max_s=1), "backoff"),
    ]
    for make, expected in cases:
        with pytest.raises(P2PConfigError) as caught:
            make()
        assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_libp2p_logger_is_routed_and_quieted(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    lib = logging.getLogger("libp2p")
    saved = (lib.level, lib.propagate, list(lib.handlers))
    try:
        # What py-libp2p does at import: no handlers, no propagation, so warnings hit
        # Python's last-resort stderr handler whatever the application configured.
        lib.handlers.clear()
        lib.propagate = False
        lib.setLevel(logging.WARNING)
        logging.getLogger("libp2p.swarm").warning("bypass")
        assert "bypass" in capsys.readouterr().err
        quiet_libp2p_logging()
        logging.getLogger("libp2p.swarm").warning("quiet")
        # A child pinned at INFO (py-libp2p's auto-connector does this) stays quiet too.
        chatty = logging.getLogger("libp2p.network.auto_connector")
        chatty.info("chatty")
        assert capsys.readouterr().err == ""
        assert not any(r.name.startswith("libp2p") for r in caplog.records)
        # Records at the chosen level still reach the application's handlers.
        logging.getLogger("libp2p.swarm").critical("loud")
        assert any(r.getMessage() == "loud" for r in caplog.records)
    finally:
        lib.setLevel(saved[0])
        lib.propagate = saved[1]
        lib.handlers[:] = saved[2]


def listening_ports() -> set[int]:
    import psutil

    return {c.laddr.port for c in psutil.Process().net_connections() if c.status == "LISTEN"}


@pytest.mark.trio
async def test_stopped_transport_releases_its_port_for_a_restart() -> None:
    identities = ids(2, "inproc-restart")
    entries = [bare(i) for i in identities]
    first = P2PTransport(identities[1], 1, entries)
    async with first:
        addr = first.listen_addrs()[0]
        port = int(addr.split("/tcp/")[1].split("/")[0])
        assert port in listening_ports()
    # py-libp2p's own teardown, cancelled, leaves the listener open; ours closes it.
    assert port not in listening_ports()
    again = P2PTransport(
        identities[1], 1, entries, P2PConfig(listen_addr=f"/ip4/127.0.0.1/tcp/{port}")
    )
    opener = P2PTransport(identities[0], 0, [entries[0], addr])
    async with again, opener:
        opener.send(1, b"after restart")
        assert (await receive_n(again, 1))[0] == InboundFrame(0, b"after restart")


@pytest.mark.trio
async def test_an_address_in_use_is_an_error_not_a_silent_deaf_node() -> None:
    a, b = ids(2, "inproc-inuse")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        transport = P2PTransport(
            b, 1, [bare(a), bare(b)], P2PConfig(listen_addr=f"/ip4/127.0.0.1/tcp/{port}")
        )
        with pytest.raises(P2PListenError) as caught:
            async with transport:
                pass
    assert f"tcp/{port}" in str(caught.value) and "\n" not in str(caught.value)
