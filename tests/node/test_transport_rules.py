"""Property tests of the sans-I/O transport rules: framing, token bucket, bounded queues."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import assume, given
from hypothesis import strategies as st

from node.transport import (
    FRAME_HEADER_SIZE,
    FrameDecoder,
    InboundFrame,
    InboundQueue,
    MalformedFrame,
    OutboundBuffer,
    TokenBucket,
    TransportClosed,
    encode_frame,
)

MAX = 256
payloads = st.lists(st.binary(min_size=1, max_size=MAX), max_size=20)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@given(frames=payloads, cuts=st.lists(st.integers(0, 10_000), max_size=30))
def test_frames_survive_any_chunking(frames: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder(MAX)
    out: list[bytes] = []
    for chunk in chunked(wire, cuts):
        out += decoder.feed(chunk)
        # Never holds a whole frame's worth without returning it.
        assert decoder.buffered < MAX + FRAME_HEADER_SIZE
    decoder.eof()
    assert out == frames


@given(
    frames=payloads,
    length=st.one_of(st.just(0), st.integers(MAX + 1, 2**32 - 1)),
    tail=st.binary(max_size=2 * MAX),
    cuts=st.lists(st.integers(0, 10_000), max_size=10),
)
def test_bad_length_is_refused_with_the_good_frames_before_it(
    frames: list[bytes], length: int, tail: bytes, cuts: list[int]
) -> None:
    wire = b"".join(encode_frame(f) for f in frames) + length.to_bytes(4, "big") + tail
    decoder = FrameDecoder(MAX)
    delivered: list[bytes] = []
    with pytest.raises(MalformedFrame) as caught:
        for chunk in chunked(wire, cuts):
            delivered += decoder.feed(chunk)
    delivered += list(caught.value.frames)
    assert delivered == frames
    # Spent: anything further is refused too.
    with pytest.raises(MalformedFrame):
        decoder.feed(encode_frame(b"ok"))


@given(frames=payloads, partial=st.binary(min_size=1, max_size=MAX))
def test_stream_ending_inside_a_frame_is_malformed(frames: list[bytes], partial: bytes) -> None:
    wire = b"".join(encode_frame(f) for f in frames) + encode_frame(partial)[:-1]
    decoder = FrameDecoder(MAX)
    assert decoder.feed(wire) == frames
    with pytest.raises(MalformedFrame):
        decoder.eof()


def test_length_at_the_limit_is_accepted_and_one_above_is_not() -> None:
    assert FrameDecoder(MAX).feed(encode_frame(b"x" * MAX)) == [b"x" * MAX]
    with pytest.raises(MalformedFrame, match="exceeds max_frame_size"):
        FrameDecoder(MAX).feed((MAX + 1).to_bytes(4, "big"))
    with pytest.raises(MalformedFrame, match="zero-length"):
        FrameDecoder(MAX).feed(b"\x00\x00\x00\x00")


def test_encode_frame_refuses_empty_payload() -> None:
    with pytest.raises(ValueError):
        encode_frame(b"")


steps = st.lists(
    st.tuples(st.floats(0, 5, allow_nan=False), st.floats(0, 50, allow_nan=False)),
    max_size=60,
)


@given(
    rate=st.floats(0.1, 1000, allow_nan=False),
    burst=st.floats(1, 500, allow_nan=False),
    steps=steps,
)
def test_token_bucket_never_grants_more_than_burst_plus_rate_times_time(
    rate: float, burst: float, steps: list[tuple[float, float]]
) -> None:
    now = 100.0
    bucket = TokenBucket(rate, burst, now)
    granted = 0.0
    for dt, amount in steps:
        now += dt
        if bucket.take(amount, now):
            granted += amount
    assert granted <= burst + rate * (now - 100.0) + 1e-6 * max(1.0, granted)


@given(
    rate=st.floats(0.1, 1000, allow_nan=False),
    burst=st.floats(1, 500, allow_nan=False),
    backwards=st.floats(0.001, 1e6, allow_nan=False),
)
def test_token_bucket_clock_stepping_back_mints_nothing(
    rate: float, burst: float, backwards: float
) -> None:
    bucket = TokenBucket(rate, burst, 1000.0)
    assert bucket.take(burst, 1000.0)
    assert not bucket.take(burst * 1e-3 + 1e-9, 1000.0 - backwards)
    # Back at the original time, still nothing has accrued.
    assert not bucket.take(burst * 1e-3 + 1e-9, 1000.0)


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert all(bucket.take(1, 0.0) for _ in range(5))
    assert not bucket.take(1, 0.0)
    assert bucket.take(1, 0.1)
    assert not bucket.take(1, 0.1)
    assert bucket.take(5, 100.0)  # capped at burst...
    assert not bucket.take(1, 100.0)  # ...not 1000 saved-up tokens


@given(
    max_frames=st.integers(1, 20),
    max_bytes=st.integers(64, 2000),
    sizes=st.lists(st.integers(1, 64), max_size=100),
    pops=st.lists(st.integers(1, 500), max_size=20),
)
def test_outbound_buffer_stays_bounded_and_keeps_the_newest_in_order(
    max_frames: int, max_bytes: int, sizes: list[int], pops: list[int]
) -> None:
    buffer = OutboundBuffer(max_frames, max_bytes)
    pushed = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
    evicted = 0
    for payload in pushed:
        evicted += buffer.push(payload)
        assert len(buffer) <= max_frames
        assert buffer.nbytes <= max_bytes
    survivors = pushed[evicted:]  # eviction is strictly oldest-first
    popped: list[bytes] = []
    for limit in pops:
        batch = buffer.pop_batch(limit)
        if survivors[len(popped) :]:
            assert batch  # always progresses
            assert len(batch) == 1 or sum(map(len, batch)) <= limit
        popped += batch
    popped += buffer.pop_batch(10**9)
    assert popped == survivors
    assert buffer.nbytes == 0 and len(buffer) == 0


def test_outbound_buffer_refuses_a_payload_larger_than_itself() -> None:
    with pytest.raises(ValueError):
        OutboundBuffer(4, 10).push(b"x" * 11)


@given(
    max_frames=st.integers(1, 10),
    max_bytes=st.integers(1, 100),
    sizes=st.lists(st.integers(1, 40), max_size=40),
)
def test_inbound_queue_drops_when_full_and_never_exceeds_bounds(
    max_frames: int, max_bytes: int, sizes: list[int]
) -> None:
    queue = InboundQueue(max_frames, max_bytes)
    accepted = []
    for i, size in enumerate(sizes):
        frame = InboundFrame(i % 3, b"y" * size)
        if queue.put(frame):
            accepted.append(frame)
        assert len(queue) <= max_frames and queue.nbytes <= max_bytes
    assume(accepted)

    async def drain() -> list[InboundFrame]:
        return [await queue.get() for _ in accepted]

    assert trio.run(drain) == accepted


@pytest.mark.trio
async def test_inbound_queue_wakes_a_waiting_receiver_and_close_ends_it() -> None:
    queue = InboundQueue(4, 100)
    got: list[InboundFrame] = []

    async def consumer() -> None:
        try:
            while True:
                got.append(await queue.get())
        except TransportClosed:
            got.append(InboundFrame(-1, b"closed"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        queue.put(InboundFrame(1, b"a"))
        await trio.testing.wait_all_tasks_blocked()
        assert got == [InboundFrame(1, b"a")]
        queue.close()
    assert got[-1] == InboundFrame(-1, b"closed")
    assert not queue.put(InboundFrame(1, b"late"))


@pytest.mark.trio
async def test_inbound_queue_serves_several_waiting_receivers() -> None:
    queue = InboundQueue(8, 100)
    got: list[int] = []

    async def consumer(name: int) -> None:
        await queue.get()
        got.append(name)

    async with trio.open_nursery() as nursery:
        for name in range(3):
            nursery.start_soon(consumer, name)
        await trio.testing.wait_all_tasks_blocked()
        for k in range(3):
            queue.put(InboundFrame(1, b"%d" % k))
        with trio.fail_after(5):
            while len(got) < 3:
                await trio.sleep(0)
    assert sorted(got) == [0, 1, 2]
