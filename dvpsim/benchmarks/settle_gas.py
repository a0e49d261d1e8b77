"""``dvpsim bench settle-gas``: gas per settlement for each settlement mode and batch size.

On a fresh anvil (127.0.0.1, Prague, stopped by PID when the benchmark ends) it deploys the
escrow stack (DvPCoordinator with the BLS verifier, test tokens, bridged tokens) with a
committee of n = 31 (f = 10, t = 21), prepares settlements in every mode, and for batches
of 1, 8, 32 and 128 decisions per report sends one real ``applyReport`` transaction with a
certificate of exactly t signers (the most non-signer keys the contract subtracts). The
figure per settlement is that transaction's gasUsed divided by the batch size: the
certificate verification, the 21,000 base cost and the calldata are included and
amortized over the batch.

What each row's COMMIT does on chain:

* single-chain, on-chain payment (SWAP): asset to the buyer and payment to the seller;
* single-chain, off-chain payment (ASSET_ESCROW): asset to the buyer (the bank pays);
* multi-chain messaging, chain A (ASSET_ESCROW): the asset release, the target row;
* multi-chain messaging, chain B (PAYMENT_ESCROW): the payment release to the seller;
* multi-chain token transfer, chain A (BRIDGE_SELLER_SIDE): the asset stays locked, the
  bridged payment is minted to the seller;
* multi-chain token transfer, chain B (BRIDGE_BUYER_SIDE): the payment stays locked, the
  bridged asset is minted to the buyer;

and two ABORT rows (refunds) for the asset escrow and the swap.

Every account a decision pays (a COMMIT's recipients, an ABORT's refunded parties) is a
fresh account that holds none of the token it receives, so each transfer or mint writes a
zero balance slot (the expensive case, about 17,000 gas more than paying an existing
holder); one extra figure gives the messaging release to existing holders.

Duplicate transmission (late members sending a report that is done already), per batch:
the first copy's gas, the duplicate's (refused before verification with
ReportAlreadyApplied) as a whole transaction and as execution gas (gasUsed less the
21,000 base and the calldata; EIP-7623 makes a calldata-heavy transaction pay at least 10
gas per calldata token, and then the receipt hides the execution, so the execution figure
is the one a ``debug_traceCall`` replay counts), and the same for a copy that is fully
verified, what every duplicate cost before the early refusal (measured as the same
decisions certified again in a new round, which the coordinator has not marked: it also
pays the early check and, its decisions being final, the mark; both under 8,000 gas).

Targets (reported, not asserted): messaging-mode release at 32 decisions per report, n = 31,
under 60,000 gas per settlement; a duplicate's execution at most 5,000 gas.

The benchmark sends a bounded number of transactions (one to six per settlement: about
4,300 in all, 450 with --quick), uses anvil's account impersonation for the fresh parties,
and never runs a chain it did not start.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account

from chain_adapters.build import compile_contracts
from chain_adapters.devstack import EscrowStack, deploy_escrow_stack
from chain_adapters.gas import NONZERO_BYTE_TOKENS, STANDARD_TOKEN_GAS, TX_BASE_GAS
from chain_adapters.localchain import LocalChain, start_chain
from chain_adapters.model import MAX_UINT256, ZERO_ADDRESS, Mode, State, Terms
from chain_adapters.verifier import certificate_calldata
from consensus.report import Action, Decision

__all__ = ["run"]

CHAIN_ID = 31_339
N, F = 31, 10
BATCHES = (1, 8, 32, 128)
QUICK_BATCHES = (1, 32)
TARGET_BATCH = 32
TARGET_GAS = 60_000
DUPLICATE_BATCHES = (1, 8, 32, 128)
QUICK_DUPLICATE_BATCHES = (1, 32)
DUPLICATE_EXECUTION_TARGET = 5_000
ASSET_AMOUNT = 5 * 10**18
PAYMENT_AMOUNT = 500_000_00
ONE_ETH = 10**18


@dataclass(frozen=True)
class Row:
    key: str  # stable name in the JSON
    label: str
    mode: Mode
    action: Action


ROWS = (
    Row("single_chain_onchain_payment", "single-chain, on-chain payment (swap)", Mode.SWAP, Action.COMMIT),
    Row("single_chain_offchain_payment", "single-chain, off-chain payment (asset release)", Mode.ASSET_ESCROW, Action.COMMIT),
    Row("messaging_chain_a_release", "multi-chain messaging, chain A: asset release", Mode.ASSET_ESCROW, Action.COMMIT),
    Row("messaging_chain_b_payment", "multi-chain messaging, chain B: payment release", Mode.PAYMENT_ESCROW, Action.COMMIT),
    Row("token_transfer_chain_a", "token transfer, chain A: lock asset, mint payment", Mode.BRIDGE_SELLER_SIDE, Action.COMMIT),
    Row("token_transfer_chain_b", "token transfer, chain B: lock payment, mint asset", Mode.BRIDGE_BUYER_SIDE, Action.COMMIT),
    Row("abort_asset_escrow", "abort: refund the asset", Mode.ASSET_ESCROW, Action.ABORT),
    Row("abort_swap", "abort: refund both legs of a swap", Mode.SWAP, Action.ABORT),
)  # fmt: skip
QUICK_ROWS = {"messaging_chain_a_release", "single_chain_onchain_payment", "token_transfer_chain_b"}


class _Bench:
    def __init__(self, chain: LocalChain, stack: EscrowStack) -> None:
        self.chain = chain
        self.stack = stack
        self.w3 = stack.w3
        self.co = stack.coordinator
        self.deployer = stack.deployer
        self.transactions = 0
        self.round = 0
        self._reused: dict[str, str] = {}
        chain.rpc("anvil_autoImpersonateAccount", [True])

    def _send(self, sender: str, to: str, data: str) -> None:
        tx_hash = self.chain.rpc("eth_sendTransaction", [{"from": sender, "to": to, "data": data}])
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        self.transactions += 1
        if receipt["status"] != 1:
            raise RuntimeError(f"set-up transaction to {to} from {sender} reverted")

    def funded_party(self, token: Any, amount: int) -> str:
        """A new account holding only ``amount`` of ``token``, approved for the coordinator;
        it signs through anvil's impersonation (auto-impersonation is on)."""
        address: str = Account.create().address
        self.chain.rpc("anvil_setBalance", [address, hex(ONE_ETH)])
        self._send(
            self.deployer, token.address, token.contract.encode_abi("mint", args=[address, amount])
        )
        self._send(
            address,
            token.address,
            token.contract.encode_abi("approve", args=[self.co.address, MAX_UINT256]),
        )
        return address

    def reused_party(self, token: Any) -> str:
        """One long-lived funded account per token, for parties that only pay in (their
        balance is never a recipient's slot, so reusing them changes no figure)."""
        if token.address not in self._reused:
            self._reused[token.address] = self.funded_party(token, 10**30)
        return self._reused[token.address]

    def prepared(self, mode: Mode, count: int, action: Action) -> list[Terms]:
        """``count`` settlements of ``mode``, every local leg locked. Every account that
        ``action`` pays (a COMMIT's recipients, an ABORT's refunded lockers) is fresh: it
        holds none of the token it will receive."""
        stack, deadline = self.stack, int(self.w3.eth.get_block("latest")["timestamp"]) + 86_400
        locks_asset = mode in (Mode.SWAP, Mode.ASSET_ESCROW, Mode.BRIDGE_SELLER_SIDE)
        locks_payment = mode in (Mode.SWAP, Mode.PAYMENT_ESCROW, Mode.BRIDGE_BUYER_SIDE)
        # A locker is paid by the action when it is refunded (ABORT) or receives something
        # on COMMIT (a swap party, a bridge seller or buyer); otherwise it only pays in.
        seller_paid = action == Action.ABORT or mode in (Mode.SWAP, Mode.BRIDGE_SELLER_SIDE)
        buyer_paid = action == Action.ABORT or mode in (Mode.SWAP, Mode.BRIDGE_BUYER_SIDE)
        result = []
        for _ in range(count):
            seller = str(Account.create().address)
            buyer = str(Account.create().address)
            if locks_asset:
                seller = (
                    self.funded_party(stack.asset, ASSET_AMOUNT)
                    if seller_paid
                    else self.reused_party(stack.asset)
                )
            if locks_payment:
                buyer = (
                    self.funded_party(stack.payment, PAYMENT_AMOUNT)
                    if buyer_paid
                    else self.reused_party(stack.payment)
                )
            asset_token, payment_token = stack.asset.address, stack.payment.address
            asset_amount, payment_amount = ASSET_AMOUNT, PAYMENT_AMOUNT
            if mode == Mode.ASSET_ESCROW:
                payment_token, payment_amount = ZERO_ADDRESS, 0
            if mode == Mode.PAYMENT_ESCROW:
                asset_token, asset_amount = ZERO_ADDRESS, 0
            if mode == Mode.BRIDGE_SELLER_SIDE:
                payment_token = stack.bridged_payment.address
            if mode == Mode.BRIDGE_BUYER_SIDE:
                asset_token = stack.bridged_asset.address
            terms = Terms(os.urandom(32), int(mode), seller, buyer, asset_token, asset_amount,
                          payment_token, payment_amount, deadline)  # fmt: skip
            first = seller if locks_asset else buyer
            self._send(
                first,
                self.co.address,
                self.co.contract.encode_abi("createAndLock", args=[terms.as_abi()]),
            )
            if mode == Mode.SWAP:
                self._send(
                    buyer,
                    self.co.address,
                    self.co.contract.encode_abi("lockPayment", args=[terms.as_abi()]),
                )
            result.append(terms)
        states = self.co.states_of([t.settlement_id for t in result])
        if any(s != State.PREPARED for s in states):
            raise RuntimeError(f"set-up left settlements of mode {mode.name} unprepared")
        return result

    def report_call(self, terms: list[Terms], action: Action, round: int) -> str:
        """applyReport's calldata: ``action`` for every settlement, certified in ``round``
        by exactly t signers."""
        committee = self.stack.committee
        report = committee.report(
            [Decision(t.settlement_id, action, t.terms_hash()) for t in terms],
            epoch=1,
            round=round,
        )
        calldata = certificate_calldata(committee.certify(report))
        data: str = self.co.contract.encode_abi(
            "applyReport",
            args=[
                calldata.report,
                calldata.signers,
                calldata.signature,
                [t.as_abi() for t in terms],
            ],
        )
        return data

    def transmit(self, data: str) -> Any:
        """Send applyReport calldata with a fixed gas limit (so a copy that reverts is
        mined, as a late member's is); the receipt."""
        tx = {"from": self.deployer, "to": self.co.address, "data": data, "gas": hex(29_000_000)}
        receipt = self.w3.eth.wait_for_transaction_receipt(
            self.chain.rpc("eth_sendTransaction", [tx])
        )
        self.transactions += 1
        return receipt

    def apply(self, terms: list[Terms], action: Action) -> int:
        """gasUsed of one applyReport carrying ``action`` for every settlement."""
        self.round += 1
        receipt = self.transmit(self.report_call(terms, action, self.round))
        events = self.co.receipt_events(receipt)
        applied = [e for e in events if e.NAME in ("SettlementCommitted", "SettlementAborted")]
        if receipt["status"] != 1 or len(applied) != len(terms):
            raise RuntimeError(f"applyReport applied {len(applied)} of {len(terms)} decisions")
        return int(receipt["gasUsed"])

    def execution_gas(self, data: str, receipt: Any) -> int:
        """The execution gas of a mined applyReport, counted by a debug_traceCall replay
        on the state the transaction left (the receipt's gasUsed hides it under the
        EIP-7623 calldata floor)."""
        call = {"from": self.deployer, "to": self.co.address, "data": data, "gas": hex(29_000_000)}
        options = {"disableStack": True, "disableStorage": True, "enableMemory": False}
        block = int(receipt["blockNumber"])
        if int(receipt["status"]) == 1:
            block -= 1  # replay on the state before it, where it does the same
        steps = self.chain.rpc("debug_traceCall", [call, hex(block), options])["structLogs"]
        return int(steps[0]["gas"]) - int(steps[-1]["gas"]) + int(steps[-1]["gasCost"])

    def duplicate(self, batch: int) -> dict[str, Any]:
        """A messaging release of ``batch`` settlements transmitted twice, and the same
        decisions certified again in a new round (fully verified: what a duplicate paid
        before the early refusal)."""
        terms = self.prepared(Mode.ASSET_ESCROW, batch, Action.COMMIT)
        self.round += 1
        data = self.report_call(terms, Action.COMMIT, self.round)
        first = self.transmit(data)
        copy = self.transmit(data)
        if int(first["status"]) != 1 or int(copy["status"]) != 0:
            raise RuntimeError("a duplicate transmission was not refused")
        self.round += 1
        again = self.report_call(terms, Action.COMMIT, self.round)
        full = self.transmit(again)
        if int(full["status"]) != 1:
            raise RuntimeError("a fully verified duplicate reverted")
        return {
            "batch": batch,
            "first_copy_gas": int(first["gasUsed"]),
            "duplicate_gas": int(copy["gasUsed"]),
            "duplicate_execution_gas": self.execution_gas(data, copy),
            "duplicate_calldata_gas": _calldata_gas(data),
            "full_verification_gas": int(full["gasUsed"]),
            "full_verification_execution_gas": self.execution_gas(again, full),
        }


