"""The fast BLS backend (blst) against the py_ecc reference on the same random inputs.

Outputs must be byte-identical and verdicts identical, including on tampered signatures.
py_ecc costs 0.1-0.5 s per operation, so the default run uses few examples; the slow
variants (``-m slow``) run many more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from py_ecc.bls.ciphersuites import G2ProofOfPossession

from consensus import bls, bls_reference

secret_keys = st.integers(min_value=1, max_value=bls.CURVE_ORDER - 1)
messages = st.binary(max_size=48)
ikms = st.binary(min_size=32, max_size=64)


def _quick(max_examples: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def _pair(
    prop: Callable[..., None], quick: int, slow: int = 100, **strategies: st.SearchStrategy[Any]
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The property as a default-run test with ``quick`` examples, and as a slow test with
    ``slow`` examples (two separate wrappers, so their settings do not overwrite each other)."""
    fast_test = _quick(quick)(given(**strategies)(prop))
    slow_test = pytest.mark.slow(_quick(slow)(given(**strategies)(prop)))
    return fast_test, slow_test


# --------------------------------------------------------------------------- deterministic outputs


@_quick(50)
@given(ikm=ikms, key_info=st.binary(max_size=16))
def test_keygen_matches_py_ecc(ikm: bytes, key_info: bytes) -> None:
    sk = bls.keygen(ikm, key_info)
    assert sk == G2ProofOfPossession.KeyGen(ikm, key_info)
    assert sk == bls_reference.keygen(ikm, key_info)
    assert 0 < sk < bls.CURVE_ORDER


def _sk_to_pk_identical(sk: int) -> None:
    assert bls.sk_to_pk(sk) == bls_reference.sk_to_pk(sk)


test_sk_to_pk_identical, test_sk_to_pk_identical_many = _pair(
    _sk_to_pk_identical, 20, 300, sk=secret_keys
)


def _sign_identical(sk: int, message: bytes) -> None:
    fast = bls.sign(sk, message)
    assert fast == bls_reference.sign(sk, message)
    assert bls.verify(bls.sk_to_pk(sk), message, fast)


test_sign_identical, test_sign_identical_many = _pair(
    _sign_identical, 10, 100, sk=secret_keys, message=messages
)


def _pop_identical(sk: int) -> None:
    proof = bls.pop_prove(sk)
    assert proof == bls_reference.pop_prove(sk)
    pk = bls.sk_to_pk(sk)
    assert bls.pop_verify(pk, proof)
    # A proof of possession is not a signature of the key under the message DST.
    assert not bls.verify(pk, pk, proof)


test_pop_identical, test_pop_identical_many = _pair(_pop_identical, 8, 100, sk=secret_keys)


def _aggregate_identical(keys: list[int], message: bytes) -> None:
    shares = [bls.sign(sk, message) for sk in keys]
    assert bls.aggregate(shares) == bls_reference.aggregate(shares)


test_aggregate_identical, test_aggregate_identical_many = _pair(
    _aggregate_identical,
    10,
    100,
    keys=st.lists(secret_keys, min_size=1, max_size=5),
    message=messages,
)


# --------------------------------------------------------------------------- verdicts

# How a signature is tampered with before verification.
TAMPERINGS = ("none", "flip_bit", "other_message", "other_key", "random_bytes", "negate")


