"""Helpers of the escrow tests: an escrow stack with funded parties, and one-line ways to
send transactions and see what they did (typed events, or the decoded custom error).

Imported by the test modules as tests.escrow.escrow_helpers."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils.address import to_checksum_address
from web3.exceptions import ContractCustomError, ContractLogicError

from chain_adapters.build import read_sources
from chain_adapters.devstack import EscrowStack
from chain_adapters.gas import (
    Charges,
    meter_apply_report,
    meter_approve,
    meter_create,
    meter_create_and_lock,
    meter_lock_asset,
    meter_lock_payment,
    meter_mint,
    meter_reclaim_after_deadline,
    meter_transfer,
)
from chain_adapters.model import (
    MAX_UINT256,
    ZERO_ADDRESS,
    EscrowEvent,
    EscrowModel,
    EscrowRevert,
    Mode,
    Terms,
)
from chain_adapters.verifier import certificate_calldata
from consensus.report import Action, Certificate

FUNDS = 10**24


def stack_terms(
    stack: EscrowStack, mode: Mode, parties: dict[str, Any], overrides: dict[str, Any]
) -> Terms:
    """Terms of one settlement on ``stack`` in ``mode``: ``parties`` (settlement_id,
    seller, buyer, the two amounts, deadline), the stack's asset and payment tokens (the
    bridged twin on a bridge leg's far side), the leg a mode does not escrow zeroed, then
    ``overrides`` on top (any field)."""
    asset_token, payment_token = stack.asset.address, stack.payment.address
    if mode == Mode.BRIDGE_SELLER_SIDE:
        payment_token = stack.bridged_payment.address
    if mode == Mode.BRIDGE_BUYER_SIDE:
        asset_token = stack.bridged_asset.address
    fields = {
        **parties,
        "mode": int(mode),
        "asset_token": asset_token,
        "payment_token": payment_token,
    }
    if mode == Mode.ASSET_ESCROW:
        fields.update(payment_token=ZERO_ADDRESS, payment_amount=0)
    if mode == Mode.PAYMENT_ESCROW:
        fields.update(asset_token=ZERO_ADDRESS, asset_amount=0)
    fields.update(overrides)
    return Terms(**fields)


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
        self.rounds = 100  # rounds of `decide`, above those the tests choose themselves

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
        parties = {
            "settlement_id": os.urandom(32),
            "seller": self.seller,
            "buyer": self.buyer,
            "asset_amount": asset_amount,
            "payment_amount": payment_amount,
            "deadline": self.now() + deadline_in,
        }
        return stack_terms(self.stack, mode, parties, overrides)

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
        """One decision, certified in a round of its own (a committee certifies one report
        per round: the coordinator refuses a second one for a round it has done)."""
        self.rounds += 1
        return self.certify([(terms.settlement_id, action, terms.terms_hash())], round=self.rounds)

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


# ----------------------------------------------------------------------------- gas twin


#: The Solidity sources whose bytecode chain_adapters/gas.py prices.
GAS_PRICED_SOURCES = (
    "DvPCoordinator.sol",
    "OracleVerifier.sol",
    "Tokens.sol",
    "lib/BLS12381.sol",
    "lib/CommitteeKeyTable.sol",
    "lib/ReportCodec.sol",
)


def contract_sources_digest() -> str:
    """sha256 (first 16 hex digits) of the sources the gas table was calibrated on."""
    sources = read_sources()
    digest = hashlib.sha256()
    for name in GAS_PRICED_SOURCES:
        digest.update(name.encode() + b"\0" + sources[name].encode() + b"\0")
    return digest.hexdigest()[:16]


@dataclass
class ChainClock:
    """The timestamp of the next block of a chain, shared by every twin on that chain."""

    now: int


@dataclass(frozen=True)
class GasSample:
    """One transaction run on the chain and on the model: what the table charges for it
    and what the receipt says it used."""

    call: str  # "createAndLock", "applyReport", "token.mint", ...
    kind: str  # the call and how it ended ("applyReport n=16 batch=8", "lockAsset: revert ...")
    charges: Charges
    gas_used: int
    #: Execution gas of a reverted call, from a trace (its gasUsed is often the EIP-7623
    #: floor, which hides the execution); None otherwise.
    traced_execution: int | None = None


class GasTwin:
    """One escrow stack on anvil and an EscrowModel of it, driven in lockstep: every call
    runs on both at the same timestamp, their outcomes must agree (the same events, or the
    same custom error), and each call yields a :class:`GasSample`.

    Parties are fresh addresses drawn from ``rng`` (so a seed gives the same accounts),
    given ether and sending through anvil's impersonation. Transactions carry an explicit
    gas limit, so calls that revert are mined and have a gasUsed too."""

    PARTY_GAS = 1_000_000
    REPORT_GAS = 29_000_000

    def __init__(
        self,
        chain: Any,
        stack: EscrowStack,
        rng: Any,
        *,
        unsafe: bool = False,
        admission_floor: int = 0,
        clock: ChainClock | None = None,
        trace_reverts: bool = False,
    ) -> None:
        self.chain = chain
        self.trace_reverts = trace_reverts
        self.clock = clock or ChainClock(int(stack.w3.eth.get_block("latest")["timestamp"]))
        self.stack = stack
        self.w3 = stack.w3
        self.co = stack.coordinator
        self.rng = rng
        self.deployer = stack.deployer
        self.transmitter = self.w3.eth.accounts[4]
        self.model = EscrowModel(
            self.co.address,
            unsafe_self_refund_after_deadline=unsafe,
            admission_floor=admission_floor,
        )
        for token, minter in (
            (stack.asset, stack.deployer),
            (stack.payment, stack.deployer),
            (stack.bridged_asset, self.co.address),
            (stack.bridged_payment, self.co.address),
        ):
            ledger = self.model.add_token(token.address, minter)
            supply = token.contract.functions.totalSupply().call()
            assert supply == 0, "the twin starts from a freshly deployed stack"
            del ledger
        chain.rpc("anvil_autoImpersonateAccount", [True])
        self.samples: list[GasSample] = []

    # -------------------------------------------------------------- accounts and time

    @property
    def now(self) -> int:
        return self.clock.now

    @now.setter
    def now(self, value: int) -> None:
        self.clock.now = value

    def new_party(self) -> str:
        address = str(to_checksum_address("0x" + self.rng.randbytes(20).hex()))
        self.chain.rpc("anvil_setBalance", [address, hex(10**21)])
        return address

    def funded_party(self, *tokens: Any, amount: int = FUNDS) -> str:
        """A fresh party holding ``amount`` of each token, the coordinator approved for
        all of it."""
        party = self.new_party()
        for token in tokens:
            self.mint(token, party, amount)
            self.approve(token, party, MAX_UINT256)
        return party

    def terms(
        self,
        mode: Mode,
        seller: str,
        buyer: str,
        *,
        asset_amount: int = 5 * 10**18,
        payment_amount: int = 1_000_00,
        deadline_in: int = 3600,
        **overrides: Any,
    ) -> Terms:
        parties = {
            "settlement_id": self.rng.randbytes(32),
            "seller": seller,
            "buyer": buyer,
            "asset_amount": asset_amount,
            "payment_amount": payment_amount,
            "deadline": self.now + deadline_in,
        }
        return stack_terms(self.stack, mode, parties, overrides)

    # -------------------------------------------------------------- lockstep

    def _run(
        self,
        call: str,
        to: str,
        data: bytes,
        sender: str,
        gas: int,
        model_op: Callable[[int], list[EscrowEvent]],
        meter: Callable[[Any], Charges],
        label: str = "",
    ) -> Any:
        """Send on chain and run on the model at the same timestamp; both must agree.
        Returns the model's events, or the EscrowRevert it raised."""
        self.now += 1
        self.chain.rpc("evm_setNextBlockTimestamp", [self.now])
        tx = {"from": sender, "to": to, "data": "0x" + data.hex(), "gas": hex(gas)}
        receipt = self._receipt(self.chain.rpc("eth_sendTransaction", [tx]))
        outcome: Any
        try:
            outcome = model_op(self.now)
        except EscrowRevert as exc:
            outcome = exc
        if receipt["status"] == 1:
            assert not isinstance(outcome, EscrowRevert), (call, "chain ok, model", outcome)
            chain_events = [e.normalized() for e in self.co.receipt_events(receipt)]
            assert chain_events == [e.normalized() for e in outcome], call
            kind = call
        else:
            call_tx = {k: v for k, v in tx.items() if k != "gas"}
            raw = self.w3.provider.make_request("eth_call", [call_tx, hex(receipt["blockNumber"])])
            data_hex = raw.get("error", {}).get("data", "0x")
            parts = self.co.decode_error_parts(bytes.fromhex(data_hex[2:]))
            assert parts is not None, f"{call}: undecodable revert {data_hex}"
            assert isinstance(outcome, EscrowRevert), (call, "chain reverted", parts, "model ok")
            assert parts[0] == outcome.error, (call, parts, outcome)
            kind = f"{call}: revert {outcome.error}"
        charges = meter(outcome)
        traced = None
        if receipt["status"] == 0 and self.trace_reverts:
            traced = self._traced_execution(tx, receipt["blockNumber"])
        sample = GasSample(call, f"{kind}{label}", charges, int(receipt["gasUsed"]), traced)
        self.samples.append(sample)
        return outcome

    def _traced_execution(self, tx: dict[str, Any], block: int) -> int:
        """Execution gas of a reverted transaction, replayed with debug_traceCall on the
        state it left (a revert leaves the state as it was)."""
        options = {"disableStack": True, "disableStorage": True, "enableMemory": False}
        steps = self.chain.rpc("debug_traceCall", [tx, hex(block), options])["structLogs"]
        return int(steps[0]["gas"]) - int(steps[-1]["gas"]) + int(steps[-1]["gasCost"])

    def _receipt(self, tx_hash: str) -> dict[str, Any]:
        """The receipt by raw JSON-RPC, polled every 2 ms (web3's wait sleeps 100 ms when
        a receipt is not there at once, which made busy-machine runs ten times slower)."""
        while True:
            raw = self.chain.rpc("eth_getTransactionReceipt", [tx_hash])
            if raw is not None:
                break
            time.sleep(0.002)
        logs = [
            {
                "address": to_checksum_address(log["address"]),
                "topics": log["topics"],
                "data": log["data"],
            }
            for log in raw["logs"]
        ]
        return {
            "status": int(raw["status"], 16),
            "gasUsed": int(raw["gasUsed"], 16),
            "blockNumber": int(raw["blockNumber"], 16),
            "logs": logs,
        }

    def _coordinator(
        self, function: str, terms: Terms, sender: str, model_op: Any, meter: Any
    ) -> Any:
        data = self.co.calls.encode(function, [terms.as_abi()])
        return self._run(
            function,
            self.co.address,
            data,
            sender,
            self.PARTY_GAS,
            lambda now: model_op(sender, terms, now),
            lambda outcome: meter(self.model, sender, terms, outcome),
        )

    def create(self, terms: Terms, sender: str) -> Any:
        return self._coordinator("create", terms, sender, self.model.create, meter_create)

    def create_and_lock(self, terms: Terms, sender: str) -> Any:
        return self._coordinator(
            "createAndLock", terms, sender, self.model.create_and_lock, meter_create_and_lock
        )

    def lock_asset(self, terms: Terms, sender: str | None = None) -> Any:
        return self._coordinator(
            "lockAsset", terms, sender or terms.seller, self.model.lock_asset, meter_lock_asset
        )

    def lock_payment(self, terms: Terms, sender: str | None = None) -> Any:
        return self._coordinator(
            "lockPayment",
            terms,
            sender or terms.buyer,
            self.model.lock_payment,
            meter_lock_payment,
        )

    def reclaim(self, terms: Terms, sender: str | None = None) -> Any:
        return self._coordinator(
            "reclaimAfterDeadline",
            terms,
            sender or terms.seller,
            self.model.reclaim_after_deadline,
            meter_reclaim_after_deadline,
        )

    def mint(self, token: Any, to: str, amount: int, sender: str | None = None) -> Any:
        sender = sender or self.deployer
        return self._run(
            "token.mint",
            token.address,
            token.calls.encode("mint", [to, amount]),
            sender,
            self.PARTY_GAS,
            lambda now: self.model.mint(token.address, sender, to, amount),
            lambda outcome: meter_mint(self.model, token.address, sender, to, amount, outcome),
        )

    def approve(self, token: Any, owner: str, amount: int) -> Any:
        spender = self.co.address
        previous = self.model.token(token.address).allowance(owner, spender)
        return self._run(
            "token.approve",
            token.address,
            token.calls.encode("approve", [spender, amount]),
            owner,
            self.PARTY_GAS,
            lambda now: self.model.approve(token.address, owner, spender, amount),
            lambda outcome: meter_approve(
                self.model, token.address, owner, spender, amount, outcome, previous=previous
            ),
        )

    def transfer(self, token: Any, sender: str, to: str, amount: int) -> Any:
        return self._run(
            "token.transfer",
            token.address,
            token.calls.encode("transfer", [to, amount]),
            sender,
            self.PARTY_GAS,
            lambda now: self.model.transfer(token.address, sender, to, amount),
            lambda outcome: meter_transfer(self.model, token.address, sender, to, amount, outcome),
        )

    def certify(
        self,
        decisions: Sequence[tuple[bytes, Action, bytes]],
        signers: Sequence[int] | None = None,
        round: int = 1,
        digest: bytes | None = None,
    ) -> Certificate:
        committee = self.stack.committee
        report = committee.report(decisions, epoch=1, round=round, digest=digest)
        return committee.certify(report, signers)

    def apply(
        self, cert: Certificate, terms: Sequence[Terms], *, strict: bool = False, label: str = ""
    ) -> Any:
        committee = self.stack.committee.config
        calldata = certificate_calldata(cert)
        function = "applyReportStrict" if strict else "applyReport"
        data = self.co.calls.encode(
            function,
            [calldata.report, calldata.signers, calldata.signature, [t.as_abi() for t in terms]],
        )
        return self._run(
            function,
            self.co.address,
            data,
            self.transmitter,
            self.REPORT_GAS,
            lambda now: self.model.apply_certificate(
                cert, committee, list(terms), strict=strict, now=now
            ),
            lambda outcome: meter_apply_report(
                self.model,
                cert,
                terms,
                outcome,
                committee_n=committee.n,
                strict=strict,
                sender=self.transmitter,
            ),
            label,
        )
