"""A simulated EVM chain: the escrow model (``chain_adapters.model``) in blocks.

``SimChain`` holds one DvP coordinator and its tokens as an :class:`EscrowModel` and
orders every call into blocks, as a node (anvil) would:

- blocks: with ``block_time`` > 0 one block every ``block_time`` seconds carrying the
  waiting transactions in arrival order; with ``block_time`` = 0 (anvil's automine) each
  transaction is mined at once in a block of its own. Block timestamps are whole seconds
  of the chain's clock (``genesis_time`` + virtual seconds), never going back, equal
  timestamps allowed (anvil does the same);
- transactions: a call of a party or of a node's transmitter. One that would revert is
  refused before it is mined, as the senders' gas estimate refuses it on a real chain
  (no gas, no block); the rest are executed on the model at their block's timestamp;
- gas: from ``chain_adapters.gas`` (a table calibrated against the real contracts on
  anvil, not an EVM); the chain labels it as such;
- confirmations and reorgs: each node sees the chain through a :class:`ChainView`, which
  delivers a block's events once the block has the view's confirmations and retracts
  delivered events whose block left the canonical chain (the rules of
  ``chain_adapters.watcher``). :meth:`reorg` replaces the newest ``depth`` blocks with
  empty ones; the replaced blocks' transactions do not come back (a competing branch
  without them won). The model is rebuilt by replaying the remaining blocks.

This module must never read the wall clock or a random generator: time and order come
from the caller (the simulated world).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eth_utils.address import to_checksum_address

from chain_adapters.gas import GasTable
from chain_adapters.model import (
    EscrowEvent,
    EscrowModel,
    EscrowRevert,
    ReportApplied,
    State,
    decision_pending,
)
from consensus.report import CommitteeConfig, Report

__all__ = ["Block", "Call", "ChainView", "Receipt", "SimChain"]


@dataclass(frozen=True, slots=True)
class Call:
    """One transaction: ``sender`` calls ``function`` with ``args`` (model arguments)."""

    sender: str
    function: str  # create, create_and_lock, lock_asset, lock_payment, reclaim_after_deadline,
    # apply_certificate, mint, approve
    args: tuple[Any, ...]
    label: str = ""  # what the caller calls it in the history ("lock", "release", ...)


@dataclass(frozen=True, slots=True)
class Receipt:
    tx_hash: bytes
    block_number: int
    block_time: int
    ok: bool
    gas_used: int
    events: tuple[EscrowEvent, ...]
    error: str = ""  # the revert's custom error, when refused


@dataclass(slots=True)
class Block:
    number: int
    hash: bytes
    timestamp: int
    calls: list[tuple[bytes, Call]] = field(default_factory=list)  # (tx hash, call) in order
    receipts: list[Receipt] = field(default_factory=list)


@dataclass(slots=True)
class _Pending:
    tx_hash: bytes
    call: Call
    on_receipt: Callable[[Receipt], None] | None


class SimChain:
    """One chain (module docstring). ``setup`` builds the model's starting state (tokens,
    balances, approvals) again whenever a reorg replays the chain."""

    def __init__(
        self,
        leg: str,
        chain_id: int,
        *,
        coordinator: str,
        committee: CommitteeConfig,
        block_time: float,
        genesis_time: int,
        setup: Callable[[EscrowModel], None],
        unsafe_self_refund: bool = False,
        admission_floor: int = 0,
        crypto: Any = None,
    ) -> None:
        self.leg = leg
        self.chain_id = chain_id
        # Checksummed, as the model writes every event's emitter (watchers match on it).
        self.coordinator = to_checksum_address(coordinator)
        self.committee = committee
        self.block_time = block_time
        self.genesis_time = genesis_time
        self.unsafe_self_refund = unsafe_self_refund
        self.admission_floor = admission_floor
        self._setup = setup
        self._crypto_kwargs: dict[str, Any] = {} if crypto is None else {"crypto": crypto}
        self.gas = GasTable()
        self.model = self.fresh_model()
        self.blocks: list[Block] = [Block(0, self._block_hash(0, b"genesis"), genesis_time)]
        self._mempool: list[_Pending] = []
        self._tx_count = 0
        self._branch = 0  # bumps on every reorg so new blocks get new hashes
        self.forks: list[int] = []  # per reorg: the number of the newest block it kept

    def fresh_model(self) -> EscrowModel:
        """The chain's starting state: a new model with the setup applied."""
        model = EscrowModel(
            self.coordinator,
            unsafe_self_refund_after_deadline=self.unsafe_self_refund,
            admission_floor=self.admission_floor,
        )
        self._setup(model)
        return model

    def _block_hash(self, number: int, salt: bytes) -> bytes:
        return hashlib.sha256(
            self.chain_id.to_bytes(8, "big") + number.to_bytes(8, "big") + salt
        ).digest()

    # ------------------------------------------------------------------ reading

    @property
    def head(self) -> Block:
        return self.blocks[-1]

    def timestamp_at(self, now: float) -> int:
        """The timestamp a block mined at virtual time ``now`` gets."""
        return max(self.head.timestamp, self.genesis_time + int(now))

    def state_of(self, settlement_id: bytes) -> State:
        return self.model.state_of(settlement_id)

    def pending_decisions(self, report: Report) -> int:
        """How many of ``report``'s decisions would still change state here (the
        transmitters' last check before they send; ``CoordinatorBinding.pending_decisions``)."""
        model = self.model
        return sum(
            decision_pending(
                decision,
                model.terms_hash_of(decision.settlement_id),
                model.state_of(decision.settlement_id),
            )
            for decision in report.decisions
        )

    # ------------------------------------------------------------------ transactions

    def submit(self, call: Call, on_receipt: Callable[[Receipt], None] | None = None) -> bytes:
        """Queue a transaction for the next block; ``on_receipt`` is called when it is mined
        or refused. Returns its hash."""
        self._tx_count += 1
        tx_hash = hashlib.sha256(
            b"tx" + self.chain_id.to_bytes(8, "big") + self._tx_count.to_bytes(8, "big")
        ).digest()
        self._mempool.append(_Pending(tx_hash, call, on_receipt))
        return tx_hash

    @property
    def automine(self) -> bool:
        return self.block_time <= 0

    def has_pending(self) -> bool:
        return bool(self._mempool)

    def mine(self, now: float) -> Block | None:
        """Mine one block at virtual time ``now`` with every waiting transaction. None when
        every waiting transaction was refused (no block, as with a refused estimate)."""
        pending, self._mempool = self._mempool, []
        number = self.head.number + 1
        block = Block(
            number,
            self._block_hash(number, self._branch.to_bytes(4, "big")),
            self.timestamp_at(now),
        )
        callbacks: list[tuple[Callable[[Receipt], None], Receipt]] = []
        for item in pending:
            receipt = self._execute(block, item.tx_hash, item.call)
            if receipt.ok:
                block.calls.append((item.tx_hash, item.call))
                block.receipts.append(receipt)
            if item.on_receipt is not None:
                callbacks.append((item.on_receipt, receipt))
        mined = not pending or bool(block.calls)
        if mined:
            self.blocks.append(block)
        for callback, receipt in callbacks:
            callback(receipt)
        return block if mined else None

    def _execute(self, block: Block, tx_hash: bytes, call: Call) -> Receipt:
        model = self.model
        pending = self.gas.before(model, call.function, call.sender, call.args)
        try:
            events = self._apply(model, call, block.timestamp)
        except EscrowRevert as exc:
            # Refused as the sender's gas estimate refuses it: never mined, no gas.
            return Receipt(tx_hash, block.number, block.timestamp, False, 0, (), exc.error)
        gas = self.gas.gas_used(pending, events, committee_n=self.committee.n)
        return Receipt(tx_hash, block.number, block.timestamp, True, gas, tuple(events))

    def _apply(self, model: EscrowModel, call: Call, now: int) -> list[EscrowEvent]:
        fn, args, sender = call.function, call.args, call.sender
        if fn == "apply_certificate":
            certificate, terms = args
            return model.apply_certificate(
                certificate, self.committee, terms, now=now, **self._crypto_kwargs
            )
        if fn in ("create", "create_and_lock", "lock_asset", "lock_payment"):
            (terms,) = args
            return list(getattr(model, fn)(sender, terms, now))
        if fn == "reclaim_after_deadline":
            (terms,) = args
            return model.reclaim_after_deadline(sender, terms, now)
        if fn == "mint":
            token, to, amount = args
            return model.mint(token, sender, to, amount)
        if fn == "approve":
            token, spender, amount = args
            return model.approve(token, sender, spender, amount)
        raise ValueError(f"unknown call {fn!r}")

    # ------------------------------------------------------------------ reorgs

    def reorg(self, depth: int, now: float) -> list[bytes]:
        """Replace the newest ``depth`` blocks by as many empty blocks plus one (the longer
        branch that wins); their transactions are gone. Returns the dropped tx hashes."""
        if not 1 <= depth < len(self.blocks):
            raise ValueError(f"reorg depth {depth} outside 1..{len(self.blocks) - 1}")
        dropped = [tx for block in self.blocks[-depth:] for tx, _ in block.calls]
        kept = self.blocks[:-depth]
        self._branch += 1
        self.forks.append(kept[-1].number)
        self.model = self.fresh_model()
        for block in kept[1:]:
            for _tx, call in block.calls:
                self._apply(self.model, call, block.timestamp)
        self.blocks = kept
        base = kept[-1].timestamp
        for _ in range(depth + 1):
            number = self.head.number + 1
            block = Block(
                number,
                self._block_hash(number, self._branch.to_bytes(4, "big")),
                max(base, self.genesis_time + int(now)),
            )
            self.blocks.append(block)
        return dropped

    # ------------------------------------------------------------------ views

    def view(self, confirmations: int) -> ChainView:
        return ChainView(self, max(1, confirmations))

    def report_gas(self) -> list[int]:
        """Gas of every canonical transaction that applied a report."""
        return [
            receipt.gas_used
            for block in self.blocks
            for receipt in block.receipts
            if any(isinstance(e, ReportApplied) for e in receipt.events)
        ]

    def events(self) -> list[tuple[Block, Receipt, EscrowEvent]]:
        return [
            (block, receipt, event)
            for block in self.blocks
            for receipt in block.receipts
            for event in receipt.events
        ]


