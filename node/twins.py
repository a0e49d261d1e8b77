"""Twins in a real run: one committee member served by two node processes.

A scenario may run a member as twins (``node.byzantine.TWINS``): two copies with the
member's index, BLS key and Ed25519 observation key, each with a safety store of its own
(a misconfigured high-availability pair). The consensus layer names peers by member index;
the transport cannot: libp2p derives a peer id from the transport key, and
``node.p2p.P2PTransport`` keeps one authenticated stream per peer id (a second process with
the same id would replace the first's stream every time it connected, and a dialer could
reach only one of them). So the twin copy gets a transport identity of its own
(``transport_key`` in its node config) while it signs with the member's protocol keys.

The transport then carries frames between *endpoints*: the committee's members first
(endpoint i is member i's first copy), then the twin copies (``committee.twins`` in the node
config: endpoint n + j is the twin copy of the j-th entry's member). :class:`MemberTransport`
sits between the runtime, which speaks member indexes, and the endpoint transport (the
fault layer ``node.netfaults.FaultyTransport`` over ``P2PTransport``):

- a frame for member i goes to every copy of i, each over its own link, so a network
  fault (judged per endpoint by the fault layer) decides per copy whether it arrives;
- a frame from an endpoint is delivered as from the member it belongs to
  (``InboundFrame.sender_twin`` says whether that was the twin copy, for the trace);
- the two copies of one member never send each other anything: each would take the
  other's messages for its own.

The same addressing as in the simulated world (``scenarios.sim.world``). This module
never reads or changes a payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from node.transport import InboundFrame, Transport, TransportMetrics

__all__ = ["MemberTransport"]


class MemberTransport(Transport):
    """Member-indexed ``Transport`` over an endpoint-indexed ``inner`` one (module
    docstring). ``member_of[e]`` is the member endpoint e serves; ``inner.self_index`` is
    this process's endpoint."""

    def __init__(self, inner: Transport, member_of: Sequence[int]) -> None:
        if len(member_of) != inner.committee_size:
            raise ValueError(
                f"{len(member_of)} endpoints named but the transport has {inner.committee_size}"
            )
        self.inner = inner
        self.member_of = tuple(member_of)
        self._n = sum(1 for e, m in enumerate(self.member_of) if e == m)
        self._self = self.member_of[inner.self_index]
        copies: list[list[int]] = [[] for _ in range(self._n)]
        for endpoint, member in enumerate(self.member_of):
            if endpoint != inner.self_index:
                copies[member].append(endpoint)
        self._copies = tuple(tuple(c) for c in copies)

    @property
    def self_index(self) -> int:
        return self._self

    @property
    def committee_size(self) -> int:
        return self._n

    @property
    def max_frame_size(self) -> int:
        return self.inner.max_frame_size

    def endpoints_of(self, member: int) -> tuple[int, ...]:
        """The endpoints a frame for ``member`` goes to (every copy of it)."""
        return self._copies[member]

    def is_twin(self, endpoint: int) -> bool:
        """Whether ``endpoint`` is a member's twin copy (not its first)."""
        return endpoint >= self._n

    def send(self, peer_index: int, payload: bytes) -> None:
        self._check_payload(payload)
        self._check_peer(peer_index)
        for endpoint in self._copies[peer_index]:
            self.inner.send(endpoint, payload)

    async def receive(self) -> InboundFrame:
        while True:
            frame = await self.inner.receive()
            member = self.member_of[frame.peer_index]
            if member == self._self:
                continue  # from this member's other copy: never sent (module docstring)
            return InboundFrame(member, frame.payload, sender_twin=self.is_twin(frame.peer_index))

    def connected_peers(self) -> frozenset[int]:
        links = self.inner.connected_peers()
        return frozenset(self.member_of[e] for e in links if self.member_of[e] != self._self)

    def metrics(self) -> TransportMetrics:
        return self.inner.metrics()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await self.inner.run(task_status=task_status)
