"""The bank's HTTP API (aiohttp), bound to one address: authentication, faults, routing.

The server is a thin adapter: it reads the clock, authenticates the request
(``signing.RequestAuthenticator``), applies the configured faults, and hands the body to
``service.BankService``, which does everything that decides. The clock it reads is the
bank's clock: the ``now_ms`` the ledger rules run at, and the ``as_of_ms`` that status and
report answers state. Handlers call the service
synchronously, so a storage transaction never spans an ``await`` and requests are applied
one at a time in arrival order.

Routes (see ``openapi.py`` for the schemas, served at ``GET /openapi.json``)::

    GET  /v1/health                                   no auth
    GET  /v1/webhook-key                              no auth: the callback public key
    POST /v1/instructions                             prevalidate (PREPARE certificate)
    POST /v1/instructions/{settlement_id}/execute     execute     (COMMIT certificate)
    POST /v1/instructions/{settlement_id}/cancel      cancel      (ABORT certificate)
    GET  /v1/instructions/{settlement_id}             status, the polling fallback
    POST /v1/reports                                  every decision of one certificate
    GET  /v1/accounts/{account_id}                    balance, held, available
    GET  /metrics                                     no auth: Prometheus metrics
    POST /admin/accounts        GET /admin/reconcile   GET|PUT /admin/faults
    POST /admin/crash                                  (admin: only with an admin token)

This module must never bind every interface (0.0.0.0, ::) rather than one address, run a ledger rule itself, or
answer a mutating request before its transaction committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from bank_adapter.faults import FaultConfig, FaultConfigError, FaultInjector
from bank_adapter.openapi import openapi_document
from bank_adapter.service import BankService, Reply, error_body, stated_at
from bank_adapter.signing import (
    HEADER_IDEMPOTENCY,
    AuthError,
    RequestAuthenticator,
    check_idempotency_key,
)
from bank_adapter.storage import LedgerStorage
from bank_adapter.webhooks import WebhookSender

__all__ = [
    "MAX_BODY_BYTES",
    "BankMetrics",
    "BankServer",
    "ServerConfig",
    "check_host",
    "request_hash",
]

log = logging.getLogger("dvpsim.bank.server")

MAX_BODY_BYTES: Final = 64 * 1024
READY_LINE: Final = "dvpsim-bank listening on http://{host}:{port}"
_OPEN_PATHS: Final = frozenset({"/v1/health", "/openapi.json", "/v1/webhook-key", "/metrics"})
#: Bank request latency, measured around everything the server does (faults included): a
#: few ms with a group commit's fsync, up to seconds under injected latency.
REQUEST_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def check_host(host: str) -> str:
    """``host`` if it is one address to bind: loopback (the default), or one interface's
    address where nodes on other machines reach the bank (docs/DEPLOY.md); ValueError for
    a name, every interface (0.0.0.0, ::) or a multicast address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"--host {host} is not an IP address; give 127.0.0.1 or one interface's address"
        ) from None
    if address.is_unspecified or address.is_multicast:
        raise ValueError(
            f"--host {host} is not one interface's address; the bank binds one address, "
            "never every interface: give 127.0.0.1 or the address the nodes reach"
        )
    return host


def request_hash(method: str, path_qs: str, body: bytes) -> bytes:
    """What an idempotency key is bound to: the method, the path and the exact body."""
    return hashlib.sha256(method.encode() + b" " + path_qs.encode() + b"\n" + body).digest()


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    admin_token: str | None = None  # None: no admin API (accounts, faults, crash)
    auth_window_s: int = 300
    webhook_retry_base_ms: int = 200
    webhook_retry_cap_ms: int = 30_000
    webhook_poll_s: float = 0.25
    clients: Mapping[str, bytes] = field(default_factory=dict)


def _json_response(reply: Reply) -> web.Response:
    response = web.Response(status=reply.status, body=reply.body, content_type="application/json")
    if reply.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


#: The largest event seq ``/admin/instructions?since=`` takes (SQLite's integer range).
_MAX_SEQ = 2**63 - 1


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status, body=error_body(code, message), content_type="application/json"
    )


