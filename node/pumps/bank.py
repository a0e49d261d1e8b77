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
REQUEST_S = 5.0  # a callback request that started must arrive whole within this
KEEPALIVE_S = 60.0  # an idle callback connection stays open this long (aiohttp's 15 s first)


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

        async def respond(headers: dict[str, str], body: bytes) -> bytes:
            try:
                events = receiver.receive_all(headers, body, time.time())
            except WebhookSignatureError:
                return b"401 Unauthorized"
            if events:
                # One update for a batch: one look at the leg for all of it.
                statuses = tuple(e.instruction for e in events)
                times = [e.as_of_ms for e in events if e.as_of_ms is not None]
                await emit(BankUpdate(0.0, self.name, statuses, max(times, default=None)))
            else:
                # A duplicate: nothing new about the instruction, but it states the bank's
                # time when it was sent again.
                await emit(BankUpdate(0.0, self.name, (), receiver.latest_as_of_ms))
            return b"200 OK"

        async def handle(stream: trio.SocketStream) -> None:
            # Kept alive: the bank sends its callbacks over the same connection (a new
            # connection per callback cost the bank and the node more than the callback).
            requests = CallbackRequests()
            async with stream:
                try:
                    while True:
                        # A started request has REQUEST_S to arrive whole; an idle connection
                        # is closed after KEEPALIVE_S (the bank closes it first).
                        chunk = b""
                        with trio.move_on_after(REQUEST_S if requests.pending else KEEPALIVE_S):
                            chunk = await stream.receive_some(65536)
                        if not chunk:
                            return  # the bank closed the connection, or it idled or stalled
                        for headers, body in requests.feed(chunk):
                            close = headers.get("Connection", "").lower() == "close"
                            code = await respond(headers, body)
                            await stream.send_all(
                                b"HTTP/1.1 "
                                + code
                                + b"\r\nContent-Length: 0\r\n"
                                + (b"Connection: close\r\n" if close else b"")
                                + b"\r\n"
                            )
                            if close:
                                return
                except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
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


class CallbackRequests:
    """The bank's callback requests on one kept-alive connection: bytes in, whole requests
    out (HTTP/1.1 POSTs with a Content-Length body, one after another). Raises ValueError
    for anything else, or a request over MAX_REQUEST_BYTES, and the connection is closed."""

    def __init__(self) -> None:
        self._buffer = b""

    @property
    def pending(self) -> bool:
        """Whether part of a request has arrived."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[tuple[dict[str, str], bytes]]:
        """The requests ``data`` completes, in order, as (headers, body)."""
        self._buffer += data
        complete = []
        while True:
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self._buffer) > MAX_REQUEST_BYTES:
                    raise ValueError("request head too large")
                return complete
            lines = self._buffer[:head_end].decode("latin-1").split("\r\n")
            if not lines[0].startswith("POST "):
                raise ValueError("not a POST")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip()] = value.strip()
            length = int(headers.get("Content-Length", headers.get("content-length", "0")))
            if not 0 <= length <= MAX_REQUEST_BYTES:
                raise ValueError("body too large")
            end = head_end + 4 + length
            if len(self._buffer) < end:
                return complete
            complete.append((headers, self._buffer[head_end + 4 : end]))
            self._buffer = self._buffer[end:]
