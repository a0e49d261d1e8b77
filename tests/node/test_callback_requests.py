"""The bank's callbacks on one kept-alive connection (``node.pumps.bank.CallbackRequests``):
requests however the bytes are cut, in order, and a bad request refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.pumps.bank import MAX_REQUEST_BYTES, CallbackRequests


def _request(body: bytes, signature: str = "t=1,v1=ab") -> bytes:
    return (
        b"POST /callbacks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"X-DvP-Signature: {signature}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


@given(
    bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
)
@settings(max_examples=100, deadline=None)
def test_requests_come_out_whole_and_in_order_however_the_bytes_are_cut(
    bodies: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(_request(b, f"s{i}") for i, b in enumerate(bodies))
    points = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    requests = CallbackRequests()
    got = []
    for start, end in zip(points, points[1:], strict=False):
        got += requests.feed(stream[start:end])
    assert [body for _, body in got] == bodies
    assert [headers["X-DvP-Signature"] for headers, _ in got] == [
        f"s{i}" for i in range(len(bodies))
    ]
    assert not requests.pending


def test_a_partial_request_is_pending_until_its_body_arrives() -> None:
    requests = CallbackRequests()
    whole = _request(b'{"event": 1}')
    assert requests.feed(whole[:-3]) == [] and requests.pending
    assert requests.feed(whole[-3:])[0][1] == b'{"event": 1}'


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        _request(b"").replace(
            b"Content-Length: 0", f"Content-Length: {MAX_REQUEST_BYTES + 1}".encode()
        ),
        b"POST / HTTP/1.1\r\nX: " + b"a" * (MAX_REQUEST_BYTES + 1),
    ],
)
def test_anything_but_a_bounded_post_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        CallbackRequests().feed(data)
