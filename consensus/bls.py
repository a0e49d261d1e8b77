"""BLS signatures for dvpsim's committee certificates (fast backend, blst via pyblst).

Ciphersuite ``BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_`` of the IETF BLS signature
draft (draft-irtf-cfrg-bls-signature-05): public keys are compressed G1 points (48 B),
signatures compressed G2 points (96 B), messages hashed to G2 with RFC 9380's
``BLS12381G2_XMD:SHA-256_SSWU_RO_``. Rogue-key attacks on ``fast_aggregate_verify`` are
prevented by proofs of possession, checked (``pop_verify``) when a key joins a committee.

``consensus/bls_reference.py`` exposes the same functions on py_ecc; the tests hold the two
to byte-identical outputs and identical verdicts, so this module may be optimised freely
as long as that agreement holds.

Decoded public keys are kept in an LRU cache keyed by their 48 compressed bytes, because a
committee verifies many certificates over the same few keys and G1 decompression with the
subgroup check costs more than the key aggregation itself.

Messages hashed to G2 are remembered in a ``BlsCache``: a member hashes each report once
to sign its share and reuses the point to check the certificate. The functions take the
cache of the party calling them; without one they use ``PROCESS_CACHE``, one per process,
which is what a real node (one member per process) needs. Where one process plays many
members and must charge each its own work (``dvpsim bench consensus``), each member's
suite holds its own ``BlsCache``, so a hash one member computed is not free for another.

This module must never: accept a point that is off the curve, outside the prime-order
subgroup or the point at infinity as a public key or signature; raise from ``verify``,
``fast_aggregate_verify`` or ``pop_verify`` (a peer's bad bytes are an answer, not a crash);
read the clock, the disk or a global random generator (key material comes from the caller).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Final

from pyblst import BlstP1Element, BlstP2Element, final_verify, miller_loop

__all__ = [
    "CURVE_ORDER",
    "DST_POP",
    "DST_SIG",
    "PUBLIC_KEY_LENGTH",
    "SIGNATURE_LENGTH",
    "PROCESS_CACHE",
    "BlsCache",
    "BlsError",
    "aggregate",
    "aggregate_public_keys",
    "decode_public_key_cache_info",
    "fast_aggregate_verify",
    "hash_to_g2",
    "key_validate",
    "keygen",
    "pop_prove",
    "pop_verify",
    "sign",
    "signature_validate",
    "sk_to_pk",
    "verify",
]

DST_SIG: Final = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_"
DST_POP: Final = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_"

PUBLIC_KEY_LENGTH: Final = 48
SIGNATURE_LENGTH: Final = 96

#: r, the order of the BLS12-381 prime-order subgroups; secret keys live in [1, r).
CURVE_ORDER: Final = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001

_KEYGEN_SALT: Final = b"BLS-SIG-KEYGEN-SALT-"
# L = ceil((3 * ceil(log2(r))) / 16) = 48 bytes: enough output that OKM mod r is unbiased.
_KEYGEN_L: Final = 48

_G1_GENERATOR_COMPRESSED: Final = bytes.fromhex(
    "97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb"
)
_G1_GENERATOR: Final = BlstP1Element.uncompress(_G1_GENERATOR_COMPRESSED)
_G1_INFINITY: Final = BlstP1Element()
_G2_INFINITY: Final = BlstP2Element()

# Enough for several committees and their history; a decoded key is a few hundred bytes.
_PUBLIC_KEY_CACHE_SIZE: Final = 4096
# Report hashes of the last rounds of every target (a point is a few hundred bytes).
_HASH_CACHE_SIZE: Final = 1024


class BlsError(ValueError):
    """Malformed BLS input: wrong length, not on the curve, outside the subgroup, infinity,
    or a secret key outside [1, r)."""


# --------------------------------------------------------------------------- key generation


def keygen(ikm: bytes, key_info: bytes = b"") -> int:
    """IETF KeyGen (draft-irtf-cfrg-bls-signature-05, section 2.3) with HKDF-SHA256.

    ``ikm`` is secret input keying material of at least 32 bytes, drawn by the caller from a
    cryptographically secure source; ``key_info`` optionally separates keys derived from one
    ikm.
    """
    if not isinstance(ikm, bytes) or len(ikm) < 32:
        raise BlsError("BLS keygen needs at least 32 bytes of input keying material")
    salt = _KEYGEN_SALT
    sk = 0
    while sk == 0:
        salt = hashlib.sha256(salt).digest()
        prk = hmac.new(salt, ikm + b"\x00", hashlib.sha256).digest()
        okm = _hkdf_expand(prk, key_info + _KEYGEN_L.to_bytes(2, "big"), _KEYGEN_L)
        sk = int.from_bytes(okm, "big") % CURVE_ORDER
    return sk


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869) with SHA-256."""
    okm = b""
    block = b""
    counter = 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def _check_secret_key(sk: int) -> None:
    if not isinstance(sk, int) or isinstance(sk, bool) or not 0 < sk < CURVE_ORDER:
        raise BlsError("BLS secret key must be an integer in [1, r)")


