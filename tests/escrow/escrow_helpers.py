"""Helpers of the escrow tests: an escrow stack with funded parties, and one-line ways to
send transactions and see what they did (typed events, or the decoded custom error).

Imported by the test modules as tests.escrow.escrow_helpers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from web3.exceptions import ContractCustomError, ContractLogicError

from chain_adapters.devstack import EscrowStack
from chain_adapters.model import (
    MAX_UINT256,
    ZERO_ADDRESS,
    EscrowEvent,
    Mode,
    Terms,
)
from chain_adapters.verifier import certificate_calldata
from consensus.report import Action, Certificate

FUNDS = 10**24


@dataclass
class Outcome:
    """What one transaction did: its receipt and typed events, or the custom error."""

    receipt: Any = None
    events: list[EscrowEvent] | None = None
    error: str | None = None
    error_args: tuple[Any, ...] = ()

    @property
    def names(self) -> list[str]:
        return [e.NAME for e in self.events or []]


class Escrow:
    """An escrow stack with parties, and one-line helpers for the tests."""

    def __init__(self, stack: EscrowStack) -> None:
        self.stack = stack
        self.w3 = stack.w3
        self.co = stack.coordinator
        accounts = self.w3.eth.accounts
        self.deployer = accounts[0]
        self.seller, self.buyer, self.other, self.transmitter = accounts[1:5]

    # -------------------------------------------------------------- set-up

    def fund(self) -> None:
        for party in (self.seller, self.buyer, self.other):
            for token in (self.stack.asset, self.stack.payment):
                self.call(token.contract.functions.mint(party, FUNDS), self.deployer)
                self.call(token.contract.functions.approve(self.co.address, MAX_UINT256), party)

    def terms(
        self,
        mode: Mode = Mode.ASSET_ESCROW,
        *,
        asset_amount: int = 5 * 10**18,
        payment_amount: int = 1_000_00,
        deadline_in: int = 3600,
        **overrides: Any,
    ) -> Terms:
        asset_token, payment_token = self.stack.asset.address, self.stack.payment.address
        if mode == Mode.BRIDGE_SELLER_SIDE:
            payment_token = self.stack.bridged_payment.address
        if mode == Mode.BRIDGE_BUYER_SIDE:
            asset_token = self.stack.bridged_asset.address
        fields: dict[str, Any] = {
            "settlement_id": os.urandom(32),
            "mode": int(mode),
            "seller": self.seller,
            "buyer": self.buyer,
            "asset_token": asset_token,
            "asset_amount": asset_amount,
            "payment_token": payment_token,
            "payment_amount": payment_amount,
            "deadline": self.now() + deadline_in,
        }
        if mode == Mode.ASSET_ESCROW:
            fields.update(payment_token=ZERO_ADDRESS, payment_amount=0)
        if mode == Mode.PAYMENT_ESCROW:
            fields.update(asset_token=ZERO_ADDRESS, asset_amount=0)
        fields.update(overrides)
        return Terms(**fields)

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    # -------------------------------------------------------------- transactions

    def call(self, fn: Any, sender: str, gas: int | None = None) -> Outcome:
        """Send ``fn`` from ``sender``; a revert comes back as Outcome.error (custom error
        name, decoded from the gas estimate) with nothing sent."""
        tx: dict[str, Any] = {"from": sender}
        if gas is not None:
            tx["gas"] = gas
        try:
            tx_hash = fn.transact(tx)
        except (ContractCustomError, ContractLogicError) as exc:
            data = getattr(exc, "data", None)
            raw = bytes.fromhex(data[2:]) if isinstance(data, str) else b""
            parts = self.co.decode_error_parts(raw)
            if parts is None:
                return Outcome(error=f"undecoded {data!r}")
            return Outcome(error=parts[0], error_args=parts[1])
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        return Outcome(receipt=receipt, events=self.co.receipt_events(receipt))

    def create(self, terms: Terms, sender: str | None = None) -> Outcome:
        return self.call(self.co.contract.functions.create(terms.as_abi()), sender or terms.seller)

    def lock_asset(self, terms: Terms, sender: str | None = None) -> Outcome:
        return self.call(
            self.co.contract.functions.lockAsset(terms.as_abi()), sender or terms.seller
        )

    def lock_payment(self, terms: Terms, sender: str | None = None) -> Outcome:
        return self.call(
            self.co.contract.functions.lockPayment(terms.as_abi()), sender or terms.buyer
        )

    def prepare(self, terms: Terms) -> None:
        """Create the settlement and lock every leg this mode holds here."""
        assert self.create(terms).error is None
        if terms.mode in (Mode.SWAP, Mode.ASSET_ESCROW, Mode.BRIDGE_SELLER_SIDE):
            assert self.lock_asset(terms).error is None
        if terms.mode in (Mode.SWAP, Mode.PAYMENT_ESCROW, Mode.BRIDGE_BUYER_SIDE):
            assert self.lock_payment(terms).error is None

    def certify(
        self,
        decisions: Sequence[tuple[bytes, Action, bytes]],
        signers: Sequence[int] | None = None,
        epoch: int = 1,
        round: int = 1,
    ) -> Certificate:
        committee = self.stack.committee
        return committee.certify(committee.report(decisions, epoch, round), signers)

    def decide(self, terms: Terms, action: Action) -> Certificate:
        return self.certify([(terms.settlement_id, action, terms.terms_hash())])

    def apply(
        self,
        cert: Certificate,
        terms: Sequence[Terms],
        *,
        strict: bool = False,
        gas: int | None = None,
    ) -> Outcome:
        c = certificate_calldata(cert)
        fn = getattr(self.co.contract.functions, "applyReportStrict" if strict else "applyReport")
        return self.call(
            fn(c.report, c.signers, c.signature, [t.as_abi() for t in terms]), self.transmitter, gas
        )

    def balances(self, holders: Sequence[str] | None = None) -> dict[tuple[str, str], int]:
        holders = holders or [self.seller, self.buyer, self.other, self.co.address]
        tokens = [
            self.stack.asset,
            self.stack.payment,
            self.stack.bridged_asset,
            self.stack.bridged_payment,
        ]
        return {(t.address, h): t.balance_of(h) for t in tokens for h in holders}
