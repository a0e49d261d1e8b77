"""The libp2p transport of an oracle node: Noise-only, committee-only, long-lived framed streams.

`P2PTransport` implements `node.transport.Transport` over py-libp2p (trio). Its rules:

- Security: Noise only. No plaintext, TLS or SECIO transport is offered or accepted,
  so a peer that cannot speak Noise never gets a connection.
- Allowlist: the committee's peer ids. The Noise handshake is wrapped so that a remote
  identity outside the committee is refused right after it is authenticated, before any
  muxer or stream exists; a stream whose connection belongs to a non-member (possible only
  if that check is bypassed) is reset too. Both are counted in `rejected_peers`.
- One long-lived yamux stream per pair of members, used in both directions (py-libp2p
  0.8.1's mplex cannot read and write one stream at the same time). The member with
  the lower index opens it; the higher one accepts it. A stream from a member that should
  not open one is reset and counted (`rejected_streams`); a new stream from the right
  member replaces the old one (the peer restarted).
- Frames are a 4-byte big-endian length plus payload (`node.transport`). A zero or
  oversized length, or a stream that ends inside a frame, closes that peer's stream and
  counts `malformed`; frames decoded before the fault are still delivered; the other
  links are untouched and the opener re-establishes the stream after its backoff.
- Reconnection: the opener redials with capped exponential backoff and jitter, resetting
  to the initial delay once a stream has stayed up. Before each dial it clears
  py-libp2p's negative dial cache (which otherwise refuses a peer for 60 s after one
  failed dial) and re-adds the member's address (py-libp2p drops addresses after a peer
  id mismatch). The swarm's own retries and auto-connector are switched off so this loop
  alone decides when to dial.
- Rate limits (per peer, inbound): token buckets on frames and on bytes. Frames over the
  limit are dropped and counted (`rate_limited`) rather than back-pressured: a stalled
  read loop stops granting yamux window to the sender, whose writes then time out and
  drop the link, while the consensus layer resends what it still needs anyway.
- Bounded memory: per-peer outbound buffers (drop oldest), one inbound queue (drop newest),
  decoders that refuse a bad length before buffering its payload. Frames queued while a
  write is in progress go out together in the next write (batching).

Async model: one trio thread. `run()` owns the libp2p host and every task (one dial loop
per peer this node opens to; libp2p's stream handler serves accepted streams); `send()`
only enqueues and wakes that peer's writer, so it never blocks and must be called from the
trio thread. `receive()` awaits the shared inbound queue.

py-libp2p's log records are forwarded into the application's logging configuration at a
quiet level (`quiet_libp2p_logging`); by default the library writes warnings straight to
stderr whatever the application configured.

This module must never accept a non-Noise connection, deliver a frame from an identity
outside the committee, buffer without bound, or let a peer's bad input raise out of `run()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio

from node.identity import NodeIdentity
from node.transport import (
    ABSOLUTE_MAX_FRAME_SIZE,
    DEFAULT_MAX_FRAME_SIZE,
    FRAME_HEADER_SIZE,
    FrameDecoder,
    InboundFrame,
    InboundQueue,
    MalformedFrame,
    OutboundBuffer,
    PeerMetrics,
    TokenBucket,
    Transport,
    TransportMetrics,
)

PROTOCOL_ID = "/dvpsim/frames/1.0.0"
READ_CHUNK = 64 * 1024

log = logging.getLogger(__name__)


class _ForwardToRoot(logging.Handler):
    """Hands py-libp2p records at or above its level to the application's root handlers."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger().handle(record)


def quiet_libp2p_logging(level: int = logging.CRITICAL) -> None:
    """Route py-libp2p's records into the application's logging, at `level` and above.

    py-libp2p configures its "libp2p" logger at import with no handlers and
    propagate=False, so its warnings fall through to Python's last-resort stderr handler,
    and some of its modules pin their own logger at INFO. A handler on "libp2p" sees every
    record of every child logger whatever their levels, so one level-filtered forwarding
    handler quiets them all. Left alone when the operator set LIBP2P_DEBUG.
    """
    if os.environ.get("LIBP2P_DEBUG"):
        return
    lib_logger = logging.getLogger("libp2p")
    lib_logger.handlers[:] = [_ForwardToRoot(level)]
    lib_logger.propagate = False


