"""Observation signatures: ed25519-zebra (ZIP-215 rules, what members verify with) against
libsodium (what members sign with, stricter rules).

The two agree on every signature an honest signer makes and on corrupted ones (flipped
bits, wrong key, wrong message, wrong lengths). They differ only on the cases ZIP-215
documents: small-order or non-canonical encodings of R and A, which zebra accepts and
libsodium rejects. A committee refuses small-order identity keys, the one case that would
let anyone forge a member's observation (``consensus.identity``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random

import pytest
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from consensus.config import ConfigError, ConsensusConfig
from consensus.harness import simulated_committee
from consensus.identity import identity_key_valid, verify_message

#: The order of Ed25519's prime-order subgroup, and the field prime.
L = 2**252 + 27742317777372353535851937790883648493
P = 2**255 - 19

IDENTITY = (1).to_bytes(32, "little")  # the neutral point, y = 1
IDENTITY_NON_CANONICAL = (P + 1).to_bytes(32, "little")  # y = 1 written as p + 1
#: Encodings of points of small order (the identity, order 2 (y = -1), order 4 (y = 0)).
SMALL_ORDER = (IDENTITY, (P - 1).to_bytes(32, "little"), bytes(32), bytes(31) + b"\x80")


def sodium_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def keys(count: int, seed: int) -> list[SigningKey]:
    rng = random.Random(seed)
    return [SigningKey(rng.randbytes(32)) for _ in range(count)]


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_both_accept_every_honest_signature() -> None:
    rng = random.Random(1)
    for key in keys(64, seed=2):
        message = rng.randbytes(rng.randrange(0, 300))
        signature = key.sign(message).signature
        public = bytes(key.verify_key)
        assert verify_message(public, message, signature)
        assert sodium_verify(public, message, signature)
        assert identity_key_valid(public)


def test_both_reject_corrupted_signatures_keys_and_messages() -> None:
    rng = random.Random(3)
    key, other = keys(2, seed=4)
    public, other_public = bytes(key.verify_key), bytes(other.verify_key)
    message = b"dvpsim observation " + rng.randbytes(40)
    signature = key.sign(message).signature
    cases = [(public, message, flip(signature, bit)) for bit in range(512)]
    cases += [(public, flip(message, bit), signature) for bit in range(0, len(message) * 8, 7)]
    cases += [(flip(public, bit), message, signature) for bit in range(0, 256, 5)]
    cases += [
        (other_public, message, signature),  # wrong key
        (public, message + b"\x00", signature),  # wrong message
        (public, b"", signature),
        (public, message, other.sign(message).signature),  # another signer's
        (public, message, signature[:63]),
        (public, message, signature + b"\x00"),
        (public[:31], message, signature),
        (public, message, bytes(64)),
    ]
    for public_key, signed, sig in cases:
        zebra = verify_message(public_key, signed, sig)
        assert zebra == sodium_verify(public_key, signed, sig)
        assert not zebra


def test_malformed_input_is_a_false_not_an_error() -> None:
    key = keys(1, seed=5)[0]
    signature = key.sign(b"m").signature
    public = bytes(key.verify_key)
    assert not verify_message(public, b"m", bytearray(signature))  # type: ignore[arg-type]
    assert not verify_message("key", b"m", signature)  # type: ignore[arg-type]


def _secret_scalar(key: SigningKey) -> int:
    digest = hashlib.sha512(bytes(key)).digest()
    scalar = int.from_bytes(digest[:32], "little")
    return (scalar & ((1 << 254) - 8)) | (1 << 254)


def _signature_with_small_order_r(key: SigningKey, message: bytes, r: bytes) -> bytes:
    """A signature whose R is ``r``, a small-order point: [8]R vanishes, so S = k * a
    satisfies the cofactored equation. Only the key holder can make it."""
    public = bytes(key.verify_key)
    k = int.from_bytes(hashlib.sha512(r + public + message).digest(), "little") % L
    return r + (k * _secret_scalar(key) % L).to_bytes(32, "little")


@pytest.mark.parametrize(
    "r", [IDENTITY, IDENTITY_NON_CANONICAL], ids=["canonical", "non-canonical"]
)
def test_documented_difference_small_order_r(r: bytes) -> None:
    """ZIP-215 accepts a small-order R, canonical or not (cofactored equation); libsodium
    rejects it. Only the key's holder can make such a signature."""
    key = keys(1, seed=6)[0]
    public = bytes(key.verify_key)
    signature = _signature_with_small_order_r(key, b"observation", r)
    assert verify_message(public, b"observation", signature)
    assert not sodium_verify(public, b"observation", signature)


@pytest.mark.parametrize(
    "public", [IDENTITY, IDENTITY_NON_CANONICAL], ids=["canonical", "non-canonical"]
)
def test_documented_difference_small_order_key(public: bytes) -> None:
    """With a small-order key A, R = identity and S = 0 verify for any message under
    ZIP-215: anyone could forge. libsodium rejects; a committee refuses such keys."""
    forged = IDENTITY + bytes(32)
    assert verify_message(public, b"any message at all", forged)
    assert not sodium_verify(public, b"any message at all", forged)
    assert not identity_key_valid(public)


@pytest.mark.parametrize("bad", [*SMALL_ORDER, IDENTITY_NON_CANONICAL], ids=lambda b: b.hex()[:8])
def test_a_committee_refuses_small_order_and_non_canonical_identity_keys(bad: bytes) -> None:
    config, _ = simulated_committee(4, 1, seed=11)
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
    fields["identity_keys"] = (bad, *config.identity_keys[1:])
    with pytest.raises(ConfigError, match=r"identity_keys\[0\] is not a valid Ed25519"):
        ConsensusConfig(**fields)
    assert not identity_key_valid(bad)
