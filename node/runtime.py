"""The real world of one node: carries out the node driver's effects with trio, a durable
safety store, a committee transport, the wall clock and the targets' pumps.

The runtime decides nothing: ``node.driver.NodeDriver`` does. One trio task owns the
driver and hands it one event at a time, in the order the events reached the runtime's
queue: frames from the transport, timers that fell due, what the pumps saw (chain
events, bank statuses, transmission results). Each event is stamped with the trio clock
(``trio.current_time()``, monotonic seconds) when it is handled, so the driver's clock
never runs back. The effects of a step are carried out *in order*, before the next event:

- ``Persist``: written to the :class:`~node.store.SafetyFile` and fsynced before the next
  effect is even looked at, so a share never leaves before the record that protects it;
- ``Send`` / ``Broadcast``: handed to the transport (which never blocks);
- ``SetTimer`` / ``CancelTimer``: one timer queue ordered by (deadline, order of setting),
  served by one task, so timers due together fire in the order they were set. trio runs
  ready tasks in a shuffled order; a task per timer would make that order a coin toss;
- ``Transmit`` / ``ReadLeg``: the target's pump runs it in a task of its own (it waits on
  a chain or the bank); its answer comes back as events through the same queue;
- ``Certified``, ``EpochStarted``, ``Rejected``, ``Observed``, ``TransmissionFinished``:
  logged and, with a trace sink, written to the node's event trace.

This module must never interpret a message, choose what to observe, or decide whether to
transmit, retry or poll: it only carries out what the driver returned.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import trio

from consensus.events import (
    Broadcast,
    Certified,
    EpochStarted,
    MessageReceived,
    Persist,
    Rejected,
    Send,
    Start,
)
from node.driver import (
    FINISHED_OK,
    CancelTimer,
    DriverStats,
    Effect,
    NodeDriver,
    NodeEvent,
    Observed,
    ReadLeg,
    SetTimer,
    TimerFired,
    TransmissionDone,
    TransmissionFinished,
    Transmit,
)
from node.pumps.base import Pump
from node.store import SafetyFile
from node.trace import effect_records, message_record
from node.transport import Transport, TransportClosed

log = logging.getLogger("dvpsim.node")

LEFT_OUT_WARNING_EVERY_S = 10.0


class Endpoints(Protocol):
    """Where a frame for a member goes when members run as twins (``node.twins``)."""

    def endpoints_of(self, member: int) -> tuple[int, ...]: ...

    def is_twin(self, endpoint: int) -> bool: ...


class TraceFile:
    """The node's part of a run's history (``node.trace`` records) as JSON lines, each
    stamped with the wall clock (unix seconds) so a runner can merge every node's trace
    into one time-ordered history. Messages sent and received are written only with
    ``messages=True`` (one line per message per member: a cost a loaded node notices).
    ``twin``: this node is a member's twin copy; ``endpoints``: where a message for a
    member goes when some member runs as twins (one "send" line per copy)."""

    def __init__(
        self,
        path: Path,
        node: int,
        n: int,
        *,
        messages: bool = False,
        twin: bool = False,
        endpoints: Endpoints | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", buffering=1)
        self.node = node
        self.messages = messages
        self.twin = twin
        self._endpoints = endpoints
        self._others = [i for i in range(n) if i != node]

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps({"t": round(time.time(), 6), **record}) + "\n")

    def effect(self, effect: Effect) -> None:
        for record in effect_records(self.node, effect, self.twin):
            self._write(record)
        if self.messages and isinstance(effect, Send | Broadcast):
            peers = [effect.to] if isinstance(effect, Send) else self._others
            for peer in peers:
                if self._endpoints is None:
                    self._write(message_record("send", self.node, peer, effect.data))
                    continue
                for endpoint in self._endpoints.endpoints_of(peer):
                    twin = self._endpoints.is_twin(endpoint)
                    self._write(
                        message_record(
                            "send",
                            self.node,
                            peer,
                            effect.data,
                            sender_twin=self.twin,
                            receiver_twin=twin,
                        )
                    )

    def received(self, sender: int, data: bytes, sender_twin: bool = False) -> None:
        if self.messages:
            self._write(
                message_record(
                    "recv",
                    sender,
                    self.node,
                    data,
                    sender_twin=sender_twin,
                    receiver_twin=self.twin,
                )
            )

    def close(self) -> None:
        self._file.close()


class TimerQueue:
    """Timers of one node, due in (deadline, order set) order; setting a timer again
    replaces its deadline, cancelling removes it. Pure: the caller gives the time."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._live: dict[Any, int] = {}  # timer -> sequence of its live entry
        self._sequence = 0

    def set(self, timer: Any, at: float) -> None:
        self._sequence += 1
        self._live[timer] = self._sequence
        heapq.heappush(self._heap, (at, self._sequence, timer))

    def cancel(self, timer: Any) -> None:
        self._live.pop(timer, None)

    def next_deadline(self) -> float | None:
        self._drop_dead()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[Any]:
        due = []
        while True:
            self._drop_dead()
            if not self._heap or self._heap[0][0] > now:
                return due
            _, _, timer = heapq.heappop(self._heap)
            del self._live[timer]
            due.append(timer)

    def _drop_dead(self) -> None:
        heap = self._heap
        while heap and self._live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)