class P2PConfigError(ValueError):
    """A transport setting or committee entry is unusable (one line: what, where, fix)."""


class P2PListenError(OSError):
    """The transport could not listen on its configured address (one line)."""


@dataclass(frozen=True)
class P2PConfig:
    """Tunables of the libp2p transport; the defaults suit a committee of up to ~31."""

    listen_addr: str = "/ip4/127.0.0.1/tcp/0"
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    # Outbound, per peer: what waits while the link is down or slow.
    outbound_max_frames: int = 1024
    outbound_max_bytes: int = 4 << 20
    max_batch_bytes: int = 256 << 10
    # Inbound, shared: what waits for the runtime to call receive().
    inbound_max_frames: int = 8192
    inbound_max_bytes: int = 32 << 20
    # Inbound rate limit, per peer.
    rate_frames_per_s: float = 2000.0
    burst_frames: float = 4000.0
    rate_bytes_per_s: float = float(32 << 20)
    burst_bytes: float = float(64 << 20)
    # Reconnection.
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 2.0
    backoff_jitter: float = 0.2
    stable_after_s: float = 5.0
    dial_timeout_s: float = 5.0
    write_timeout_s: float = 10.0
    libp2p_log_level: int = logging.CRITICAL

    def __post_init__(self) -> None:
        try:
            multiaddr.Multiaddr(self.listen_addr)
        except Exception as error:
            raise P2PConfigError(
                f"listen_addr {self.listen_addr!r} is not a multiaddr ({error}); "
                "use e.g. /ip4/127.0.0.1/tcp/4001"
            ) from None
        checks: list[tuple[bool, str]] = [
            (
                0 < self.max_frame_size <= ABSOLUTE_MAX_FRAME_SIZE,
                "max_frame_size must be in 1..2**32-1",
            ),
            (self.outbound_max_frames >= 1, "outbound_max_frames must be >= 1"),
            (
                self.outbound_max_bytes >= self.max_frame_size,
                "outbound_max_bytes must be >= max_frame_size",
            ),
            (self.max_batch_bytes >= 1, "max_batch_bytes must be >= 1"),
            (self.inbound_max_frames >= 1, "inbound_max_frames must be >= 1"),
            (
                self.inbound_max_bytes >= self.max_frame_size,
                "inbound_max_bytes must be >= max_frame_size",
            ),
            (
                self.rate_frames_per_s > 0 and self.burst_frames >= 1,
                "rate_frames_per_s must be > 0 and burst_frames >= 1",
            ),
            (
                self.rate_bytes_per_s > 0 and self.burst_bytes >= self.max_frame_size,
                "rate_bytes_per_s must be > 0 and burst_bytes >= max_frame_size",
            ),
            (
                0 < self.backoff_initial_s <= self.backoff_max_s,
                "need 0 < backoff_initial_s <= backoff_max_s",
            ),
            (0 <= self.backoff_jitter < 1, "backoff_jitter must be in [0, 1)"),
            (self.dial_timeout_s > 0, "dial_timeout_s must be > 0"),
            (self.write_timeout_s > 0, "write_timeout_s must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise P2PConfigError(f"transport config: {message}")


@dataclass(frozen=True)
class CommitteeMember:
    index: int
    peer_id: Any  # libp2p.peer.id.ID
    addrs: tuple[multiaddr.Multiaddr, ...]


def parse_committee(entries: Sequence[str]) -> tuple[CommitteeMember, ...]:
    """Committee members from multiaddrs ending in /p2p/<peer id>, in committee order.

    An entry may be a bare /p2p/<peer id> when nobody needs to dial it (this node's own
    entry, or a member that only ever accepts).
    """
    from libp2p.peer.peerinfo import info_from_p2p_addr

    members: list[CommitteeMember] = []
    seen: dict[Any, int] = {}
    for index, entry in enumerate(entries):
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(entry))
        except Exception as error:
            raise P2PConfigError(
                f"committee entry {index} {entry!r} is not a multiaddr ending in "
                f"/p2p/<peer id> ({error}); write it as /ip4/HOST/tcp/PORT/p2p/PEER_ID"
            ) from None
        if info.peer_id in seen:
            raise P2PConfigError(
                f"committee entries {seen[info.peer_id]} and {index} have the same peer id "
                f"{info.peer_id}; every member needs its own identity"
            )
        seen[info.peer_id] = index
        addrs = tuple(a for a in info.addrs if str(a) not in ("", "/"))
        members.append(CommitteeMember(index=index, peer_id=info.peer_id, addrs=addrs))
    if len(members) < 2:
        raise P2PConfigError(f"committee has {len(members)} member(s); a transport needs >= 2")
    return tuple(members)


@dataclass
class _Link:
    """Mutable state of the link to one member; owned by the transport's trio thread."""

    member: CommitteeMember
    opener: bool  # True if this node opens the stream to the member
    outbound: OutboundBuffer
    frame_bucket: TokenBucket
    byte_bucket: TokenBucket
    writer_waiting: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)
    scope: trio.CancelScope | None = None
    ever_up: bool = False
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    writes_out: int = 0
    dropped_outbound: int = 0
    dropped_inbound: int = 0
    rate_limited: int = 0
    malformed: int = 0
    rejected_streams: int = 0
    reconnects: int = 0
    dial_failures: int = 0

    @property
    def up(self) -> bool:
        return self.scope is not None

    def snapshot(self) -> PeerMetrics:
        return PeerMetrics(
            peer_index=self.member.index,
            link_up=self.up,
            frames_in=self.frames_in,
            frames_out=self.frames_out,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            writes_out=self.writes_out,
            dropped_outbound=self.dropped_outbound,
            dropped_inbound=self.dropped_inbound,
            rate_limited=self.rate_limited,
            malformed=self.malformed,
            rejected_streams=self.rejected_streams,
            reconnects=self.reconnects,
            dial_failures=self.dial_failures,
        )


