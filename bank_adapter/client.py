"""The client oracle nodes use to talk to the bank, and the callback receiver helper.

``BankClient`` is asynchronous on httpx and anyio, so it runs under trio (the node
runtime) as well as asyncio. Every call is typed, signed (HMAC, ``signing.py``), bounded
by a timeout, and retried with exponential backoff and jitter on transport errors and on
429/5xx answers. Mutating calls carry an idempotency key that is derived from the
operation, the settlement and the certificate's report hash unless the caller gives one:
a node that retries, even after its own restart, repeats the same request and gets the
first answer back, never a second payment. Each attempt is signed anew (fresh timestamp
and nonce), which is why a retry is not refused as a replayed nonce. ``SyncBankClient``
wraps it for scripts and tests.

``WebhookReceiver`` is the receiving side of the bank's callbacks: it checks the Ed25519
signature against the bank's pinned public key, refuses stale signatures, and drops
duplicates by event id (delivery is at least once). It also keeps each settlement's most
advanced state, so an out-of-order callback never moves a settlement backwards.

The bank states its own clock (``as_of_ms``, unix ms) in status answers, report answers and
callbacks. Every ``InstructionStatus`` carries the time of the answer it came from, and
``status_reply`` / ``apply_report_reply`` / ``CallbackEvent`` give it with the answer as a
whole (a 404 for an unknown settlement states it too). Nodes judge a bank leg EXPIRED by
this clock, never by their own; None means the answer did not state it.

This module must never retry a request the bank refused with a 4xx (it would fail the same
way), send an unsigned request, or trust a callback whose signature it did not check.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import OrderedDict
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import anyio
import httpx

from bank_adapter.authorization import certificate_to_json
from bank_adapter.ledger import InstructionState, RejectReason
from bank_adapter.signing import (
    WEBHOOK_EVENT_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
    WebhookSignatureError,
    new_nonce,
    sign_request,
    verify_webhook,
)
from bank_adapter.terms import PaymentTerms
from consensus.report import Certificate, report_hash

__all__ = [
    "AccountStatus",
    "BankApiError",
    "BankClient",
    "BankUnavailableError",
    "CallbackEvent",
    "DecisionResult",
    "InstructionStatus",
    "ReportReply",
    "MAX_ATTEMPTS",
    "RETRY_STATUSES",
    "StatusReply",
    "SyncBankClient",
    "WebhookReceiver",
    "WebhookSignatureError",
    "backoff_s",
    "report_body",
    "report_key",
    "report_reply_from_answer",
    "status_reply_from_answer",
]

#: Answers worth another try, how many tries, and the backoff between them (the simulated
#: bank's clients follow the same policy: ``scenarios.sim.bank``).
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
MAX_ATTEMPTS: Final = 6
BACKOFF_BASE_S: Final = 0.05
BACKOFF_CAP_S: Final = 2.0
_RANK: Final = {
    InstructionState.PREVALIDATED: 1,
    InstructionState.REJECTED: 2,
    InstructionState.EXECUTED: 2,
    InstructionState.CANCELLED: 2,
}
T = TypeVar("T")


class BankApiError(Exception):
    """The bank refused a request (4xx), or kept failing it (5xx after all retries)."""

    def __init__(self, status: int | None, code: str, message: str) -> None:
        super().__init__(f"bank answered {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class BankUnavailableError(BankApiError):
    """Every attempt failed with a transport error or a 429/5xx answer."""


@dataclass(frozen=True, slots=True)
class InstructionStatus:
    settlement_id: bytes
    state: InstructionState
    reject_reason: RejectReason | None
    terms_hash: bytes
    payer_account: str | None
    payee_account: str | None
    amount: int | None
    currency: str | None
    deadline: int | None
    duplicate: bool  # the bank had already applied this decision
    # The bank's clock (unix ms) in the answer that stated this status; None: not stated.
    as_of_ms: int | None = None

    @classmethod
    def from_json(
        cls, value: Mapping[str, Any], duplicate: bool = False, as_of_ms: int | None = None
    ) -> InstructionStatus:
        reason = value.get("reject_reason")
        return cls(
            settlement_id=bytes.fromhex(value["settlement_id"][2:]),
            state=InstructionState(value["state"]),
            reject_reason=None if reason is None else RejectReason(reason),
            terms_hash=bytes.fromhex(value["terms_hash"][2:]),
            payer_account=value.get("payer_account"),
            payee_account=value.get("payee_account"),
            amount=value.get("amount"),
            currency=value.get("currency"),
            deadline=value.get("deadline"),
            duplicate=duplicate,
            as_of_ms=as_of_ms,
        )


def _as_of_ms(answer: Mapping[str, Any]) -> int | None:
    """The bank's clock an answer or callback states (``as_of_ms``), None if it states none.
    ValueError if it is there but not a non-negative integer."""
    value = answer.get("as_of_ms")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"as_of_ms must be a non-negative integer of unix ms, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class StatusReply:
    """The bank's answer to a status request (``BankClient.status_reply``)."""

    instruction: InstructionStatus | None  # None: the bank has no instruction (404)
    as_of_ms: int | None  # the bank's clock when it answered; None: not stated


