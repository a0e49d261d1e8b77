"""Encodings of BLS12-381 points for the EIP-2537 precompiles (Prague).

The on-chain verifier receives public keys and signatures in the uncompressed layout the
precompiles (G1ADD, G2ADD, MAP_FP2_TO_G2, PAIRING_CHECK, ...) expect:

- a base-field element is 64 bytes: 16 zero bytes, then the 48-byte big-endian value;
- a G1 point is x || y (128 bytes);
- a G2 point is x.c0 || x.c1 || y.c0 || y.c1 (256 bytes), c0 the real part;
- the point at infinity is all zero bytes.

The committee holds keys and signatures compressed (48 and 96 bytes, ZCash format), so this
module decompresses them. blst (via pyblst) validates the point (canonical, on the curve,
in the subgroup); the y coordinate is then recovered here with integer arithmetic, which is
much faster than py_ecc's decompression and is checked against it in the tests.

This module must never encode a point it has not validated, nor accept a coordinate that
is not reduced modulo p; it does no I/O.
"""

from __future__ import annotations

from hashlib import sha256
from typing import Any, Final, cast

from py_ecc.bls.hash_to_curve import hash_to_G2
from py_ecc.optimized_bls12_381.optimized_curve import normalize
from pyblst import BlstP1Element, BlstP2Element

from consensus.bls import PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH, BlsError

__all__ = [
    "FIELD_MODULUS",
    "FP_LENGTH",
    "G1_LENGTH",
    "G2_LENGTH",
    "G1Affine",
    "G2Affine",
    "decode_fp",
    "encode_fp",
    "encode_g1",
    "encode_g1_affine",
    "encode_g2",
    "encode_g2_affine",
    "g1_affine",
    "g2_affine",
    "hash_to_g2_affine",
]

#: p, the BLS12-381 base field modulus.
FIELD_MODULUS: Final = int(
    "1a0111ea397fe69a4b1ba7b6434bacd764774b84f38512bf6730d2a0f6b0f6241eabfffeb153ffffb9feffffffffaaab",
    16,
)
FP_LENGTH: Final = 64
G1_LENGTH: Final = 2 * FP_LENGTH
G2_LENGTH: Final = 4 * FP_LENGTH

_P: Final = FIELD_MODULUS
_HALF_P: Final = (_P - 1) // 2
# p = 3 (mod 4), so a square root in Fp is a^((p+1)/4).
_SQRT_EXPONENT: Final = (_P + 1) // 4
_INVERSE_OF_TWO: Final = pow(2, -1, _P)

# Flag bits of the first byte of a compressed point (ZCash serialization).
_FLAG_COMPRESSED: Final = 0x80
_FLAG_INFINITY: Final = 0x40
_FLAG_SIGN: Final = 0x20

#: Affine G1 point (x, y), or None for infinity.
G1Affine = tuple[int, int] | None
#: Affine G2 point ((x.c0, x.c1), (y.c0, y.c1)), or None for infinity.
G2Affine = tuple[tuple[int, int], tuple[int, int]] | None


# --------------------------------------------------------------------------- field elements


def encode_fp(value: int) -> bytes:
    """64-byte EIP-2537 encoding of a base-field element (16 zero bytes + 48 B big-endian)."""
    if not isinstance(value, int) or not 0 <= value < _P:
        raise BlsError("EIP-2537 field element must be an integer in [0, p)")
    return value.to_bytes(FP_LENGTH, "big")


def decode_fp(data: bytes) -> int:
    """Inverse of ``encode_fp``; rejects a non-zero top 16 bytes or a value >= p."""
    if len(data) != FP_LENGTH or any(data[:16]):
        raise BlsError("EIP-2537 field element must be 64 bytes with 16 leading zero bytes")
    value = int.from_bytes(data, "big")
    if value >= _P:
        raise BlsError("EIP-2537 field element is not reduced modulo p")
    return value


def encode_g1_affine(point: G1Affine) -> bytes:
    """128-byte encoding of an affine G1 point (zeros for infinity). Does not check the curve."""
    if point is None:
        return bytes(G1_LENGTH)
    return encode_fp(point[0]) + encode_fp(point[1])


def encode_g2_affine(point: G2Affine) -> bytes:
    """256-byte encoding of an affine G2 point (zeros for infinity). Does not check the curve."""
    if point is None:
        return bytes(G2_LENGTH)
    (x0, x1), (y0, y1) = point
    return encode_fp(x0) + encode_fp(x1) + encode_fp(y0) + encode_fp(y1)


# --------------------------------------------------------------------------- decompression


def _fp_sqrt(value: int) -> int | None:
    root = pow(value, _SQRT_EXPONENT, _P)
    return root if root * root % _P == value % _P else None


