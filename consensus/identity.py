"""Ed25519 signatures on observations, with the node's identity key.

The leader relays followers' observations inside its proposal, so each observation carries
its observer's signature; a follower accepts a proposal only if every observation in it
verifies. The signed message is domain-separated and binds everything that gives the
observation its meaning::

    "dvpsim/consensus/observation/v1" || 0x00 || instance_digest (32 B)
        || epoch (uint32 BE) || round (uint64 BE) || observer (uint8) || observation

``instance_digest`` names the committee and its whole configuration
(``ConsensusConfig.instance_digest``), so an observation signed for one committee, epoch,
round or observer does not verify for any other: replaying it elsewhere is rejected.

Keys and signatures are PyNaCl's (libsodium), the Ed25519 implementation libp2p uses for
the same identity keys: a node signs with libsodium. Observation signatures are verified
with ed25519-zebra (``py-ed25519-zebra-bindings``), about a fifth faster here, and a
follower verifies every observation of every proposal. Its rules are ZIP-215's: the
cofactored equation ``[8][S]B = [8]R + [8][k]A``, and every encoding of R and A that
decodes to a point, canonical or not, small order included. libsodium's are stricter: it
rejects small-order and non-canonical R and A. On signatures an honest signer makes the
two agree (``tests/crypto/test_ed25519_rules.py``). Where they differ they differ only for
keys or signatures no honest member produces, and every member applies the same rule, so
members agree on every verdict. Because a small-order key ``A`` would let anyone forge
its signatures under the cofactored equation, a committee accepts only identity keys that
pass ``identity_key_valid`` (canonical points of the prime-order subgroup, as every
libsodium key is); ``ConsensusConfig`` checks it.

This module must never accept a signature that does not verify under the observer's
configured key, raise on a malformed signature from a peer (that is a False), or do I/O.
"""

from __future__ import annotations

from typing import Final

from ed25519_zebra import ed_verify
from nacl.bindings import crypto_core_ed25519_is_valid_point
from nacl.signing import SigningKey

__all__ = [
    "OBSERVATION_DOMAIN",
    "identity_key_from_seed",
    "identity_key_valid",
    "observation_message",
    "public_key_bytes",
    "sign_message",
    "sign_observation",
    "verify_message",
    "verify_observation",
]

OBSERVATION_DOMAIN: Final = b"dvpsim/consensus/observation/v1\x00"


def observation_message(
    instance_digest: bytes, epoch: int, round_: int, observer: int, observation: bytes
) -> bytes:
    """The bytes an observer signs (module docstring)."""
    return b"".join(
        (
            OBSERVATION_DOMAIN,
            instance_digest,
            epoch.to_bytes(4, "big"),
            round_.to_bytes(8, "big"),
            observer.to_bytes(1, "big"),
            observation,
        )
    )


def sign_observation(
    key: SigningKey,
    instance_digest: bytes,
    epoch: int,
    round_: int,
    observer: int,
    observation: bytes,
) -> bytes:
    """The observer's 64-byte signature of its observation for (epoch, round)."""
    return sign_message(
        key, observation_message(instance_digest, epoch, round_, observer, observation)
    )


def sign_message(key: SigningKey, message: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``message`` (for observations: an
    ``observation_message``). ``consensus.crypto.REAL_CRYPTO`` signs with this."""
    return bytes(key.sign(message).signature)


def verify_observation(
    public_key: bytes,
    instance_digest: bytes,
    epoch: int,
    round_: int,
    observer: int,
    observation: bytes,
    signature: bytes,
) -> bool:
    """True iff ``signature`` is the observer's signature of this observation."""
    message = observation_message(instance_digest, epoch, round_, observer, observation)
    return verify_message(public_key, message, signature)


def verify_message(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``message`` under the raw
    32-byte ``public_key`` by ZIP-215's rules (module docstring); a malformed key or
    signature is a False, never an error. ``consensus.crypto.REAL_CRYPTO`` verifies with
    this."""
    try:
        return bool(ed_verify(signature, message, public_key))
    except (TypeError, ValueError):
        return False


def identity_key_valid(public_key: bytes) -> bool:
    """True iff ``public_key`` is the canonical 32-byte encoding of a point of Ed25519's
    prime-order subgroup, not the identity: every key libsodium makes is; a small-order
    key, whose signatures anyone could forge under ZIP-215's rules, is not."""
    return (
        isinstance(public_key, bytes)
        and len(public_key) == 32
        and bool(crypto_core_ed25519_is_valid_point(public_key))
    )


def identity_key_from_seed(seed: bytes) -> SigningKey:
    """A deterministic identity key from 32 seed bytes (simulations and tests; real nodes
    load theirs from the keystore)."""
    return SigningKey(seed)


def public_key_bytes(key: SigningKey) -> bytes:
    """The 32-byte raw public key of an identity key."""
    return bytes(key.verify_key)
