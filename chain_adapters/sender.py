"""Send transactions to an EVM chain from a local key, and see them mined.

A node's transmitter (and the runners and benchmarks) use one :class:`TransactionSender`
per key and chain. :meth:`TransactionSender.send` does, in order:

1. **idempotency**: if the caller's ``already_done()`` reads on-chain that the work is done
   (e.g. every decision of a certified report is already applied), nothing is sent;
2. **gas**: ``eth_estimateGas`` with a margin; an estimate that reverts is not sent but
   raised as :class:`TransactionReverted` with the decoded custom error, in one line;
3. **fees**: EIP-1559, ``maxFeePerGas = 2 * baseFee + tip`` (the node's suggested tip is
   reused for ``TIP_QUOTE_TTL`` seconds);
4. **nonce**: a local counter read once from the chain's pending count and advanced per
   send; resynchronised after "nonce too low", after an outage (the endpoint may have
   restarted with another history) and when the chain's nonce falls behind ours (a lost
   transaction, a gap);
5. **wait and bump**: the receipt is polled; a transaction still unmined after
   ``bump_after_blocks`` new blocks is replaced by the same nonce with fees raised by
   ``bump_ratio`` (at least the 10% nodes require), up to ``max_fee_per_gas``; if the node
   forgot it (restart), the signed bytes are broadcast again;
6. **retries**: every RPC call retries transient failures (see ``chain_adapters/evm.py``);
   a send that keeps failing ends in a one-line :class:`chain_adapters.evm.RpcError`.

Sends through one sender are serialised (one transaction in flight per key), which keeps
nonce handling simple and is enough for a transmitter that batches many decisions per
report. This module never decides what to send, never holds more than one key, and never
logs or prints the key.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    TransactionNotFound,
    Web3RPCError,
)

from chain_adapters.evm import Rpc, RpcError
from chain_adapters.model import checksum_address

__all__ = [
    "FeePolicy",
    "SendResult",
    "TransactionReverted",
    "TransactionSender",
    "TransactionTimeout",
    "TxRequest",
]


TIP_QUOTE_TTL = 5.0  # seconds a node's suggested priority fee is reused
# Polls for a receipt after the chain counted our nonce without serving one (a lag).
RECEIPT_LAG_POLLS = 20


class TransactionReverted(RpcError):
    """The transaction reverts (at estimation or on chain); ``error`` is the decoded custom
    error name when the ABI is known, ``data`` the raw revert data."""

    def __init__(self, message: str, error: str = "", data: bytes = b"") -> None:
        super().__init__(message)
        self.error = error
        self.data = data


class TransactionTimeout(RpcError):
    """The transaction was not mined within the sender's limits."""


@dataclass(frozen=True, slots=True)
class TxRequest:
    """What to send: the sender fills in nonce, gas and fees."""

    to: str
    data: bytes
    value: int = 0
    gas: int | None = None  # None: estimate
    label: str = ""  # for error messages ("applyReport", "lockAsset", ...)

    def __post_init__(self) -> None:
        # Cached: the same few contracts are called again and again (EIP-55 hashes).
        object.__setattr__(self, "to", checksum_address(self.to))


@dataclass(frozen=True, slots=True)
class FeePolicy:
    priority_fee: int | None = None  # wei; None: ask the node (eth_maxPriorityFeePerGas)
    base_fee_multiplier: int = 2
    bump_ratio: float = 1.125  # geth and anvil require >= 1.10 for a replacement
    bump_after_blocks: int = 3
    max_fee_per_gas: int = 500 * 10**9  # never bid above this


@dataclass(frozen=True, slots=True)
class SendResult:
    tx_hash: bytes | None  # None when skipped
    receipt: dict[str, Any] | None
    skipped: bool = False  # already_done() was true: nothing sent
    bumps: int = 0
    rebroadcasts: int = 0
    nonce: int | None = None

    @property
    def gas_used(self) -> int:
        return int(self.receipt["gasUsed"]) if self.receipt else 0


@dataclass
class _InFlight:
    request: TxRequest
    nonce: int
    gas: int
    max_fee: int
    tip: int
    sent_block: int
    raw: bytes = b""
    hashes: list[bytes] = field(default_factory=list)
    bumps: int = 0
    rebroadcasts: int = 0