def _fp2_mul(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    # (a0 + a1 i)(b0 + b1 i) with i^2 = -1
    return ((a[0] * b[0] - a[1] * b[1]) % _P, (a[0] * b[1] + a[1] * b[0]) % _P)


def _fp2_sqrt(value: tuple[int, int]) -> tuple[int, int] | None:
    """A square root in Fp2 = Fp[i]/(i^2+1) via the norm (three Fp square roots), or None."""
    a0, a1 = value
    if a1 == 0:
        root = _fp_sqrt(a0)
        if root is not None:
            return (root, 0)
        root = _fp_sqrt(-a0 % _P)
        return None if root is None else (0, root)
    norm_root = _fp_sqrt((a0 * a0 + a1 * a1) % _P)
    if norm_root is None:
        return None
    delta = (a0 + norm_root) * _INVERSE_OF_TWO % _P
    x0 = _fp_sqrt(delta)
    if x0 is None:
        delta = (a0 - norm_root) * _INVERSE_OF_TWO % _P
        x0 = _fp_sqrt(delta)
        if x0 is None:
            return None
    x1 = a1 * pow(2 * x0, -1, _P) % _P
    candidate = (x0, x1)
    return candidate if _fp2_mul(candidate, candidate) == (a0 % _P, a1 % _P) else None


def g1_affine(pk: bytes) -> G1Affine:
    """Affine coordinates of a compressed G1 point (48 B); None for the point at infinity.

    Raises BlsError unless the encoding is canonical and the point is on the curve and in the
    prime-order subgroup.
    """
    if not isinstance(pk, bytes) or len(pk) != PUBLIC_KEY_LENGTH:
        raise BlsError(f"compressed G1 point must be {PUBLIC_KEY_LENGTH} bytes")
    try:
        point: BlstP1Element = BlstP1Element.uncompress(pk)
    except ValueError as exc:
        raise BlsError(f"invalid compressed G1 point: {exc}") from None
    if point == BlstP1Element():
        return None
    x = int.from_bytes(pk, "big") & ((1 << 381) - 1)
    y = _fp_sqrt((x * x * x + 4) % _P)
    if y is None:  # unreachable after blst accepted the point; kept as a guard
        raise BlsError("invalid compressed G1 point: x is not on the curve")
    if bool(pk[0] & _FLAG_SIGN) != (y > _HALF_P):
        y = _P - y
    return (x, y)


def g2_affine(sig: bytes) -> G2Affine:
    """Affine coordinates of a compressed G2 point (96 B); None for the point at infinity.

    The compressed form is x.c1 || x.c0 (imaginary part first); the sign flag is the
    lexicographic sign of y (imaginary part, or real part when that is zero).
    """
    if not isinstance(sig, bytes) or len(sig) != SIGNATURE_LENGTH:
        raise BlsError(f"compressed G2 point must be {SIGNATURE_LENGTH} bytes")
    try:
        point: BlstP2Element = BlstP2Element.uncompress(sig)
    except ValueError as exc:
        raise BlsError(f"invalid compressed G2 point: {exc}") from None
    if point == BlstP2Element():
        return None
    x1 = int.from_bytes(sig[:48], "big") & ((1 << 381) - 1)
    x0 = int.from_bytes(sig[48:], "big")
    x = (x0, x1)
    # y^2 = x^3 + 4(1 + i) on the twist
    x_cubed = _fp2_mul(_fp2_mul(x, x), x)
    y = _fp2_sqrt(((x_cubed[0] + 4) % _P, (x_cubed[1] + 4) % _P))
    if y is None:  # unreachable after blst accepted the point; kept as a guard
        raise BlsError("invalid compressed G2 point: x is not on the curve")
    y0, y1 = y
    y_is_large = y1 > _HALF_P if y1 != 0 else y0 > _HALF_P
    if bool(sig[0] & _FLAG_SIGN) != y_is_large:
        y = (-y0 % _P, -y1 % _P)
    return (x, y)


def encode_g1(pk: bytes) -> bytes:
    """EIP-2537 encoding (128 B) of a compressed G1 point such as a public key."""
    return encode_g1_affine(g1_affine(pk))


def encode_g2(sig: bytes) -> bytes:
    """EIP-2537 encoding (256 B) of a compressed G2 point such as a signature."""
    return encode_g2_affine(g2_affine(sig))


def hash_to_g2_affine(message: bytes, dst: bytes) -> bytes:
    """EIP-2537 encoding (256 B) of H(m), RFC 9380 hash_to_curve with suite
    BLS12381G2_XMD:SHA-256_SSWU_RO_, computed by py_ecc (slow; for tests and vectors)."""
    # py_ecc annotates the hash argument as a hash object but calls it as a constructor.
    x, y = normalize(hash_to_G2(message, dst, cast(Any, sha256)))
    x0, x1 = (int(c) for c in x.coeffs)
    y0, y1 = (int(c) for c in y.coeffs)
    return encode_g2_affine(((x0, x1), (y0, y1)))
