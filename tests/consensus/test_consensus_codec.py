"""The wire codec: round trips, and every kind of malformed input refused with CodecError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.codec import CodecError, CodecLimits, decode, encode, peek_kind
from consensus.messages import (
    Kind,
    Message,
    MessageError,
    NewEpoch,
    ObserveReq,
    Proposal,
    RoundCertificates,
    Shares,
    SignedObservation,
)
from consensus.report import Action, Certificate, Decision, Report

LIMITS = CodecLimits(
    n=7, targets=2, max_message_bytes=60_000, max_observation_bytes=300, max_decisions_per_report=8
)

epochs = st.integers(1, 2**32 - 1)
rounds = st.integers(1, 2**64 - 1)
observers = st.integers(0, LIMITS.n - 1)


@st.composite
def signed_observations(
    draw: st.DrawFn, epoch: int, round_: int, observer: int
) -> SignedObservation:
    return SignedObservation(
        epoch,
        round_,
        observer,
        draw(st.binary(max_size=LIMITS.max_observation_bytes)),
        draw(st.binary(min_size=64, max_size=64)),
    )


decisions = st.builds(
    Decision,
    st.binary(min_size=32, max_size=32),
    st.sampled_from(list(Action)),
    st.binary(min_size=32, max_size=32),
)


@st.composite
def certificates(draw: st.DrawFn, epoch: int, round_: int) -> Certificate:
    chosen = draw(
        st.lists(
            decisions, max_size=LIMITS.max_decisions_per_report, unique_by=lambda d: d.settlement_id
        )
    )
    return Certificate(
        Report(draw(st.binary(min_size=32, max_size=32)), epoch, round_, tuple(chosen)),
        draw(st.integers(1, 2**LIMITS.n - 1)),
        draw(st.binary(min_size=96, max_size=96)),
    )


@st.composite
def messages(draw: st.DrawFn) -> Message:
    kind = draw(st.sampled_from(list(Kind)))
    e = draw(epochs)
    if kind is Kind.NEW_EPOCH:
        return NewEpoch(e)
    r = draw(rounds)
    if kind is Kind.OBSERVE_REQ:
        return ObserveReq(e, r)
    if kind is Kind.OBSERVATION:
        return draw(signed_observations(e, r, draw(observers)))
    if kind is Kind.PROPOSAL:
        who = draw(st.lists(observers, min_size=1, unique=True))
        return Proposal(e, r, tuple(draw(signed_observations(e, r, o)) for o in sorted(who)))
    if kind is Kind.SHARES:
        share = st.one_of(st.just(b""), st.binary(min_size=96, max_size=96))
        return Shares(e, r, tuple(draw(st.lists(share, min_size=2, max_size=2))))
    return RoundCertificates(e, r, tuple(draw(certificates(e, r)) for _ in range(LIMITS.targets)))


@given(messages())
def test_round_trip(message: Message) -> None:
    data = encode(message)
    assert decode(data, LIMITS) == message
    assert peek_kind(data) is Kind(msgpack.unpackb(data)["k"])


@given(st.binary(max_size=400))
def test_random_bytes_are_refused_only_with_codec_error(data: bytes) -> None:
    try:
        message = decode(data, LIMITS)
    except CodecError:
        return
    assert encode(message) == data  # if it parsed, it was a canonical message


@settings(max_examples=300)
@given(messages(), st.data())
def test_mutated_messages_are_refused_or_canonical(message: Message, data: st.DataObject) -> None:
    encoded = bytearray(encode(message))
    mutation = data.draw(st.sampled_from(["flip", "truncate", "append", "splice"]))
    if mutation == "flip":
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] ^= 1 << data.draw(st.integers(0, 7))
    elif mutation == "truncate":
        del encoded[data.draw(st.integers(0, len(encoded) - 1)) :]
    elif mutation == "append":
        encoded += data.draw(st.binary(min_size=1, max_size=8))
    else:
        position = data.draw(st.integers(0, len(encoded)))
        encoded[position:position] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        decoded = decode(bytes(encoded), LIMITS)
    except CodecError:
        return
    assert encode(decoded) == bytes(encoded)


def _raw(body: dict[str, object]) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


SIG64 = b"\x01" * 64


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"k": 1, "e": 1, "x": 2}, "exactly the fields"),  # unknown field
        ({"k": 2, "e": 1}, "exactly the fields"),  # missing field
        ({"e": 1, "k": 1}, "exactly the fields"),  # fields out of order
        ({"k": 9, "e": 1}, "unknown message kind"),
        ({"k": True, "e": 1}, "unknown message kind"),
        ({"k": 1, "e": True}, "epoch"),  # a boolean is not an integer
        ({"k": 1, "e": 1.0}, "epoch"),  # nor is a float
        ({"k": 1, "e": 0}, "epoch"),  # epochs start at 1
        ({"k": 1, "e": 2**32}, "epoch"),
        ({"k": 2, "e": 1, "r": 0}, "round"),
        ({"k": 3, "e": 1, "r": 1, "o": 7, "b": b"", "s": SIG64}, "observer"),
        ({"k": 3, "e": 1, "r": 1, "o": 0, "b": "text", "s": SIG64}, "binary"),
        ({"k": 3, "e": 1, "r": 1, "o": 0, "b": b"x" * 301, "s": SIG64}, "limit"),
        ({"k": 3, "e": 1, "r": 1, "o": 0, "b": b"", "s": b"\x01" * 63}, "64 bytes"),
        ({"k": 4, "e": 1, "r": 1, "os": []}, "non-empty"),
        (
            {"k": 4, "e": 1, "r": 1, "os": [[1, b"", SIG64], [0, b"", SIG64]]},
            "ordered by observer",
        ),
        ({"k": 4, "e": 1, "r": 1, "os": [[0, b"", SIG64, 1]]}, "3 entries"),
        ({"k": 5, "e": 1, "r": 1, "sh": [b""]}, "2 entries"),  # one share per target
        ({"k": 5, "e": 1, "r": 1, "sh": [b"", b"\x00" * 95]}, "96 bytes"),
        (
            {"k": 6, "e": 1, "r": 1, "c": [[b"\x00" * 32, [], 1 << 7, b"\x00" * 96]] * 2},
            "outside the committee",
        ),
        (
            {"k": 6, "e": 1, "r": 1, "c": [[b"\x00" * 32, [], 0, b"\x00" * 96]] * 2},
            "signers",
        ),
        (
            {
                "k": 6,
                "e": 1,
                "r": 1,
                "c": [[b"\x00" * 32, [[b"\x01" * 32, 1, b"\x02" * 32]] * 9, 1, b"\x00" * 96]] * 2,
            },
            "max_array_len",
        ),
        (
            {
                "k": 6,
                "e": 1,
                "r": 1,
                "c": [[b"\x00" * 32, [[b"\x01" * 32, 4, b"\x02" * 32]], 1, b"\x00" * 96]] * 2,
            },
            "unknown action",
        ),
        (
            {
                "k": 6,
                "e": 1,
                "r": 1,
                "c": [[b"\x00" * 32, [[b"\x01" * 32, 1, b"\x02" * 32]] * 2, 1, b"\x00" * 96]] * 2,
            },
            "more than once",
        ),
    ],
)
def test_schema_violations_are_refused(body: dict[str, object], reason: str) -> None:
    with pytest.raises(CodecError, match=reason):
        decode(_raw(body), LIMITS)


def test_non_canonical_encodings_are_refused() -> None:
    canonical = encode(NewEpoch(1))
    # The same map with the epoch as a uint32 instead of a positive fixint.
    wide = canonical[:-1] + b"\xce\x00\x00\x00\x01"
    assert msgpack.unpackb(wide) == msgpack.unpackb(canonical)
    with pytest.raises(CodecError, match="canonical"):
        decode(wide, LIMITS)
    # Bytes sent as a msgpack str32 header instead of bin8 are not bytes at all.
    observation = SignedObservation(1, 1, 0, b"abc", SIG64)
    as_text = _raw({"k": 3, "e": 1, "r": 1, "o": 0, "b": "abc", "s": SIG64})
    assert decode(encode(observation), LIMITS) == observation
    with pytest.raises(CodecError):
        decode(as_text, LIMITS)


def test_oversized_input_is_refused_before_parsing() -> None:
    limits = CodecLimits(
        n=4, targets=1, max_message_bytes=64, max_observation_bytes=300, max_decisions_per_report=8
    )
    big = encode(SignedObservation(1, 1, 0, b"x" * 100, SIG64))
    with pytest.raises(CodecError, match="limit 64"):
        decode(big, limits)


def test_trailing_bytes_extensions_and_non_maps_are_refused() -> None:
    with pytest.raises(CodecError):
        decode(encode(NewEpoch(3)) + b"\x00", LIMITS)
    with pytest.raises(CodecError):
        decode(msgpack.packb(msgpack.ExtType(1, b"abc")), LIMITS)
    with pytest.raises(CodecError, match="map"):
        decode(msgpack.packb([1, 2]), LIMITS)
    with pytest.raises(CodecError):
        decode(b"", LIMITS)
    nested = b"\x91" * 10_000 + b"\x00"  # deeply nested arrays
    with pytest.raises(CodecError):
        decode(nested, LIMITS)
    with pytest.raises(CodecError, match="bytes"):
        decode("text", LIMITS)  # type: ignore[arg-type]


def test_message_constructors_enforce_their_rules() -> None:
    with pytest.raises(MessageError):
        NewEpoch(0)
    with pytest.raises(MessageError):
        ObserveReq(1, 0)
    so = SignedObservation(1, 1, 0, b"", SIG64)
    with pytest.raises(MessageError, match="carries an observation"):
        Proposal(1, 2, (so,))
    with pytest.raises(MessageError):
        Shares(1, 1, ())
    cert = Certificate(Report(b"\x00" * 32, 1, 1, ()), 1, b"\x00" * 96)
    with pytest.raises(MessageError, match="carries a certificate"):
        RoundCertificates(2, 1, (cert,))


def test_peek_kind_needs_a_canonical_prefix() -> None:
    assert peek_kind(encode(ObserveReq(1, 1))) is Kind.OBSERVE_REQ
    assert peek_kind(b"") is None
    assert peek_kind(b"\x81\xa1k\x09") is None
    assert peek_kind(_raw({"e": 1, "k": 1})) is None