def _calldata_gas(data: str) -> int:
    """21,000 plus the calldata's standard price (4 gas per token; EIP-7623 floor aside)."""
    raw = bytes.fromhex(data.removeprefix("0x"))
    zeros = raw.count(0)
    return TX_BASE_GAS + STANDARD_TOKEN_GAS * (zeros + NONZERO_BYTE_TOKENS * (len(raw) - zeros))


def _measure(
    bench: _Bench, rows: list[Row], batches: tuple[int, ...], progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    results = []
    for row in rows:
        for batch in batches:
            progress(f"{row.label}: batch of {batch}")
            terms = bench.prepared(row.mode, batch, row.action)
            gas = bench.apply(terms, row.action)
            results.append(
                {
                    "row": row.key,
                    "label": row.label,
                    "mode": row.mode.name,
                    "action": row.action.name,
                    "batch": batch,
                    "gas": gas,
                    "gas_per_settlement": round(gas / batch),
                }  # fmt: skip
            )
    return results


def _existing_holders(bench: _Bench, batch: int) -> int:
    """Messaging release at ``batch`` when every buyer already holds some of the asset."""
    terms = bench.prepared(Mode.ASSET_ESCROW, batch, Action.COMMIT)
    for t in terms:
        bench._send(bench.deployer, bench.stack.asset.address,
                    bench.stack.asset.contract.encode_abi("mint", args=[t.buyer, 1]))  # fmt: skip
    return bench.apply(terms, Action.COMMIT)


def run(quick: bool) -> dict[str, Any]:
    """Measure, print a table, return the figures (see the module docstring)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    batches = QUICK_BATCHES if quick else BATCHES
    rows = [r for r in ROWS if not quick or r.key in QUICK_ROWS]
    artifacts = compile_contracts()
    log_dir = Path(tempfile.mkdtemp(prefix="dvpsim-bench-settle-gas-"))
    with start_chain(CHAIN_ID, log_dir=log_dir) as chain:
        stack = deploy_escrow_stack(chain.web3(), artifacts, n=N, f=F)
        bench = _Bench(chain, stack)
        with console.status("measuring") as status:
            results = _measure(bench, rows, batches, lambda text: status.update(text))
            status.update(f"messaging release to existing holders, batch of {TARGET_BATCH}")
            warm = _existing_holders(bench, TARGET_BATCH)
            duplicates = []
            for batch in QUICK_DUPLICATE_BATCHES if quick else DUPLICATE_BATCHES:
                status.update(f"duplicate transmission, batch of {batch}")
                duplicates.append(bench.duplicate(batch))
        transactions = bench.transactions
        t = stack.committee.config.t

    table = Table(
        title=f"gas per settlement: one applyReport per batch (n={N}, f={F}, t={t} signers; fresh recipients)"
    )
    table.add_column("mode / leg")
    table.add_column("action")
    for batch in batches:
        table.add_column(f"batch {batch}", justify="right")
    for row in rows:
        cells = {r["batch"]: r for r in results if r["row"] == row.key}
        table.add_row(
            row.label, row.action.name, *(f"{cells[b]['gas_per_settlement']:,}" for b in batches)
        )
    console.print(table)
    target = next(
        (r["gas_per_settlement"] for r in results
         if r["row"] == "messaging_chain_a_release" and r["batch"] == TARGET_BATCH),
        None,
    )  # fmt: skip
    met = target is not None and target < TARGET_GAS
    console.print(
        f"messaging release at {TARGET_BATCH} per report: {target:,} gas per settlement "
        f"(target < {TARGET_GAS:,}: {'met' if met else 'NOT met'}); "
        f"to existing holders: {round(warm / TARGET_BATCH):,}"
    )
    dup = Table(
        title="duplicate transmission (messaging release sent twice): gas of the whole "
        "transaction / its execution"
    )
    dup.add_column("batch", justify="right")
    dup.add_column("first copy", justify="right")
    dup.add_column("duplicate: refused early", justify="right")
    dup.add_column("before: fully verified", justify="right")
    for d in duplicates:
        dup.add_row(
            str(d["batch"]),
            f"{d['first_copy_gas']:,}",
            f"{d['duplicate_gas']:,} / {d['duplicate_execution_gas']:,}",
            f"{d['full_verification_gas']:,} / {d['full_verification_execution_gas']:,}",
        )
    console.print(dup)
    worst = max(d["duplicate_execution_gas"] for d in duplicates)
    console.print(
        f"duplicate execution at most {worst:,} gas (target <= {DUPLICATE_EXECUTION_TARGET:,}: "
        f"{'met' if worst <= DUPLICATE_EXECUTION_TARGET else 'NOT met'}); the rest of a "
        "duplicate is the 21,000 base and its calldata"
    )
    console.print(f"{transactions} transactions sent")
    return {
        "chain": {"hardfork": "prague", "anvil": True},
        "committee": {"n": N, "f": F, "t": t, "signers": t},
        "recipients": "fresh accounts (zero balance before)",
        "batches": list(batches),
        "results": results,
        "messaging_release_existing_holders": {
            "batch": TARGET_BATCH,
            "gas": warm,
            "gas_per_settlement": round(warm / TARGET_BATCH),
        },
        "target": {
            "what": f"messaging-mode release, {TARGET_BATCH} decisions per report, n={N}",
            "limit": TARGET_GAS,
            "gas_per_settlement": target,
            "met": met,
        },
        "duplicate_transmission": {
            "what": "messaging release sent twice; 'full_verification' is the same "
            "decisions certified in a new round (what every duplicate paid before)",
            "results": duplicates,
            "target_execution_gas": DUPLICATE_EXECUTION_TARGET,
            "met": worst <= DUPLICATE_EXECUTION_TARGET,
        },
        "transactions": transactions,
    }
