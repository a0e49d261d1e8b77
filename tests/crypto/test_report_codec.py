"""Report encoding (round trip, exact ABI layout, strict decoding), report hashes, config
digests, committee rules and the conflict relation."""

from __future__ import annotations

import dataclasses
import re

import pytest
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import bls
from consensus.report import (
    Action,
    CommitteeConfig,
    CommitteeConfigError,
    Decision,
    Report,
    ReportError,
    config_digest,
    conflicts,
    decode_report,
    default_threshold,
    encode_report,
    report_hash,
)
from tests.crypto.crypto_helpers import committee_secret_keys

KEYS = tuple(bls.sk_to_pk(sk) for sk in committee_secret_keys(7))
VERIFIER = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


bytes32 = st.binary(min_size=32, max_size=32)
decisions = st.builds(
    Decision, settlement_id=bytes32, action=st.sampled_from(Action), terms_hash=bytes32
)
reports = st.builds(
    Report,
    config_digest=bytes32,
    epoch=st.integers(0, 2**32 - 1),
    round=st.integers(0, 2**64 - 1),
    decisions=st.lists(decisions, max_size=6, unique_by=lambda d: d.settlement_id).map(tuple),
)

SAMPLE = Report(
    config_digest=b"\x0d\x01" + b"\xaa" * 30,
    epoch=7,
    round=3,
    decisions=(
        Decision(b"\x01" * 32, Action.COMMIT, b"\x11" * 32),
        Decision(b"\x02" * 32, Action.ABORT, b"\x22" * 32),
    ),
)


# --------------------------------------------------------------------------- encoding


def test_encoding_layout_by_hand() -> None:
    """The exact words abi.encode(bytes32, uint64, uint64, (bytes32,uint8,bytes32)[])
    produces, written out independently of eth_abi."""
    expected = (
        SAMPLE.config_digest
        + _word(7)
        + _word(3)
        + _word(0x80)  # offset of the dynamic array: after the four head words
        + _word(2)  # array length
        + b"\x01" * 32
        + _word(1)
        + b"\x11" * 32
        + b"\x02" * 32
        + _word(2)
        + b"\x22" * 32
    )
    assert encode_report(SAMPLE) == expected
    assert report_hash(SAMPLE) == keccak(expected)


