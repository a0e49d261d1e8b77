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
the same identity keys; its verification is about twice as fast as OpenSSL's here, and a
follower verifies every observation of every proposal.

The consensus node does not call these functions directly: it signs and verifies through
its crypto suite (``consensus.crypto``), whose real suite uses ``sign_message`` and
``verify_message`` over ``observation_message``; ``sign_observation`` and
``verify_observation`` are the same two steps in one call, for tests and tools.

This module must never accept a signature that does not verify under the observer's
configured key, raise on a malformed signature from a peer (that is a False), or do I/O.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

__all__ = [
    "OBSERVATION_DOMAIN",
    "identity_key_from_seed",
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


@lru_cache(maxsize=1024)
def _public_key(raw: bytes) -> VerifyKey:
    # Loading is cheap but not free; committees reuse the same few keys for every round.
    return VerifyKey(raw)


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
    32-byte ``public_key``; a malformed key or signature is a False, never an error.
    ``consensus.crypto.REAL_CRYPTO`` verifies with this."""
    try:
        _public_key(public_key).verify(message, signature)
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        return False
    return True


def identity_key_from_seed(seed: bytes) -> SigningKey:
    """A deterministic identity key from 32 seed bytes (simulations and tests; real nodes
    load theirs from the keystore)."""
    return SigningKey(seed)


def public_key_bytes(key: SigningKey) -> bytes:
    """The 32-byte raw public key of an identity key."""
    return bytes(key.verify_key)
