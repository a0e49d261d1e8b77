"""Ed25519 libp2p identities of oracle nodes: from a 32-byte seed or a key file, to a peer id.

A node's transport identity is an Ed25519 key; its libp2p peer id is derived from the
public key, so the committee configuration can list members by peer id and the Noise
handshake proves who is on the other end. The identity file holds the 32-byte seed as
64 hex characters (one line), written with mode 0600.

This module must never log or print key material, and never overwrite an existing
identity file (a node that changes identity is a different committee member).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

SEED_SIZE = 32


class IdentityError(ValueError):
    """A seed or identity file is unusable; the message says where and what to do."""


@dataclass(frozen=True)
class NodeIdentity:
    """An Ed25519 key pair and the libp2p peer id it determines."""

    key_pair: KeyPair
    peer_id: ID

    @property
    def peer_id_text(self) -> str:
        return self.peer_id.to_base58()

    def __repr__(self) -> str:
        # Never show the private key, even in a traceback.
        return f"NodeIdentity(peer_id={self.peer_id_text})"


def identity_from_seed(seed: bytes) -> NodeIdentity:
    """The identity whose Ed25519 private key is `seed` (RFC 8032 32-byte secret)."""
    if len(seed) != SEED_SIZE:
        raise IdentityError(
            f"identity seed is {len(seed)} bytes, expected {SEED_SIZE}; "
            "derive one with node.identity.seed_from_label or generate_seed"
        )
    key_pair = create_new_key_pair(seed=bytes(seed))
    return NodeIdentity(key_pair=key_pair, peer_id=ID.from_pubkey(key_pair.public_key))


def seed_from_label(label: str) -> bytes:
    """A deterministic seed for tests and local scenarios (never for real deployments)."""
    return hashlib.sha256(b"dvpsim/node-identity/" + label.encode()).digest()


def generate_seed() -> bytes:
    return secrets.token_bytes(SEED_SIZE)


def write_identity_file(path: str | os.PathLike[str], seed: bytes) -> NodeIdentity:
    """Create a new identity file holding `seed`; refuses to replace an existing file."""
    identity = identity_from_seed(seed)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IdentityError(
            f"identity file {target} already exists; load it, or remove it first if you "
            "really mean to give this node a new peer id"
        ) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(seed.hex() + "\n")
    return identity


def load_identity_file(path: str | os.PathLike[str]) -> NodeIdentity:
    """Read an identity file written by `write_identity_file`."""
    source = Path(path)
    try:
        text = source.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise IdentityError(
            f"identity file {source} does not exist; create it with "
            "node.identity.write_identity_file"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not ASCII text"
        raise IdentityError(
            f"identity file {source} cannot be read ({reason}); check the path and its permissions"
        ) from None
    if len(text) != 2 * SEED_SIZE:
        raise IdentityError(
            f"identity file {source}: expected {2 * SEED_SIZE} hex characters (a 32-byte "
            f"Ed25519 seed), found {len(text)}; restore the file from its backup"
        )
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        raise IdentityError(
            f"identity file {source}: not hexadecimal; restore the file from its backup"
        ) from None
    return identity_from_seed(seed)
