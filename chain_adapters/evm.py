"""The connection to one EVM chain's JSON-RPC endpoint, as the EVM adapter uses it.

Every RPC call of the adapter (the event watcher in ``chain_adapters/watcher.py``, the
transaction sender in ``chain_adapters/sender.py``, the bindings in
``chain_adapters/bindings.py``) goes through :class:`Rpc`, which

* checks once, on connect, that the endpoint answers and serves the expected chain id, and
  again after the endpoint came back from an outage (it may have restarted as another chain);
* retries transient failures (connection refused or reset, timeouts, HTTP 429/5xx, the
  JSON-RPC "limit exceeded"/"internal error" codes) with capped exponential backoff; and
* turns what is left into one-line errors a user can act on, e.g.
  ``cannot reach RPC endpoint http://127.0.0.1:8545: connection refused (is the chain running?)``.

web3.py's own retry layer is switched off so that retries happen in exactly one place.

This module never signs or sends transactions and never decides anything; it holds no keys.
Waiting is done through an injectable ``sleep`` so tests control time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import requests
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.types import RPCEndpoint

from chain_adapters.keepalive import KeepAliveProvider

__all__ = [
    "RetryPolicy",
    "Rpc",
    "NEW_HEADS_REQUEST",
    "RpcError",
    "RpcUnreachable",
    "WrongChain",
    "connect",
    "is_transient",
    "websocket_url",
]

T = TypeVar("T")

# JSON-RPC error codes that mean "try again later" (EIP-1474: -32005 limit exceeded;
# -32603 internal error is what overloaded nodes answer).
_TRANSIENT_RPC_CODES = frozenset({-32005, -32603})
_TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


class RpcError(Exception):
    """An RPC endpoint could not be used; ``str(e)`` is one line saying what to do."""


class RpcUnreachable(RpcError):
    """The endpoint did not answer within the retry policy."""


class WrongChain(RpcError):
    """The endpoint answers with another chain id than the one configured."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long transient failures are retried: ``attempts`` tries in all, waiting
    ``first_delay`` then multiplying by ``multiplier`` up to ``max_delay``, and never beyond
    ``budget`` seconds in total (waits and failed calls together)."""

    attempts: int = 8
    first_delay: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 2.0
    budget: float = 15.0

    def delays(self) -> list[float]:
        delays, delay, total = [], self.first_delay, 0.0
        for _ in range(self.attempts - 1):
            if total + delay > self.budget:
                break
            delays.append(delay)
            total += delay
            delay = min(delay * self.multiplier, self.max_delay)
        return delays


def _root_cause(exc: BaseException) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused (is the chain running?)"
    if "timed out" in text or "timeout" in text:
        return "timed out (is the chain overloaded or the URL wrong?)"
    if "name or service not known" in text or "nodename nor servname" in text:
        return "unknown host (check the URL)"
    if "reset" in text or "aborted" in text or "remote end closed" in text:
        return "connection reset (did the chain restart?)"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: the request may succeed if sent again unchanged."""
    if isinstance(
        exc, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError
    ):
        return True
    if isinstance(exc, requests.HTTPError):
        return exc.response is not None and exc.response.status_code in _TRANSIENT_HTTP
    if isinstance(exc, ContractLogicError):
        return False  # a revert is an answer, not an outage
    if isinstance(exc, Web3RPCError):
        code = _rpc_code(exc)
        return code in _TRANSIENT_RPC_CODES
    return False


