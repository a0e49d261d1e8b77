"""The real bank and the simulated bank behind one interface, for the differential test
(``test_sim_bank_differential.py``).

``RealSide`` drives the bank service process (``bank_adapter.process.BankProcess``) over
HTTP with the real client, and takes its signed callbacks on a local endpoint
(``CallbackSink``). ``SimSide`` drives a ``scenarios.sim.bank.SimBank`` on its own
``EventQueue`` and runs the queue until each answer arrives. Both turn what their bank said
into the same plain values (``Answer``, ``Callback``), with the bank's clock set aside:
the two clocks differ by design (wall time, virtual time), everything else must not.

Nothing here decides whether the two agree; the test compares with ``==``.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final, Protocol

import httpx

from bank_adapter.client import (
    BankApiError,
    BankUnavailableError,
    DecisionResult,
    InstructionStatus,
    ReportReply,
    StatusReply,
    SyncBankClient,
    WebhookReceiver,
    WebhookSignatureError,
)
from bank_adapter.devcommittee import DevCommittee
from bank_adapter.faults import FaultConfig
from bank_adapter.ledger import Event, reconcile
from bank_adapter.process import BankProcess
from bank_adapter.signing import HEADER_IDEMPOTENCY
from bank_adapter.terms import PaymentTerms
from bank_adapter.webhooks import callback_body
from consensus.report import Certificate, CommitteeConfig
from scenarios.sim.bank import (
    CALLBACK_POLL_S,
    CALLBACK_RETRY_BASE_MS,
    CALLBACK_RETRY_CAP_MS,
    SimBank,
)
from scenarios.sim.clock import EventQueue

from .test_webhooks import wait_for

__all__ = [
    "Answer",
    "BankSide",
    "Callback",
    "CallbackSink",
    "RealBank",
    "RealSide",
    "SimSide",
    "real_bank",
]

#: Clients of the bank; a report sent by the second one finds the first one's decisions
#: applied (``duplicate``).
CLIENTS: Final = ("node-0", "node-1")
#: How long the real bank's callbacks must stay quiet before a side counts as settled
#: (a duplicate delivery follows its first one, after the outbox already says delivered).
QUIET_S: Final = 0.15
#: Virtual seconds the simulated bank gets to deliver its callbacks (its retry backoff is
#: capped at 30 s).
SIM_SETTLE_S: Final = 600.0


# --------------------------------------------------------------------------- plain values


def _timeless(instruction: InstructionStatus | None) -> InstructionStatus | None:
    return None if instruction is None else dataclasses.replace(instruction, as_of_ms=None)


@dataclass(frozen=True, slots=True)
class Answer:
    """What the client got for one request: ``report`` (one result per decision),
    ``status`` (the instruction, None for an unknown settlement), ``refused`` (the bank's
    error code) or ``unavailable`` (every attempt failed). The bank's clock is kept in
    ``as_of_ms`` but is no part of the comparison; the instructions in it carry none."""

    kind: str
    results: tuple[DecisionResult, ...] = ()
    instruction: InstructionStatus | None = None
    code: str | None = None
    as_of_ms: int | None = field(default=None, compare=False)

    @classmethod
    def of_report(cls, reply: ReportReply) -> Answer:
        results = tuple(
            dataclasses.replace(r, instruction=_timeless(r.instruction)) for r in reply.results
        )
        return cls("report", results=results, as_of_ms=reply.as_of_ms)

    @classmethod
    def of_status(cls, reply: StatusReply) -> Answer:
        return cls("status", instruction=_timeless(reply.instruction), as_of_ms=reply.as_of_ms)


@dataclass(frozen=True, slots=True)
class Callback:
    """One authentic callback delivery as its receiver read it. ``new`` is False for a
    second delivery of an event id (the receiver drops it); the times are set aside."""

    event_id: str
    type: str
    instruction: InstructionStatus
    new: bool = field(compare=False)
    created_ms: int = field(compare=False)
    as_of_ms: int | None = field(compare=False)

    @classmethod
    def of_body(cls, body: bytes, new: bool) -> Callback:
        value = json.loads(body)
        return cls(
            event_id=value["event_id"],
            type=value["type"],
            instruction=InstructionStatus.from_json(value["instruction"]),
            new=new,
            created_ms=value["created_ms"],
            as_of_ms=value.get("as_of_ms"),
        )


class BankSide(Protocol):
    """What the differential test does to a bank, the same way on either side."""

    def now_s(self) -> float: ...
    def report(
        self, client: int, certificate: Certificate, terms: Sequence[PaymentTerms]
    ) -> Answer: ...
    def status(self, settlement_id: bytes) -> Answer: ...
    def set_faults(self, config: FaultConfig) -> None: ...
    def refuse_callbacks(self, count: int) -> None: ...
    def settle(self) -> None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def callback_attempts(self) -> int: ...
    def callbacks(self, settlement_ids: Collection[bytes]) -> list[Callback]: ...
    def balances(self, accounts: Sequence[str]) -> dict[str, tuple[int, int]]: ...
    def states(self, settlement_ids: Collection[bytes]) -> dict[bytes, str]: ...
    def problems(self) -> list[str]: ...


# --------------------------------------------------------------------------- simulated


class SimSide:
    """A fresh ``SimBank`` with one node, whose callbacks this side receives."""

    def __init__(
        self,
        committee: CommitteeConfig,
        accounts: Sequence[tuple[str, str, int]],
        *,
        genesis_ms: int,
        seed: int,
    ) -> None:
        self.queue = EventQueue(seed)
        self.bank = SimBank(
            self.queue,
            committee,
            nodes=1,
            accounts=accounts,
            genesis_ms=genesis_ms,
            seed=seed,
            deliver=self._deliver,
        )
        self.delivered: list[Callback] = []
        self._seen: set[str] = set()
        self._refuse = 0
        self._callback_attempts = 0

    def now_s(self) -> float:
        return self.bank.now_ms() / 1000

    def report(
        self, client: int, certificate: Certificate, terms: Sequence[PaymentTerms]
    ) -> Answer:
        box: list[Answer] = []

        def answer(reply: ReportReply | None, error: str) -> None:
            if reply is not None:
                box.append(Answer.of_report(reply))
            elif error == "error":
                box.append(Answer("unavailable"))
            else:
                box.append(Answer("refused", code=error.removeprefix("refused-")))

        self.bank.apply_report(CLIENTS[client], certificate, terms, answer)
        return self._run_until(box)

    def status(self, settlement_id: bytes) -> Answer:
        box: list[Answer] = []

        def answer(reply: StatusReply | None) -> None:
            box.append(Answer("unavailable") if reply is None else Answer.of_status(reply))

        self.bank.status(settlement_id, answer)
        return self._run_until(box)

    def _run_until(self, box: list[Answer]) -> Answer:
        self.queue.run(float("inf"), stop=lambda: bool(box))
        assert box, "the simulated bank's queue ran dry before the answer arrived"
        return box[0]

    def set_faults(self, config: FaultConfig) -> None:
        self.bank.set_faults(**config.to_json())

    def refuse_callbacks(self, count: int) -> None:
        self._refuse = count

    def settle(self) -> None:
        """Run the queue until the outbox is empty and the callbacks have stopped coming.
        (The queue itself need not run dry: a superseded dispatch wake-up stays in it.)"""
        storage = self.bank.storage
        self.queue.run(
            self.queue.now + SIM_SETTLE_S, stop=lambda: storage.pending_delivery_count() == 0
        )
        self.queue.run(self.queue.now + QUIET_S)
        pending = storage.pending_delivery_count()
        assert pending == 0, (
            f"the SimBank still has {pending} callbacks undelivered after {SIM_SETTLE_S} s"
            + (", with nothing scheduled to deliver them" if self.queue.next_time() is None else "")
        )

    def _deliver(self, node: int, events: tuple[Event, ...], as_of_ms: int) -> bool:
        self._callback_attempts += 1
        if self._refuse > 0:
            self._refuse -= 1
            return False
        # The body the real sender would sign for this attempt, read as the receiver reads it.
        for event in events:
            body = callback_body(event.payload, as_of_ms)
            self.delivered.append(Callback.of_body(body, new=event.event_id not in self._seen))
            self._seen.add(event.event_id)
        return True

    @property
    def attempts(self) -> int:
        return self.bank.requests

    @property
    def callback_attempts(self) -> int:
        return self._callback_attempts

    def callbacks(self, settlement_ids: Collection[bytes]) -> list[Callback]:
        return [c for c in self.delivered if c.instruction.settlement_id in settlement_ids]

    def balances(self, accounts: Sequence[str]) -> dict[str, tuple[int, int]]:
        result = {}
        for account_id in accounts:
            account = self.bank.storage.account(account_id)
            assert account is not None, account_id
            result[account_id] = (account.balance, account.held)
        return result

    def states(self, settlement_ids: Collection[bytes]) -> dict[bytes, str]:
        return {sid: s for sid, s in self.bank.states().items() if sid in settlement_ids}

    def problems(self) -> list[str]:
        return reconcile(self.bank.storage.snapshot())


# --------------------------------------------------------------------------- real


class CallbackSink:
    """The bank's callback endpoint on 127.0.0.1: checks every delivery's signature with
    ``WebhookReceiver`` and records every authentic one, duplicates included; answers 500
    (receiver down) to as many deliveries as it is told to refuse."""

    def __init__(self) -> None:
        self.delivered: list[Callback] = []
        self.attempts = 0
        self.forged = 0  # deliveries whose signature did not check: none expected
        self.refuse = 0
        self.checker: WebhookReceiver | None = None
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(sink.take(dict(self.headers), body))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/bank-callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self, headers: dict[str, str], body: bytes) -> int:
        """The HTTP status answered to one delivery."""
        with self.lock:
            self.attempts += 1
            if self.refuse > 0:
                self.refuse -= 1
                return 500
            assert self.checker is not None, "the bank's public key is not pinned yet"
            try:
                new = {e.event_id for e in self.checker.receive_all(headers, body, time.time())}
            except WebhookSignatureError:
                self.forged += 1
                return 401
            value = json.loads(body)
            for item in value if isinstance(value, list) else [value]:
                one = json.dumps(item).encode()
                self.delivered.append(Callback.of_body(one, new=item["event_id"] in new))
            return 200

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class RealBank:
    """One bank service process for a test module, its clients and its callback sink."""

    process: BankProcess
    clients: tuple[SyncBankClient, ...]
    sink: CallbackSink

    def admin(self, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.process.admin_token}"}
        if key is not None:
            headers[HEADER_IDEMPOTENCY] = key
        response = httpx.request(
            method, self.process.url + path, json=body, headers=headers, timeout=10
        )
        assert response.status_code < 300, (path, response.status_code, response.text)
        return response.json()


def real_bank(committee: DevCommittee, workdir: Path) -> Iterator[RealBank]:
    """A generator for a fixture: the bank process started with the webhook sender
    settings the simulated bank copies (``scenarios.sim.bank``), then stopped by PID."""
    secrets_of = {client: secrets.token_bytes(32) for client in CLIENTS}
    sink = CallbackSink()
    process = BankProcess(
        workdir,
        committee,
        clients=secrets_of,
        webhooks=[sink.url],
        extra_args=[
            "--webhook-poll-ms",
            str(round(CALLBACK_POLL_S * 1000)),
            "--webhook-retry-base-ms",
            str(CALLBACK_RETRY_BASE_MS),
            "--webhook-retry-cap-ms",
            str(CALLBACK_RETRY_CAP_MS),
        ],
    )
    clients: list[SyncBankClient] = []
    try:
        process.start()
        key = httpx.get(process.url + "/v1/webhook-key").json()["ed25519_public_key"]
        sink.checker = WebhookReceiver(bytes.fromhex(key[2:]))
        # The client's own retry policy, as the simulated bank copies it.
        clients = [SyncBankClient(process.url, c, secrets_of[c]) for c in CLIENTS]
        yield RealBank(process, tuple(clients), sink)
    finally:
        for client in clients:
            client.close()
        process.stop()
        sink.close()


class RealSide:
    """The real bank, with this program's accounts opened through the admin API (account
    ids are unique to the program, so programs share one process)."""

    def __init__(self, real: RealBank, accounts: Sequence[tuple[str, str, int]]) -> None:
        self.real = real
        for account_id, currency, balance in accounts:
            real.admin(
                "POST",
                "/admin/accounts",
                {"account_id": account_id, "currency": currency, "opening_balance": balance},
                key=f"open:{account_id}",
            )

    def now_s(self) -> float:
        return time.time()

    def report(
        self, client: int, certificate: Certificate, terms: Sequence[PaymentTerms]
    ) -> Answer:
        try:
            reply = self.real.clients[client].apply_report_reply(certificate, terms)
        except BankUnavailableError:
            return Answer("unavailable")
        except BankApiError as exc:
            return Answer("refused", code=exc.code)
        return Answer.of_report(reply)

    def status(self, settlement_id: bytes) -> Answer:
        try:
            return Answer.of_status(self.real.clients[0].status_reply(settlement_id))
        except BankUnavailableError:
            return Answer("unavailable")

    def set_faults(self, config: FaultConfig) -> None:
        self.real.admin("PUT", "/admin/faults", config.to_json())

    def refuse_callbacks(self, count: int) -> None:
        with self.real.sink.lock:
            self.real.sink.refuse = count

    def settle(self) -> None:
        """Wait until the outbox is empty and the callbacks have stopped coming."""
        wait_for(lambda: self.real.admin("GET", "/admin/reconcile")["pending_deliveries"] == 0)
        sink = self.real.sink
        seen, since = sink.attempts, time.monotonic()

        def quiet() -> bool:
            nonlocal seen, since
            if sink.attempts != seen:
                seen, since = sink.attempts, time.monotonic()
            return time.monotonic() - since >= QUIET_S

        wait_for(quiet)

    @property
    def attempts(self) -> int:
        return sum(c.client.attempts for c in self.real.clients)

    @property
    def callback_attempts(self) -> int:
        return self.real.sink.attempts

    def callbacks(self, settlement_ids: Collection[bytes]) -> list[Callback]:
        with self.real.sink.lock:
            delivered = list(self.real.sink.delivered)
        return [c for c in delivered if c.instruction.settlement_id in settlement_ids]

    def balances(self, accounts: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Account reads are API requests: read them with the faults cleared."""
        result = {}
        for account_id in accounts:
            account = self.real.clients[0].account(account_id)
            result[account_id] = (account.balance, account.held)
        return result

    def states(self, settlement_ids: Collection[bytes]) -> dict[bytes, str]:
        states = self.real.admin("GET", "/admin/instructions")["instructions"]
        return {
            bytes.fromhex(sid[2:]): state
            for sid, state in states.items()
            if bytes.fromhex(sid[2:]) in settlement_ids
        }

    def problems(self) -> list[str]:
        return list(self.real.admin("GET", "/admin/reconcile")["problems"])