class BankMetrics:
    """The bank's Prometheus registry: request latency by route (a histogram), answers by
    route and status, and the process's own metrics (``process_*``). One registry per
    server, so two servers in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "dvpsim_bank_request_latency_seconds",
            "Time from a request's arrival to its answer, by route",
            ["method", "route"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.responses = Counter(
            "dvpsim_bank_responses",
            "Answers by route and HTTP status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route).observe(seconds)
        self.responses.labels(method, route, str(status)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _route_of(request: web.Request) -> str:
    """The route template (bounded label values), never the raw path."""
    resource = request.match_info.route.resource
    return "unmatched" if resource is None else resource.canonical


class BankServer:
    """The aiohttp application around one BankService."""

    def __init__(
        self,
        service: BankService,
        config: ServerConfig,
        webhook_key: Ed25519PrivateKey,
        faults: FaultInjector | None = None,
    ) -> None:
        self.service = service
        self.config = config
        self.webhook_key = webhook_key
        self.faults = faults or FaultInjector()
        self.auth = RequestAuthenticator(config.clients, config.auth_window_s)
        self.sender = WebhookSender(
            service.storage,
            webhook_key,
            self.faults,
            retry_base_ms=config.webhook_retry_base_ms,
            retry_cap_ms=config.webhook_retry_cap_ms,
            poll_s=config.webhook_poll_s,
        )
        self.committer = GroupCommitter(service.storage)
        self.metrics = BankMetrics()
        self.webhook_public_key = webhook_key.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw
        )
        self.app = self._make_app()
        self._runner: web.AppRunner | None = None
        self._sender_task: asyncio.Task[None] | None = None
        self.port: int | None = None

    # lifecycle -------------------------------------------------------------
    def _make_app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_BODY_BYTES,
            middlewares=[
                self._metrics_middleware,
                self._errors_middleware,
                self._faults_middleware,
            ],
        )
        r = app.router
        r.add_get("/openapi.json", self._openapi)
        r.add_get("/metrics", self._metrics)
        r.add_get("/v1/health", self._health)
        r.add_get("/v1/webhook-key", self._webhook_key)
        r.add_post("/v1/instructions", self._prevalidate)
        r.add_post("/v1/reports", self._apply_report)
        r.add_post("/v1/instructions/{sid}/execute", self._execute)
        r.add_post("/v1/instructions/{sid}/cancel", self._cancel)
        r.add_get("/v1/instructions/{sid}", self._status)
        r.add_get("/v1/accounts/{account_id}", self._account)
        if self.config.admin_token:
            r.add_post("/admin/accounts", self._admin_open_account)
            r.add_get("/admin/reconcile", self._admin_reconcile)
            r.add_get("/admin/instructions", self._admin_instructions)
            r.add_get("/admin/faults", self._admin_get_faults)
            r.add_put("/admin/faults", self._admin_set_faults)
            r.add_post("/admin/crash", self._admin_crash)
        return app

    async def start(self) -> int:
        host = check_host(self.config.host)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, self.config.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self._sender_task = asyncio.create_task(self.sender.run())
        return self.port

    async def stop(self) -> None:
        if self._sender_task is not None:
            self._sender_task.cancel()
            await asyncio.gather(self._sender_task, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    # middleware ------------------------------------------------------------
    @web.middleware
    async def _metrics_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        began = time.perf_counter()
        response = await handler(request)
        self.metrics.observe(
            request.method, _route_of(request), response.status, time.perf_counter() - began
        )
        return response

    @web.middleware
    async def _errors_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        # Every answer is a JSON error body, including aiohttp's own 404/405/413.
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
                exc.status, "http_error"
            )
            message = {
                404: f"no route {request.method} {request.path}; see /openapi.json",
                405: f"{request.method} is not allowed on {request.path}; see /openapi.json",
                413: f"request body larger than {MAX_BODY_BYTES} bytes; send a smaller body",
            }.get(exc.status, exc.reason)
            return _error(exc.status, code, message)
        except Exception:
            log.exception("internal error on %s %s", request.method, request.path)
            return _error(
                500,
                "internal_error",
                "the bank failed to process the request; retry with the same Idempotency-Key",
            )

    @web.middleware
    async def _faults_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if request.path.startswith("/admin/") or request.path in _OPEN_PATHS:
            return await handler(request)
        faults = self.faults
        if faults.outage(time.time()):
            return _error(503, "bank_outage", "the bank is in an outage window; retry later")
        delay = faults.latency_s()
        if delay > 0:
            await asyncio.sleep(delay)
        if faults.fail_before():
            return _error(
                503, "injected_error", "the bank failed before processing (injected); retry"
            )
        response = await handler(request)
        if request.method == "POST" and response.status < 500 and faults.fail_after():
            return _error(
                500,
                "injected_error",
                "the bank lost the answer after processing (injected); retry with the same Idempotency-Key",
            )
        return response

    # helpers ---------------------------------------------------------------
    async def _authenticated(self, request: web.Request) -> tuple[str, bytes]:
        body = await request.read()
        try:
            client_id = self.auth.authenticate(
                request.method, request.raw_path, request.headers, body, time.time()
            )
        except AuthError as exc:
            raise _Refused(_error(401, exc.code, exc.message)) from None
        return client_id, body

    def _admin(self, request: web.Request) -> None:
        token = self.config.admin_token or ""
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise _Refused(
                _error(
                    401, "unauthenticated", "admin API needs 'Authorization: Bearer <admin token>'"
                )
            )

    @staticmethod
    def _idempotency_key(request: web.Request) -> str:
        try:
            return check_idempotency_key(request.headers.get(HEADER_IDEMPOTENCY))
        except ValueError as exc:
            raise _Refused(_error(400, "missing_idempotency_key", str(exc))) from None

    def _after_commit(self, reply: Reply) -> web.Response:
        if reply.committed:
            self.sender.wake()
            if self.faults.crash_now():
                # A crash right after the commit, before the answer: the client's retry
                # with the same Idempotency-Key must get this very answer.
                os.kill(os.getpid(), signal.SIGKILL)
        return _json_response(reply)

    # public routes ---------------------------------------------------------
    async def _openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _webhook_key(self, request: web.Request) -> web.Response:
        return web.json_response({"ed25519_public_key": "0x" + self.webhook_public_key.hex()})

    async def _prevalidate(self, request: web.Request) -> web.StreamResponse:
        return await self._mutating(request, self.service.prevalidate)

    async def _apply_report(self, request: web.Request) -> web.StreamResponse:
        return await self._mutating(request, self.service.apply_report, timed=True)

    async def _mutating(
        self, request: web.Request, operation: Callable[..., Reply], timed: bool = False
    ) -> web.StreamResponse:
        """An authenticated, idempotent request whose body is the whole input. ``timed``:
        its malformed requests (400) state the bank's clock too, as the service's do."""
        try:
            client_id, body = await self._authenticated(request)
        except _Refused as refused:
            return refused.response
        try:
            key = check_idempotency_key(request.headers.get(HEADER_IDEMPOTENCY))
        except ValueError as exc:
            refusal = Reply(400, error_body("missing_idempotency_key", str(exc)))
            return _json_response(stated_at(refusal, _now_ms()) if timed else refusal)
        rhash = request_hash(request.method, request.raw_path, body)
        reply = await self.committer.submit(
            lambda: operation(client_id, key, rhash, body, _now_ms())
        )
        return self._after_commit(reply)

    async def _execute(self, request: web.Request) -> web.StreamResponse:
        return await self._finish(request, self.service.execute)

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        return await self._finish(request, self.service.cancel)

    async def _finish(
        self, request: web.Request, operation: Callable[..., Reply]
    ) -> web.StreamResponse:
        try:
            client_id, body = await self._authenticated(request)
            key = self._idempotency_key(request)
        except _Refused as refused:
            return refused.response
        rhash = request_hash(request.method, request.raw_path, body)
        sid = request.match_info["sid"]
        reply = await self.committer.submit(
            lambda: operation(client_id, key, rhash, sid, body, _now_ms())
        )
        return self._after_commit(reply)

    async def _status(self, request: web.Request) -> web.StreamResponse:
        try:
            await self._authenticated(request)
        except _Refused as refused:
            return refused.response
        return _json_response(self.service.status(request.match_info["sid"], _now_ms()))

    async def _account(self, request: web.Request) -> web.StreamResponse:
        try:
            await self._authenticated(request)
        except _Refused as refused:
            return refused.response
        return _json_response(self.service.account(request.match_info["account_id"]))

    # admin routes ----------------------------------------------------------
    async def _admin_open_account(self, request: web.Request) -> web.StreamResponse:
        try:
            self._admin(request)
            key = self._idempotency_key(request)
        except _Refused as refused:
            return refused.response
        body = await request.read()
        rhash = request_hash(request.method, request.raw_path, body)
        reply = await self.committer.submit(
            lambda: self.service.open_account("@admin", key, rhash, body, _now_ms())
        )
        return _json_response(reply)

    async def _admin_reconcile(self, request: web.Request) -> web.StreamResponse:
        try:
            self._admin(request)
        except _Refused as refused:
            return refused.response
        return _json_response(self.service.reconcile())

    async def _admin_instructions(self, request: web.Request) -> web.StreamResponse:
        try:
            self._admin(request)
        except _Refused as refused:
            return refused.response
        since = request.query.get("since")
        if since is None:
            return _json_response(self.service.instruction_states())
        if not since.isdigit() or int(since) > _MAX_SEQ:
            return _error(400, "invalid_field", "since must be an event seq (a whole number >= 0)")
        return _json_response(self.service.instruction_states(int(since)))

    async def _admin_get_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            self._admin(request)
        except _Refused as refused:
            return refused.response
        return web.json_response(self.faults.config.to_json())

    async def _admin_set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            self._admin(request)
        except _Refused as refused:
            return refused.response
        try:
            config = FaultConfig.from_json(json.loads(await request.read()))
        except (ValueError, FaultConfigError) as exc:
            return _error(400, "invalid_field", f"fault settings refused: {exc}")
        self.faults.set(config)
        log.warning("faults set: %s", config)
        return web.json_response(config.to_json())

    async def _admin_crash(self, request: web.Request) -> web.StreamResponse:
        try:
            self._admin(request)
        except _Refused as refused:
            return refused.response
        delay_ms = request.query.get("after_ms", "0")
        if not delay_ms.isdigit() or int(delay_ms) > 600_000:
            return _error(
                400,
                "invalid_field",
                "after_ms must be an integer number of milliseconds up to 600000",
            )
        log.warning("crash requested in %s ms", delay_ms)
        asyncio.get_running_loop().call_later(
            int(delay_ms) / 1000, os.kill, os.getpid(), signal.SIGKILL
        )
        return web.json_response({"crashing_in_ms": int(delay_ms)}, status=202)


class GroupCommitter:
    """Group commit: mutating requests that reach the bank in the same event-loop turn run
    one after the other, each in its own savepoint, inside one SQLite transaction, and are
    answered only after its single COMMIT (one fsync for the group instead of one each).
    Serial order and all-or-nothing per request are kept; durability before the answer too.
    """

    def __init__(self, storage: LedgerStorage) -> None:
        self.storage = storage
        self._queue: list[tuple[Callable[[], Reply], asyncio.Future[Reply]]] = []
        self._scheduled = False
        self.groups = 0
        self.requests = 0

    async def submit(self, operation: Callable[[], Reply]) -> Reply:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        self._queue.append((operation, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._queue = self._queue, []
        results: list[Reply | BaseException] = []
        try:
            with self.storage.group():
                for operation, _ in batch:
                    try:
                        results.append(operation())
                    except Exception as exc:  # a bug: its savepoint rolled back, others go on
                        log.exception("request failed inside a commit group")
                        results.append(exc)
        except Exception as exc:  # the COMMIT failed: nothing of the group is durable
            log.exception("group commit failed")
            results = [exc] * len(batch)
        self.groups += 1
        self.requests += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.cancelled():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


class _Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _now_ms() -> int:
    return int(time.time() * 1000)


def serve_forever(server: BankServer, ready: Callable[[int], None] | None = None) -> None:
    """Run the server until SIGTERM or SIGINT; print the ready line with the bound port."""

    async def main() -> None:
        port = await server.start()
        print(READY_LINE.format(host=server.config.host, port=port), flush=True)
        if ready is not None:
            ready(port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()

    asyncio.run(main())


def parse_clients(raw: object, where: str) -> dict[str, bytes]:
    """The clients file: {"clients": [{"client_id": ..., "secret": "<hex, >= 16 bytes>"}]}."""
    if not isinstance(raw, dict) or not isinstance(raw.get("clients"), list):
        raise ValueError(f"{where}: must be an object with a list 'clients'")
    clients: dict[str, bytes] = {}
    for i, entry in enumerate(raw["clients"]):
        if not isinstance(entry, dict) or set(entry) != {"client_id", "secret"}:
            raise ValueError(f"{where}: clients[{i}] must have exactly client_id and secret")
        cid, secret = entry["client_id"], entry["secret"]
        if not isinstance(cid, str) or not cid or cid.startswith("@") or len(cid) > 64:
            raise ValueError(
                f"{where}: clients[{i}].client_id must be 1-64 characters, not starting with @"
            )
        try:
            key = bytes.fromhex(secret) if isinstance(secret, str) else b""
        except ValueError:
            key = b""
        if len(key) < 16:
            raise ValueError(f"{where}: clients[{i}].secret must be hex of at least 16 bytes")
        if cid in clients:
            raise ValueError(f"{where}: client {cid} appears twice")
        clients[cid] = key
    return clients
