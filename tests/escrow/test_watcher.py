"""The event watcher on a real anvil whose blocks the test mines and reorganises (evm_revert
to a snapshot, anvil_reorg): confirmation depth, exactly-once delivery, retraction of the
events of dropped blocks, catch-up in bounded ranges, and the errors it must raise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chain_adapters.bindings import chain_log_event
from chain_adapters.build import Artifact
from chain_adapters.deploy import deploy
from chain_adapters.evm import RetryPolicy, RpcUnreachable, connect
from chain_adapters.localchain import LocalChain, start_chain
from chain_adapters.model import Transfer
from chain_adapters.watcher import Delivered, EventDecoder, EventWatcher, ReorgTooDeep, Retracted

CHAIN_ID = 41_001


@pytest.fixture(scope="module")
def reorg_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalChain]:
    with start_chain(CHAIN_ID, log_dir=tmp_path_factory.mktemp("anvil-watcher")) as chain:
        yield chain


@pytest.fixture(scope="module")
def token(reorg_chain: LocalChain, contracts: dict[str, Artifact]) -> Any:
    w3 = reorg_chain.web3()
    return deploy(w3, contracts["AssetToken"], sender=w3.eth.accounts[0])


@pytest.fixture
def fresh(reorg_chain: LocalChain) -> Iterator[LocalChain]:
    """The module chain, reverted after the test (the tests below also revert inside)."""
    snapshot = reorg_chain.snapshot()
    try:
        yield reorg_chain
    finally:
        reorg_chain.revert(snapshot)


def watcher_for(
    chain: LocalChain, token: Any, contracts: dict[str, Artifact], **kw: Any
) -> EventWatcher:
    rpc = connect(chain.rpc_url, CHAIN_ID)
    start = chain.web3().eth.block_number + 1  # only what the test does
    return EventWatcher(
        rpc,
        [token.address],
        from_block=start,
        decoder=EventDecoder([contracts["DvPToken"].abi]),
        **kw,
    )


def mint(chain: LocalChain, token: Any, amount: int, to_index: int = 1) -> None:
    w3 = chain.web3()
    tx = token.functions.mint(w3.eth.accounts[to_index], amount).transact(
        {"from": w3.eth.accounts[0]}
    )
    assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 1


def amounts(records: list[Any]) -> list[tuple[str, int]]:
    return [(type(r).__name__, r.log.arg("value")) for r in records]


def test_delivers_after_the_confirmation_depth_and_only_once(
    fresh: LocalChain, token: Any, contracts: dict[str, Artifact]
) -> None:
    watcher = watcher_for(fresh, token, contracts, confirmations=3)
    mint(fresh, token, 11)
    assert watcher.poll() == []  # 1 confirmation
    fresh.rpc("evm_mine")
    assert watcher.poll() == []  # 2
    fresh.rpc("evm_mine")
    records = watcher.poll()  # 3
    assert amounts(records) == [("Delivered", 11)]
    log = records[0].log
    assert log.event == "Transfer" and log.chain_id == CHAIN_ID and log.address == token.address
    assert chain_log_event(log) == Transfer(
        token.address, "0x" + "0" * 40, fresh.web3().eth.accounts[1], 11
    )
    fresh.rpc("evm_mine")
    assert watcher.poll() == []


def test_snapshot_revert_retracts_the_dropped_branch_and_delivers_the_new_one(
    fresh: LocalChain, token: Any, contracts: dict[str, Artifact]
) -> None:
    watcher = watcher_for(fresh, token, contracts, confirmations=1)
    mint(fresh, token, 1)
    assert amounts(watcher.poll()) == [("Delivered", 1)]
    fork = fresh.snapshot()
    mint(fresh, token, 2)
    mint(fresh, token, 3)
    assert amounts(watcher.poll()) == [("Delivered", 2), ("Delivered", 3)]
    fresh.revert(fork)  # blocks of 2 and 3 are gone
    mint(fresh, token, 4)
    fresh.rpc("evm_mine")
    fresh.rpc("evm_mine")  # the new branch is longer
    assert amounts(watcher.poll()) == [("Retracted", 3), ("Retracted", 2), ("Delivered", 4)]
    assert watcher.poll() == []


def test_anvil_reorg_replaces_blocks_and_their_events(
    fresh: LocalChain, token: Any, contracts: dict[str, Artifact]
) -> None:
    watcher = watcher_for(fresh, token, contracts, confirmations=1)
    for value in (10, 20, 30):
        mint(fresh, token, value)
    assert [r.log.arg("value") for r in watcher.poll()] == [10, 20, 30]
    w3 = fresh.web3()
    accounts = w3.eth.accounts
    data = token.encode_abi("mint", args=[accounts[2], 99])
    # Replace the last two blocks: the mint of 30 is gone, 99 lands in the first new block.
    fresh.rpc("anvil_reorg", [2, [[{"from": accounts[0], "to": token.address, "data": data}, 0]]])
    records = watcher.poll()
    assert amounts(records) == [("Retracted", 30), ("Retracted", 20), ("Delivered", 99)]
    dropped = {r.log.key for r in records if isinstance(r, Retracted)}
    assert all(r.log.key not in dropped for r in records if isinstance(r, Delivered))
    assert watcher.poll() == []


def test_a_reorg_shallower_than_the_depth_is_never_seen(
    fresh: LocalChain, token: Any, contracts: dict[str, Artifact]
) -> None:
    watcher = watcher_for(fresh, token, contracts, confirmations=4)
    mint(fresh, token, 5)
    mint(fresh, token, 6)
    assert watcher.poll() == []
    w3 = fresh.web3()
    data = token.encode_abi("mint", args=[w3.eth.accounts[3], 7])
    fresh.rpc(
        "anvil_reorg", [1, [[{"from": w3.eth.accounts[0], "to": token.address, "data": data}, 0]]]
    )
    for _ in range(4):
        fresh.rpc("evm_mine")
    records = watcher.poll()
    assert amounts(records) == [("Delivered", 5), ("Delivered", 7)]


def test_catches_up_over_many_blocks_in_bounded_ranges(
    fresh: LocalChain, token: Any, contracts: dict[str, Artifact]
) -> None:
    watcher = watcher_for(fresh, token, contracts, confirmations=1, max_block_range=3)
    for value in range(1, 11):
        mint(fresh, token, value)
        fresh.rpc("evm_mine")  # empty blocks between the events
    records = watcher.poll()
    assert [r.log.arg("value") for r in records] == list(range(1, 11))
    assert all(isinstance(r, Delivered) for r in records)
    blocks = [r.log.block_number for r in records]
    assert blocks == sorted(blocks) and len(set(blocks)) == 10


def test_a_reorg_deeper_than_the_history_is_an_error(
    fresh: LocalChain, token: Any, contracts: dict[str, Artifact]
) -> None:
    watcher = watcher_for(fresh, token, contracts, confirmations=1, history=4)
    fork = fresh.snapshot()
    mint(fresh, token, 1)
    assert len(watcher.poll()) == 1
    for _ in range(10):
        fresh.rpc("evm_mine")
        watcher.poll()
    fresh.revert(fork)
    for _ in range(12):
        fresh.rpc("evm_mine")
    with pytest.raises(ReorgTooDeep, match="larger watcher history"):
        watcher.poll()


def test_reorg_before_anything_was_pruned_rescans_from_the_start(
    fresh: LocalChain, token: Any, contracts: dict[str, Artifact]
) -> None:
    watcher = watcher_for(fresh, token, contracts, confirmations=1)
    fork = fresh.snapshot()
    mint(fresh, token, 1)
    assert amounts(watcher.poll()) == [("Delivered", 1)]
    fresh.revert(fork)
    fresh.rpc("evm_mine")
    mint(fresh, token, 2)
    assert amounts(watcher.poll()) == [("Retracted", 1), ("Delivered", 2)]


def test_an_unreachable_endpoint_is_one_line(tmp_path: Path) -> None:
    with start_chain(CHAIN_ID + 1, log_dir=tmp_path) as chain:
        rpc = connect(chain.rpc_url, CHAIN_ID + 1, retry=RetryPolicy(attempts=3, first_delay=0.01))
        watcher = EventWatcher(rpc, ["0x" + "11" * 20])
        assert watcher.poll() == []
        url = chain.rpc_url
    with pytest.raises(RpcUnreachable) as caught:
        watcher.poll()
    assert (
        str(caught.value)
        == f"cannot reach RPC endpoint {url}: connection refused (is the chain running?)"
    )
