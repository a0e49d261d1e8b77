"""A node's clock running wrong: skew and drift, the same in both worlds.

A node's own clock paces everything it times itself: the Delta timeouts, retries, bank
polling. The legs keep their own clocks (block time, the bank's time), so a wrong node
clock never decides a settlement's expiry; it changes when the node acts. A clock fault
(``ClockFault``) makes the node's clock, from ``start`` to ``end`` (the world's seconds),
run ``1 + drift`` times as fast, after jumping ``skew`` seconds ahead at ``start``; after
``end`` it runs at the normal rate again, keeping what it gained. ``skew >= 0`` and
``drift > -1``, so the node's clock never runs backwards (a node refuses time that does).

``node_time`` maps the world's time to the node's; ``world_time`` maps a node deadline
back to the world's time at which it falls due. This module is pure arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ClockFault", "node_time", "world_time"]


@dataclass(frozen=True, slots=True)
class ClockFault:
    start: float
    end: float
    skew: float = 0.0
    drift: float = 0.0

    def gain(self, t: float) -> float:
        """Seconds this fault has put the node's clock ahead at world time ``t``."""
        if t < self.start:
            return 0.0
        return self.skew + self.drift * (min(t, self.end) - self.start)


def node_time(t: float, faults: Sequence[ClockFault]) -> float:
    return t + sum(f.gain(t) for f in faults)


def world_time(deadline: float, faults: Sequence[ClockFault]) -> float:
    """The earliest world time at which the node's clock reads ``deadline`` or more."""
    points = sorted({f.start for f in faults} | {f.end for f in faults if f.end != math.inf})
    if not points or deadline < points[0]:
        return deadline  # before any fault the node's clock is the world's
    # Between two consecutive points the node's clock is linear: find the piece it crosses
    # the deadline in (a forward jump at a start can carry it past at once).
    for i, a in enumerate(points):
        b = points[i + 1] if i + 1 < len(points) else math.inf
        at_a = node_time(a, faults)
        if at_a >= deadline:
            return a
        slope = 1.0 + sum(f.drift for f in faults if f.start <= a < f.end)
        t = a + (deadline - at_a) / slope
        if t < b:
            return t
    return math.inf