@dataclass(frozen=True, slots=True)
class AccountStatus:
    account_id: str
    currency: str
    balance: int
    held: int
    available: int


class BankClient:
    """Async client of the bank's API (asyncio or trio)."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        secret: bytes,
        *,
        timeout_s: float = 5.0,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
        rng: random.Random | None = None,
        max_connections: int = 16,
    ) -> None:
        self.client_id = client_id
        self._secret = secret
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._rng = rng or random.Random()
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        self.attempts = 0  # total HTTP attempts, for tests and benchmarks
        self.retries = 0

    async def __aenter__(self) -> BankClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # operations ------------------------------------------------------------
    async def prevalidate(
        self, terms: PaymentTerms, certificate: Certificate, *, idempotency_key: str | None = None
    ) -> InstructionStatus:
        """Ask the bank to hold the funds. A REJECTED instruction is an answer, not an error."""
        body = {**terms_json(terms), "certificate": certificate_to_json(certificate)}
        key = idempotency_key or _default_key("prevalidate", terms.settlement_id, certificate)
        status, answer = await self._request(
            "POST", "/v1/instructions", body, key, ok=(200, 201, 422)
        )
        if status == 422 and "instruction" not in answer:
            raise _api_error(status, answer)
        return _instruction(status, answer)

    async def execute(
        self, settlement_id: bytes, certificate: Certificate, *, idempotency_key: str | None = None
    ) -> InstructionStatus:
        return await self._decide("execute", settlement_id, certificate, idempotency_key)

    async def apply_report(
        self,
        certificate: Certificate,
        terms: Sequence[PaymentTerms],
        *,
        idempotency_key: str | None = None,
    ) -> list[DecisionResult]:
        """Every decision of ``certificate`` in one call (``POST /v1/reports``), with the
        terms of its PREPARE decisions; one result per decision, in report order. A
        refused decision is a result (``error_code``), not an exception; a certificate the
        bank refuses raises BankApiError. ``apply_report_reply`` also gives the bank's
        time."""
        reply = await self.apply_report_reply(certificate, terms, idempotency_key=idempotency_key)
        return list(reply.results)

    async def apply_report_reply(
        self,
        certificate: Certificate,
        terms: Sequence[PaymentTerms],
        *,
        idempotency_key: str | None = None,
    ) -> ReportReply:
        """``apply_report`` with the bank's clock when it answered (``as_of_ms``): always
        the time of this request, even when every decision's answer is a replayed one."""
        body = report_body(certificate, terms)
        key = idempotency_key or report_key(certificate)
        status, answer = await self._request("POST", "/v1/reports", body, key)
        return report_reply_from_answer(status, answer)

    async def cancel(
        self, settlement_id: bytes, certificate: Certificate, *, idempotency_key: str | None = None
    ) -> InstructionStatus:
        return await self._decide("cancel", settlement_id, certificate, idempotency_key)

    async def _decide(
        self,
        operation: str,
        settlement_id: bytes,
        certificate: Certificate,
        idempotency_key: str | None,
    ) -> InstructionStatus:
        key = idempotency_key or _default_key(operation, settlement_id, certificate)
        status, answer = await self._request(
            "POST",
            f"/v1/instructions/0x{settlement_id.hex()}/{operation}",
            {"certificate": certificate_to_json(certificate)},
            key,
        )
        return _instruction(status, answer)

    async def status(self, settlement_id: bytes) -> InstructionStatus | None:
        """The instruction for a settlement, or None if the bank has none (polling fallback)."""
        return (await self.status_reply(settlement_id)).instruction

    async def status_reply(self, settlement_id: bytes) -> StatusReply:
        """The instruction for a settlement (None if the bank has none) and the bank's clock
        when it answered, which a 404 for an unknown settlement states too."""
        status, answer = await self._request(
            "GET", f"/v1/instructions/0x{settlement_id.hex()}", None, None, ok=(200, 404)
        )
        return status_reply_from_answer(status, answer)

    async def account(self, account_id: str) -> AccountStatus:
        _, answer = await self._request("GET", f"/v1/accounts/{account_id}", None, None)
        return AccountStatus(**answer)

    # transport -------------------------------------------------------------
    async def _request(
        self,
        method: str,
        path: str,
        payload: object | None,
        idempotency_key: str | None,
        ok: tuple[int, ...] = (200, 201),
    ) -> tuple[int, dict[str, Any]]:
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        last_error = "no attempt made"
        last_status: int | None = None
        for attempt in range(self.max_attempts):
            if attempt:
                self.retries += 1
                await anyio.sleep(self._backoff_s(attempt - 1))
            headers = sign_request(
                self.client_id,
                self._secret,
                method,
                path,
                body,
                timestamp=int(time.time()),
                nonce=new_nonce(),
                idempotency_key=idempotency_key,
            )
            if payload is not None:
                headers["Content-Type"] = "application/json"
            self.attempts += 1
            try:
                response = await self._http.request(method, path, content=body, headers=headers)
            except httpx.TransportError as exc:
                last_error, last_status = f"{type(exc).__name__}: {exc}", None
                continue
            if response.status_code in RETRY_STATUSES:
                last_status = response.status_code
                last_error = response.text[:300]
                continue
            try:
                answer = response.json()
            except ValueError:
                raise BankApiError(
                    response.status_code, "invalid_response", response.text[:200]
                ) from None
            if response.status_code in ok:
                return response.status_code, answer
            raise _api_error(response.status_code, answer)
        raise BankUnavailableError(
            last_status,
            "unavailable",
            f"{method} {path} failed {self.max_attempts} times; last: {last_error}",
        )

    def _backoff_s(self, retry: int) -> float:
        return backoff_s(retry, self.backoff_base_s, self.backoff_cap_s, self._rng)