def _committee_noise(
    identity: NodeIdentity, allowed: frozenset[Any], on_reject: Any
) -> tuple[str, Any]:
    """A Noise security transport that refuses authenticated identities outside `allowed`."""
    from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
    from libp2p.security.exceptions import HandshakeFailure
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
    from libp2p.security.noise.transport import Transport as NoiseTransport

    class CommitteeNoise(NoiseTransport):
        async def _admit(self, secure_conn: Any) -> Any:
            remote = secure_conn.get_remote_peer()
            if remote not in allowed:
                on_reject(remote)
                # Already gone or not, the refusal stands.
                with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await secure_conn.close()
                raise HandshakeFailure(f"peer {remote} is not a member of the committee")
            return secure_conn

        async def secure_inbound(self, conn: Any) -> Any:
            return await self._admit(await super().secure_inbound(conn))

        async def secure_outbound(self, conn: Any, peer_id: Any) -> Any:
            return await self._admit(await super().secure_outbound(conn, peer_id))

    # A fresh static X25519 key per process: the handshake signs it with the identity key.
    transport = CommitteeNoise(identity.key_pair, noise_privkey=new_x25519_key_pair().private_key)
    return NOISE_PROTOCOL_ID, transport


class P2PTransport(Transport):
    """`Transport` over libp2p between the members of one committee (see module docstring)."""

    def __init__(
        self,
        identity: NodeIdentity,
        self_index: int,
        committee: Sequence[str],
        config: P2PConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or P2PConfig()
        self._members = parse_committee(committee)
        if not 0 <= self_index < len(self._members):
            raise P2PConfigError(
                f"self_index {self_index} is outside the committee of {len(self._members)}"
            )
        if self._members[self_index].peer_id != identity.peer_id:
            raise P2PConfigError(
                f"committee entry {self_index} names peer {self._members[self_index].peer_id} "
                f"but this node's identity is {identity.peer_id}; fix the entry or the key file"
            )
        self._identity = identity
        self._self_index = self_index
        self._rng = rng or random.Random()
        self._by_peer_id = {m.peer_id: m.index for m in self._members}
        self._links: dict[int, _Link] = {}
        for member in self._members:
            if member.index == self_index:
                continue
            opener = self_index < member.index
            if opener and not member.addrs:
                raise P2PConfigError(
                    f"committee entry {member.index} has no address but this node must dial "
                    "it; write it as /ip4/HOST/tcp/PORT/p2p/PEER_ID"
                )
            self._links[member.index] = self._new_link(member, opener)
        self._inbound = InboundQueue(self.config.inbound_max_frames, self.config.inbound_max_bytes)
        self._rejected_peers = 0
        self._host: Any = None
        self._listen_addrs: list[str] = []

    def _new_link(self, member: CommitteeMember, opener: bool) -> _Link:
        cfg = self.config
        return _Link(
            member=member,
            opener=opener,
            outbound=OutboundBuffer(cfg.outbound_max_frames, cfg.outbound_max_bytes),
            # Placeholders: run() starts the buckets on the trio clock.
            frame_bucket=TokenBucket(cfg.rate_frames_per_s, cfg.burst_frames, 0.0),
            byte_bucket=TokenBucket(cfg.rate_bytes_per_s, cfg.burst_bytes, 0.0),
        )

    # -- Transport interface -------------------------------------------------------------

    @property
    def self_index(self) -> int:
        return self._self_index

    @property
    def committee_size(self) -> int:
        return len(self._members)

    @property
    def max_frame_size(self) -> int:
        return self.config.max_frame_size

    @property
    def peer_id(self) -> str:
        return self._identity.peer_id_text

    def listen_addrs(self) -> list[str]:
        """Where this node listens, each ending in /p2p/<peer id> (valid once running)."""
        return list(self._listen_addrs)

    def send(self, peer_index: int, payload: bytes) -> None:
        self._check_payload(payload)
        self._check_peer(peer_index)
        link = self._links[peer_index]
        link.dropped_outbound += link.outbound.push(payload)
        link.writer_waiting.unpark_all()

    async def receive(self) -> InboundFrame:
        return await self._inbound.get()

    def connected_peers(self) -> frozenset[int]:
        return frozenset(i for i, link in self._links.items() if link.up)

    def metrics(self) -> TransportMetrics:
        return TransportMetrics(
            self_index=self._self_index,
            peers=tuple(self._links[i].snapshot() for i in sorted(self._links)),
            rejected_peers=self._rejected_peers,
            inbound_queue_frames=len(self._inbound),
            inbound_queue_bytes=self._inbound.nbytes,
        )

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        quiet_libp2p_logging(self.config.libp2p_log_level)
        host = self._make_host()
        self._host = host
        self._inbound.reopen()
        now = trio.current_time()
        cfg = self.config
        for link in self._links.values():
            # The trio clock exists only from here on; start full buckets on it.
            link.frame_bucket = TokenBucket(cfg.rate_frames_per_s, cfg.burst_frames, now)
            link.byte_bucket = TokenBucket(cfg.rate_bytes_per_s, cfg.burst_bytes, now)
        try:
            async with host.run([multiaddr.Multiaddr(self.config.listen_addr)]):
                network = host.get_network()
                # The swarm's auto-connector would dial every known member to reach a
                # connection target; dialing is this transport's job (openers only).
                await network.auto_connector.stop()
                for member in self._members:
                    if member.index != self._self_index:
                        network.protect(member.peer_id, "dvpsim-committee")
                host.set_stream_handler(PROTOCOL_ID, self._accept_stream)
                self._listen_addrs = [str(a) for a in host.get_addrs()]
                try:
                    # py-libp2p logs a failed listen and carries on; a member that nobody
                    # can reach must not look healthy (raised below, outside libp2p's
                    # nurseries, so the caller gets the error itself, not a group).
                    if self._listen_addrs:
                        async with trio.open_nursery() as nursery:
                            for link in self._links.values():
                                if link.opener:
                                    nursery.start_soon(self._dial_loop, link)
                            task_status.started()
                            await trio.sleep_forever()
                finally:
                    await _close_host(host)
            raise P2PListenError(
                f"cannot listen on {self.config.listen_addr}: the address is in use or not "
                "local to this machine; choose another listen address or port"
            )
        finally:
            self._inbound.close()
            for link in self._links.values():
                if link.scope is not None:
                    link.scope.cancel()
                    link.scope = None
            self._host = None

    # -- libp2p host ----------------------------------------------------------------------

    def _make_host(self) -> Any:
        from libp2p import new_host
        from libp2p.custom_types import TProtocol
        from libp2p.network.config import ConnectionConfig, RetryConfig
        from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
        from libp2p.stream_muxer.yamux.yamux import Yamux

        allowed = frozenset(m.peer_id for m in self._members if m.index != self._self_index)
        noise_id, noise = _committee_noise(self._identity, allowed, self._on_outsider)
        peers = len(self._members)
        connection_config = ConnectionConfig(
            # Dialing is this transport's job: no auto-connector, no swarm retries, and
            # room for every member plus outsiders being refused.
            max_connections=4 * peers + 16,
            min_connections=0,
            low_watermark=0,
            high_watermark=4 * peers + 16,
            max_connections_per_peer=2,
            dial_timeout=self.config.dial_timeout_s,
            auto_connect_interval=3600.0,
        )
        host = new_host(
            key_pair=self._identity.key_pair,
            sec_opt={TProtocol(noise_id): noise},
            # Yamux only: py-libp2p 0.8.1's mplex stream holds a read lock while a read
            # waits, which blocks every write on the same stream (no full duplex).
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            listen_addrs=[multiaddr.Multiaddr(self.config.listen_addr)],
            connection_config=connection_config,
        )
        network: Any = host.get_network()  # the Swarm; its interface omits retry_config
        network.retry_config = RetryConfig(max_retries=0)
        return host

    def _on_outsider(self, peer_id: Any) -> None:
        self._rejected_peers += 1
        log.warning("refused a connection from %s: not a member of the committee", peer_id)

    # -- streams ----------------------------------------------------------------------------

    async def _accept_stream(self, stream: Any) -> None:
        remote = stream.muxed_conn.peer_id
        index = self._by_peer_id.get(remote)
        if index is None or index == self._self_index:
            self._rejected_peers += 1
            await _reset(stream)
            return
        link = self._links[index]
        if link.opener:
            # Only the lower index opens; accepting both would leave two streams per pair.
            link.rejected_streams += 1
            await _reset(stream)
            return
        await self._serve(link, stream)

    async def _dial_loop(self, link: _Link) -> None:
        cfg = self.config
        delay = cfg.backoff_initial_s
        while True:
            stream = await self._open_stream(link)
            if stream is None:
                link.dial_failures += 1
            else:
                started = trio.current_time()
                await self._serve(link, stream)
                if trio.current_time() - started >= cfg.stable_after_s:
                    delay = cfg.backoff_initial_s
            jitter = 1.0 + cfg.backoff_jitter * (2.0 * self._rng.random() - 1.0)
            await trio.sleep(delay * jitter)
            delay = min(delay * 2.0, cfg.backoff_max_s)

    async def _open_stream(self, link: _Link) -> Any | None:
        from libp2p.peer.peerinfo import PeerInfo
        from libp2p.peer.peerstore import PERMANENT_ADDR_TTL

        host = self._host
        peer_id = link.member.peer_id
        network = host.get_network()
        # py-libp2p refuses to redial a peer for 60 s after a failed dial, and forgets a
        # peer's addresses after an id mismatch; a restarted member needs neither.
        network.unblock_peer(peer_id)
        host.get_peerstore().add_addrs(peer_id, list(link.member.addrs), PERMANENT_ADDR_TTL)
        with trio.move_on_after(self.config.dial_timeout_s):
            try:
                await host.connect(PeerInfo(peer_id, list(link.member.addrs)))
                return await host.new_stream(peer_id, [PROTOCOL_ID])
            except Exception as error:  # any dial or negotiation failure: back off and retry
                log.debug("dial to member %d failed: %s", link.member.index, error)
        return None

    async def _serve(self, link: _Link, stream: Any) -> None:
        """Read and write `stream` until it fails or a newer stream replaces it."""
        with trio.CancelScope() as scope:
            if link.scope is not None:
                link.scope.cancel()
            if link.ever_up:
                link.reconnects += 1
            link.ever_up = True
            link.scope = scope
            log.info("link to member %d up", link.member.index)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read_loop, link, stream, nursery.cancel_scope)
                    nursery.start_soon(self._write_loop, link, stream, nursery.cancel_scope)
            finally:
                if link.scope is scope:
                    link.scope = None
                    log.info("link to member %d down", link.member.index)
                await _reset(stream)

    async def _read_loop(self, link: _Link, stream: Any, done: trio.CancelScope) -> None:
        from libp2p.network.stream.exceptions import StreamEOF

        decoder = FrameDecoder(self.config.max_frame_size)
        try:
            while True:
                try:
                    data = await stream.read(READ_CHUNK)
                except StreamEOF:
                    data = b""
                if not data:
                    decoder.eof()
                    return
                self._deliver(link, decoder.feed(data))
        except MalformedFrame as fault:
            self._deliver(link, fault.frames)
            link.malformed += 1
            log.warning("closed the stream of member %d: %s", link.member.index, fault.reason)
        except Exception as error:  # reset, connection lost: the link is down, not a crash
            log.debug("read from member %d ended: %r", link.member.index, error)
        finally:
            done.cancel()

    def _deliver(self, link: _Link, frames: Sequence[bytes]) -> None:
        now = trio.current_time()
        for payload in frames:
            if not (link.frame_bucket.take(1, now) and link.byte_bucket.take(len(payload), now)):
                link.rate_limited += 1
                continue
            link.frames_in += 1
            link.bytes_in += len(payload)
            if not self._inbound.put(InboundFrame(link.member.index, payload)):
                link.dropped_inbound += 1

    async def _write_loop(self, link: _Link, stream: Any, done: trio.CancelScope) -> None:
        batch: list[bytes] = []
        try:
            while True:
                if not link.outbound:
                    await link.writer_waiting.park()  # until send() queues something
                    continue
                batch = link.outbound.pop_batch(self.config.max_batch_bytes)
                wire = b"".join(len(p).to_bytes(FRAME_HEADER_SIZE, "big") + p for p in batch)
                with trio.fail_after(self.config.write_timeout_s):
                    await stream.write(wire)
                link.writes_out += 1
                link.frames_out += len(batch)
                link.bytes_out += len(wire) - FRAME_HEADER_SIZE * len(batch)
                batch = []
        except Exception as error:  # write failed or timed out: the link is down
            log.debug("write to member %d ended: %r", link.member.index, error)
        finally:
            # A batch cut off by failure or cancellation may not have arrived: count it lost.
            link.dropped_outbound += len(batch)
            done.cancel()


async def _close_host(host: Any) -> None:
    """Close connections and listeners explicitly, shielded from the cancellation that is
    stopping us: py-libp2p's own teardown awaits them unshielded and, when cancelled,
    leaves the listening socket open (a restarted transport then cannot bind the port)."""
    with trio.CancelScope(shield=True), trio.move_on_after(5.0):
        try:
            await host.close()
        except Exception as error:
            log.debug("closing the libp2p host: %r", error)


async def _reset(stream: Any) -> None:
    # Already reset, or the connection is gone: either way the stream is done.
    with trio.CancelScope(shield=True), trio.move_on_after(1.0), contextlib.suppress(Exception):
        await stream.reset()
