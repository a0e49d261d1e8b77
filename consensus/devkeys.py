"""Committee keys derived from a seed, for local runs and simulations only.

``dvpsim run`` provisions its node processes with these keys and the simulated world
builds its members with the same ones, so a scenario's committee is the same in both
worlds (same public keys, same config digests, same report hashes). A seeded key is
fine for a local run and wrong for anything real.

This module must never read the clock, the disk or a global random generator.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from consensus import bls

__all__ = ["DevMemberSecrets", "dev_leader_selection_key", "dev_member_secrets"]


@dataclass(frozen=True, slots=True)
class DevMemberSecrets:
    index: int
    identity_seed: bytes  # Ed25519 seed: the libp2p identity and observation signing key
    bls_secret: int


def dev_member_secrets(n: int, seed: int) -> list[DevMemberSecrets]:
    rng = random.Random(seed)
    members = []
    for i in range(n):
        identity_seed = hashlib.sha256(b"dvpsim/identity/" + rng.randbytes(32)).digest()
        bls_secret = bls.keygen(rng.randbytes(32))
        members.append(DevMemberSecrets(i, identity_seed, bls_secret))
    return members


def dev_leader_selection_key(identity_seeds: list[bytes]) -> bytes:
    """The leader-selection key of a local committee, from its members' identity seeds."""
    return hashlib.sha256(b"dvpsim/leader/" + b"".join(identity_seeds)).digest()
