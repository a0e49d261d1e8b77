"""The nodes' runtime is trio: the bank client must work under trio against the real bank."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from bank_adapter.client import BankClient
from bank_adapter.devcommittee import DevCommittee
from bank_adapter.ledger import InstructionState
from bank_adapter.process import BankProcess
from consensus.report import Action

from .conftest import terms


@pytest.mark.trio
async def test_client_under_trio(committee: DevCommittee, tmp_path: Path) -> None:
    secret = secrets.token_bytes(32)
    with BankProcess(
        tmp_path,
        committee,
        clients={"node-0": secret},
        accounts=[("alice", "EUR", 100), ("bob", "EUR", 0)],
    ) as bank:
        t = terms(amount=40)
        async with BankClient(bank.url, "node-0", secret) as client:
            status = await client.prevalidate(
                t, committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
            )
            assert status.state is InstructionState.PREVALIDATED
            done = await client.execute(
                t.settlement_id,
                committee.certificate(t.settlement_id, Action.COMMIT, t.terms_hash()),
            )
            assert done.state is InstructionState.EXECUTED
            assert (await client.account("bob")).balance == 40
            poor = terms(amount=1000)
            rejected = await client.prevalidate(
                poor, committee.certificate(poor.settlement_id, Action.PREPARE, poor.terms_hash())
            )
            assert (
                rejected.state is InstructionState.REJECTED
                and rejected.reject_reason == "insufficient_funds"
            )
