"""The two multi-chain modes across two real anvil chains, driven the way the oracle nodes
drive them: event watchers on both chains observe the legs (the SettlementCreated events
carry the full terms), one certified report per target chain, transmitted by the
transaction sender with its idempotency check. Also: a certificate for one chain is
refused by the other."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from chain_adapters.bindings import chain_log_event
from chain_adapters.build import Artifact
from chain_adapters.devstack import EscrowStack, deploy_escrow_stack
from chain_adapters.evm import connect
from chain_adapters.localchain import DEV_PRIVATE_KEYS, LocalChain, start_chain
from chain_adapters.model import (
    ZERO_ADDRESS,
    LegLocked,
    Mode,
    SettlementCreated,
    State,
    Terms,
)
from chain_adapters.sender import TransactionSender
from chain_adapters.watcher import EventWatcher
from consensus.report import Action, Decision
from tests.escrow.escrow_helpers import Escrow

CHAIN_A, CHAIN_B = 42_001, 42_002


@dataclass
class Side:
    chain: LocalChain
    escrow: Escrow
    watcher: EventWatcher
    transmitter: TransactionSender

    @property
    def stack(self) -> EscrowStack:
        return self.escrow.stack

    def observe(self) -> dict[bytes, dict[str, object]]:
        """What a node learns from the chain: per settlement, its terms and locked legs."""
        seen: dict[bytes, dict[str, object]] = {}
        for record in self.watcher.poll():
            event = chain_log_event(record.log)
            if isinstance(event, SettlementCreated):
                seen.setdefault(event.settlement_id, {})["terms"] = event.terms
            if isinstance(event, LegLocked):
                seen.setdefault(event.settlement_id, {})["state"] = event.state
        return seen

    def transmit(self, decision: Action, terms: Terms) -> None:
        committee = self.stack.committee
        report = committee.report([Decision(terms.settlement_id, decision, terms.terms_hash())])
        cert = committee.certify(report)
        co = self.stack.coordinator
        result = self.transmitter.send(
            co.apply_report_tx(cert, [terms]), already_done=lambda: not co.pending_decisions(report)
        )
        assert not result.skipped
        again = self.transmitter.send(
            co.apply_report_tx(cert, [terms]), already_done=lambda: not co.pending_decisions(report)
        )
        assert again.skipped  # a second transmitter finds it applied and sends nothing


def _side(chain: LocalChain, contracts: dict[str, Artifact]) -> Side:
    stack = deploy_escrow_stack(chain.web3(), contracts, n=4, f=1)
    escrow = Escrow(stack)
    escrow.fund()
    rpc = connect(chain.rpc_url, chain.chain_id)
    watcher = EventWatcher(
        rpc,
        [stack.coordinator.address],
        from_block=rpc.block_number() + 1,
        decoder=stack.coordinator.decoder,
    )
    return Side(chain, escrow, watcher, TransactionSender(rpc, DEV_PRIVATE_KEYS[4]))


@pytest.fixture(scope="module")
def sides(
    tmp_path_factory: pytest.TempPathFactory, contracts: dict[str, Artifact]
) -> Iterator[tuple[Side, Side]]:
    log_dir = tmp_path_factory.mktemp("anvil-multichain")
    with start_chain(CHAIN_A, log_dir=log_dir) as a, start_chain(CHAIN_B, log_dir=log_dir) as b:
        yield _side(a, contracts), _side(b, contracts)


@pytest.fixture
def fresh(sides: tuple[Side, Side]) -> Iterator[tuple[Side, Side]]:
    a, b = sides
    snapshots = (a.chain.snapshot(), b.chain.snapshot())
    try:
        yield sides
    finally:
        a.chain.revert(snapshots[0])
        b.chain.revert(snapshots[1])
        for side in sides:  # the reverted blocks are not news: start after them
            side.watcher = EventWatcher(
                side.watcher.rpc,
                side.watcher.addresses,
                from_block=side.chain.web3().eth.block_number + 1,
                decoder=side.watcher.decoder,
            )


def legs(a: Side, b: Side, mode_a: Mode, mode_b: Mode) -> tuple[Terms, Terms]:
    sid = os.urandom(32)
    terms_a = a.escrow.terms(mode_a, settlement_id=sid)
    terms_b = b.escrow.terms(mode_b, settlement_id=sid)
    return terms_a, terms_b


def observed_prepared(side: Side, settlement_id: bytes) -> Terms:
    seen = side.observe()[settlement_id]
    assert seen["state"] == State.PREPARED
    terms = seen["terms"]
    assert isinstance(terms, Terms)
    return terms


@pytest.mark.parametrize("decision", [Action.COMMIT, Action.ABORT])
def test_messaging_mode_asset_on_a_payment_on_b(fresh: tuple[Side, Side], decision: Action) -> None:
    a, b = fresh
    asset_leg, payment_leg = legs(a, b, Mode.ASSET_ESCROW, Mode.PAYMENT_ESCROW)
    before_a, before_b = a.escrow.balances(), b.escrow.balances()
    a.escrow.prepare(asset_leg)
    b.escrow.prepare(payment_leg)
    # The nodes learn the terms from the events, not from the test.
    assert observed_prepared(a, asset_leg.settlement_id) == asset_leg
    assert observed_prepared(b, payment_leg.settlement_id) == payment_leg
    a.transmit(decision, asset_leg)
    b.transmit(decision, payment_leg)
    asset, payment = asset_leg.asset_amount, payment_leg.payment_amount
    a_asset, b_payment = a.stack.asset.address, b.stack.payment.address
    after_a, after_b = a.escrow.balances(), b.escrow.balances()
    if decision == Action.COMMIT:
        assert after_a[(a_asset, asset_leg.buyer)] - before_a[(a_asset, asset_leg.buyer)] == asset
        assert (
            after_b[(b_payment, payment_leg.seller)] - before_b[(b_payment, payment_leg.seller)]
            == payment
        )
        assert (
            after_a[(a_asset, asset_leg.seller)] - before_a[(a_asset, asset_leg.seller)] == -asset
        )
        assert (
            after_b[(b_payment, payment_leg.buyer)] - before_b[(b_payment, payment_leg.buyer)]
            == -payment
        )
        final = State.COMMITTED
    else:
        assert (after_a, after_b) == (before_a, before_b)
        final = State.ABORTED
    assert a.stack.coordinator.state_of(asset_leg.settlement_id) == final
    assert b.stack.coordinator.state_of(payment_leg.settlement_id) == final


@pytest.mark.parametrize("decision", [Action.COMMIT, Action.ABORT])
def test_token_transfer_mode_locks_here_and_mints_there(
    fresh: tuple[Side, Side], decision: Action
) -> None:
    a, b = fresh
    seller_side, buyer_side = legs(a, b, Mode.BRIDGE_SELLER_SIDE, Mode.BRIDGE_BUYER_SIDE)
    assert seller_side.payment_token == a.stack.bridged_payment.address
    assert buyer_side.asset_token == b.stack.bridged_asset.address
    before_a, before_b = a.escrow.balances(), b.escrow.balances()
    a.escrow.prepare(seller_side)  # asset locked on A
    b.escrow.prepare(buyer_side)  # payment locked on B
    observed_prepared(a, seller_side.settlement_id)
    observed_prepared(b, buyer_side.settlement_id)
    a.transmit(decision, seller_side)
    b.transmit(decision, buyer_side)
    asset, payment = seller_side.asset_amount, buyer_side.payment_amount
    seller, buyer = seller_side.seller, seller_side.buyer
    if decision == Action.COMMIT:
        # The buyer holds the asset on B, backed one to one by the asset locked on A; the
        # seller holds the payment on A, backed by the payment locked on B.
        assert b.stack.bridged_asset.balance_of(buyer) == asset
        assert a.stack.bridged_payment.balance_of(seller) == payment
        assert a.stack.asset.balance_of(a.stack.coordinator.address) == asset
        assert b.stack.payment.balance_of(b.stack.coordinator.address) == payment
        assert b.stack.bridged_asset.contract.functions.totalSupply().call() == asset
        assert a.stack.bridged_payment.contract.functions.totalSupply().call() == payment
    else:
        assert (a.escrow.balances(), b.escrow.balances()) == (before_a, before_b)
        assert b.stack.bridged_asset.contract.functions.totalSupply().call() == 0


def test_a_certificate_for_one_chain_is_refused_by_the_other(fresh: tuple[Side, Side]) -> None:
    a, b = fresh
    asset_leg, payment_leg = legs(a, b, Mode.ASSET_ESCROW, Mode.PAYMENT_ESCROW)
    a.escrow.prepare(asset_leg)
    b.escrow.prepare(payment_leg)
    # Same committee keys, same settlement id: only the config digest tells the targets apart.
    assert a.stack.committee.config.public_keys == b.stack.committee.config.public_keys
    for_a = a.escrow.decide(asset_leg, Action.COMMIT)
    out = b.escrow.apply(for_a, [payment_leg])
    assert out.error == "ConfigDigestMismatch"
    assert b.stack.coordinator.state_of(payment_leg.settlement_id) == State.PREPARED
    # And a certified terms hash of the asset leg does not fit the payment leg.
    cross = b.escrow.certify([(payment_leg.settlement_id, Action.COMMIT, asset_leg.terms_hash())])
    skipped = b.escrow.apply(cross, [payment_leg])
    assert [e.NAME for e in skipped.events] == ["DecisionSkipped", "ReportApplied"]
    assert b.stack.coordinator.state_of(payment_leg.settlement_id) == State.PREPARED
    assert ZERO_ADDRESS not in (asset_leg.asset_token, payment_leg.payment_token)
