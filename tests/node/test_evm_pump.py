"""The EVM pump's poll: one look at the newest block, and the watcher only when it moved.

Most polls come between two blocks; the pump then answers from one raw call instead of the
watcher's. These tests hold it to what the watcher alone would deliver: every event once,
and no update while the chain stands still.
"""

from __future__ import annotations

from typing import Any

from chain_adapters.build import Artifact
from chain_adapters.devstack import deploy_escrow_stack
from chain_adapters.localchain import LocalChain
from chain_adapters.model import SettlementCreated
from node.config import TargetConfig
from node.pumps.evm import EvmPump, Head
from tests.escrow.escrow_helpers import Escrow

# anvil's third default account (funded; not a party of the escrow helper).
TRANSMITTER_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"


def test_a_head_is_unchanged_only_when_it_is_the_same_block_and_the_watcher_caught_up() -> None:
    seen = Head(10, b"\x01" * 32, 1000, confirmations=2)
    assert seen.unchanged(Head(10, b"\x01" * 32, 1000, 2), scanned_to=9)
    # A new block, or a block replaced at the same height (a reorg), needs the watcher.
    assert not seen.unchanged(Head(11, b"\x02" * 32, 1001, 2), scanned_to=9)
    assert not seen.unchanged(Head(10, b"\x03" * 32, 1001, 2), scanned_to=9)
    # The watcher stopped short of the confirmed blocks (the chain moved during its scan).
    assert not seen.unchanged(Head(10, b"\x01" * 32, 1000, 2), scanned_to=8)
    # Nothing seen yet.
    assert not Head(-1, b"", -1, 1).unchanged(Head(0, b"\x01" * 32, 0, 1), scanned_to=-1)


def _pump(chain: LocalChain, contracts: dict[str, Artifact], coordinator: str) -> EvmPump:
    config = TargetConfig(
        name="chain-A",
        leg="A",
        kind="evm",
        chain_id=31337,
        verifier=bytes.fromhex(coordinator[2:]),
        config_count=1,
        t=2,
        url=chain.rpc_url,
        transmitter_key=TRANSMITTER_KEY,
        confirmations=1,
    )
    return EvmPump(config, contracts)


def test_the_pump_delivers_each_event_once_and_is_quiet_while_the_chain_stands_still(
    chain: LocalChain, contracts: dict[str, Artifact]
) -> None:
    snapshot = chain.snapshot()
    try:
        escrow = Escrow(deploy_escrow_stack(chain.web3(), contracts, n=4, f=1))
        escrow.fund()
        pump = _pump(chain, contracts, escrow.co.address)
        first = pump._poll_once()
        assert first is not None and first.records == ()  # the leg's clock, no events yet
        assert pump._poll_once() is None  # the same block: nothing new
        terms = escrow.terms()
        escrow.create(terms)  # automine: one new block with one event
        update: Any = pump._poll_once()
        assert update is not None
        created = [r.event for r in update.records if isinstance(r.event, SettlementCreated)]
        assert [e.terms.settlement_id for e in created] == [terms.settlement_id]
        assert update.block_time == escrow.now()
        assert pump._poll_once() is None  # delivered once
        assert pump.watcher.scanned_to == chain.web3().eth.block_number
    finally:
        chain.revert(snapshot)
