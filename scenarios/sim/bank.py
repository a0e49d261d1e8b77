"""The simulated bank: the bank's own service core on memory storage, reached through
simulated HTTP with the real service's faults and the real client's retries.

``SimBank`` holds a :class:`bank_adapter.service.BankService` over
:class:`bank_adapter.storage.MemoryStorage` with the committee the bank trusts: holds,
idempotency keys, certificate checks and the journal are the real rules, untouched. What
is simulated is the path to it:

- a request reaches the bank ``hop`` seconds after it is sent and its answer returns as
  long; the bank's faults (``bank_adapter.faults.FaultInjector``, the same class the
  real server uses, with the scenario's seed) add their latency, answer 503 during an
  outage or at their error rate, exactly as the server's middleware does;
- the client retries 429/5xx answers as ``bank_adapter.client.BankClient`` does: up to
  ``max_attempts`` tries with its capped, jittered backoff, then "unavailable";
- callbacks come from the storage's outbox, one delivery per node, as the webhook
  sender (``bank_adapter.webhooks``) makes them: delivered ``hop`` seconds after they
  are due, marked delivered or failed in the storage, retried with
  ``webhooks.backoff_ms`` when the node is down, paused during an outage, sent twice at
  the duplicate-callback rate, held back and shuffled within the reordering window.
  A mutating request in the "after" error phase commits and loses its answer, as the
  server's middleware does. Callbacks reach the node unsigned (the signature check is
  the real receiver's, tested with the bank); each node drops duplicates by event id as
  the real receiver does.

The bank's clock is the world's: ``genesis_ms`` plus the virtual time.

This module must never read the wall clock or use a random generator it was not given.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable, Sequence
from typing import Any, Final

from bank_adapter import ledger
from bank_adapter.client import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    MAX_ATTEMPTS,
    RETRY_STATUSES,
    ReportReply,
    StatusReply,
    backoff_s,
    report_body,
    report_key,
    report_reply_from_answer,
    status_reply_from_answer,
)
from bank_adapter.faults import FaultConfig, FaultInjector
from bank_adapter.server import ServerConfig, request_hash
from bank_adapter.service import BankService, Reply
from bank_adapter.storage import Delivery, MemoryStorage
from bank_adapter.terms import PaymentTerms
from bank_adapter.webhooks import DELIVERY_BATCH, backoff_ms, by_url, ready_deliveries
from consensus.report import Certificate, CommitteeConfig
from scenarios.sim.clock import EventQueue

__all__ = ["SimBank"]

#: One-way time between a node and the bank (seconds), and the jitter on it.
HOP: Final = 0.002
HOP_JITTER: Final = 0.001
#: The webhook sender's settings as the runner starts the real bank with them: its
#: outbox polled every 20 ms (``--webhook-poll-ms 20``), retries as the server's defaults.
CALLBACK_POLL_S: Final = 0.02
CALLBACK_RETRY_BASE_MS: Final = ServerConfig().webhook_retry_base_ms
CALLBACK_RETRY_CAP_MS: Final = ServerConfig().webhook_retry_cap_ms
_FOREVER_MS: Final = 2**62


class SimBank:
    def __init__(
        self,
        queue: EventQueue,
        committee: CommitteeConfig,
        *,
        nodes: int,
        accounts: Sequence[tuple[str, str, int]],
        genesis_ms: int,
        seed: int,
        deliver: Callable[[int, tuple[ledger.Event, ...], int], bool],
        crypto: Any = None,
    ) -> None:
        """``deliver(node, events, as_of_ms)`` hands one callback POST (one event or a
        batch of them) to a node; False when the node cannot take it (down), which fails
        the delivery of all of them."""
        self.queue = queue
        self.genesis_ms = genesis_ms
        self.nodes = nodes
        self._deliver = deliver
        self.urls = tuple(f"sim://node{i}/bank-callback" for i in range(nodes))
        self.storage = MemoryStorage(self.urls)
        kwargs: dict[str, Any] = {} if crypto is None else {"crypto": crypto}
        self.service = BankService(self.storage, committee, **kwargs)
        self.faults = FaultInjector(FaultConfig(seed=seed))
        self._rng = random.Random(seed ^ 0xB4_4B)  # the client's and sender's jitter
        self._dispatch_at: float | None = None
        self._in_flight: set[tuple[int, str]] = set()
        self._held_until: dict[tuple[int, str], int] = {}  # reordering fault: not before
        self.requests = 0
        #: Called with every event the bank records (an instruction's state reached).
        self.on_event: Callable[[ledger.Event], None] | None = None
        self._events_seen = 0
        for account_id, currency, balance in accounts:
            with self.storage.transaction() as txn:
                txn.apply(ledger.open_account(txn, account_id, currency, balance, self.now_ms()))

    # ------------------------------------------------------------------ clock and faults

    def now_ms(self) -> int:
        return self.genesis_ms + int(self.queue.now * 1000)

    def set_faults(self, **settings: Any) -> None:
        """The admin API's PUT /admin/faults: the named settings replace the current ones.
        A crash of the service is a fault of the real process only: refused here."""
        if settings.get("crash_after_commits") is not None:
            raise ValueError("the simulated bank does not crash: crash_after_commits is real-only")
        self.faults.set(FaultConfig(**settings))
        self._wake_dispatch(0.0)

    def _hop(self) -> float:
        return HOP + HOP_JITTER * self._rng.random()  # uniform(0, HOP_JITTER), inlined

    # ------------------------------------------------------------------ the API

    def status(self, settlement_id: bytes, answer: Callable[[StatusReply | None], None]) -> None:
        """GET /v1/instructions/{id}; ``answer(None)`` when the bank stayed unavailable."""

        def run() -> Reply:
            return self.service.status("0x" + settlement_id.hex(), self.now_ms())

        self._call(
            run,
            lambda reply: answer(status_reply_from_answer(reply.status, reply.json())),
            on_unavailable=lambda: answer(None),
        )

    def apply_report(
        self,
        client_id: str,
        certificate: Certificate,
        terms: Sequence[PaymentTerms],
        answer: Callable[[ReportReply | None, str], None],
    ) -> None:
        """POST /v1/reports as the real client sends it; ``answer(reply, error_code)``."""
        body = json.dumps(report_body(certificate, terms), separators=(",", ":")).encode()
        key = report_key(certificate)
        digest = request_hash("POST", "/v1/reports", body)

        def run() -> Reply:
            return self.service.apply_report(client_id, key, digest, body, self.now_ms())

        def done(reply: Reply) -> None:
            value = reply.json()
            if reply.status != 200:
                error = value.get("error", {}) if isinstance(value, dict) else {}
                answer(None, f"refused-{error.get('code', reply.status)}")
                return
            answer(report_reply_from_answer(reply.status, value), "")

        self._call(run, done, on_unavailable=lambda: answer(None, "error"), mutating=True)

    def _call(
        self,
        run: Callable[[], Reply],
        done: Callable[[Reply], None],
        on_unavailable: Callable[[], None] | None = None,
        attempt: int = 0,
        *,
        mutating: bool = False,
    ) -> None:
        """One request with the client's retries (module docstring)."""
        self.requests += 1

        def arrive() -> None:
            faults = self.faults
            if faults.outage(self.now_ms() / 1000):
                self.queue.after(self._hop(), answered, None)
                return
            delay = faults.latency_s()
            self.queue.after(delay, process)

        def process() -> None:
            if self.faults.fail_before():
                self.queue.after(self._hop(), answered, None)
                return
            reply = run()
            if reply.committed:
                self._new_events()
                self._wake_dispatch(CALLBACK_POLL_S)
            if mutating and reply.status < 500 and self.faults.fail_after():
                # Committed, but the answer is lost (the server's "after" error phase).
                self.queue.after(self._hop(), answered, None)
                return
            self.queue.after(self._hop(), answered, reply)

        def answered(reply: Reply | None) -> None:
            if reply is not None and reply.status not in RETRY_STATUSES:
                done(reply)
                return
            if attempt + 1 >= MAX_ATTEMPTS:
                if on_unavailable is not None:
                    on_unavailable()
                return
            pause = backoff_s(attempt, BACKOFF_BASE_S, BACKOFF_CAP_S, self._rng)
            self.queue.after(
                pause,
                functools.partial(
                    self._call, run, done, on_unavailable, attempt + 1, mutating=mutating
                ),
            )

        self.queue.after(self._hop(), arrive)

    def _new_events(self) -> None:
        events = self.storage.snapshot_events(self._events_seen)
        self._events_seen += len(events)
        if self.on_event is not None:
            for event in events:
                self.on_event(event)

    # ------------------------------------------------------------------ callbacks

    def _wake_dispatch(self, delay: float) -> None:
        at = self.queue.now + delay
        if self._dispatch_at is not None and self._dispatch_at <= at:
            return
        self._dispatch_at = at
        self.queue.at(at, self._dispatch, at)

    def _dispatch(self, scheduled: float) -> None:
        if self._dispatch_at != scheduled:
            return  # superseded by an earlier dispatch
        self._dispatch_at = None
        now_ms = self.now_ms()
        faults = self.faults
        if faults.outage(now_ms / 1000):
            end = faults.config.outage_end_s
            assert end is not None
            self._wake_dispatch(max(CALLBACK_POLL_S, end - now_ms / 1000))
            return
        ready = ready_deliveries(self.storage, now_ms, self._in_flight, self._held_until, faults)
        for group in by_url(ready):  # one POST per node, as the real sender sends them
            self._in_flight.update((d.seq, d.url) for d in group)
            self.queue.after(self._hop(), self._arrive, group)
        # Come back when the next waiting delivery is due (a retry, a held-back callback).
        waiting = [
            max(d.next_attempt_ms, self._held_until.get((d.seq, d.url), 0))
            for d in self.storage.due_deliveries(_FOREVER_MS, DELIVERY_BATCH + len(self._in_flight))
            if (d.seq, d.url) not in self._in_flight
        ]
        if waiting:
            self._wake_dispatch(max(CALLBACK_POLL_S, (min(waiting) - now_ms) / 1000))

    def _arrive(self, group: list[Delivery]) -> None:
        node = self.urls.index(group[0].url)
        now_ms = self.now_ms()
        events = tuple(d.event for d in group)
        taken = self._deliver(node, events, now_ms)
        self.queue.after(self._hop(), self._delivered, group, taken)
        if taken and self.faults.duplicate_callback():
            self.queue.after(self._hop(), self._deliver_again, node, events)

    def _deliver_again(self, node: int, events: tuple[ledger.Event, ...]) -> None:
        """The duplicate-callback fault: the same POST once more (the receiver drops it)."""
        self._deliver(node, events, self.now_ms())

    def _delivered(self, group: list[Delivery], taken: bool) -> None:
        now_ms = self.now_ms()
        for delivery in group:
            key = (delivery.seq, delivery.url)
            self._in_flight.discard(key)
            if taken:
                self.storage.delivery_succeeded(delivery.seq, delivery.url, now_ms)
                self._held_until.pop(key, None)
                continue
            delay = backoff_ms(
                delivery.attempts, CALLBACK_RETRY_BASE_MS, CALLBACK_RETRY_CAP_MS, self._rng
            )
            self.storage.delivery_failed(delivery.seq, delivery.url, now_ms + delay, "node down")
            self._wake_dispatch(delay / 1000)

    # ------------------------------------------------------------------ final state

    def balance(self, account_id: str) -> int:
        account = self.storage.account(account_id)
        return 0 if account is None else account.balance

    def states(self) -> dict[bytes, str]:
        return dict(self.storage.instruction_states())
