"""Latency histograms a node keeps in memory for its metrics endpoint: fixed buckets,
a count and a sum, so a scrape can compute quantiles (p50, p99) and memory stays the
same however long the node runs.

Each histogram's buckets fit the range its latency is measured in (the upper bounds, in
seconds, of Prometheus' cumulative ``le`` buckets; +Inf is implied). This module is pure:
it never reads a clock (the driver passes durations in) and does no I/O.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "ROUND_BUCKETS",
    "SETTLEMENT_BUCKETS",
    "TRANSMIT_BUCKETS",
    "LatencyHistogram",
]

#: Observe request to certificate: a few ms in a quiet committee, seconds across epochs.
ROUND_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
#: Certificate handed to a target until its result: a bank answer (ms) to a chain
#: confirmation with retries (minutes).
TRANSMIT_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
#: A settlement first observed until every leg applied a decision: 0.1 s to 300 s.
SETTLEMENT_BUCKETS: Final = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0,
)  # fmt: skip


@dataclass
class LatencyHistogram:
    """Counts of observed durations (seconds) per bucket, their number and their sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, +Inf last; not cumulative
    count: int = 0
    sum: float = 0.0

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(set(self.bounds)) or not self.bounds:
            raise ValueError("histogram bounds must be increasing and non-empty")
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        # le is inclusive: a value equal to a bound falls in that bound's bucket.
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), +Inf (float('inf')) last."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile as an upper bucket bound (what a histogram can tell), None
        before any observation; +Inf when it lies beyond the last bound."""
        if self.count == 0:
            return None
        rank = q * self.count
        for bound, running in self.cumulative():
            if running >= rank:
                return bound
        return float("inf")
