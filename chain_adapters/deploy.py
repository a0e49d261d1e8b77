"""Deploy a compiled dvpsim contract to a chain and wait for its receipt.

One function, used by the runners, benchmarks and tests. The sender is an unlocked
account of the node (anvil's dev accounts) unless a local private key is given.
It never compiles (see chain_adapters.build) and never starts a chain.
"""

from __future__ import annotations

from typing import Any

from chain_adapters.build import Artifact


class DeployError(Exception):
    """A contract could not be deployed."""


def deploy(
    w3: Any, artifact: Artifact, *ctor_args: Any, sender: str | None = None, gas: int | None = None
) -> Any:
    """Deploy ``artifact`` with ``ctor_args`` and return a web3 contract bound to its address."""
    sender = sender or w3.eth.accounts[0]
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx: dict[str, Any] = {"from": sender}
    if gas is not None:
        tx["gas"] = gas
    tx_hash = factory.constructor(*ctor_args).transact(tx)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
    if receipt["status"] != 1 or not receipt.get("contractAddress"):
        raise DeployError(f"deployment of {artifact.name} reverted (tx {tx_hash.hex()})")
    return w3.eth.contract(address=receipt["contractAddress"], abi=artifact.abi)