def sk_to_pk(sk: int) -> bytes:
    """The 48-byte compressed G1 public key of secret key ``sk``."""
    _check_secret_key(sk)
    point: BlstP1Element = _G1_GENERATOR.scalar_mul(sk)
    return bytes(point.compress())


# --------------------------------------------------------------------------- point decoding


@lru_cache(maxsize=_PUBLIC_KEY_CACHE_SIZE)
def _decode_public_key(pk: bytes) -> BlstP1Element | None:
    """The G1 point of a valid public key, or None. Cached: the answer for given bytes never
    changes, and committees reuse the same keys for every certificate."""
    if len(pk) != PUBLIC_KEY_LENGTH:
        return None
    try:
        # blst rejects non-canonical encodings, points off the curve and outside the subgroup.
        point: BlstP1Element = BlstP1Element.uncompress(pk)
    except ValueError:
        return None
    if point == _G1_INFINITY:
        return None
    return point


def decode_public_key_cache_info() -> str:
    """Hit/miss counters of the decoded public key cache (for benchmarks and diagnostics)."""
    return str(_decode_public_key.cache_info())


def _decode_signature(sig: bytes) -> BlstP2Element | None:
    """The G2 point of a valid signature, or None (not cached: signatures rarely repeat)."""
    if not isinstance(sig, bytes) or len(sig) != SIGNATURE_LENGTH:
        return None
    try:
        point: BlstP2Element = BlstP2Element.uncompress(sig)
    except ValueError:
        return None
    if point == _G2_INFINITY:
        return None
    return point


def key_validate(pk: bytes) -> bool:
    """KeyValidate: 48 bytes, canonical, on the curve, in the subgroup, not infinity."""
    return isinstance(pk, bytes) and _decode_public_key(pk) is not None


def signature_validate(sig: bytes) -> bool:
    """96 bytes, canonical, on the curve, in the subgroup, not infinity."""
    return _decode_signature(sig) is not None


# --------------------------------------------------------------------------- sign and verify


def hash_to_g2(message: bytes, dst: bytes) -> BlstP2Element:
    """RFC 9380 hash of ``message`` to G2 under ``dst`` (uncached; see ``BlsCache``)."""
    point: BlstP2Element = BlstP2Element.hash_to_group(message, dst)
    return point


class BlsCache:
    """What one party remembers between BLS calls: the points of the messages it hashed
    to G2 lately (the report hashes of the last rounds of every target; hashing to the
    curve costs as much as a signature). A pure function of its inputs, so remembering
    changes no answer; blst points are never changed in place. ``hasher`` is the hash
    used on a miss (``hash_to_g2``; a benchmark may pass a timed one); ``hashes`` counts
    the misses, the points this party actually computed."""

    def __init__(
        self,
        capacity: int = _HASH_CACHE_SIZE,
        hasher: Callable[[bytes, bytes], BlstP2Element] = hash_to_g2,
    ) -> None:
        self._points = lru_cache(maxsize=capacity)(hasher)

    def point(self, message: bytes, dst: bytes) -> BlstP2Element:
        """The hash of ``message`` to G2 under ``dst``, computed once while it is recent."""
        point: BlstP2Element = self._points(message, dst)
        return point

    @property
    def hashes(self) -> int:
        """Messages hashed to G2 so far (the cache's misses)."""
        return self._points.cache_info().misses


