"""The node runtime: drives the sans-I/O consensus node with a wall clock, timers, the
durable safety store, a transport, an observer and a transmitter.

One trio task owns the consensus ``Node`` and handles one event at a time, in arrival
order: frames from the transport, timers that fire, observations that are ready. For
each event it carries out the returned actions *in order*:

- ``Persist``: written to the :class:`~node.store.SafetyFile` and fsynced before the next
  action is even looked at, so a share never leaves before the record that protects it
  (the ordering contract of ``consensus.safety``);
- ``Send`` / ``Broadcast``: handed to the transport (which never blocks);
- ``SetTimer`` / ``CancelTimer``: one trio task per armed timer, cancelled on replace;
- ``RequestObservation``: the observer runs in its own task (it may wait on chains and
  the bank) and its answer comes back as an ``ObservationReady`` event;
- ``Transmit``: the transmitter runs in its own task; results are counted;
- ``Certified``, ``EpochStarted``, ``Rejected``: logged and counted.

The clock is ``trio.current_time()`` (monotonic seconds). The runtime never interprets
messages or decides anything: that is the consensus core's and the DvP rules' job.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from consensus.events import (
    Broadcast,
    CancelTimer,
    Certified,
    EpochStarted,
    Event,
    MessageReceived,
    ObservationReady,
    Persist,
    Rejected,
    RequestObservation,
    Send,
    SetTimer,
    Start,
    Timer,
    TimerFired,
    Transmit,
)
from consensus.protocol import Node
from consensus.report import Certificate
from node.store import SafetyFile
from node.transport import Transport, TransportClosed

log = logging.getLogger("dvpsim.node")

#: Transmission results worth another try, and the pauses between tries (seconds).
RETRYABLE_RESULTS = frozenset({"error", "rpc-error", "partial"})
TRANSMIT_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)


class Observer(Protocol):
    async def observe(self, epoch: int, round_: int) -> bytes: ...


class Transmitter(Protocol):
    async def transmit(self, target: str, certificate: Certificate) -> str: ...


@dataclass
class RuntimeStats:
    """Counters the metrics endpoint publishes (monotonic)."""

    events: int = 0
    rounds_observed: int = 0
    certificates: int = 0
    epochs: int = 0
    rejected: int = 0
    persists: int = 0
    decisions: dict[str, int] = field(
        default_factory=dict
    )  # action name -> count in certified reports
    transmissions: dict[str, int] = field(default_factory=dict)  # "target:result" -> count
    certify_latency: list[float] = field(default_factory=list)  # observe request -> certificate, s
    transmit_latency: list[float] = field(default_factory=list)
    last_certified_at: float = 0.0


class NodeRuntime:
    """Runs one consensus node until cancelled (see the module docstring)."""

    def __init__(
        self,
        node: Node,
        transport: Transport,
        store: SafetyFile,
        observer: Observer,
        transmitter: Transmitter,
        on_action: Callable[[Any], None] | None = None,
    ) -> None:
        self.node = node
        self.transport = transport
        self.store = store
        self.observer = observer
        self.transmitter = transmitter
        self.stats = RuntimeStats()
        self._on_action = on_action
        self._send_events, self._events = trio.open_memory_channel[Event](4096)
        self._timers: dict[Timer, trio.CancelScope] = {}
        self._round_started: dict[tuple[int, int], float] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.transport.run)  # type: ignore[attr-defined]
            self._dispatch(Start(now=trio.current_time(), persisted=self.store.load()))
            nursery.start_soon(self._receive_loop)
            task_status.started()
            async for event in self._events:
                self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        # Events wait in a queue; stamp them when handled so the node's clock never runs back.
        event = dataclasses.replace(event, now=trio.current_time())
        self.stats.events += 1
        for action in self.node.handle(event):
            self._carry_out(action)

    def _carry_out(self, action: Any) -> None:
        assert self._nursery is not None
        if self._on_action is not None:
            self._on_action(action)
        if isinstance(action, Persist):
            self.store.apply(action.update)  # durable before anything after it
            self.stats.persists += 1
        elif isinstance(action, Send):
            self.transport.send(action.to, action.data)
        elif isinstance(action, Broadcast):
            self.transport.broadcast(action.data)
        elif isinstance(action, SetTimer):
            self._cancel(action.timer)
            scope = trio.CancelScope()
            self._timers[action.timer] = scope
            self._nursery.start_soon(self._timer, action.timer, action.at, scope)
        elif isinstance(action, CancelTimer):
            self._cancel(action.timer)
        elif isinstance(action, RequestObservation):
            self.stats.rounds_observed += 1
            self._round_started[(action.epoch, action.round)] = trio.current_time()
            self._nursery.start_soon(self._observe, action.epoch, action.round)
        elif isinstance(action, Transmit):
            self._nursery.start_soon(self._transmit, action.target, action.certificate)
        elif isinstance(action, Certified):
            self._on_certified(action)
        elif isinstance(action, EpochStarted):
            self.stats.epochs += 1
            log.info(
                "epoch started", extra={"fields": {"epoch": action.epoch, "leader": action.leader}}
            )
        elif isinstance(action, Rejected):
            self.stats.rejected += 1
            log.debug(
                "rejected", extra={"fields": {"sender": action.sender, "reason": action.reason}}
            )

    def _on_certified(self, action: Certified) -> None:
        self.stats.certificates += 1
        report = action.certificate.report
        for decision in report.decisions:
            name = decision.action.name
            self.stats.decisions[name] = self.stats.decisions.get(name, 0) + 1
        began = self._round_started.pop((report.epoch, report.round), None)
        now = trio.current_time()
        if began is not None:
            self.stats.certify_latency.append(now - began)
        self.stats.last_certified_at = time.time()
        if report.decisions:
            log.info(
                "certified",
                extra={
                    "fields": {
                        "target": action.target,
                        "epoch": report.epoch,
                        "round": report.round,
                        "decisions": len(report.decisions),
                    }
                },
            )

    def _cancel(self, timer: Timer) -> None:
        scope = self._timers.pop(timer, None)
        if scope is not None:
            scope.cancel()

    async def _timer(self, timer: Timer, at: float, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_until(at)
            if self._timers.get(timer) is scope:
                del self._timers[timer]
                await self._send_events.send(TimerFired(now=trio.current_time(), timer=timer))

    async def _observe(self, epoch: int, round_: int) -> None:
        try:
            observation = await self.observer.observe(epoch, round_)
        except Exception as exc:  # an observer failure skips this round's observation, nothing more
            log.warning(
                "observation failed",
                extra={"fields": {"epoch": epoch, "round": round_, "error": repr(exc)}},
            )
            return
        await self._send_events.send(
            ObservationReady(
                now=trio.current_time(), epoch=epoch, round=round_, observation=observation
            )
        )

    async def _transmit(self, target: str, certificate: Certificate) -> None:
        """Hand a certificate to its target; a failed hand-over (target unreachable, partly
        refused) is retried a few times with backoff: a certified decision is only useful
        once applied, and the targets make a repeated transmission harmless."""
        began = trio.current_time()
        result = "error"
        for delay in (*TRANSMIT_RETRY_DELAYS, None):
            try:
                result = await self.transmitter.transmit(target, certificate)
            except Exception as exc:
                result = "error"
                log.warning(
                    "transmission failed", extra={"fields": {"target": target, "error": repr(exc)}}
                )
            if result not in RETRYABLE_RESULTS or delay is None:
                break
            await trio.sleep(delay)
        key = f"{target}:{result}"
        self.stats.transmissions[key] = self.stats.transmissions.get(key, 0) + 1
        self.stats.transmit_latency.append(trio.current_time() - began)

    async def _receive_loop(self) -> None:
        while True:
            try:
                frame = await self.transport.receive()
            except TransportClosed:
                return
            await self._send_events.send(
                MessageReceived(
                    now=trio.current_time(), sender=frame.peer_index, data=frame.payload
                )
            )