def _rpc_code(exc: Web3RPCError) -> int | None:
    response = getattr(exc, "rpc_response", None) or {}
    error = response.get("error") if isinstance(response, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        return int(error["code"])
    return None


class Rpc:
    """One chain's endpoint: a web3 client, its expected chain id, and the retry policy."""

    def __init__(
        self,
        url: str,
        expected_chain_id: int,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.expected_chain_id = expected_chain_id
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        # Not web3's HTTPProvider: its requests session cost 0.8 ms of CPU per call
        # (``chain_adapters.keepalive``), and a node calls its chain several times a block.
        self.web3 = Web3(KeepAliveProvider(url, timeout))
        # web3's "validation" middleware asks eth_chainId before every eth_call and
        # eth_estimateGas (it doubled the driver's and the nodes' RPC count). The chain id
        # is checked here instead: on connect, after an outage, and where a changed chain
        # would do harm (the sender's and the watcher's error paths).
        self.web3.middleware_onion.remove("validation")
        self.web3.middleware_onion.remove("ens_name_to_address")
        self._lock = threading.Lock()
        self._checked = False
        self.outages = 0  # times a call needed a retry: visible to tests and metrics

    @property
    def eth(self) -> Any:
        return self.web3.eth

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` (some RPC calls), retrying transient failures; ``what`` names it in
        errors. Non-transient errors (a revert, bad params) pass through unchanged."""
        self._ensure_chain()
        return self._with_retries(what, fn)

    def _with_retries(self, what: str, fn: Callable[[], T]) -> T:
        delays = self.retry.delays()
        started = time.monotonic()
        for attempt in range(len(delays) + 1):
            try:
                result = fn()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # The budget covers the calls too: a hanging endpoint times out each attempt.
                spent = time.monotonic() - started
                if attempt == len(delays) or spent + delays[attempt] > self.retry.budget:
                    raise RpcUnreachable(
                        f"cannot reach RPC endpoint {self.url}: {_root_cause(exc)}"
                    ) from None
                self.outages += 1
                with self._lock:
                    # It may come back as a different chain (another anvil on the same port).
                    self._checked = False
                self.sleep(delays[attempt])
                continue
            if not self._checked and what != "eth_chainId":
                self.check_chain_id()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _ensure_chain(self) -> None:
        if not self._checked:
            self.check_chain_id()

    def check_chain_id(self) -> None:
        """Raise WrongChain unless the endpoint serves the expected chain id (one call)."""
        actual = self._with_retries("eth_chainId", lambda: int(self.web3.eth.chain_id))
        if actual != self.expected_chain_id:
            raise WrongChain(
                f"RPC endpoint {self.url} serves chain id {actual}, expected {self.expected_chain_id}: "
                "point the adapter at the right chain or fix the configured chain id"
            )
        with self._lock:
            self._checked = True

    # Small typed helpers used by the watcher, the sender and the bindings.
    def block_number(self) -> int:
        return int(self.call("eth_blockNumber", lambda: self.web3.eth.block_number))

    def block_hash(self, number: int) -> bytes | None:
        """The hash of block ``number``, or None when the chain has no such block (yet)."""

        def fetch() -> bytes | None:
            block = self.web3.provider.make_request(
                RPCEndpoint("eth_getBlockByNumber"), [hex(number), False]
            )
            if "error" in block:
                raise Web3RPCError(str(block["error"]), rpc_response=block)
            result = block.get("result")
            return bytes.fromhex(result["hash"][2:]) if result else None

        return self.call("eth_getBlockByNumber", fetch)

    def raw(self, method: str, params: list[Any]) -> Any:
        def fetch() -> Any:
            response = self.web3.provider.make_request(RPCEndpoint(method), params)
            if "error" in response:
                raise Web3RPCError(str(response["error"]), rpc_response=response)
            return response.get("result")

        return self.call(method, fetch)


#: The subscription a watcher sends over an endpoint's WebSocket to hear of each new block.
NEW_HEADS_REQUEST: Final = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
)


def websocket_url(url: str) -> str | None:
    """The WebSocket address of an HTTP JSON-RPC endpoint (the same host and port: anvil
    serves both there); None for another scheme."""
    for http, ws in (("http://", "ws://"), ("https://", "wss://")):
        if url.startswith(http):
            return ws + url.removeprefix(http)
    return None


def connect(
    url: str,
    expected_chain_id: int,
    *,
    retry: RetryPolicy | None = None,
    timeout: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Rpc:
    """An :class:`Rpc` that has answered with ``expected_chain_id``; raises RpcUnreachable or
    WrongChain (one line each) otherwise."""
    rpc = Rpc(url, expected_chain_id, retry=retry, timeout=timeout, sleep=sleep)
    rpc.check_chain_id()
    return rpc
