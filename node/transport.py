"""The transport interface of an oracle node, and the framing rules every transport obeys.

A node's runtime talks to the other committee members through a `Transport`: it hands
opaque payloads (already encoded by the consensus codec) to `send` or `broadcast` and
awaits inbound payloads from `receive`. Peers are named by their committee index, never
by network address or libp2p peer id, so the simulation can put its own network behind
the same interface that `node.p2p.P2PTransport` implements over libp2p.

This module also holds the sans-I/O pieces a byte-stream transport needs, each pure and
clock-free so that they can be property-tested:

- `encode_frame` / `FrameDecoder`: a frame is a 4-byte big-endian length followed by that
  many payload bytes; length 0 and lengths above the configured maximum are malformed.
- `TokenBucket`: per-peer rate limiting; the caller passes the current time in.
- `OutboundBuffer`: the bounded per-peer queue of frames waiting to be written; when full
  it evicts the oldest frames (newer consensus messages supersede older ones, and the
  pacemaker resends what is still needed), so memory stays bounded while a peer is down.
- `InboundQueue`: the bounded queue of received frames, shared by all peers; when full,
  newly received frames are dropped and counted.

Threading and async model: everything here runs on one trio thread. `send` and
`broadcast` are synchronous and never block (they enqueue); `receive` is awaited. They are
not thread-safe: a caller on another thread must hop onto the trio thread (e.g.
`trio.from_thread.run_sync`). `metrics()` and `connected_peers()` only read counters and
may be called from another thread (a Prometheus exporter, say).

This module must never interpret payloads, read the clock or the network, or grow a
queue without bound.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import trio

FRAME_HEADER_SIZE = 4
DEFAULT_MAX_FRAME_SIZE = 1 << 20
# The length prefix is a uint32; a larger maximum could never be announced.
ABSOLUTE_MAX_FRAME_SIZE = (1 << 32) - 1


class TransportClosed(Exception):
    """The transport has stopped; no more frames will arrive."""


class MalformedFrame(Exception):
    """A peer broke the framing rules.

    `frames` holds the well-formed frames decoded before the fault, in order, so the
    caller can still deliver them before it closes the stream.
    """

    def __init__(self, reason: str, frames: Sequence[bytes] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.frames: tuple[bytes, ...] = tuple(frames)


@dataclass(frozen=True, slots=True)
class InboundFrame:
    """One payload received from committee member `peer_index` (`sender_twin`: from that
    member's twin copy, `node.twins`)."""

    peer_index: int
    payload: bytes
    sender_twin: bool = False


@dataclass(frozen=True, slots=True)
class PeerMetrics:
    """Counters for the link to one committee member (monotonic except `link_up`)."""

    peer_index: int
    link_up: bool
    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int
    writes_out: int  # stream writes; frames_out / writes_out is the batching factor
    dropped_outbound: int  # evicted from the full outbound buffer, or lost in a failed write
    dropped_inbound: int  # received but the inbound queue was full
    rate_limited: int  # received but over this peer's rate limit
    malformed: int  # streams closed because the peer broke the framing rules
    rejected_streams: int  # streams from this member that broke the opening rule
    reconnects: int  # times the link came up again after having been up
    dial_failures: int


@dataclass(frozen=True, slots=True)
class TransportMetrics:
    """A snapshot of a transport's counters, for the runtime to publish."""

    self_index: int
    peers: tuple[PeerMetrics, ...]  # one per other member, by index
    rejected_peers: int  # connections or streams from identities outside the committee
    inbound_queue_frames: int
    inbound_queue_bytes: int

    def _total(self, name: str) -> int:
        return sum(int(getattr(p, name)) for p in self.peers)

    @property
    def frames_in(self) -> int:
        return self._total("frames_in")

    @property
    def frames_out(self) -> int:
        return self._total("frames_out")

    @property
    def malformed(self) -> int:
        return self._total("malformed")

    @property
    def reconnects(self) -> int:
        return self._total("reconnects")

    def peer(self, index: int) -> PeerMetrics:
        for p in self.peers:
            if p.peer_index == index:
                return p
        raise KeyError(f"no link to committee member {index}")

    def as_dict(self) -> dict[str, Any]:
        """Totals plus a per-peer breakdown, JSON-able."""
        totals = {
            name: self._total(name)
            for name in (
                "frames_in",
                "frames_out",
                "bytes_in",
                "bytes_out",
                "writes_out",
                "dropped_outbound",
                "dropped_inbound",
                "rate_limited",
                "malformed",
                "rejected_streams",
                "reconnects",
                "dial_failures",
            )
        }
        return {
            "self_index": self.self_index,
            **totals,
            "rejected_peers": self.rejected_peers,
            "links_up": sum(1 for p in self.peers if p.link_up),
            "inbound_queue_frames": self.inbound_queue_frames,
            "inbound_queue_bytes": self.inbound_queue_bytes,
            "peers": {str(p.peer_index): asdict(p) for p in self.peers},
        }


class Transport(abc.ABC):
    """Moves opaque payloads between the members of one committee.

    Delivery is best effort and unordered across peers (ordered per peer while a link
    stays up): frames can be lost when a link breaks, a buffer is full, or a rate limit
    is hit, and every such loss is counted in `metrics()`. The consensus layer above
    resends what it still needs.
    """

    @property
    @abc.abstractmethod
    def self_index(self) -> int:
        """This node's index in the committee."""

    @property
    @abc.abstractmethod
    def committee_size(self) -> int:
        """Number of committee members, this node included."""

    @property
    @abc.abstractmethod
    def max_frame_size(self) -> int:
        """Largest payload `send` accepts."""

    @abc.abstractmethod
    def send(self, peer_index: int, payload: bytes) -> None:
        """Queue `payload` for member `peer_index` without blocking.

        Raises ValueError for a payload that is empty or larger than `max_frame_size`,
        or for an index that is not another member: those are the caller's bugs.
        """

    def broadcast(self, payload: bytes) -> None:
        """Queue `payload` for every other member."""
        self._check_payload(payload)
        for peer in range(self.committee_size):
            if peer != self.self_index:
                self.send(peer, payload)

    @abc.abstractmethod
    async def receive(self) -> InboundFrame:
        """Wait for the next inbound frame; raises TransportClosed once stopped."""

    @abc.abstractmethod
    def connected_peers(self) -> frozenset[int]:
        """Indices of the members whose link is up right now."""

    @abc.abstractmethod
    def metrics(self) -> TransportMetrics:
        """A snapshot of the counters."""

    @abc.abstractmethod
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; call `task_status.started()` once frames can flow.

        (`task_status` is a `trio.TaskStatus[None]`; typed Any because the trio-typing
        stubs that py-libp2p installs shadow trio's own annotations.)

        Use as `await nursery.start(transport.run)`, or `async with transport:`.
        """

    def _check_payload(self, payload: bytes) -> None:
        # Only immutable bytes: a queued bytearray could change before it is written.
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        if len(payload) == 0:
            raise ValueError("payload is empty; frames carry at least one byte")
        if len(payload) > self.max_frame_size:
            raise ValueError(
                f"payload of {len(payload)} bytes exceeds max_frame_size {self.max_frame_size}; "
                "split it or raise the limit on every member"
            )

    def _check_peer(self, peer_index: int) -> None:
        if not 0 <= peer_index < self.committee_size or peer_index == self.self_index:
            raise ValueError(
                f"peer index {peer_index} is not another member of a committee of "
                f"{self.committee_size} (this node is {self.self_index})"
            )

    def _running(self) -> AbstractAsyncContextManager[Transport]:
        @asynccontextmanager
        async def running() -> AsyncIterator[Transport]:
            failure: Exception | None = None
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(self.run)
                except Exception as error:  # failed before starting: nothing else to stop
                    failure = error
                else:
                    try:
                        yield self
                    finally:
                        nursery.cancel_scope.cancel()
            if failure is not None:
                # Raised outside the nursery so the caller sees the error, not a group.
                raise failure

        return running()

    async def __aenter__(self) -> Transport:
        self._context = self._running()
        return await self._context.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._context.__aexit__(exc_type, exc, tb)


# ---------------------------------------------------------------------------------------
# Framing


def encode_frame(payload: bytes) -> bytes:
    """The wire form of one frame: 4-byte big-endian length, then the payload."""
    if not 0 < len(payload) <= ABSOLUTE_MAX_FRAME_SIZE:
        raise ValueError(f"frame payload length {len(payload)} is outside 1..2**32-1")
    return len(payload).to_bytes(FRAME_HEADER_SIZE, "big") + bytes(payload)


class FrameDecoder:
    """Splits a byte stream into frames, rejecting bad lengths as soon as they are read.

    A length is checked the moment its 4 bytes are available, so an oversized frame is
    refused before any of its payload is buffered: the decoder never holds more than
    `max_frame_size + FRAME_HEADER_SIZE - 1` bytes between calls. After a MalformedFrame
    the decoder is spent and raises again on any further input.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 0 < max_frame_size <= ABSOLUTE_MAX_FRAME_SIZE:
            raise ValueError(f"max_frame_size {max_frame_size} is outside 1..2**32-1")
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._failed: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the frames they complete, in order."""
        if self._failed is not None:
            raise MalformedFrame(self._failed)
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        offset = 0
        end = len(buffer)
        while end - offset >= FRAME_HEADER_SIZE:
            length = int.from_bytes(buffer[offset : offset + FRAME_HEADER_SIZE], "big")
            if length == 0 or length > self.max_frame_size:
                self._failed = (
                    "zero-length frame"
                    if length == 0
                    else f"frame length {length} exceeds max_frame_size {self.max_frame_size}"
                )
                self._buffer = bytearray()
                raise MalformedFrame(self._failed, frames)
            if end - offset - FRAME_HEADER_SIZE < length:
                break
            start = offset + FRAME_HEADER_SIZE
            frames.append(bytes(buffer[start : start + length]))
            offset = start + length
        # One compaction per call keeps a chunk holding many small frames linear.
        if offset:
            del buffer[:offset]
        return frames

    def eof(self) -> None:
        """The stream ended; raise MalformedFrame if it ended inside a frame."""
        if self._failed is not None:
            raise MalformedFrame(self._failed)
        if self._buffer:
            self._failed = f"stream ended inside a frame ({len(self._buffer)} bytes pending)"
            self._buffer = bytearray()
            raise MalformedFrame(self._failed)


# ---------------------------------------------------------------------------------------
# Rate limiting and bounded queues


class TokenBucket:
    """Classic token bucket: `rate` tokens per second, at most `burst` saved up.

    Time is passed in (seconds, any monotonic origin). A clock that steps backwards is
    treated as no time passing, so it can never mint tokens.
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"token bucket needs rate > 0 and burst > 0, got {rate}, {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def take(self, amount: float, now: float) -> bool:
        """Spend `amount` tokens if available at time `now`; False (nothing spent) otherwise."""
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
        if amount <= self._tokens:
            self._tokens -= amount
            return True
        return False


class OutboundBuffer:
    """Frames waiting to be written to one peer, bounded in count and in bytes.

    `push` evicts the oldest frames to make room and returns how many it evicted.
    """

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        if max_frames < 1 or max_bytes < 1:
            raise ValueError("outbound buffer needs max_frames >= 1 and max_bytes >= 1")
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._frames: deque[bytes] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def push(self, payload: bytes) -> int:
        if len(payload) > self.max_bytes:
            raise ValueError(
                f"payload of {len(payload)} bytes cannot fit an outbound buffer of "
                f"{self.max_bytes} bytes"
            )
        evicted = 0
        while self._frames and (
            len(self._frames) >= self.max_frames or self._bytes + len(payload) > self.max_bytes
        ):
            self._bytes -= len(self._frames.popleft())
            evicted += 1
        self._frames.append(payload)
        self._bytes += len(payload)
        return evicted

    def pop_batch(self, max_bytes: int) -> list[bytes]:
        """Oldest frames first, as many as fit `max_bytes` (always at least one)."""
        batch: list[bytes] = []
        size = 0
        while self._frames:
            nxt = len(self._frames[0])
            if batch and size + nxt > max_bytes:
                break
            batch.append(self._frames.popleft())
            size += nxt
        self._bytes -= size
        return batch

    def clear(self) -> int:
        dropped = len(self._frames)
        self._frames.clear()
        self._bytes = 0
        return dropped


class InboundQueue:
    """Received frames waiting for `receive`, bounded in count and bytes; drops when full."""

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        if max_frames < 1 or max_bytes < 1:
            raise ValueError("inbound queue needs max_frames >= 1 and max_bytes >= 1")
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._frames: deque[InboundFrame] = deque()
        self._bytes = 0
        # Parked receivers; every put or close wakes them all to re-check.
        self._waiters = trio.lowlevel.ParkingLot()
        self._closed = False

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def put(self, frame: InboundFrame) -> bool:
        """Queue a frame; False if the queue is full or closed (the frame is dropped)."""
        size = len(frame.payload)
        if (
            self._closed
            or len(self._frames) >= self.max_frames
            or self._bytes + size > self.max_bytes
        ):
            return False
        self._frames.append(frame)
        self._bytes += size
        self._waiters.unpark_all()
        return True

    async def get(self) -> InboundFrame:
        while not self._frames:
            if self._closed:
                raise TransportClosed("transport stopped")
            await self._waiters.park()
        frame = self._frames.popleft()
        self._bytes -= len(frame.payload)
        return frame

    def close(self) -> None:
        """Wake waiting receivers; frames already queued can still be taken."""
        self._closed = True
        self._waiters.unpark_all()

    def reopen(self) -> None:
        self._closed = False
