"""Callback delivery: the bank's outbox sender (at least once, signed, with backoff).

Events are written to the outbox in the same transaction as the state change they report
(``sqlite_storage.py``), one delivery row per configured webhook URL. ``WebhookSender``
polls for due deliveries, POSTs each event's canonical JSON signed with the bank's Ed25519
key, marks it delivered on a 2xx answer, and otherwise schedules the next attempt after an
exponential backoff with jitter (capped). The marks of deliveries that end close together
are written in one transaction (one fsync for many, ``FLUSH_DELAY_S`` after the first),
and always before the outbox is read again. A crash between a receiver's 2xx and the
bookkeeping write sends the event again: delivery is at least once, and receivers
deduplicate by event id (``client.WebhookReceiver``). Retries go on until the receiver
answers; the status endpoint is the fallback for a receiver that is gone.

Each attempt's body is the stored event with the bank's clock at sending added
(``as_of_ms``, ``callback_body``), then signed: a late retry tells the receiver the bank's
time now, not the time of the state change, and the outbox row itself never changes.

Deliveries due for one URL at one dispatch go in one POST (``by_url``, ``batch_body``):
a JSON array of those events, signed once; a single event stays a JSON object. A node
hears of every event of a busy moment in one request instead of one request per event
(at n nodes and two state changes per settlement, 2n requests per settlement). Each
event of a batch is still delivered at least once and deduplicated by its id; a batch
is accepted or refused as a whole.

This module must never hold a storage transaction across an ``await``, change ledger
state, or send a callback that is not in the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Final

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bank_adapter.faults import FaultInjector
from bank_adapter.ledger import stamped_json
from bank_adapter.signing import WEBHOOK_EVENT_HEADER, WEBHOOK_SIGNATURE_HEADER, sign_webhook
from bank_adapter.storage import Delivery, LedgerStorage

__all__ = [
    "DELIVERY_BATCH",
    "WebhookSender",
    "backoff_ms",
    "batch_body",
    "by_url",
    "callback_body",
    "ready_deliveries",
]

log = logging.getLogger("dvpsim.bank.webhooks")

DELIVERY_BATCH: Final = 64  # deliveries started by one dispatch
#: How long delivery marks wait to share one commit (a crash in between only resends).
FLUSH_DELAY_S: Final = 0.05


def ready_deliveries(
    storage: LedgerStorage,
    now_ms: int,
    in_flight: set[tuple[int, str]],
    held_until: dict[tuple[int, str], int],
    faults: FaultInjector,
) -> list[Delivery]:
    """The deliveries to send now, at most ``DELIVERY_BATCH``: due in the outbox, not in
    flight, and not held back by the reordering fault (a new delivery gets its hold-back
    time here, recorded in ``held_until``); shuffled when reordering is on. The simulated
    bank dispatches by the same rule (``scenarios.sim.bank``)."""
    due = [
        d
        for d in storage.due_deliveries(now_ms, DELIVERY_BATCH + len(in_flight))
        if (d.seq, d.url) not in in_flight
    ]
    ready = []
    for d in due:
        key = (d.seq, d.url)
        if d.attempts == 0 and key not in held_until:
            # Reordering fault: hold a new callback back for a random while.
            held_until[key] = now_ms + faults.callback_hold_back_ms()
        if held_until.get(key, 0) <= now_ms:
            ready.append(d)
    faults.shuffle(ready)
    return ready[:DELIVERY_BATCH]


def backoff_ms(attempts: int, base_ms: int, cap_ms: int, rng: random.Random) -> int:
    """Delay before attempt ``attempts + 1``: base * 2**attempts, capped, with jitter in
    [50%, 100%] so that many failed deliveries do not retry in lockstep."""
    ceiling = min(cap_ms, base_ms * 2 ** min(attempts, 30))
    return int(ceiling * (0.5 + rng.random() / 2))


def callback_body(payload: str, now_ms: int) -> bytes:
    """What one delivery attempt sends and signs: the stored event (canonical JSON) with
    the bank's clock at sending, ``as_of_ms`` (unix ms), added at the top level."""
    return stamped_json(payload, now_ms)


def by_url(ready: list[Delivery]) -> list[list[Delivery]]:
    """Ready deliveries grouped per URL, in the order the first of each group was ready;
    each group is one POST. The simulated bank groups by the same rule."""
    groups: dict[str, list[Delivery]] = {}
    for delivery in ready:
        groups.setdefault(delivery.url, []).append(delivery)
    return list(groups.values())


