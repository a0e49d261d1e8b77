"""The simulated world's clock: one event queue in virtual seconds and one seeded RNG.

Everything that happens in a simulated run is a callback scheduled on this queue: a
message arriving, a timer falling due, a block being mined, a bank answer. Callbacks due
at the same virtual time run in the order they were scheduled, so the order is a function
of the run's inputs alone. Every random choice of the world (delays, drops, jitter) comes
from ``rng``, consumed in event order: the same seed gives the same run, record for
record, in any process.

This module must never read the wall clock or a global random generator.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

__all__ = ["EventQueue"]


class EventQueue:
    def __init__(self, seed: int) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._sequence = 0

    def at(self, time: float, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` at virtual ``time`` (not before now)."""
        self._sequence += 1
        heapq.heappush(self._heap, (max(time, self.now), self._sequence, callback, args))

    def after(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, callback, *args)

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run(self, until: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Run callbacks in time order until ``until`` (virtual seconds), the queue runs
        dry, or ``stop()`` says so (asked after every callback)."""
        heap = self._heap
        while heap and heap[0][0] <= until:
            time, _sequence, callback, args = heapq.heappop(heap)
            self.now = time
            callback(*args)
            if stop():
                return
        if not heap or heap[0][0] > until:
            self.now = max(self.now, until) if until != float("inf") else self.now
