"""What every pump is to the node runtime (``node.pumps``), and the one error they raise."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from node.driver import NodeEvent, ReadLeg, Transmit

__all__ = ["Emit", "Pump", "TargetError"]

#: A pump gives its events to the runtime through this (it waits while the queue is full).
#: Events are stamped with the runtime's clock when handled, so a pump may give ``now=0``.
Emit = Callable[[NodeEvent], Awaitable[None]]


class TargetError(Exception):
    """A target cannot be reached or set up; one line."""


class Pump(Protocol):
    """The real-world side of one target: watches it, reads it, sends to it."""

    name: str

    async def run(self, emit: Emit) -> None:
        """Watch the target until cancelled, giving what it sees to ``emit``."""

    async def read(self, effect: ReadLeg) -> tuple[NodeEvent, ...]:
        """The target's answer to a ReadLeg effect, as events."""

    async def transmit(self, effect: Transmit) -> tuple[str, tuple[NodeEvent, ...]]:
        """Hand the certificate to the target: its result, and what the answer taught."""

    def close(self) -> None: ...