def batch_body(group: list[Delivery], now_ms: int) -> bytes:
    """What one POST of ``group`` sends and signs: one event as a JSON object, several as a
    JSON array of them, each with ``as_of_ms`` = ``now_ms``."""
    bodies = [callback_body(d.event.payload, now_ms) for d in group]
    if len(bodies) == 1:
        return bodies[0]
    return b"[" + b",".join(bodies) + b"]"


class WebhookSender:
    """Delivers due outbox rows; run ``run()`` as a task, call ``wake()`` after commits."""

    def __init__(
        self,
        storage: LedgerStorage,
        key: Ed25519PrivateKey,
        faults: FaultInjector,
        *,
        retry_base_ms: int = 200,
        retry_cap_ms: int = 30_000,
        timeout_s: float = 5.0,
        concurrency: int = 8,
        poll_s: float = 0.25,
        seed: int = 0,
    ) -> None:
        self.storage = storage
        self.key = key
        self.faults = faults
        self.retry_base_ms = retry_base_ms
        self.retry_cap_ms = retry_cap_ms
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._rng = random.Random(seed)
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._in_flight: set[tuple[int, str]] = set()
        self._held_until: dict[tuple[int, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._marks: list[Callable[[], None]] = []  # delivery outcomes not yet written
        self._flush_scheduled = False
        self.sent = 0
        self.failed = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                while True:
                    await self._dispatch(session)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll_s)
                    self._wake.clear()
            finally:
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                self._flush_marks()

    def _mark(self, write: Callable[[], None]) -> None:
        """Queue a delivery outcome; queued outcomes are written together, soon."""
        self._marks.append(write)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_DELAY_S, self._flush_marks)

    def _flush_marks(self) -> None:
        self._flush_scheduled = False
        marks, self._marks = self._marks, []
        if not marks:
            return
        try:
            with self.storage.group():
                for write in marks:
                    write()
        except Exception:  # the marks are lost: those callbacks are sent again, nothing worse
            log.exception("could not record %d callback outcomes", len(marks))

    async def _dispatch(self, session: aiohttp.ClientSession) -> None:
        now_ms = int(time.time() * 1000)
        if self.faults.outage(now_ms / 1000):
            return
        self._flush_marks()  # the outbox must not offer what was delivered already
        ready = ready_deliveries(
            self.storage, now_ms, self._in_flight, self._held_until, self.faults
        )
        for group in by_url(ready):
            self._in_flight.update((d.seq, d.url) for d in group)
            task = asyncio.create_task(self._deliver(session, group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _post(self, session: aiohttp.ClientSession, group: list[Delivery]) -> str | None:
        """POST once; None on a 2xx answer, else what went wrong."""
        now_ms = int(time.time() * 1000)  # one reading: the body's time and the signature's
        body = batch_body(group, now_ms)
        headers = {
            "Content-Type": "application/json",
            WEBHOOK_SIGNATURE_HEADER: sign_webhook(self.key, body, now_ms // 1000),
        }
        if len(group) == 1:
            headers[WEBHOOK_EVENT_HEADER] = group[0].event.event_id
        try:
            async with session.post(group[0].url, data=body, headers=headers) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"

    async def _deliver(self, session: aiohttp.ClientSession, group: list[Delivery]) -> None:
        try:
            async with self._slots:
                error = await self._post(session, group)
                now_ms = int(time.time() * 1000)
                if error is None:
                    for delivery in group:
                        self._mark(
                            functools.partial(
                                self.storage.delivery_succeeded,
                                delivery.seq,
                                delivery.url,
                                now_ms,
                            )
                        )
                        self._held_until.pop((delivery.seq, delivery.url), None)
                    self.sent += len(group)
                    if self.faults.duplicate_callback():
                        await self._post(session, group)
                else:
                    self.failed += len(group)
                    for delivery in group:
                        delay = backoff_ms(
                            delivery.attempts, self.retry_base_ms, self.retry_cap_ms, self._rng
                        )
                        self._mark(
                            functools.partial(
                                self.storage.delivery_failed,
                                delivery.seq,
                                delivery.url,
                                now_ms + delay,
                                error,
                            )
                        )
                    log.info(
                        "%d callback(s) to %s failed (%s); retrying with backoff",
                        len(group),
                        group[0].url,
                        error,
                    )
        finally:
            for delivery in group:
                self._in_flight.discard((delivery.seq, delivery.url))