def test_keccak_backend_is_keccak_not_sha3() -> None:
    assert keccak(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


@settings(max_examples=150, deadline=None)
@given(report=reports)
def test_round_trip_and_eth_abi_agreement(report: Report) -> None:
    encoded = encode_report(report)
    assert decode_report(encoded) == report
    # The word-by-word encoder against eth_abi's generic one (the reference).
    assert encoded == abi_encode(
        ["bytes32", "uint64", "uint64", "(bytes32,uint8,bytes32)[]"],
        [
            report.config_digest,
            report.epoch,
            report.round,
            [(d.settlement_id, int(d.action), d.terms_hash) for d in report.decisions],
        ],
    )
    digest, epoch, round_, items = abi_decode(
        ["bytes32", "uint64", "uint64", "(bytes32,uint8,bytes32)[]"], encoded
    )
    assert (digest, epoch, round_) == (report.config_digest, report.epoch, report.round)
    assert list(items) == [(d.settlement_id, int(d.action), d.terms_hash) for d in report.decisions]


@settings(max_examples=150, deadline=None)
@given(report=reports, data=st.data())
def test_mutated_encodings_are_rejected_or_canonical(report: Report, data: st.DataObject) -> None:
    """Flip, insert or delete bytes: decode either refuses, or returns a report that encodes
    to exactly the mutated bytes (so nothing non-canonical is ever accepted)."""
    encoded = bytearray(encode_report(report))
    kind = data.draw(st.sampled_from(["flip", "append", "truncate", "insert"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] ^= data.draw(st.integers(1, 255))
    elif kind == "append":
        encoded += data.draw(st.binary(min_size=1, max_size=64))
    elif kind == "truncate":
        del encoded[data.draw(st.integers(0, len(encoded) - 1)) :]
    else:
        i = data.draw(st.integers(0, len(encoded)))
        encoded[i:i] = data.draw(st.binary(min_size=1, max_size=40))
    mutated = bytes(encoded)
    try:
        decoded = decode_report(mutated)
    except ReportError:
        return
    assert encode_report(decoded) == mutated


def _sample_words() -> list[bytes]:
    encoded = encode_report(SAMPLE)
    return [encoded[i : i + 32] for i in range(0, len(encoded), 32)]


@pytest.mark.parametrize(
    ("word_index", "value", "fragment"),
    [
        (1, 2**32, "epoch out of range"),
        (2, 2**64, "round out of range"),
        (3, 0xA0, "offset is not 0x80"),
        (4, 3, "3 decisions need"),
        (4, 2**255, "decisions need"),
        (6, 0, "unknown action 0"),
        (6, 4, "unknown action 4"),
        (6, 255, "unknown action 255"),
        (6, 256 + 1, "action out of range"),
    ],
)
def test_decode_rejects_bad_words(word_index: int, value: int, fragment: str) -> None:
    words = _sample_words()
    words[word_index] = _word(value)
    with pytest.raises(ReportError, match=fragment):
        decode_report(b"".join(words))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(32 * 4),
        encode_report(SAMPLE) + bytes(32),  # trailing word
        encode_report(SAMPLE) + b"\x00",  # trailing byte
        encode_report(SAMPLE)[:-32],  # truncated decision
    ],
    ids=["empty", "head-only", "trailing-word", "trailing-byte", "truncated"],
)
def test_decode_rejects_bad_lengths(data: bytes) -> None:
    with pytest.raises(ReportError):
        decode_report(data)


def test_decode_rejects_repeated_settlement() -> None:
    words = _sample_words()
    words[8] = words[5]  # second decision names the first settlement
    with pytest.raises(ReportError, match="more than once"):
        decode_report(b"".join(words))


def test_empty_report_round_trips() -> None:
    report = dataclasses.replace(SAMPLE, decisions=())
    assert decode_report(encode_report(report)) == report


@pytest.mark.parametrize(
    "build",
    [
        lambda: Decision(b"\x01" * 31, Action.COMMIT, b"\x00" * 32),
        lambda: Decision(b"\x01" * 32, Action.COMMIT, b"\x00" * 33),
        lambda: Decision(b"\x01" * 32, 1, b"\x00" * 32),  # type: ignore[arg-type]
        lambda: dataclasses.replace(SAMPLE, epoch=2**32),
        lambda: dataclasses.replace(SAMPLE, epoch=-1),
        lambda: dataclasses.replace(SAMPLE, round=2**64),
        lambda: dataclasses.replace(SAMPLE, config_digest=b"\x00" * 31),
        lambda: dataclasses.replace(SAMPLE, decisions=list(SAMPLE.decisions)),
        lambda: dataclasses.replace(SAMPLE, decisions=SAMPLE.decisions * 2),
    ],
)
def test_invalid_reports_cannot_be_built(build: object) -> None:
    with pytest.raises(ReportError):
        build()  # type: ignore[operator]


def test_report_hash_changes_with_every_field() -> None:
    base = report_hash(SAMPLE)
    first = SAMPLE.decisions[0]
    variants = [
        dataclasses.replace(SAMPLE, config_digest=b"\x0d\x01" + b"\xab" * 30),
        dataclasses.replace(SAMPLE, epoch=8),
        dataclasses.replace(SAMPLE, round=4),
        dataclasses.replace(SAMPLE, decisions=SAMPLE.decisions[:1]),
        dataclasses.replace(SAMPLE, decisions=SAMPLE.decisions[::-1]),
        dataclasses.replace(
            SAMPLE, decisions=(dataclasses.replace(first, action=Action.ABORT), SAMPLE.decisions[1])
        ),
        dataclasses.replace(
            SAMPLE,
            decisions=(dataclasses.replace(first, terms_hash=b"\x12" * 32), SAMPLE.decisions[1]),
        ),
        dataclasses.replace(
            SAMPLE,
            decisions=(dataclasses.replace(first, settlement_id=b"\x03" * 32), SAMPLE.decisions[1]),
        ),
    ]
    hashes = {report_hash(v) for v in variants}
    assert base not in hashes and len(hashes) == len(variants)


# --------------------------------------------------------------------------- committee configs


def _config(**changes: object) -> CommitteeConfig:
    fields: dict[str, object] = dict(
        chain_id=31337, verifier=VERIFIER, config_count=1, public_keys=KEYS[:4], f=1, t=3
    )
    fields.update(changes)
    return CommitteeConfig(**fields)  # type: ignore[arg-type]


def test_config_digest_by_hand() -> None:
    """abi.encode(uint256, address, uint64, bytes32, uint8, uint8), keccak, 0x0d01 prefix,
    written out word by word."""
    cfg = _config()
    keys_hash = keccak(b"".join(cfg.public_keys))
    preimage = _word(31337) + bytes(12) + VERIFIER + _word(1) + keys_hash + _word(1) + _word(3)
    expected = b"\x0d\x01" + keccak(preimage)[2:]
    assert config_digest(cfg) == expected


@pytest.mark.parametrize(
    "changes",
    [
        {"chain_id": 1},
        {"verifier": bytes(20)},
        {"config_count": 2},
        {"public_keys": (KEYS[1], KEYS[0], KEYS[2], KEYS[3])},  # order is the bitmap order
        {"public_keys": KEYS[:3] + (KEYS[4],)},
        {"public_keys": KEYS[:5]},
        {"t": 4},
        {"t": 2},
        {"public_keys": KEYS[:7], "f": 2, "t": 5},
    ],
)
def test_config_digest_changes_with_every_field(changes: dict[str, object]) -> None:
    base = config_digest(_config())
    changed = config_digest(_config(**changes))
    assert changed != base
    assert changed[:2] == base[:2] == b"\x0d\x01"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"public_keys": KEYS[:3]}, "need n >= 3f+1"),
        ({"f": 2, "t": 3}, "need n >= 3f+1"),
        ({"t": 1}, "f+1 <= t <= n"),
        ({"t": 5}, "f+1 <= t <= n"),
        ({"public_keys": KEYS[:3] + (KEYS[0],)}, "member 3 repeats"),
        ({"public_keys": KEYS[:3] + (KEYS[3][:47],)}, "member 3 is not a valid"),
        ({"public_keys": KEYS[:3] + (bytes([0xC0]) + bytes(47),)}, "member 3 is not a valid"),
        ({"public_keys": list(KEYS[:4])}, "must be a tuple"),
        ({"verifier": bytes(19)}, "verifier must be 20 bytes"),
        ({"chain_id": -1}, "chain_id"),
        ({"config_count": 2**64}, "config_count"),
        ({"f": -1}, "CommitteeConfig.f"),
    ],
)
def test_config_validation(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(CommitteeConfigError, match=re.escape(fragment)):
        _config(**changes)


@pytest.mark.parametrize(
    ("n", "f", "t"),
    [(1, 0, 1), (4, 1, 3), (7, 2, 5), (10, 3, 7), (16, 5, 11), (21, 6, 14), (31, 10, 21)],
)
def test_default_threshold_values(n: int, f: int, t: int) -> None:
    assert default_threshold(n, f) == t


@given(f=st.integers(0, 40), extra=st.integers(0, 40))
def test_default_threshold_quorums_share_an_honest_member(f: int, extra: int) -> None:
    """Any two sets of t signers out of n overlap in 2t - n >= f+1 members, so at least one
    honest member signed both; t = f+1 does not guarantee that once f >= 1."""
    n = 3 * f + 1 + extra
    t = default_threshold(n, f)
    assert f + 1 <= t <= n
    assert 2 * t - n >= f + 1
    if f >= 1:
        assert 2 * (f + 1) - n < f + 1


# --------------------------------------------------------------------------- conflicts


def test_conflicts() -> None:
    sid, other = b"\x01" * 32, b"\x02" * 32
    commit = Decision(sid, Action.COMMIT, b"\x00" * 32)
    abort = Decision(sid, Action.ABORT, b"\x01" * 32)
    prepare = Decision(sid, Action.PREPARE, b"\x00" * 32)
    assert conflicts(commit, abort) and conflicts(abort, commit)
    assert not conflicts(commit, commit)
    assert not conflicts(commit, dataclasses.replace(commit, terms_hash=b"\x09" * 32))
    assert not conflicts(prepare, commit) and not conflicts(prepare, abort)
    assert not conflicts(commit, dataclasses.replace(abort, settlement_id=other))