def _fee_too_low(message: str) -> bool:
    return any(
        phrase in message
        for phrase in ("underpriced", "base fee", "fee too low", "feecap", "fee cap")
    )


def _rpc_message(exc: BaseException) -> str:
    if isinstance(exc, Web3RPCError):
        response = getattr(exc, "rpc_response", None) or {}
        error = response.get("error") if isinstance(response, dict) else None
        if isinstance(error, dict) and "message" in error:
            return str(error["message"]).lower()
        return str(getattr(exc, "message", exc)).lower()
    return str(exc).lower()


class TransactionSender:
    """Signs with one local key, for one chain (the :class:`Rpc`'s expected chain id)."""

    def __init__(
        self,
        rpc: Rpc,
        private_key: str,
        *,
        fees: FeePolicy | None = None,
        gas_margin: float = 1.25,
        revert_decoder: Callable[[bytes], str] | None = None,
        poll_interval: float = 0.05,
        timeout: float = 120.0,
        fee_quote_ttl: float = 0.0,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rpc = rpc
        self._account = Account.from_key(private_key)
        self.address: str = self._account.address
        self.fees = fees or FeePolicy()
        self.gas_margin = gas_margin
        self.revert_decoder = revert_decoder
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.sleep = sleep or rpc.sleep
        self.clock = clock
        self._lock = threading.Lock()
        self._nonce: int | None = None
        self._outages_seen = rpc.outages
        self._tip_quote: tuple[float, int] | None = None  # (when, wei)
        # A sender that sends many transactions a second (a load generator) may reuse the
        # latest block's fees for fee_quote_ttl seconds; 0 reads them for every send.
        self.fee_quote_ttl = fee_quote_ttl
        self._fee_quote: tuple[float, tuple[int, int, int]] | None = None

    # ------------------------------------------------------------------ public

    def send(
        self,
        request: TxRequest,
        *,
        already_done: Callable[[], bool] | None = None,
        wait: bool = True,
    ) -> SendResult:
        """Send ``request`` and (unless ``wait`` is false) wait for its receipt."""
        with self._lock:
            if already_done is not None and already_done():
                return SendResult(tx_hash=None, receipt=None, skipped=True)
            flight = self._submit(request)
            if not wait:
                return SendResult(flight.hashes[-1], None, nonce=flight.nonce)
            return self._wait(flight, already_done)

    def resync_nonce(self) -> int:
        """Forget the local nonce and read the chain's pending count again."""
        with self._lock:
            self._nonce = None
            return self._next_nonce()

    # ------------------------------------------------------------------ steps

    def _next_nonce(self) -> int:
        if self.rpc.outages != self._outages_seen:
            # The endpoint was down: it may be a restarted chain with another history.
            self._outages_seen = self.rpc.outages
            self._nonce = None
        if self._nonce is None:
            self._nonce = int(
                self.rpc.call(
                    "eth_getTransactionCount",
                    lambda: self.rpc.eth.get_transaction_count(self.address, "pending"),
                )
            )
        return self._nonce

    def estimate(self, request: TxRequest) -> int:
        """The gas limit a send of ``request`` would use (estimate times the margin);
        TransactionReverted if it would revert."""
        with self._lock:
            return self._estimate(request)

    def _estimate(self, request: TxRequest) -> int:
        if request.gas is not None:
            return request.gas
        tx = {"from": self.address, "to": request.to, "data": request.data, "value": request.value}
        try:
            estimate = self.rpc.call("eth_estimateGas", lambda: self.rpc.eth.estimate_gas(tx))
        except (ContractLogicError, ContractCustomError) as exc:
            raise self._reverted(request, exc) from None
        return int(estimate * self.gas_margin)

    def _market_fees(self) -> tuple[int, int, int]:
        """(max fee, tip, latest block number) from one look at the latest block; the
        node's suggested tip is asked at most every TIP_QUOTE_TTL seconds."""
        now = self.clock()
        if self._fee_quote is not None and now - self._fee_quote[0] < self.fee_quote_ttl:
            return self._fee_quote[1]
        block = self.rpc.call("eth_getBlockByNumber", lambda: self.rpc.eth.get_block("latest"))
        base = int(block.get("baseFeePerGas", 0) or 0)
        tip = self.fees.priority_fee
        if tip is None:
            if self._tip_quote is None or now - self._tip_quote[0] > TIP_QUOTE_TTL:
                quote = self.rpc.call(
                    "eth_maxPriorityFeePerGas", lambda: self.rpc.eth.max_priority_fee
                )
                self._tip_quote = (now, int(quote))
            tip = self._tip_quote[1]
        max_fee = min(base * self.fees.base_fee_multiplier + tip, self.fees.max_fee_per_gas)
        quote = (max_fee, min(tip, max_fee), int(block["number"]))
        self._fee_quote = (now, quote)
        return quote

    def _sign(self, flight: _InFlight, max_fee: int | None = None, tip: int | None = None) -> bytes:
        tx = {
            "type": 2,
            "chainId": self.rpc.expected_chain_id,
            "nonce": flight.nonce,
            "to": flight.request.to,
            "data": flight.request.data,
            "value": flight.request.value,
            "gas": flight.gas,
            "maxFeePerGas": flight.max_fee if max_fee is None else max_fee,
            "maxPriorityFeePerGas": flight.tip if tip is None else tip,
        }
        return bytes(self._account.sign_transaction(tx).raw_transaction)

    def _broadcast(self, raw: bytes) -> bytes | None:
        """Send signed bytes; returns the hash, or None if the node says the nonce is used."""
        try:
            return bytes(
                self.rpc.call(
                    "eth_sendRawTransaction", lambda: self.rpc.eth.send_raw_transaction(raw)
                )
            )
        except Web3RPCError as exc:
            message = _rpc_message(exc)
            if "already known" in message or "already imported" in message:
                return _tx_hash(raw)
            if "nonce too low" in message:
                return None
            raise

    def _submit(self, request: TxRequest) -> _InFlight:
        # The endpoint may have been replaced by another chain between two sends without
        # any call failing. A signed transaction names its chain id (EIP-155), so another
        # chain refuses it; the chain id is checked when an estimate or a send fails, so
        # that the error names the real cause.
        try:
            gas = self._estimate(request)
        except TransactionReverted:
            self.rpc.check_chain_id()
            raise
        for _ in range(3):
            nonce = self._next_nonce()
            max_fee, tip, block_number = self._market_fees()
            flight = _InFlight(request, nonce, gas, max_fee, tip, block_number)
            flight.raw = self._sign(flight)
            try:
                tx_hash = self._broadcast(flight.raw)
            except Web3RPCError as exc:
                self.rpc.check_chain_id()
                raise RpcError(
                    f"{request.label or 'transaction'} rejected by {self.rpc.url}: {_rpc_message(exc)}"
                ) from None
            if tx_hash is None:  # someone (a restart, another process) used this nonce
                self._nonce = None
                continue
            flight.hashes.append(tx_hash)
            self._nonce = nonce + 1
            return flight
        raise RpcError(
            f"{request.label or 'transaction'}: nonce of {self.address} keeps changing on "
            f"{self.rpc.url}: is another process sending with the same key?"
        )

    def _receipt(self, flight: _InFlight) -> dict[str, Any] | None:
        for tx_hash in reversed(flight.hashes):
            try:
                receipt = self.rpc.call(
                    "eth_getTransactionReceipt",
                    lambda h=tx_hash: self.rpc.eth.get_transaction_receipt(h),  # type: ignore[misc]
                )
            except TransactionNotFound:
                continue
            return dict(receipt)
        return None

    def _receipt_soon(self, flight: _InFlight) -> dict[str, Any] | None:
        for _ in range(RECEIPT_LAG_POLLS):
            receipt = self._receipt(flight)
            if receipt is not None:
                return receipt
            self.sleep(self.poll_interval)
        return self._receipt(flight)

    def _wait(self, flight: _InFlight, already_done: Callable[[], bool] | None) -> SendResult:
        started = self.clock()
        while True:
            receipt = self._receipt(flight)
            if receipt is not None:
                return self._finish(flight, receipt)
            if self.clock() - started > self.timeout:
                raise TransactionTimeout(
                    f"{flight.request.label or 'transaction'} (nonce {flight.nonce}) not mined on "
                    f"chain {self.rpc.expected_chain_id} within {self.timeout:.0f} s after "
                    f"{flight.bumps} fee bumps: check the chain is mining and fees are not capped"
                )
            chain_nonce = int(
                self.rpc.call(
                    "eth_getTransactionCount",
                    lambda: self.rpc.eth.get_transaction_count(self.address, "latest"),
                )
            )
            if chain_nonce > flight.nonce:
                # Our nonce was used but none of our hashes has a receipt yet. A node may
                # count the nonce a moment before it serves the receipt (anvil did, and a
                # lock was then sent twice): look again for a while before concluding that
                # another transaction took the nonce.
                receipt = self._receipt_soon(flight)
                if receipt is not None:
                    return self._finish(flight, receipt)
                # Another transaction took it: send again from a fresh nonce unless the
                # work is done.
                if already_done is not None and already_done():
                    return SendResult(None, None, skipped=True, bumps=flight.bumps)
                self._nonce = None
                flight = self._submit(flight.request)
                continue
            if chain_nonce < flight.nonce:
                # A gap: the chain lost an earlier transaction of ours (it restarted).
                self._nonce = None
                if already_done is not None and already_done():
                    return SendResult(None, None, skipped=True, bumps=flight.bumps)
                flight = self._submit(flight.request)
                continue
            if not self._known_to_node(flight):
                # The node dropped it (restart, eviction): send it again, dearer if need be.
                flight.rebroadcasts += 1
                try:
                    self._broadcast(flight.raw)
                except Web3RPCError as exc:
                    if not _fee_too_low(_rpc_message(exc)):
                        raise
                    self._bump(flight)
            elif self.rpc.block_number() - flight.sent_block >= self.fees.bump_after_blocks:
                self._bump(flight)
            self.sleep(self.poll_interval)

    def _known_to_node(self, flight: _InFlight) -> bool:
        tx = self.rpc.raw("eth_getTransactionByHash", ["0x" + flight.hashes[-1].hex()])
        return tx is not None

    def _bump(self, flight: _InFlight) -> None:
        """Replace the transaction (same nonce) with fees raised by the bump ratio, or to
        the market if that is higher; a node that wants more gets doubles, up to the cap."""
        market_fee, market_tip, _ = self._market_fees()
        ratio = self.fees.bump_ratio
        for _ in range(6):
            max_fee = min(
                max(math.ceil(flight.max_fee * ratio), market_fee), self.fees.max_fee_per_gas
            )
            tip = min(max(math.ceil(flight.tip * ratio), market_tip), max_fee)
            if max_fee <= flight.max_fee:  # capped: wait instead of spamming the node
                flight.sent_block = self.rpc.block_number()
                return
            raw = self._sign(flight, max_fee, tip)
            try:
                tx_hash = self._broadcast(raw)
            except Web3RPCError as exc:
                if _fee_too_low(_rpc_message(exc)):
                    ratio *= 2
                    continue
                raise
            flight.max_fee, flight.tip, flight.raw = max_fee, tip, raw
            flight.sent_block = self.rpc.block_number()
            if tx_hash is not None:
                flight.hashes.append(tx_hash)
                flight.bumps += 1
            return

    def _finish(self, flight: _InFlight, receipt: dict[str, Any]) -> SendResult:
        tx_hash = bytes(receipt["transactionHash"])
        if int(receipt["status"]) != 1:
            raise TransactionReverted(
                f"{flight.request.label or 'transaction'} 0x{tx_hash.hex()} reverted on chain "
                f"{self.rpc.expected_chain_id} (gas used {int(receipt['gasUsed'])} of {flight.gas})"
            )
        return SendResult(
            tx_hash=tx_hash,
            receipt=receipt,
            bumps=flight.bumps,
            rebroadcasts=flight.rebroadcasts,
            nonce=flight.nonce,
        )

    def _reverted(self, request: TxRequest, exc: BaseException) -> TransactionReverted:
        data = _revert_data(exc)
        error = self.revert_decoder(data) if (self.revert_decoder and data) else ""
        shown = error or (("0x" + data.hex()[:8]) if data else str(exc))
        return TransactionReverted(
            f"{request.label or 'transaction'} to {request.to} would revert: {shown}",
            error=error,
            data=data,
        )


def _revert_data(exc: BaseException) -> bytes:
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, bytes):
        return data
    return b""


def _tx_hash(raw: bytes) -> bytes:
    from eth_utils.crypto import keccak

    return bytes(keccak(raw))