class NodeClock(Protocol):
    """A node's own clock on trio's time line (``node.netfaults.NodeClock``)."""

    def now(self) -> float: ...

    def due_at(self, deadline: float) -> float:
        """The trio time at which this clock reads ``deadline``."""
        ...


class NodeRuntime:
    """Runs one node driver until cancelled (see the module docstring)."""

    def __init__(
        self,
        driver: NodeDriver,
        transport: Transport,
        store: SafetyFile,
        pumps: Mapping[str, Pump],
        trace: TraceFile | None = None,
        clock: NodeClock | None = None,
    ) -> None:
        """``clock``: the node's own clock when a clock fault may make it run wrong; trio's
        clock otherwise."""
        self.driver = driver
        self.clock = clock
        self.transport = transport
        self.store = store
        self.pumps = dict(pumps)
        self._trace = trace
        self._send_events, self._events = trio.open_memory_channel[NodeEvent](4096)
        self._timers = TimerQueue()
        self._timers_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._warned_at = -LEFT_OUT_WARNING_EVERY_S

    @property
    def stats(self) -> DriverStats:
        return self.driver.stats

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.transport.run)
            self._dispatch(Start(now=self._now(), persisted=self.store.load()))
            nursery.start_soon(self._receive_loop)
            nursery.start_soon(self._timer_loop)
            for pump in self.pumps.values():
                nursery.start_soon(pump.run, self._send_events.send)
            task_status.started()
            async for event in self._events:
                self._dispatch(event)

    def _dispatch(self, event: NodeEvent) -> None:
        # Events wait in a queue; stamp them when handled so the node's clock never runs back.
        now = self._now()
        event = dataclasses.replace(event, now=now)
        for effect in self.driver.handle(event):
            self._carry_out(effect, now)

    def _carry_out(self, effect: Effect, now: float) -> None:
        assert self._nursery is not None
        if self._trace is not None:
            self._trace.effect(effect)
        if isinstance(effect, Persist):
            self.store.apply(effect.update)  # durable before anything after it
        elif isinstance(effect, Send):
            self.transport.send(effect.to, effect.data)
        elif isinstance(effect, Broadcast):
            self.transport.broadcast(effect.data)
        elif isinstance(effect, SetTimer):
            self._timers.set(effect.timer, effect.at)
            self._timers_changed.set()
        elif isinstance(effect, CancelTimer):
            self._timers.cancel(effect.timer)
        elif isinstance(effect, Transmit):
            self._nursery.start_soon(self._transmit, effect)
        elif isinstance(effect, ReadLeg):
            self._nursery.start_soon(self._read, effect)
        else:
            self._inform(effect)

    def _now(self) -> float:
        return trio.current_time() if self.clock is None else self.clock.now()

    async def _timer_loop(self) -> None:
        while True:
            deadline = self._timers.next_deadline()
            self._timers_changed = trio.Event()
            if deadline is not None and self.clock is not None:
                deadline = self.clock.due_at(deadline)  # set by the node's own clock
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._timers_changed.wait()
                continue  # an earlier timer may have been set: look again
            for timer in self._timers.pop_due(self._now()):
                await self._send_events.send(TimerFired(self._now(), timer))

    async def _transmit(self, effect: Transmit) -> None:
        pump = self.pumps.get(effect.target)
        report = effect.certificate.report
        extra: tuple[NodeEvent, ...] = ()
        if pump is None:
            result = "unknown-target"
        else:
            try:
                result, extra = await pump.transmit(effect)
            except Exception as exc:  # a pump failure is a failed try; the driver retries
                result = "error"
                log.warning(
                    "transmission failed",
                    extra={"fields": {"target": effect.target, "error": repr(exc)}},
                )
        for event in extra:
            await self._send_events.send(event)
        await self._send_events.send(
            TransmissionDone(trio.current_time(), effect.target, report.epoch, report.round, result)
        )

    async def _read(self, effect: ReadLeg) -> None:
        pump = self.pumps.get(effect.target)
        if pump is None:
            return
        try:
            events = await pump.read(effect)
        except Exception as exc:  # unanswered: the driver asks again when it needs to
            log.warning(
                "target read failed",
                extra={"fields": {"target": effect.target, "error": repr(exc)}},
            )
            return
        for event in events:
            await self._send_events.send(event)

    async def _receive_loop(self) -> None:
        while True:
            try:
                frame = await self.transport.receive()
            except TransportClosed:
                return
            if self._trace is not None:
                self._trace.received(frame.peer_index, frame.payload, frame.sender_twin)
            await self._send_events.send(
                MessageReceived(
                    now=trio.current_time(), sender=frame.peer_index, data=frame.payload
                )
            )

    def close(self) -> None:
        for pump in self.pumps.values():
            pump.close()
        if self._trace is not None:
            self._trace.close()

    def _inform(self, effect: Effect) -> None:
        """Log what the driver reports for information."""
        if isinstance(effect, Certified):
            report = effect.certificate.report
            if report.decisions:
                log.info(
                    "certified",
                    extra={
                        "fields": {
                            "target": effect.target,
                            "epoch": report.epoch,
                            "round": report.round,
                            "decisions": len(report.decisions),
                        }
                    },
                )
        elif isinstance(effect, EpochStarted):
            log.info(
                "epoch started", extra={"fields": {"epoch": effect.epoch, "leader": effect.leader}}
            )
        elif isinstance(effect, Rejected):
            log.debug(
                "rejected", extra={"fields": {"sender": effect.sender, "reason": effect.reason}}
            )
        elif isinstance(effect, Observed):
            if effect.left_out:
                # Those settlements wait for a round with room: say so, they are not lost.
                now = trio.current_time()
                if now - self._warned_at > LEFT_OUT_WARNING_EVERY_S:
                    self._warned_at = now
                    log.warning(
                        "observation full",
                        extra={
                            "fields": {
                                "left_out": effect.left_out,
                                "size": effect.size,
                                "hint": "raise timing.max_observation_bytes or lower the load",
                            }
                        },
                    )
        elif isinstance(effect, TransmissionFinished) and effect.result not in FINISHED_OK:
            log.warning(
                "transmission ended",
                extra={
                    "fields": {
                        "target": effect.target,
                        "epoch": effect.epoch,
                        "round": effect.round,
                        "result": effect.result,
                        "attempts": effect.attempts,
                    }
                },
            )
