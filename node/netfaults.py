"""Network faults in a real run: a fault layer between a node's runtime and its transport.

A scenario's network faults (partition, isolate, drop, delay, duplicate, reorder) mean in
a real run what they mean in the simulated world, because they are the same objects:
``consensus.network.Partition`` and ``LinkFault`` windows, judged by
``consensus.network.SimulatedNetwork.route`` with no delay of its own. Here the windows are
in unix seconds and the messages are the encoded frames this node sends (after encoding,
before the peer decodes them): a frame is lost (partition, drop), sent twice (duplicate),
or held back (delay with jitter, reorder) before it reaches the real transport. A node
applies the faults to what it sends; together the members cover every link.

The runner drives the layer through a plan file (``fault_plan`` in the node config),
written once the drive begins, when the windows' absolute times are known::

    {"partitions": [{"start", "end", "side", "one_way"}],
     "links": [{"start", "end", "senders", "receivers", "drop", "duplicate", "delay",
                "jitter", "reorder", "reorder_delay"}],
     "rpc": [{"start", "end", "lie"}],
     "clock": [{"start", "end", "skew", "drift"}]}

The same file carries this node's chain-endpoint faults (``node.rpcfaults``), which its
EVM pumps read through the same ``PlanFile``, and its clock faults
(``node.clockfaults``), which ``NodeClock`` applies to the runtime's clock.

The layer looks for the file at most every ``PLAN_CHECK_S`` and reads it when it
changes; until it exists, frames pass untouched. Random choices come from a generator
seeded with the node's index (real runs are not replayable anyway: timing differs).

This module must never change a frame's bytes, and never hold a frame past its window's
delay: a delayed frame is sent by the layer's own task when due.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from consensus.network import LinkFault, NetworkProfile, Partition, SimulatedNetwork
from node.clockfaults import ClockFault, node_time, world_time
from node.rpcfaults import RpcWindow
from node.transport import InboundFrame, Transport, TransportMetrics

__all__ = [
    "PLAN_CHECK_S",
    "FaultyTransport",
    "NodeClock",
    "Plan",
    "PlanFile",
    "plan_json",
    "read_plan",
]

#: How often the layer looks whether the plan file appeared or changed (seconds).
PLAN_CHECK_S: Final = 0.2
_NO_DELAY: Final = NetworkProfile(delay=0.0, jitter=0.0)


@dataclass(frozen=True)
class Plan:
    """A node's fault windows (unix seconds)."""

    partitions: tuple[Partition, ...] = ()
    links: tuple[LinkFault, ...] = ()
    rpc: tuple[RpcWindow, ...] = ()
    clock: tuple[ClockFault, ...] = ()


def plan_json(
    partitions: tuple[Partition, ...],
    links: tuple[LinkFault, ...],
    rpc: tuple[RpcWindow, ...] = (),
    clock: tuple[ClockFault, ...] = (),
) -> str:
    """The plan file's text for these windows (unix seconds)."""
    return json.dumps(
        {
            "clock": [
                {"start": c.start, "end": c.end, "skew": c.skew, "drift": c.drift} for c in clock
            ],
            "rpc": [{"start": w.start, "end": w.end, "lie": w.lie} for w in rpc],
            "partitions": [
                {"start": p.start, "end": p.end, "side": list(p.side), "one_way": p.one_way}
                for p in partitions
            ],
            "links": [
                {
                    "start": f.start,
                    "end": f.end,
                    "senders": sorted(f.senders),
                    "receivers": sorted(f.receivers),
                    "drop": f.drop,
                    "duplicate": f.duplicate,
                    "delay": f.delay,
                    "jitter": f.jitter,
                    "reorder": f.reorder,
                    "reorder_delay": f.reorder_delay,
                }
                for f in links
            ],
        }
    )


def read_plan(text: str) -> Plan:
    raw = json.loads(text)
    partitions = tuple(
        Partition(float(p["start"]), float(p["end"]), tuple(p["side"]), bool(p["one_way"]))
        for p in raw["partitions"]
    )
    links = tuple(
        LinkFault(
            float(f["start"]),
            float(f["end"]),
            frozenset(f["senders"]),
            frozenset(f["receivers"]),
            drop=float(f["drop"]),
            duplicate=float(f["duplicate"]),
            delay=float(f["delay"]),
            jitter=float(f["jitter"]),
            reorder=float(f["reorder"]),
            reorder_delay=float(f["reorder_delay"]),
        )
        for f in raw["links"]
    )
    rpc = tuple(
        RpcWindow(float(w["start"]), float(w["end"]), str(w["lie"])) for w in raw.get("rpc", ())
    )
    clock = tuple(
        ClockFault(float(c["start"]), float(c["end"]), float(c["skew"]), float(c["drift"]))
        for c in raw.get("clock", ())
    )
    return Plan(partitions, links, rpc, clock)


