"""The Solidity RFC 9380 hash-to-G2 (BLS12381G2_XMD:SHA-256_SSWU_RO_) against the RFC's
known-answer vectors and against py_ecc on random inputs; G1 negation on 384-bit values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import bls
from consensus.eip2537 import encode_g1, hash_to_g2_affine
from tests.contracts.contract_helpers import P, expect_error

VECTORS = Path(__file__).resolve().parent.parent / "crypto" / "vectors" / "hash_to_g2_rfc9380.json"


def _vectors() -> dict[str, Any]:
    return json.loads(VECTORS.read_text(encoding="utf-8"))


def _point(p: dict[str, dict[str, str]]) -> bytes:
    return b"".join(bytes(16) + bytes.fromhex(p[c][k]) for c in ("x", "y") for k in ("c0", "c1"))


@pytest.mark.parametrize("index", range(len(_vectors()["cases"])))
def test_rfc9380_vectors(index: int, w3: Any, bls_harness: Any) -> None:
    vectors = _vectors()
    case = vectors["cases"][index]
    got = bls_harness.functions.hashToG2(case["msg"].encode(), vectors["dst"].encode()).call()
    assert got == _point(case["P"])


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    message=st.binary(max_size=300),
    dst=st.sampled_from([bls.DST_SIG, bls.DST_POP, b"x", b"D" * 255]),
)
def test_hash_to_g2_matches_py_ecc(message: bytes, dst: bytes, w3: Any, bls_harness: Any) -> None:
    assert bls_harness.functions.hashToG2(message, dst).call() == hash_to_g2_affine(message, dst)


@pytest.mark.parametrize("length", [0, 256])
def test_domain_separation_tag_length(length: int, w3: Any, bls_harness: Any) -> None:
    reason = expect_error(
        bls_harness.abi,
        lambda: bls_harness.functions.hashToG2(b"m", b"D" * length).call(),
        "InvalidDomainSeparationTag",
    )
    assert reason.args == (length,)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sk=st.integers(min_value=1, max_value=bls.CURVE_ORDER - 1))
def test_g1_negation(sk: int, w3: Any, bls_harness: Any) -> None:
    point = encode_g1(bls.sk_to_pk(sk))
    negated = bls_harness.functions.negateG1(point).call()
    assert negated[:64] == point[:64]
    y = int.from_bytes(point[64:], "big")
    assert int.from_bytes(negated[64:], "big") == P - y
    assert bls_harness.functions.negateG1(bytes(128)).call() == bytes(128)  # infinity stays
