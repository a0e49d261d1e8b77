"""EIP-2537 encodings: known generator encodings, infinity, field element bounds, and the
fast decompression checked against py_ecc on random points."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from py_ecc.bls.g2_primitives import G1_to_pubkey, G2_to_signature, pubkey_to_G1, signature_to_G2
from py_ecc.optimized_bls12_381.optimized_curve import G1, G2, neg, normalize

from consensus import bls, eip2537
from consensus.bls import BlsError

P = eip2537.FIELD_MODULUS

# Generators as published in EIP-2537 ("Curve parameters"), big-endian hex.
G1_X = 0x17F1D3A73197D7942695638C4FA9AC0FC3688C4F9774B905A14E3A3F171BAC586C55E83FF97A1AEFFB3AF00ADB22C6BB
G1_Y = 0x08B3F481E3AAA0F1A09E30ED741D8AE4FCF5E095D5D00AF600DB18CB2C04B3EDD03CC744A2888AE40CAA232946C5E7E1
G2_X0 = 0x024AA2B2F08F0A91260805272DC51051C6E47AD4FA403B02B4510B647AE3D1770BAC0326A805BBEFD48056C8C121BDB8
G2_X1 = 0x13E02B6052719F607DACD3A088274F65596BD0D09920B61AB5DA61BBDC7F5049334CF11213945D57E5AC7D055D042B7E
G2_Y0 = 0x0CE5D527727D6E118CC9CDC6DA2E351AADFD9BAA8CBDD3A76D429A695160D12C923AC9CC3BACA289E193548608B82801
G2_Y1 = 0x0606C4A02EA734CC32ACD2B02BC28B99CB3E287E85A763AF267492AB572E99AB3F370D275CEC1DA1AAA9075FF05F79BE

G1_COMPRESSED = bytes(G1_to_pubkey(G1))
G2_COMPRESSED = bytes(G2_to_signature(G2))


def _fp(value: int) -> bytes:
    return bytes(16) + value.to_bytes(48, "big")


def test_generator_constants_match_py_ecc() -> None:
    x, y = normalize(G1)
    assert (int(x), int(y)) == (G1_X, G1_Y)
    gx, gy = normalize(G2)
    assert [int(c) for c in gx.coeffs + gy.coeffs] == [G2_X0, G2_X1, G2_Y0, G2_Y1]


def test_g1_generator_encoding() -> None:
    encoded = eip2537.encode_g1(G1_COMPRESSED)
    assert len(encoded) == 128
    assert encoded == _fp(G1_X) + _fp(G1_Y)
    assert encoded.hex().startswith("0" * 32 + "17f1d3a73197d794")


def test_g2_generator_encoding_is_real_part_first() -> None:
    encoded = eip2537.encode_g2(G2_COMPRESSED)
    assert len(encoded) == 256
    assert encoded == _fp(G2_X0) + _fp(G2_X1) + _fp(G2_Y0) + _fp(G2_Y1)
    # The compressed form puts the imaginary part first; EIP-2537 the real part.
    assert G2_COMPRESSED[1:48] == G2_X1.to_bytes(48, "big")[1:]


def test_infinity_encodes_as_zeros() -> None:
    assert eip2537.encode_g1(bytes([0xC0]) + bytes(47)) == bytes(128)
    assert eip2537.encode_g2(bytes([0xC0]) + bytes(95)) == bytes(256)
    assert eip2537.encode_g1_affine(None) == bytes(128)
    assert eip2537.encode_g2_affine(None) == bytes(256)


@pytest.mark.parametrize("value", [0, 1, P - 1])
def test_fp_round_trip(value: int) -> None:
    encoded = eip2537.encode_fp(value)
    assert len(encoded) == 64 and encoded[:16] == bytes(16)
    assert eip2537.decode_fp(encoded) == value


@pytest.mark.parametrize("value", [-1, P, P + 1, 2**384])
def test_fp_rejects_unreduced(value: int) -> None:
    with pytest.raises(BlsError):
        eip2537.encode_fp(value)


def test_decode_fp_rejects_bad_bytes() -> None:
    with pytest.raises(BlsError):
        eip2537.decode_fp(b"\x01" + bytes(63))  # non-zero top 16 bytes
    with pytest.raises(BlsError):
        eip2537.decode_fp(bytes(16) + P.to_bytes(48, "big"))  # not reduced
    with pytest.raises(BlsError):
        eip2537.decode_fp(bytes(63))


@pytest.mark.parametrize(
    "data",
    [
        bytes(48),  # compression flag missing
        bytes([0x80]) + bytes(47),  # x = 0 is not on the curve
        b"\xff" * 48,
        G1_COMPRESSED[:47],
    ],
)
def test_encode_g1_rejects_invalid_points(data: bytes) -> None:
    with pytest.raises(BlsError):
        eip2537.encode_g1(data)


def test_encode_g2_rejects_invalid_points() -> None:
    with pytest.raises(BlsError):
        eip2537.encode_g2(bytes(96))
    with pytest.raises(BlsError):
        eip2537.encode_g2(G2_COMPRESSED[:95])
    with pytest.raises(BlsError):
        eip2537.encode_g2(b"\xff" * 96)


secret_keys = st.integers(min_value=1, max_value=bls.CURVE_ORDER - 1)


@settings(max_examples=25, deadline=None)
@given(sk=secret_keys, message=st.binary(max_size=32), negate=st.booleans())
def test_decompression_matches_py_ecc(sk: int, message: bytes, negate: bool) -> None:
    """Random keys and signatures (and their negations, the other y): the fast Fp / Fp2
    square roots and sign selection give py_ecc's affine coordinates."""
    pk = bls.sk_to_pk(sk)
    sig = bls.sign(sk, message)
    pk_point, sig_point = pubkey_to_G1(pk), signature_to_G2(sig)
    if negate:
        pk_point, sig_point = neg(pk_point), neg(sig_point)
        pk, sig = bytes(G1_to_pubkey(pk_point)), bytes(G2_to_signature(sig_point))
    x, y = normalize(pk_point)
    assert eip2537.g1_affine(pk) == (int(x), int(y))
    assert eip2537.encode_g1(pk) == _fp(int(x)) + _fp(int(y))
    sx, sy = normalize(sig_point)
    expected = ((int(sx.coeffs[0]), int(sx.coeffs[1])), (int(sy.coeffs[0]), int(sy.coeffs[1])))
    assert eip2537.g2_affine(sig) == expected
    assert eip2537.encode_g2(sig) == b"".join(_fp(v) for pair in expected for v in pair)
