"""The coordinator's polled views read without web3's normalizers: the same answers as
web3's contract calls (``CoordinatorBinding._view``)."""

from __future__ import annotations

from chain_adapters.model import Mode
from tests.escrow.escrow_helpers import Escrow


def test_states_and_settlements_read_as_web3_reads_them(escrow: Escrow) -> None:
    created, locked = escrow.terms(Mode.SWAP), escrow.terms(Mode.SWAP)
    escrow.create(created, sender=created.buyer)
    escrow.create(locked, sender=locked.buyer)
    escrow.lock_asset(locked)
    ids = [created.settlement_id, bytes(32), locked.settlement_id]
    functions = escrow.co.contract.functions
    assert [int(s) for s in escrow.co.states_of(ids)] == list(functions.statesOf(ids).call())
    hashes, states = functions.settlementsOf(ids).call()
    assert escrow.co.settlements_of(ids) == [
        (bytes(h), s) for h, s in zip(hashes, states, strict=True)
    ]
    assert len({s for _, s in escrow.co.settlements_of(ids)}) == 3  # three different states
