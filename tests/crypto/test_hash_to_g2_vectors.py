"""RFC 9380 known-answer tests for hash_to_curve, suite BLS12381G2_XMD:SHA-256_SSWU_RO_.

The vectors (Appendix J.10.1) live in vectors/hash_to_g2_rfc9380.json. They are checked
against py_ecc, against blst (the hash behind every signature of the fast backend) and
against the EIP-2537 encoding the Solidity verifier will compare with.
"""

from __future__ import annotations

from hashlib import sha256
from typing import Any

import pytest
from py_ecc.bls.g2_primitives import G2_to_signature
from py_ecc.bls.hash_to_curve import hash_to_G2
from py_ecc.fields import optimized_bls12_381_FQ2 as FQ2
from py_ecc.optimized_bls12_381.optimized_curve import normalize
from pyblst import BlstP2Element

from consensus import eip2537
from tests.crypto.crypto_helpers import load_vector

VECTORS = load_vector("hash_to_g2_rfc9380.json")
DST = VECTORS["dst"].encode()
CASES = VECTORS["cases"]


def _expected(case: dict[str, Any]) -> tuple[tuple[int, int], tuple[int, int]]:
    p = case["P"]
    return (
        (int(p["x"]["c0"], 16), int(p["x"]["c1"], 16)),
        (int(p["y"]["c0"], 16), int(p["y"]["c1"], 16)),
    )


def test_vector_file_holds_the_five_rfc_messages() -> None:
    assert VECTORS["dst"] == "QUUX-V01-CS02-with-BLS12381G2_XMD:SHA-256_SSWU_RO_"
    assert [c["msg"] for c in CASES] == [
        "",
        "abc",
        "abcdef0123456789",
        "q128_" + "q" * 128,
        "a512_" + "a" * 512,
    ]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["msg"][:16] or "empty")
def test_py_ecc_matches_rfc(case: dict[str, Any]) -> None:
    x, y = normalize(hash_to_G2(case["msg"].encode(), DST, sha256))  # type: ignore[arg-type]
    assert ((int(x.coeffs[0]), int(x.coeffs[1])), (int(y.coeffs[0]), int(y.coeffs[1]))) == (
        _expected(case)
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["msg"][:16] or "empty")
def test_blst_matches_rfc(case: dict[str, Any]) -> None:
    (x0, x1), (y0, y1) = _expected(case)
    expected_compressed = bytes(G2_to_signature((FQ2([x0, x1]), FQ2([y0, y1]), FQ2.one())))
    point = BlstP2Element.hash_to_group(case["msg"].encode(), DST)
    assert bytes(point.compress()) == expected_compressed
    # and the fast decompression path recovers the RFC coordinates from blst's bytes
    assert eip2537.g2_affine(expected_compressed) == _expected(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["msg"][:16] or "empty")
def test_eip2537_encoding_of_rfc_points(case: dict[str, Any]) -> None:
    (x0, x1), (y0, y1) = _expected(case)
    expected = b"".join(bytes(16) + v.to_bytes(48, "big") for v in (x0, x1, y0, y1))
    assert eip2537.hash_to_g2_affine(case["msg"].encode(), DST) == expected