def backoff_s(retry: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """The pause before retry ``retry + 1``: base * 2**retry, capped, with jitter in
    [50%, 100%]."""
    ceiling = min(cap_s, base_s * 2.0**retry)
    return ceiling * (0.5 + rng.random() / 2)


def report_body(certificate: Certificate, terms: Sequence[PaymentTerms]) -> dict[str, Any]:
    """The JSON body of ``POST /v1/reports``: the certificate and the PREPARE terms."""
    return {
        "certificate": certificate_to_json(certificate),
        "terms": [terms_json(t) for t in terms],
    }


def report_key(certificate: Certificate) -> str:
    """The idempotency key a report is sent under: one per report, whoever sends it."""
    return f"report:{report_hash(certificate.report).hex()}"


def terms_json(terms: PaymentTerms) -> dict[str, Any]:
    """A PREPARE's payment terms as ``POST /v1/reports`` carries them."""
    return {
        "settlement_id": "0x" + terms.settlement_id.hex(),
        "payer_account": terms.payer_account,
        "payee_account": terms.payee_account,
        "amount": terms.amount,
        "currency": terms.currency,
        "deadline": terms.deadline,
    }


def status_reply_from_answer(status: int, answer: Mapping[str, Any]) -> StatusReply:
    """A status answer (200, or 404 for an unknown settlement) as a StatusReply; the one
    parser of ``GET /v1/instructions/{id}`` answers (the simulated bank's clients use it
    too). Raises BankApiError for any other answer."""
    as_of_ms = _answer_as_of_ms(status, answer)
    if status == 404:
        error = answer.get("error")
        if not isinstance(error, Mapping) or error.get("code") != "unknown_instruction":
            raise _api_error(status, answer)
        return StatusReply(None, as_of_ms)
    if status != 200:
        raise _api_error(status, answer)
    return StatusReply(_instruction(status, answer), as_of_ms)


def report_reply_from_answer(status: int, answer: Mapping[str, Any]) -> ReportReply:
    """A ``POST /v1/reports`` answer (200) as a ReportReply: one result per decision, in
    report order, each with the bank's time of this answer; the one parser of those
    answers (the simulated bank's clients use it too)."""
    as_of_ms = _answer_as_of_ms(status, answer)
    results = []
    for item in answer["results"]:
        reply = item["answer"]
        error = reply.get("error")
        results.append(
            DecisionResult(
                settlement_id=bytes.fromhex(item["settlement_id"][2:]),
                status=int(item["status"]),
                instruction=(
                    InstructionStatus.from_json(
                        reply["instruction"], bool(reply.get("duplicate")), as_of_ms
                    )
                    if "instruction" in reply
                    else None
                ),
                error_code=None if error is None else str(error.get("code")),
            )
        )
    return ReportReply(tuple(results), as_of_ms)


def _answer_as_of_ms(status: int, answer: Mapping[str, Any]) -> int | None:
    try:
        return _as_of_ms(answer)
    except ValueError as exc:
        raise BankApiError(status, "invalid_response", str(exc)) from None


def _instruction(status: int, answer: Mapping[str, Any]) -> InstructionStatus:
    """The instruction of an instruction answer, with the time the answer states."""
    return InstructionStatus.from_json(
        answer["instruction"], bool(answer.get("duplicate")), _answer_as_of_ms(status, answer)
    )


def _api_error(status: int, answer: Mapping[str, Any]) -> BankApiError:
    error = answer.get("error") if isinstance(answer, Mapping) else None
    if isinstance(error, Mapping):
        return BankApiError(status, str(error.get("code")), str(error.get("message")))
    return BankApiError(status, "unknown_error", str(answer)[:200])


def _default_key(operation: str, settlement_id: bytes, certificate: Certificate) -> str:
    # Same operation, settlement and certificate -> same key, across retries and restarts.
    return f"{operation}:{settlement_id.hex()}:{report_hash(certificate.report).hex()}"


class SyncBankClient:
    """Blocking wrapper of BankClient (its own event loop; not for use inside one)."""

    def __init__(self, base_url: str, client_id: str, secret: bytes, **options: Any) -> None:
        self._runner = asyncio.Runner()
        self._client: BankClient = self._runner.run(_make(base_url, client_id, secret, options))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    @property
    def client(self) -> BankClient:
        return self._client

    def prevalidate(
        self, terms: PaymentTerms, certificate: Certificate, **kw: Any
    ) -> InstructionStatus:
        return self._run(self._client.prevalidate(terms, certificate, **kw))

    def execute(
        self, settlement_id: bytes, certificate: Certificate, **kw: Any
    ) -> InstructionStatus:
        return self._run(self._client.execute(settlement_id, certificate, **kw))

    def cancel(
        self, settlement_id: bytes, certificate: Certificate, **kw: Any
    ) -> InstructionStatus:
        return self._run(self._client.cancel(settlement_id, certificate, **kw))

    def apply_report(
        self, certificate: Certificate, terms: Sequence[PaymentTerms], **kw: Any
    ) -> list[DecisionResult]:
        return self._run(self._client.apply_report(certificate, terms, **kw))

    def apply_report_reply(
        self, certificate: Certificate, terms: Sequence[PaymentTerms], **kw: Any
    ) -> ReportReply:
        return self._run(self._client.apply_report_reply(certificate, terms, **kw))

    def status(self, settlement_id: bytes) -> InstructionStatus | None:
        return self._run(self._client.status(settlement_id))

    def status_reply(self, settlement_id: bytes) -> StatusReply:
        return self._run(self._client.status_reply(settlement_id))

    def account(self, account_id: str) -> AccountStatus:
        return self._run(self._client.account(account_id))

    def close(self) -> None:
        self._run(self._client.aclose())
        self._runner.close()

    def __enter__(self) -> SyncBankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make(
    base_url: str, client_id: str, secret: bytes, options: dict[str, Any]
) -> BankClient:
    # httpx binds its connection pool to the running loop, so create it inside the runner.
    return BankClient(base_url, client_id, secret, **options)


# --------------------------------------------------------------------------- callbacks


@dataclass(frozen=True, slots=True)
class DecisionResult:
    """What the bank did with one decision of a report (``BankClient.apply_report``)."""

    settlement_id: bytes
    status: int  # the HTTP status the decision's own endpoint would have answered
    instruction: InstructionStatus | None  # None when the decision was refused
    error_code: str | None  # e.g. "instruction_rejected", "unknown_instruction"


@dataclass(frozen=True, slots=True)
class ReportReply:
    """The bank's answer to a report (``BankClient.apply_report_reply``)."""

    results: tuple[DecisionResult, ...]  # one per decision, in report order
    as_of_ms: int | None  # the bank's clock when it answered; None: not stated


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    event_id: str
    type: str
    created_ms: int  # when the bank made the change the event reports
    instruction: InstructionStatus
    # The bank's clock when this delivery attempt was sent (a retry states a later time);
    # None for a body that does not state it.
    as_of_ms: int | None = None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, val in headers.items():
        if key.lower() == lowered:
            return val
    return None


class WebhookReceiver:
    """Checks and deduplicates the bank's callbacks; tracks each settlement's state and the
    latest bank time stated."""

    def __init__(
        self, bank_public_key: bytes, *, tolerance_s: int = 300, remember: int = 100_000
    ) -> None:
        self.bank_public_key = bank_public_key
        self.tolerance_s = tolerance_s
        self.remember = remember
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.states: dict[bytes, InstructionState] = {}
        self.duplicates = 0
        # The latest bank clock any authentic delivery stated, duplicates included (a
        # duplicate is dropped, but the time it was sent at is still news).
        self.latest_as_of_ms: int | None = None

    def receive(
        self, headers: Mapping[str, str], body: bytes, now_s: float
    ) -> CallbackEvent | None:
        """The new event, or None for a duplicate. Raises WebhookSignatureError (answer 401)
        if the signature is missing, stale or wrong, or the body is not the bank's event."""
        events = self.receive_all(headers, body, now_s)
        return events[0] if events else None

    def receive_all(
        self, headers: Mapping[str, str], body: bytes, now_s: float
    ) -> list[CallbackEvent]:
        """The new events of a delivery: one event (a JSON object) or a batch (a JSON array
        of them, ``bank_adapter.webhooks.batch_body``), duplicates left out. Raises
        WebhookSignatureError (answer 401) if the signature is missing, stale or wrong, or
        the body is not the bank's events; a batch is taken or refused as a whole."""
        verify_webhook(
            self.bank_public_key,
            _header(headers, WEBHOOK_SIGNATURE_HEADER),
            body,
            now_s,
            self.tolerance_s,
        )
        try:
            value = json.loads(body)
            items = value if isinstance(value, list) else [value]
            if not items:
                raise TypeError("an empty batch")
            events = [_callback_event(item) for item in items]
        except (ValueError, KeyError, TypeError) as exc:
            raise WebhookSignatureError(
                f"signed callback body is not a bank event: {exc}"
            ) from None
        header_id = _header(headers, WEBHOOK_EVENT_HEADER)
        if header_id is not None and (len(events) != 1 or header_id != events[0].event_id):
            raise WebhookSignatureError("callback event id header does not match its body")
        return [e for e in events if self._take(e)]

    def _take(self, event: CallbackEvent) -> bool:
        """Count ``event`` in; False for a duplicate (its bank time still counts)."""
        as_of_ms = event.as_of_ms
        if as_of_ms is not None and (
            self.latest_as_of_ms is None or as_of_ms > self.latest_as_of_ms
        ):
            self.latest_as_of_ms = as_of_ms
        if event.event_id in self._seen:
            self.duplicates += 1
            return False
        self._seen[event.event_id] = None
        while len(self._seen) > self.remember:
            self._seen.popitem(last=False)
        sid = event.instruction.settlement_id
        state = event.instruction.state
        current = self.states.get(sid)
        if current is None or _RANK[state] > _RANK[current]:
            self.states[sid] = state
        return True


def _callback_event(value: Any) -> CallbackEvent:
    if not isinstance(value, dict):
        raise TypeError("a bank event is a JSON object")
    as_of_ms = _as_of_ms(value)
    return CallbackEvent(
        event_id=str(value["event_id"]),
        type=str(value["type"]),
        created_ms=int(value["created_ms"]),
        instruction=InstructionStatus.from_json(value["instruction"], as_of_ms=as_of_ms),
        as_of_ms=as_of_ms,
    )
