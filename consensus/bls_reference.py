"""Readable reference for ``consensus.bls``: the same BLS API on py_ecc (pure Python).

Ciphersuite ``BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_`` as implemented by py_ecc's
``G2ProofOfPossession``. Tests hold ``consensus.bls`` (blst) to byte-identical outputs and
identical verdicts against this module on random keys, messages and tampered signatures.

Where py_ecc's own behaviour is looser than dvpsim's rules, this module adds the check
explicitly so both backends answer the same:
- ``aggregate`` rejects signatures outside the G2 subgroup or at infinity (py_ecc only
  checks that they are on the curve);
- ``signature_validate`` and ``verify`` reject the point at infinity as a signature.

It is slow (a signature ~0.1 s, a verification ~0.3 s) and is meant for tests and for
reading; this module must never be used on a node's hot path, and like ``consensus.bls``
it must never raise from the verification functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from eth_typing import BLSPubkey, BLSSignature
from py_ecc.bls.ciphersuites import G2ProofOfPossession
from py_ecc.bls.g2_primitives import G2_to_signature, signature_to_G2, subgroup_check
from py_ecc.optimized_bls12_381.optimized_curve import Z2, add, is_inf

from consensus.bls import (
    CURVE_ORDER,
    DST_POP,
    DST_SIG,
    PUBLIC_KEY_LENGTH,
    SIGNATURE_LENGTH,
    BlsError,
)

__all__ = [
    "CURVE_ORDER",
    "DST_POP",
    "DST_SIG",
    "BlsError",
    "aggregate",
    "fast_aggregate_verify",
    "key_validate",
    "keygen",
    "pop_prove",
    "pop_verify",
    "sign",
    "signature_validate",
    "sk_to_pk",
    "verify",
]

_SCHEME: Final = G2ProofOfPossession
# py_ecc signals bad input with these; none of them may escape a verification function.
_DECODE_ERRORS: Final = (ValueError, AssertionError, TypeError)


def _check_secret_key(sk: int) -> None:
    if not isinstance(sk, int) or isinstance(sk, bool) or not 0 < sk < CURVE_ORDER:
        raise BlsError("BLS secret key must be an integer in [1, r)")


def keygen(ikm: bytes, key_info: bytes = b"") -> int:
    """IETF KeyGen (draft-irtf-cfrg-bls-signature-05, section 2.3), py_ecc's implementation."""
    if not isinstance(ikm, bytes) or len(ikm) < 32:
        raise BlsError("BLS keygen needs at least 32 bytes of input keying material")
    return int(_SCHEME.KeyGen(ikm, key_info))


def sk_to_pk(sk: int) -> bytes:
    """The 48-byte compressed G1 public key of ``sk``."""
    _check_secret_key(sk)
    return bytes(_SCHEME.SkToPk(sk))


def sign(sk: int, message: bytes) -> bytes:
    """Signature of ``message`` under ``sk`` with DST_SIG (96 bytes)."""
    _check_secret_key(sk)
    return bytes(_SCHEME.Sign(sk, message))


def key_validate(pk: bytes) -> bool:
    """48 bytes, canonical, on the curve, in the subgroup, not infinity."""
    if not isinstance(pk, bytes) or len(pk) != PUBLIC_KEY_LENGTH:
        return False
    return bool(_SCHEME.KeyValidate(BLSPubkey(pk)))


def signature_validate(sig: bytes) -> bool:
    """96 bytes, canonical, on the curve, in the subgroup, not infinity."""
    if not isinstance(sig, bytes) or len(sig) != SIGNATURE_LENGTH:
        return False
    try:
        point = signature_to_G2(BLSSignature(sig))
    except _DECODE_ERRORS:
        return False
    return not is_inf(point) and bool(subgroup_check(point))


def verify(pk: bytes, message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` signs ``message`` under ``pk``; False on malformed input."""
    if not key_validate(pk) or not signature_validate(signature):
        return False
    return bool(_SCHEME.Verify(BLSPubkey(pk), message, BLSSignature(signature)))


def aggregate(signatures: Sequence[bytes]) -> bytes:
    """Sum of the signatures; BlsError on an empty list or a signature that fails
    ``signature_validate``."""
    if len(signatures) == 0:
        raise BlsError("cannot aggregate an empty list of BLS signatures")
    total = Z2
    for index, sig in enumerate(signatures):
        if not signature_validate(sig):
            raise BlsError(f"BLS signature at position {index} is malformed")
        total = add(total, signature_to_G2(BLSSignature(sig)))
    return bytes(G2_to_signature(total))


def fast_aggregate_verify(pks: Sequence[bytes], message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is the aggregate signature of ``message`` by all ``pks``."""
    if len(pks) == 0 or not signature_validate(signature):
        return False
    if not all(isinstance(pk, bytes) for pk in pks):
        return False
    try:
        return bool(
            _SCHEME.FastAggregateVerify(
                [BLSPubkey(pk) for pk in pks], message, BLSSignature(signature)
            )
        )
    except _DECODE_ERRORS:
        return False


def pop_prove(sk: int) -> bytes:
    """Proof of possession: signature of the public key under DST_POP."""
    _check_secret_key(sk)
    return bytes(_SCHEME.PopProve(sk))


def pop_verify(pk: bytes, proof: bytes) -> bool:
    """True iff ``proof`` proves possession of the secret key of ``pk``."""
    if not key_validate(pk) or not signature_validate(proof):
        return False
    return bool(_SCHEME.PopVerify(BLSPubkey(pk), BLSSignature(proof)))
