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
from collections.abc import Sequence
from dataclasses import dataclass

from eth_typing import BLSPubkey
from py_ecc.bls.g2_primitives import G1_to_pubkey, pubkey_to_G1
from py_ecc.optimized_bls12_381.optimized_curve import add, neg

from consensus import bls

__all__ = [
    "DevMemberSecrets",
    "dev_leader_selection_key",
    "dev_member_secrets",
    "rogue_public_key",
]


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


def rogue_public_key(secret: int, others: Sequence[bytes]) -> bytes:
    """A rogue BLS key, for a study of the rogue-key attack: ``g*secret - sum(others)``.
    The aggregate of ``others`` and this key is ``g*secret``, so whoever holds ``secret``
    alone could sign for the whole committee; but no one knows this key's own secret, so
    no proof of possession of it can be made. Every committee check refuses it for that
    (``consensus.report.check_proofs_of_possession``, the node config, the chain's
    ``admitKeys``, the bank)."""
    total = pubkey_to_G1(BLSPubkey(bls.sk_to_pk(secret)))
    for key in others:
        total = add(total, neg(pubkey_to_G1(BLSPubkey(key))))
    return bytes(G1_to_pubkey(total))
