"""The bank as a node's target: observe instruction states, transmit certified decisions.

Observation. For every settlement the asset chain announced (``node.book``), the bank leg
is REQUESTED with terms derived from the escrow's terms. Its state at the bank comes from
the signed callbacks the bank delivers to this node's webhook receiver when one is
configured, and from polling ``GET /v1/instructions/{id}`` (the fallback every node
runs for instructions that are not final): PREVALIDATED -> PREPARED, REJECTED ->
REJECTED, EXECUTED -> COMMITTED, CANCELLED -> ABORTED. A leg not final after its
deadline by this node's clock is EXPIRED.

Transmission. A certified report becomes one authenticated call, ``POST /v1/reports``,
with the derived terms of its PREPARE decisions; the bank applies each decision as its
own endpoint would (PREPARE -> prevalidate, COMMIT -> execute, ABORT -> cancel) and
checks the certificate once. Skipped when the bank already shows every result
(idempotency check); the bank's idempotency keys make a retried call harmless anyway.
"""

from __future__ import annotations

import logging
import time

import trio

from bank_adapter.client import (
    BankApiError,
    BankClient,
    BankUnavailableError,
    InstructionStatus,
    WebhookReceiver,
)
from bank_adapter.ledger import InstructionState
from bank_adapter.signing import WebhookSignatureError
from bank_adapter.terms import PaymentTerms
from consensus.report import Action, Certificate, Decision
from node.book import SettlementBook
from node.config import NodeConfig, TargetConfig
from node.dvp import Fact, FactKind

log = logging.getLogger("dvpsim.node.bank")

_FINAL = {InstructionState.REJECTED, InstructionState.EXECUTED, InstructionState.CANCELLED}
_FACT_OF_STATE = {
    InstructionState.PREVALIDATED: FactKind.PREPARED,
    InstructionState.REJECTED: FactKind.REJECTED,
    InstructionState.EXECUTED: FactKind.COMMITTED,
    InstructionState.CANCELLED: FactKind.ABORTED,
}
_DONE_BY = {
    Action.PREPARE: None,
    Action.COMMIT: InstructionState.EXECUTED,
    Action.ABORT: InstructionState.CANCELLED,
}
POLL_INTERVAL = 0.5
STALE_AFTER = 2.0  # seconds without news before the fallback asks
MAX_POLLS_PER_CYCLE = 32
MAX_REQUEST_BYTES = 1 << 20
_RANK = {
    InstructionState.RECEIVED: 0,
    InstructionState.PREVALIDATED: 1,
    InstructionState.REJECTED: 2,
    InstructionState.EXECUTED: 2,
    InstructionState.CANCELLED: 2,
}
MAX_PARALLEL_CALLS = 8


