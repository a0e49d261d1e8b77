"""Fault controls of the bank service, for scenarios that fail it on purpose.

A ``FaultConfig`` says what to break: added latency, an error rate (before the request is
processed, or after it committed so the answer is lost), an outage window, duplicate and
out-of-order callbacks, and a crash (SIGKILL of the service, now or right after the N-th
committed mutating request). ``FaultInjector`` draws every random choice from one seeded
``random.Random``, so a scenario with a seed makes the same choices for the same sequence
of requests.

Faults are off unless the service was started with an admin token and a scenario set them
through the admin API; they live in memory and a restart clears them. A fault never
touches the ledger: it delays, drops or duplicates messages, or kills the process, and the
ledger's transactions keep money exact through all of it.

This module must never read the clock or a global random generator (``now_s`` and the
seed are parameters) and never perform the crash itself (the server does).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

__all__ = ["FaultConfig", "FaultConfigError", "FaultInjector"]

_PHASES: Final = ("before", "after")


class FaultConfigError(ValueError):
    """A fault setting is out of range; the message names the field."""


@dataclass(frozen=True, slots=True)
class FaultConfig:
    latency_ms: int = 0  # added to every API request
    latency_jitter_ms: int = 0  # plus uniform [0, jitter]
    error_rate: float = 0.0  # probability that an API request answers 503
    error_phase: str = "before"  # "before": nothing done; "after": committed, answer lost (500)
    outage_start_s: float | None = None  # unix seconds; API answers 503 in [start, end)
    outage_end_s: float | None = None
    duplicate_callback_rate: float = 0.0  # probability a delivered callback is sent again
    reorder_callback_window_ms: int = 0  # hold each new callback back uniform [0, window]
    crash_after_commits: int | None = None  # SIGKILL right after the N-th mutating commit
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("latency_ms", "latency_jitter_ms", "reorder_callback_window_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 60_000:
                raise FaultConfigError(f"{name} must be an integer between 0 and 60000")
        for name in ("error_rate", "duplicate_callback_rate"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
                raise FaultConfigError(f"{name} must be a number between 0 and 1")
        if self.error_phase not in _PHASES:
            raise FaultConfigError("error_phase must be 'before' or 'after'")
        if (self.outage_start_s is None) != (self.outage_end_s is None):
            raise FaultConfigError("outage_start_s and outage_end_s must be given together")
        if (
            self.outage_start_s is not None
            and self.outage_end_s is not None
            and (
                not isinstance(self.outage_start_s, int | float)
                or not isinstance(self.outage_end_s, int | float)
                or self.outage_end_s < self.outage_start_s
            )
        ):
            raise FaultConfigError("outage_end_s must be a time at or after outage_start_s")
        if self.crash_after_commits is not None and (
            not isinstance(self.crash_after_commits, int) or self.crash_after_commits < 1
        ):
            raise FaultConfigError("crash_after_commits must be a positive integer")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise FaultConfigError("seed must be an integer")

    @classmethod
    def from_json(cls, value: object) -> FaultConfig:
        if not isinstance(value, dict):
            raise FaultConfigError("fault settings must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise FaultConfigError(f"unknown fault settings {unknown}; known: {sorted(known)}")
        try:
            return cls(**value)
        except TypeError as exc:
            raise FaultConfigError(str(exc)) from None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    """The current faults and the seeded choices they make."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self.set(config or FaultConfig())

    def set(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._commits = 0

    def outage(self, now_s: float) -> bool:
        c = self.config
        return (
            c.outage_start_s is not None
            and c.outage_end_s is not None
            and c.outage_start_s <= now_s < c.outage_end_s
        )

    def latency_s(self) -> float:
        c = self.config
        if c.latency_ms == 0 and c.latency_jitter_ms == 0:
            return 0.0
        return (c.latency_ms + self._rng.uniform(0, c.latency_jitter_ms)) / 1000

    def fail_before(self) -> bool:
        c = self.config
        return c.error_phase == "before" and c.error_rate > 0 and self._rng.random() < c.error_rate

    def fail_after(self) -> bool:
        c = self.config
        return c.error_phase == "after" and c.error_rate > 0 and self._rng.random() < c.error_rate

    def crash_now(self) -> bool:
        """Count a committed mutating request; True when it is the one to crash after."""
        if self.config.crash_after_commits is None:
            return False
        self._commits += 1
        return self._commits >= self.config.crash_after_commits

    def duplicate_callback(self) -> bool:
        rate = self.config.duplicate_callback_rate
        return rate > 0 and self._rng.random() < rate

    def callback_hold_back_ms(self) -> int:
        window = self.config.reorder_callback_window_ms
        return 0 if window == 0 else self._rng.randint(0, window)

    def shuffle(self, items: list[Any]) -> None:
        """Out-of-order delivery: shuffle a batch when reordering is on."""
        if self.config.reorder_callback_window_ms > 0:
            self._rng.shuffle(items)
