"""Fixtures of the escrow tests: a deployed escrow stack (tokens, DvPCoordinator, a real BLS
committee) on the session's anvil chain, with funded parties.

The stacks are module-scoped: they are deployed before the per-test snapshot that the `w3`
fixture takes, so every test starts from the same funded stack and its changes are reverted.
"""

from __future__ import annotations

import pytest

from chain_adapters.build import Artifact
from chain_adapters.devstack import deploy_escrow_stack
from chain_adapters.localchain import LocalChain
from tests.escrow.escrow_helpers import Escrow


@pytest.fixture(scope="module")
def escrow(chain: LocalChain, contracts: dict[str, Artifact]) -> Escrow:
    stack = deploy_escrow_stack(chain.web3(), contracts, n=4, f=1)
    helper = Escrow(stack)
    helper.fund()
    return helper


@pytest.fixture(scope="module")
def unsafe_escrow(chain: LocalChain, contracts: dict[str, Artifact]) -> Escrow:
    stack = deploy_escrow_stack(
        chain.web3(), contracts, n=4, f=1, unsafe_self_refund_after_deadline=True
    )
    helper = Escrow(stack)
    helper.fund()
    return helper