class BankTarget:
    def __init__(self, config: TargetConfig, node: NodeConfig, book: SettlementBook) -> None:
        self.name, self.leg = config.name, config.leg
        self.config = config
        self.currency = config.currency
        self.book = book
        # A bank API may be slow (scenarios add latency); a timeout shorter than its answer
        # would only turn one call into several.
        self.client = BankClient(
            config.url, config.client_id, config.client_secret.encode(), timeout_s=15.0
        )
        self.statuses: dict[bytes, InstructionStatus] = {}
        self._terms: dict[bytes, tuple[PaymentTerms, bytes]] = {}
        self._heard: dict[bytes, float] = {}  # when the bank last told us about a settlement

    async def facts(self) -> set[Fact]:
        now = time.time()
        facts: set[Fact] = set()
        over = self.book.settled
        for sid in list(self.book.terms):
            if sid in over:
                continue
            known = self._terms_of(sid)
            if known is None:
                continue
            terms, terms_hash = known
            facts.add(Fact(sid, self.leg, FactKind.REQUESTED, terms_hash))
            status = self.statuses.get(sid)
            if (
                status is not None
                and status.terms_hash == terms_hash
                and status.state in _FACT_OF_STATE
            ):
                facts.add(Fact(sid, self.leg, _FACT_OF_STATE[status.state], terms_hash))
            final = status is not None and status.state in _FINAL
            if not final and now > terms.deadline:
                facts.add(Fact(sid, self.leg, FactKind.EXPIRED, terms_hash))
        return facts

    def _terms_of(self, sid: bytes) -> tuple[PaymentTerms, bytes] | None:
        """The bank leg's terms and their hash, derived once per settlement."""
        cached = self._terms.get(sid)
        if cached is None:
            terms = self.book.bank_terms(sid, self.currency)
            if terms is None:
                return None
            cached = (terms, terms.terms_hash())
            self._terms[sid] = cached
        return cached

    async def transmit(self, certificate: Certificate) -> str:
        """All decisions of the report in one call (``POST /v1/reports``), with the terms
        of its PREPARE decisions; skipped when the bank already showed every result."""
        decisions = certificate.report.decisions
        if not decisions:
            return "empty"
        if all(self._already_applied(d) for d in decisions):
            return "already-applied"
        terms: list[PaymentTerms] = []
        for decision in decisions:
            if decision.action is Action.PREPARE:
                known = self._terms_of(decision.settlement_id)
                # Terms this node cannot derive (or derives differently) are left out: the
                # bank refuses that one decision, and another transmitter may have them.
                if known is not None and known[1] == decision.terms_hash:
                    terms.append(known[0])
        try:
            results = await self.client.apply_report(certificate, terms)
        except BankApiError as exc:
            log.warning(
                "bank refused the report",
                extra={"fields": {"round": certificate.report.round, "error": str(exc)}},
            )
            return "error" if isinstance(exc, BankUnavailableError) else f"refused-{exc.code}"
        refused = []
        for result in results:
            if result.instruction is not None:
                self._learn(result.instruction)
            else:
                refused.append(f"0x{result.settlement_id.hex()[:8]}:{result.error_code}")
        if refused:
            log.warning("bank refused decisions", extra={"fields": {"refused": refused}})
            return "partial"
        return "ok"

    def _already_applied(self, decision: Decision) -> bool:
        known = self.statuses.get(decision.settlement_id)
        if known is None:
            return False
        if decision.action is Action.PREPARE:
            return known.state != InstructionState.RECEIVED
        return known.state == _DONE_BY[decision.action]

    def _learn(self, status: InstructionStatus) -> None:
        self._heard[status.settlement_id] = trio.current_time()
        current = self.statuses.get(status.settlement_id)
        if current is None or _RANK[status.state] >= _RANK[current.state]:
            self.statuses[status.settlement_id] = status

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            if self.config.webhook_listen:
                nursery.start_soon(self._serve_callbacks)
            nursery.start_soon(self._poll)

    async def _serve_callbacks(self) -> None:
        """Receive the bank's signed callbacks (the fast path; polling is the fallback)."""
        answer = await self.client._http.get("/v1/webhook-key")
        receiver = WebhookReceiver(bytes.fromhex(answer.json()["ed25519_public_key"][2:]))
        host, _, port = self.config.webhook_listen.rpartition(":")

        async def handle(stream: trio.SocketStream) -> None:
            async with stream:
                try:
                    with trio.fail_after(5):
                        headers, body = await _read_http_request(stream)
                    try:
                        event = receiver.receive(headers, body, time.time())
                        code = b"200 OK"
                    except WebhookSignatureError:
                        event, code = None, b"401 Unauthorized"
                    if event is not None:
                        self._learn(event.instruction)
                    await stream.send_all(
                        b"HTTP/1.1 " + code + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                except (trio.TooSlowError, trio.BrokenResourceError, ValueError):
                    return

        await trio.serve_tcp(handle, int(port), host=host or "127.0.0.1")

    async def _poll(self) -> None:
        """The callbacks' fallback: ask for the instructions not final and not heard of for
        ``STALE_AFTER`` seconds (a lost callback, a bank restart), a bounded number a cycle."""
        while True:
            now = trio.current_time()
            over = self.book.settled
            stale = [
                sid
                for sid in list(self.book.terms)
                if sid not in over
                and not (sid in self.statuses and self.statuses[sid].state in _FINAL)
                and now - self._heard.setdefault(sid, now) > STALE_AFTER
            ][:MAX_POLLS_PER_CYCLE]
            limiter = trio.CapacityLimiter(MAX_PARALLEL_CALLS)

            async def poll(sid: bytes, limiter: trio.CapacityLimiter = limiter) -> None:
                async with limiter:
                    self._heard[sid] = trio.current_time()
                    try:
                        status = await self.client.status(sid)
                    except BankApiError:
                        return
                    if status is not None:
                        self._learn(status)

            async with trio.open_nursery() as nursery:
                for sid in stale:
                    nursery.start_soon(poll, sid)
            # News (callbacks, answers) never makes an instruction stale: a fixed pace.
            await trio.sleep(POLL_INTERVAL)

    def close(self) -> None:
        pass


async def _read_http_request(stream: trio.SocketStream) -> tuple[dict[str, str], bytes]:
    """One HTTP/1.1 request with a Content-Length body (what the bank's callbacks send)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk or len(data) > MAX_REQUEST_BYTES:
            raise ValueError("incomplete request")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("POST "):
        raise ValueError("not a POST")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    length = int(headers.get("Content-Length", headers.get("content-length", "0")))
    if length > MAX_REQUEST_BYTES:
        raise ValueError("body too large")
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ValueError("incomplete body")
        body += chunk
    return headers, body[:length]