class NodeClock:
    """The runtime's clock (trio's, in seconds) as this node reads it: with the plan's
    clock faults applied (windows in unix seconds, mapped through the offset between the
    two clocks, measured at the first reading, inside trio)."""

    def __init__(self, plan: PlanFile) -> None:
        self.plan = plan
        self._offset: float | None = None
        self._last = -math.inf

    def _unix_offset(self) -> float:
        if self._offset is None:
            self._offset = time.time() - trio.current_time()
        return self._offset

    def now(self) -> float:
        """Never less than it read before (float rounding in the mapping must not make a
        node's clock run back: the node refuses time that does)."""
        offset = self._unix_offset()
        read = node_time(trio.current_time() + offset, self.plan.current().clock) - offset
        self._last = max(self._last, read)
        return self._last

    def due_at(self, deadline: float) -> float:
        """The trio time at which this node's clock reads ``deadline``."""
        offset = self._unix_offset()
        return world_time(deadline + offset, self.plan.current().clock) - offset


class PlanFile:
    """A plan file, read again when it changes (looked at every PLAN_CHECK_S); the empty
    plan while there is none. Shared by a node's transport and its pumps."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._plan = Plan()
        self._stamp: tuple[int, int] | None = None
        self._checked_at = -PLAN_CHECK_S

    def current(self) -> Plan:
        now = time.monotonic()
        if now - self._checked_at < PLAN_CHECK_S:
            return self._plan
        self._checked_at = now
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return self._plan
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._plan = read_plan(self.path.read_text())
            self._stamp = stamp
        return self._plan


class FaultyTransport(Transport):
    """``inner`` with the plan file's network faults applied to every frame sent."""

    def __init__(self, inner: Transport, plan: PlanFile) -> None:
        self.inner = inner
        self.plan = plan
        self.lost: Counter[str] = Counter()  # frames lost, by why ("partition", "drop")
        self.delayed = 0
        self._network: SimulatedNetwork | None = None
        self._for_plan: Plan | None = None
        self._rng = random.Random(inner.self_index)
        self._held: list[tuple[float, int, int, bytes]] = []  # (due, order, peer, frame)
        self._order = 0
        self._wake = trio.Event()

    @property
    def self_index(self) -> int:
        return self.inner.self_index

    @property
    def committee_size(self) -> int:
        return self.inner.committee_size

    @property
    def max_frame_size(self) -> int:
        return self.inner.max_frame_size

    def send(self, peer_index: int, payload: bytes) -> None:
        self._check_payload(payload)
        self._check_peer(peer_index)
        network = self._current()
        if network is None:
            self.inner.send(peer_index, payload)
            return
        route = network.route(self.self_index, peer_index, time.time())
        if isinstance(route, str):
            self.lost[route] += 1
            return
        for delay in route:
            if delay <= 0:
                self.inner.send(peer_index, payload)
            else:
                self.delayed += 1
                self._order += 1
                heapq.heappush(
                    self._held, (time.monotonic() + delay, self._order, peer_index, payload)
                )
                self._wake.set()

    async def receive(self) -> InboundFrame:
        return await self.inner.receive()

    def connected_peers(self) -> frozenset[int]:
        return self.inner.connected_peers()

    def metrics(self) -> TransportMetrics:
        return self.inner.metrics()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.inner.run)
            nursery.start_soon(self._release_held)
            task_status.started()

    async def _release_held(self) -> None:
        """Send each held frame when it falls due."""
        while True:
            if not self._held:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            due = self._held[0][0]
            with trio.move_on_after(max(0.0, due - time.monotonic())):
                await self._wake.wait()
            self._wake = trio.Event()
            now = time.monotonic()
            while self._held and self._held[0][0] <= now:
                _, _, peer, payload = heapq.heappop(self._held)
                self.inner.send(peer, payload)

    def _current(self) -> SimulatedNetwork | None:
        """The plan's network (rebuilt when the plan changed); None without network faults."""
        plan = self.plan.current()
        if plan is not self._for_plan:
            self._for_plan = plan
            self._network = None
            if plan.partitions or plan.links:
                self._network = SimulatedNetwork(
                    self.committee_size,
                    _NO_DELAY,
                    self._rng,
                    partitions=plan.partitions,
                    heal_at=float("inf"),
                    link_faults=plan.links,
                )
        return self._network