#: The cache of a process that is one party (a real node, a tool); the default of every
#: function below.
PROCESS_CACHE: Final = BlsCache()


def _core_sign(sk: int, message: bytes, dst: bytes, cache: BlsCache) -> bytes:
    _check_secret_key(sk)
    if not isinstance(message, bytes):
        raise BlsError("BLS message must be bytes")
    hashed = cache.point(message, dst)
    point: BlstP2Element = hashed.scalar_mul(sk)
    return bytes(point.compress())


def _core_verify(
    pk_point: BlstP1Element, message: bytes, signature: bytes, dst: bytes, cache: BlsCache
) -> bool:
    sig_point = _decode_signature(signature)
    if sig_point is None or not isinstance(message, bytes):
        return False
    hashed = cache.point(message, dst)
    # e(pk, H(m)) == e(g1, sig), compared after one shared final exponentiation each.
    return bool(final_verify(miller_loop(pk_point, hashed), miller_loop(_G1_GENERATOR, sig_point)))


def sign(sk: int, message: bytes, cache: BlsCache = PROCESS_CACHE) -> bytes:
    """Sign ``message`` (for committee certificates: a 32-byte report hash); 96 bytes."""
    return _core_sign(sk, message, DST_SIG, cache)


def verify(pk: bytes, message: bytes, signature: bytes, cache: BlsCache = PROCESS_CACHE) -> bool:
    """True iff ``signature`` is a valid signature of ``message`` under ``pk``.
    Malformed keys or signatures give False."""
    if not isinstance(pk, bytes):
        return False
    pk_point = _decode_public_key(pk)
    if pk_point is None:
        return False
    return _core_verify(pk_point, message, signature, DST_SIG, cache)


def aggregate(signatures: Sequence[bytes]) -> bytes:
    """Sum of the given signatures (96 bytes). Raises BlsError on an empty list or on any
    signature that fails ``signature_validate``, naming its position."""
    if len(signatures) == 0:
        raise BlsError("cannot aggregate an empty list of BLS signatures")
    total = _G2_INFINITY
    for index, sig in enumerate(signatures):
        point = _decode_signature(sig)
        if point is None:
            raise BlsError(f"BLS signature at position {index} is malformed")
        total = total + point
    return bytes(total.compress())


def aggregate_public_keys(pks: Sequence[bytes]) -> bytes:
    """Sum of the given public keys (48 bytes); BlsError on an empty list or an invalid key.
    Only safe for keys whose proofs of possession were checked."""
    if len(pks) == 0:
        raise BlsError("cannot aggregate an empty list of BLS public keys")
    total = _G1_INFINITY
    for index, pk in enumerate(pks):
        point = _decode_public_key(pk) if isinstance(pk, bytes) else None
        if point is None:
            raise BlsError(f"BLS public key at position {index} is malformed")
        total = total + point
    return bytes(total.compress())


def fast_aggregate_verify(
    pks: Sequence[bytes], message: bytes, signature: bytes, cache: BlsCache = PROCESS_CACHE
) -> bool:
    """True iff ``signature`` is an aggregate signature of ``message`` by all of ``pks``.

    Every key must have passed ``pop_verify`` before (the committee config checks this);
    without proofs of possession a rogue key could forge this check. An empty key list, a
    malformed key, or keys summing to infinity give False.
    """
    if len(pks) == 0:
        return False
    total = _G1_INFINITY
    for pk in pks:
        point = _decode_public_key(pk) if isinstance(pk, bytes) else None
        if point is None:
            return False
        total = total + point
    if total == _G1_INFINITY:
        return False
    return _core_verify(total, message, signature, DST_SIG, cache)


# --------------------------------------------------------------------------- possession


def pop_prove(sk: int) -> bytes:
    """Proof of possession of ``sk``: a signature of its public key under DST_POP."""
    return _core_sign(sk, sk_to_pk(sk), DST_POP, PROCESS_CACHE)


def pop_verify(pk: bytes, proof: bytes) -> bool:
    """True iff ``proof`` proves possession of the secret key of ``pk``."""
    if not isinstance(pk, bytes):
        return False
    pk_point = _decode_public_key(pk)
    if pk_point is None:
        return False
    return _core_verify(pk_point, pk, proof, DST_POP, PROCESS_CACHE)
