"""Fixtures for the contract tests: verifiers deployed and configured once per session on the
session chain. Higher-scoped fixtures are set up before the function-scoped ``w3`` takes its
snapshot, so these deployments persist while every test's own changes are reverted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from chain_adapters.build import Artifact
from chain_adapters.localchain import LocalChain
from chain_adapters.verifier import configure_bls_verifier, deploy_oracle_verifier
from consensus.report import CommitteeConfig
from tests.contracts.contract_helpers import BlsCommittee, make_committee


@dataclass(frozen=True)
class ConfiguredVerifier:
    contract: Any
    committee: BlsCommittee
    config: CommitteeConfig


def _configured(
    chain: LocalChain, contracts: dict[str, Artifact], n: int, contract: str = "OracleVerifier"
) -> ConfiguredVerifier:
    committee = make_committee(n)
    verifier = deploy_oracle_verifier(chain.web3(), contracts, contract=contract)
    config = configure_bls_verifier(
        verifier, committee.public_keys, committee.proofs, committee.f, committee.t
    )
    return ConfiguredVerifier(verifier, committee, config)


@pytest.fixture(scope="session")
def verifier4(chain: LocalChain, contracts: dict[str, Artifact]) -> ConfiguredVerifier:
    """OracleVerifierHarness (an OracleVerifier plus pure helpers), committee n=4, f=1, t=3."""
    return _configured(chain, contracts, 4, "OracleVerifierHarness")


@pytest.fixture(scope="session")
def verifier31(chain: LocalChain, contracts: dict[str, Artifact]) -> ConfiguredVerifier:
    """OracleVerifier with committee n=31, f=10, t=21."""
    return _configured(chain, contracts, 31)


@pytest.fixture(scope="session")
def bls_harness(chain: LocalChain, contracts: dict[str, Artifact]) -> Any:
    from chain_adapters.deploy import deploy

    return deploy(chain.web3(), contracts["BLS12381Harness"])
