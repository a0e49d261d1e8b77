"""The bank as a node's target: receive its callbacks, read statuses, send reports.

Watching. When the target has a ``webhook_listen`` address, the pump serves the bank's
signed callbacks there (the fast path) and gives each new instruction status to the
driver, with the bank's time (``as_of_ms``): a ``BankUpdate`` event. Duplicate callbacks
are dropped by the receiver.

Reading. ``ReadLeg`` (the driver's polling fallback for instructions it has not heard of
lately) asks ``GET /v1/instructions/{id}`` for each settlement, a bounded number at once.

Transmission. A report becomes one authenticated call, ``POST /v1/reports``, with the
PREPARE terms the driver derived; the bank applies each decision as its own endpoint
would and checks the certificate once. The answer's statuses go back to the driver as a
``BankUpdate``; a refused certificate or an unreachable bank is the result. The bank's
idempotency keys make a retried call harmless.
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
from bank_adapter.signing import WebhookSignatureError
from bank_adapter.terms import PaymentTerms
from node.config import TargetConfig
from node.driver import BankUpdate, NodeEvent, ReadLeg, Transmit
from node.pumps.base import Emit

log = logging.getLogger("dvpsim.node.bank")

MAX_REQUEST_BYTES = 1 << 20
MAX_PARALLEL_CALLS = 8


class BankPump:
    def __init__(self, config: TargetConfig) -> None:
        self.name = config.name
        self.config = config
        # A bank API may be slow (scenarios add latency); a timeout shorter than its answer
        # would only turn one call into several.
        self.client = BankClient(
            config.url, config.client_id, config.client_secret.encode(), timeout_s=15.0
        )

    # ------------------------------------------------------------------ watching

    async def run(self, emit: Emit) -> None:
        if self.config.webhook_listen:
            await self._serve_callbacks(emit)

    async def _serve_callbacks(self, emit: Emit) -> None:
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
                        events = receiver.receive_all(headers, body, time.time())
                        code = b"200 OK"
                    except WebhookSignatureError:
                        events, code = [], b"401 Unauthorized"
                    if events:
                        # One update for a batch: one look at the leg for all of it.
                        statuses = tuple(e.instruction for e in events)
                        times = [e.as_of_ms for e in events if e.as_of_ms is not None]
                        await emit(BankUpdate(0.0, self.name, statuses, max(times, default=None)))
                    elif code == b"200 OK":
                        # A duplicate: nothing new about the instruction, but it states the
                        # bank's time when it was sent again.
                        await emit(BankUpdate(0.0, self.name, (), receiver.latest_as_of_ms))
                    await stream.send_all(
                        b"HTTP/1.1 " + code + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                except (trio.TooSlowError, trio.BrokenResourceError, ValueError):
                    return

        await trio.serve_tcp(handle, int(port), host=host or "127.0.0.1")

    # ------------------------------------------------------------------ reading

    async def read(self, effect: ReadLeg) -> tuple[NodeEvent, ...]:
        statuses: list[InstructionStatus] = []
        times: list[int] = []
        limiter = trio.CapacityLimiter(MAX_PARALLEL_CALLS)

        async def ask(sid: bytes) -> None:
            async with limiter:
                try:
                    reply = await self.client.status_reply(sid)
                except BankApiError:
                    return
                if reply.instruction is not None:
                    statuses.append(reply.instruction)
                if reply.as_of_ms is not None:
                    times.append(reply.as_of_ms)

        async with trio.open_nursery() as nursery:
            for sid in effect.settlement_ids:
                nursery.start_soon(ask, sid)
        # Answers arrive in any order; give them in the order asked. Always answer, even
        # with nothing: the driver asks again only once this read is answered.
        order = {sid: i for i, sid in enumerate(effect.settlement_ids)}
        statuses.sort(key=lambda s: order.get(s.settlement_id, len(order)))
        return (BankUpdate(0.0, self.name, tuple(statuses), max(times, default=None), read=True),)

    # ------------------------------------------------------------------ transmission

    async def transmit(self, effect: Transmit) -> tuple[str, tuple[NodeEvent, ...]]:
        certificate = effect.certificate
        if not certificate.report.decisions:
            return "empty", ()
        terms = [t for t in effect.terms if isinstance(t, PaymentTerms)]
        try:
            reply = await self.client.apply_report_reply(certificate, terms)
        except BankApiError as exc:
            log.warning(
                "bank refused the report",
                extra={"fields": {"round": certificate.report.round, "error": str(exc)}},
            )
            result = "error" if isinstance(exc, BankUnavailableError) else f"refused-{exc.code}"
            return result, ()
        learned: list[InstructionStatus] = []
        refused = []
        for item in reply.results:
            if item.instruction is not None:
                learned.append(item.instruction)
            else:
                refused.append(f"0x{item.settlement_id.hex()[:8]}:{item.error_code}")
        update = (BankUpdate(0.0, self.name, tuple(learned), reply.as_of_ms),)
        if refused:
            log.warning("bank refused decisions", extra={"fields": {"refused": refused}})
            return "partial", update
        return "ok", update

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