def _tamper(kind: str, data: st.DataObject, sk: int, message: bytes, sig: bytes) -> bytes:
    if kind == "none":
        return sig
    if kind == "flip_bit":
        position = data.draw(st.integers(0, 8 * len(sig) - 1), label="bit")
        out = bytearray(sig)
        out[position // 8] ^= 1 << (position % 8)
        return bytes(out)
    if kind == "other_message":
        return bls.sign(sk, message + b"\x00")
    if kind == "other_key":
        return bls.sign(sk % (bls.CURVE_ORDER - 1) + 1, message)  # a different key
    if kind == "random_bytes":
        return data.draw(st.binary(min_size=96, max_size=96), label="random signature")
    # negate: the same point with the sign flag flipped (valid point, wrong signature)
    out = bytearray(sig)
    out[0] ^= 0x20
    return bytes(out)


def _verify_verdicts_agree(sk: int, message: bytes, kind: str, data: st.DataObject) -> None:
    pk = bls.sk_to_pk(sk)
    sig = _tamper(kind, data, sk, message, bls.sign(sk, message))
    fast = bls.verify(pk, message, sig)
    assert fast == bls_reference.verify(pk, message, sig)
    assert fast == (kind == "none")


test_verify_verdicts_agree, test_verify_verdicts_agree_many = _pair(
    _verify_verdicts_agree,
    12,
    100,
    sk=secret_keys,
    message=messages,
    kind=st.sampled_from(TAMPERINGS),
    data=st.data(),
)


def _fast_aggregate_verdicts_agree(
    keys: list[int], message: bytes, drop_one: bool, kind: str, data: st.DataObject
) -> None:
    pks = [bls.sk_to_pk(sk) for sk in keys]
    aggregate = bls.aggregate([bls.sign(sk, message) for sk in keys])
    aggregate = _tamper(kind, data, keys[0], message, aggregate)
    # Claiming fewer signers than actually signed must fail too.
    claimed = pks[1:] if drop_one and len(pks) > 1 else pks
    fast = bls.fast_aggregate_verify(claimed, message, aggregate)
    assert fast == bls_reference.fast_aggregate_verify(claimed, message, aggregate)
    assert fast == (kind == "none" and claimed == pks)


test_fast_aggregate_verdicts_agree, test_fast_aggregate_verdicts_agree_many = _pair(
    _fast_aggregate_verdicts_agree,
    8,
    100,
    keys=st.lists(secret_keys, min_size=1, max_size=4, unique=True),
    message=messages,
    drop_one=st.booleans(),
    kind=st.sampled_from(("none", "flip_bit", "other_message")),
    data=st.data(),
)


def _malformed_never_raise(pk: bytes, sig: bytes, message: bytes) -> None:
    """Arbitrary bytes: both backends answer (never raise) and agree."""
    assert bls.key_validate(pk) == bls_reference.key_validate(pk)
    assert bls.signature_validate(sig) == bls_reference.signature_validate(sig)
    assert bls.verify(pk, message, sig) is False
    assert bls.fast_aggregate_verify([pk], message, sig) is False
    assert bls.pop_verify(pk, sig) is False


test_malformed_never_raise, test_malformed_never_raise_many = _pair(
    _malformed_never_raise,
    40,
    500,
    pk=st.binary(max_size=50),
    sig=st.binary(max_size=100),
    message=messages,
)


@_quick(30)
@given(
    flags=st.sampled_from((0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0, 0xE0)),
    top=st.integers(0, 0x1F),
    rest=st.binary(min_size=47, max_size=47),
)
def test_random_g1_bytes_agree_with_reference(flags: int, top: int, rest: bytes) -> None:
    """Random x under every flag combination: blst and py_ecc accept the same keys."""
    pk = bytes([flags | top]) + rest
    assert bls.key_validate(pk) == bls_reference.key_validate(pk)


@_quick(5)
@given(sk=secret_keys)
def test_flag_variants_of_valid_points_agree(sk: int) -> None:
    """Every flag combination on a valid key and signature: same verdicts, and only the
    original encoding and its sign-flipped twin (the negated point) are accepted."""
    pk = bls.sk_to_pk(sk)
    sig = bls.sign(sk, b"flags")
    for flags in range(8):
        variant_pk = bytes([(pk[0] & 0x1F) | flags << 5]) + pk[1:]
        variant_sig = bytes([(sig[0] & 0x1F) | flags << 5]) + sig[1:]
        accepted = variant_pk[0] & 0xC0 == 0x80
        assert bls.key_validate(variant_pk) == bls_reference.key_validate(variant_pk) == accepted
        assert (
            bls.signature_validate(variant_sig)
            == bls_reference.signature_validate(variant_sig)
            == accepted
        )
