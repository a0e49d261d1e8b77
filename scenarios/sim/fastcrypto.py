"""A fast stand-in for BLS and Ed25519 in the simulated world: keyed hashes, simulation only.

Never used in real mode. Anything found with it (a violated invariant, a counterexample,
a shrunk scenario) is re-run with real crypto (``consensus.crypto.REAL_CRYPTO``) before it
is reported; a finding that does not reproduce there is a bug of this module.

Crypto dominates the cost of a simulated round (blst: 0.35 ms to sign, 1.1 ms to verify,
for every share and every certificate every member checks). ``FastCrypto`` implements the
``consensus.crypto.CryptoSuite`` interface with keyed hashes (SHAKE-256, BLAKE2b), which
cost microseconds, while keeping every verdict the protocol can observe:

- Public keys are the real ones (``sk_to_pk`` is real, memoized), so committee configs,
  config digests and report hashes are exactly those of real mode.
- The simulated world registers every member's keys (``register_bls``,
  ``register_identity``) when it builds the committee. The suite keeps, privately, a map
  from each public key to a MAC key derived from its secret, used only to check that key's
  signatures. Nothing returns a secret or a MAC key, and a signer still signs with its
  own secret (``bls_sign(sk, ...)``), so a simulated member can sign only as itself.
  A verifier checks the claimed signer: a key that was never registered (a rogue key, a
  key outside the committee) verifies nothing.
- A BLS signature is 96 bytes: a tag byte, a 79-byte value and a 16-byte check over tag
  and value. A share's value is a keyed hash of (MAC key, message), read as a number
  modulo 2^632; an aggregate's value is the sum of its signatures' values. Like the sum
  of G2 points it stands for, aggregation is commutative and associative and one
  signature aggregates to itself, so a certificate verifies exactly when it would with
  BLS, whatever order or grouping its maker used. ``bls_fast_aggregate_verify``
  recomputes the sum from the registered keys of the members the bitmap names: a
  certificate verifies only with the shares, over one report hash, of exactly those
  members (the bitmap and threshold rules of ``verify_certificate`` are unchanged).
  Proofs of possession are keyed hashes of the public key, in their own domain (BLS's
  proof DST).
- ``bls_signature_validate`` checks length, tag and check bytes, and refuses the value 0
  (the identity, which blst refuses as the point at infinity). Random bytes (what a
  Byzantine member sends as an invalid share) are then malformed, as they are for blst,
  except with probability below 2^-128; a well-formed signature of another message is
  valid and does not verify, as in BLS.
- Observation signatures are 64 bytes: keyed BLAKE2b of the message under a MAC key
  derived from the identity seed.

Where it differs from BLS: only registered keys verify (a real verifier accepts any key
whose owner signed, and a rogue key built without a secret cancels others in BLS; here
it verifies nothing, so the proof-of-possession check is what both suites rely on to
refuse it). Signatures of one suite are malformed for the other (the fast tag has the
compression bit clear, real points lack the check bytes), so mixing suites fails closed.

This module must never be imported by real-mode code, return or expose a secret or a
MAC key, accept a signature from a key that was not registered, or raise from a
verification (a peer's bad bytes are an answer, not a crash).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Final

from nacl.signing import SigningKey

from consensus import bls
from consensus.crypto import REAL_CRYPTO, MemoizedCrypto

__all__ = ["FastCrypto"]

_SIGNATURE_TAG: Final = 0x01
_VALUE_LENGTH: Final = 79
_CHECK_LENGTH: Final = 16
#: Values live in the additive group of integers modulo 2^632 (79 bytes).
_MODULUS: Final = 1 << (8 * _VALUE_LENGTH)
_OBSERVATION_SIGNATURE_LENGTH: Final = 64
_AGGREGATES_KEPT: Final = 4096

_BLS_KEY_DOMAIN: Final = b"dvpsim/fastcrypto/bls-key/v1\x00"
_IDENTITY_KEY_DOMAIN: Final = b"dvpsim/fastcrypto/identity-key/v1\x00"
_SHARE_DOMAIN: Final = b"dvpsim/fastcrypto/share/v1\x00"
_POP_DOMAIN: Final = b"dvpsim/fastcrypto/pop/v1\x00"
_CHECK_PERSON: Final = b"dvpsim-fast-chk"
_OBSERVATION_PERSON: Final = b"dvpsim-fast-obs"

# Real public keys, shared by every FastCrypto of the process: deriving one costs a G1
# scalar multiplication, and every simulation of a seed uses the same few keys.
_REAL_KEYS: Final = MemoizedCrypto(REAL_CRYPTO, capacity=4096)


def _bls_mac_key(sk: int) -> bytes:
    if not isinstance(sk, int) or isinstance(sk, bool) or not 0 < sk < bls.CURVE_ORDER:
        raise bls.BlsError("BLS secret key must be an integer in [1, r)")
    return hashlib.sha256(_BLS_KEY_DOMAIN + sk.to_bytes(32, "big")).digest()


def _check(head: bytes) -> bytes:
    return hashlib.blake2b(head, digest_size=_CHECK_LENGTH, person=_CHECK_PERSON).digest()


def _encode(value: int) -> bytes:
    head = bytes([_SIGNATURE_TAG]) + value.to_bytes(_VALUE_LENGTH, "big")
    return head + _check(head)


def _decode(signature: object) -> int | None:
    """The value of a well-formed signature, or None (wrong type, length, tag or check,
    or the identity 0)."""
    if (
        not isinstance(signature, bytes)
        or len(signature) != bls.SIGNATURE_LENGTH
        or signature[0] != _SIGNATURE_TAG
    ):
        return None
    head = signature[: 1 + _VALUE_LENGTH]
    if not hmac.compare_digest(signature[1 + _VALUE_LENGTH :], _check(head)):
        return None
    value = int.from_bytes(head[1:], "big")
    return value or None


def _share_value(mac_key: bytes, message: bytes) -> int:
    digest = hashlib.shake_256(_SHARE_DOMAIN + mac_key + message).digest(_VALUE_LENGTH)
    return int.from_bytes(digest, "big")


def _pop_value(mac_key: bytes, pk: bytes) -> int:
    digest = hashlib.shake_256(_POP_DOMAIN + mac_key + pk).digest(_VALUE_LENGTH)
    return int.from_bytes(digest, "big")


def _same(value: int, given: object) -> bool:
    """True iff ``given`` is the well-formed encoding of ``value``."""
    return value % _MODULUS != 0 and _decode(given) == value % _MODULUS


class FastCrypto:
    """The keyed-hash suite (module docstring). One instance per simulated world, or one
    shared by several: registering a key twice changes nothing."""

    __slots__ = ("_bls_mac_keys", "_identity_mac_keys", "_aggregates")

    def __init__(self) -> None:
        # public key -> MAC key derived from its secret; private, read only to verify.
        self._bls_mac_keys: dict[bytes, bytes] = {}
        self._identity_mac_keys: dict[bytes, bytes] = {}
        # Verdicts of recent aggregate checks: every simulated member checks the same
        # certificate (a pure function of its inputs and the registered keys).
        self._aggregates: dict[tuple[tuple[bytes, ...], bytes, bytes], bool] = {}

    @property
    def name(self) -> str:
        return "fast"

    def __repr__(self) -> str:
        return (
            f"FastCrypto({len(self._bls_mac_keys)} BLS keys, "
            f"{len(self._identity_mac_keys)} identity keys)"
        )

    # ------------------------------------------------------------------ registration

    def register_bls(self, sk: int) -> bytes:
        """Let the suite check signatures of ``sk``'s public key; returns that key."""
        mac_key = _bls_mac_key(sk)
        pk = _REAL_KEYS.sk_to_pk(sk)
        self._bls_mac_keys[pk] = mac_key
        return pk

    def register_identity(self, signing_key: SigningKey) -> bytes:
        """Let the suite check observations signed by ``signing_key``; returns its raw
        public key."""
        public_key = bytes(signing_key.verify_key)
        self._identity_mac_keys[public_key] = _identity_mac_key(signing_key)
        return public_key

    # ------------------------------------------------------------------ BLS stand-in

    def sk_to_pk(self, sk: int) -> bytes:
        return _REAL_KEYS.sk_to_pk(sk)

    def bls_sign(self, sk: int, message: bytes) -> bytes:
        mac_key = _bls_mac_key(sk)
        if not isinstance(message, bytes):
            raise bls.BlsError("BLS message must be bytes")
        return _encode(_share_value(mac_key, message))

    def bls_verify(self, pk: bytes, message: bytes, signature: bytes) -> bool:
        mac_key = self._bls_mac_keys.get(pk) if isinstance(pk, bytes) else None
        if mac_key is None or not isinstance(message, bytes):
            return False
        return _same(_share_value(mac_key, message), signature)

    def bls_aggregate(self, signatures: Sequence[bytes]) -> bytes:
        if len(signatures) == 0:
            raise bls.BlsError("cannot aggregate an empty list of BLS signatures")
        total = 0
        for index, signature in enumerate(signatures):
            value = _decode(signature)
            if value is None:
                raise bls.BlsError(f"BLS signature at position {index} is malformed")
            total += value
        # A sum of 0 encodes like blst's point at infinity: it fails validation later.
        return _encode(total % _MODULUS)

    def bls_signature_validate(self, signature: bytes) -> bool:
        return _decode(signature) is not None

    def bls_fast_aggregate_verify(
        self, pks: Sequence[bytes], message: bytes, signature: bytes
    ) -> bool:
        if len(pks) == 0 or not isinstance(message, bytes) or not isinstance(signature, bytes):
            return False
        key = (tuple(pks), message, signature)
        known = self._aggregates.get(key)
        if known is not None:
            return known
        total = 0
        verdict = True
        for pk in pks:
            mac_key = self._bls_mac_keys.get(pk) if isinstance(pk, bytes) else None
            if mac_key is None:
                verdict = False
                break
            total += _share_value(mac_key, message)
        verdict = verdict and _same(total, signature)
        if len(self._aggregates) >= _AGGREGATES_KEPT:
            self._aggregates.clear()
        self._aggregates[key] = verdict
        return verdict

    def pop_prove(self, sk: int) -> bytes:
        return _encode(_pop_value(_bls_mac_key(sk), _REAL_KEYS.sk_to_pk(sk)))

    def pop_verify(self, pk: bytes, proof: bytes) -> bool:
        mac_key = self._bls_mac_keys.get(pk) if isinstance(pk, bytes) else None
        return mac_key is not None and _same(_pop_value(mac_key, pk), proof)

    # ------------------------------------------------------------------ Ed25519 stand-in

    def sign_observation(self, key: SigningKey, message: bytes) -> bytes:
        return _observation_signature(_identity_mac_key(key), message)

    def verify_observation(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        mac_key = self._identity_mac_keys.get(public_key) if isinstance(public_key, bytes) else None
        if mac_key is None or not isinstance(message, bytes):
            return False
        expected = _observation_signature(mac_key, message)
        return isinstance(signature, bytes) and hmac.compare_digest(expected, signature)


def _identity_mac_key(key: SigningKey) -> bytes:
    return hashlib.sha256(_IDENTITY_KEY_DOMAIN + bytes(key)).digest()


def _observation_signature(mac_key: bytes, message: bytes) -> bytes:
    return hashlib.blake2b(
        message, key=mac_key, digest_size=_OBSERVATION_SIGNATURE_LENGTH, person=_OBSERVATION_PERSON
    ).digest()
