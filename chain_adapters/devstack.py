"""A complete escrow set-up on a local chain, for tests, benchmarks and scenario runners.

``deploy_escrow_stack`` deploys what one chain of a dvpsim run needs: the asset and payment
test tokens, a DvPCoordinator (safe by default; the unsafe self-refund variant only when
asked by name), the bridged tokens it mints in the token-transfer mode, and a committee of
real BLS keys derived from a seed, admitted with proofs of possession and configured on
the coordinator. :class:`ChainCommittee` then makes certificates exactly as the oracle
network does after a round (t members sign ``report_hash(report)``, shares aggregated): it
skips consensus, not cryptography, and the contract verifies them like any other.

It must never be used with real funds or as a node's key store (keys derived from a public
seed are not secret). It uses the chain's unlocked dev accounts, so it is for local chains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chain_adapters.bindings import (
    CoordinatorBinding,
    TokenBinding,
    deploy_bridged_token,
    deploy_coordinator,
    deploy_token,
)
from chain_adapters.build import Artifact, compile_contracts
from chain_adapters.verifier import configure_bls_verifier
from consensus import bls, signing
from consensus.signing import SigningCommittee

__all__ = ["ChainCommittee", "EscrowStack", "deploy_escrow_stack", "dev_secret_keys"]


def dev_secret_keys(n: int, seed: bytes = b"dvpsim dev chain committee") -> tuple[int, ...]:
    """n BLS secret keys from a public seed (IETF KeyGen): for local runs only."""
    return signing.dev_secret_keys(n, seed)


class ChainCommittee(SigningCommittee):
    """A committee configured on one coordinator, with its members' secret keys."""


@dataclass(frozen=True)
class EscrowStack:
    """One chain's escrow contracts and committee."""

    w3: Any
    artifacts: Mapping[str, Artifact]
    coordinator: CoordinatorBinding
    asset: TokenBinding  # AssetToken, minted by `deployer`
    payment: TokenBinding  # PaymentToken, minted by `deployer`
    bridged_asset: TokenBinding  # BridgedToken minted by the coordinator (asset from chain A)
    bridged_payment: TokenBinding  # BridgedToken minted by the coordinator (payment from B)
    committee: ChainCommittee
    deployer: str


def deploy_escrow_stack(
    w3: Any,
    artifacts: Mapping[str, Artifact] | None = None,
    *,
    n: int = 4,
    f: int = 1,
    t: int | None = None,
    unsafe_self_refund_after_deadline: bool = False,
    admission_floor: int = 0,
    secret_keys: Sequence[int] | None = None,
    deployer: str | None = None,
) -> EscrowStack:
    """Deploy tokens and a coordinator with a configured committee of n members."""
    artifacts = artifacts or compile_contracts()
    deployer = deployer or w3.eth.accounts[0]
    keys = tuple(secret_keys) if secret_keys is not None else dev_secret_keys(n)
    coordinator = deploy_coordinator(
        w3,
        artifacts,
        unsafe_self_refund_after_deadline=unsafe_self_refund_after_deadline,
        admission_floor=admission_floor,
        sender=deployer,
    )
    public_keys = [bls.sk_to_pk(sk) for sk in keys]
    proofs = [bls.pop_prove(sk) for sk in keys]
    config = configure_bls_verifier(
        coordinator.contract, public_keys, proofs, f, t, sender=deployer
    )
    return EscrowStack(
        w3=w3,
        artifacts=artifacts,
        coordinator=coordinator,
        asset=deploy_token(w3, "AssetToken", artifacts, sender=deployer),
        payment=deploy_token(w3, "PaymentToken", artifacts, sender=deployer),
        bridged_asset=deploy_bridged_token(
            w3,
            "dvpsim Bridged Fund Share",
            "bFUND",
            18,
            coordinator.address,
            artifacts,
            sender=deployer,
        ),  # fmt: skip
        bridged_payment=deploy_bridged_token(
            w3,
            "dvpsim Bridged Deposit Token",
            "bDEP",
            2,
            coordinator.address,
            artifacts,
            sender=deployer,
        ),  # fmt: skip
        committee=ChainCommittee(config, keys),
        deployer=deployer,
    )