class ChainView:
    """One node's watcher on a chain: delivers each coordinator event once its block has
    ``confirmations`` confirmations (1: as soon as it is in a block), and retracts, newest
    first, delivered events whose block left the canonical chain."""

    def __init__(self, chain: SimChain, confirmations: int) -> None:
        self.chain = chain
        self.confirmations = confirmations
        # ((block number, index in the block), event), in order
        self._delivered: list[tuple[tuple[int, int], EscrowEvent]] = []
        self._scanned = 0  # highest block number whose events were delivered
        self._forks_seen = len(chain.forks)

    def poll(self) -> tuple[list[tuple[EscrowEvent, bool, tuple[int, int]]], int]:
        """(events delivered or retracted since the last poll, as (event, retracted,
        (block number, index in the block))), and the newest block's timestamp."""
        chain = self.chain
        out: list[tuple[EscrowEvent, bool, tuple[int, int]]] = []
        for fork in chain.forks[self._forks_seen :]:
            # Every block above the fork was replaced: retract its events, newest first.
            keep = len(self._delivered)
            while keep and self._delivered[keep - 1][0][0] > fork:
                keep -= 1
            out.extend((event, True, at) for at, event in reversed(self._delivered[keep:]))
            del self._delivered[keep:]
            self._scanned = min(self._scanned, fork)
        self._forks_seen = len(chain.forks)
        blocks = chain.blocks
        confirmed = chain.head.number - self.confirmations + 1
        for number in range(self._scanned + 1, confirmed + 1):
            index = 0
            for receipt in blocks[number].receipts:
                for event in receipt.events:
                    if event.emitter == chain.coordinator:
                        self._delivered.append(((number, index), event))
                        out.append((event, False, (number, index)))
                    index += 1
        self._scanned = max(self._scanned, confirmed)
        return out, chain.head.timestamp
