"""The simulated network between committee members: one vocabulary for every simulation.

Both the consensus-only harness (``consensus.harness``) and the full-system simulated
world (``scenarios.sim``) move messages with :class:`SimulatedNetwork`, so a network
fault means the same thing in both:

- every link has a base delay plus a per-link constant drawn once from
  ``[0, link_spread]``, and every message a uniform jitter in ``[0, jitter]``;
- until ``heal_at``: each message is lost with probability ``drop``, arrives twice with
  probability ``duplicate``, and is held back by an extra uniform ``[0, reorder_delay]``
  with probability ``reorder`` (which reorders it behind later messages);
- partitions: during ``[start, min(end, heal_at))`` messages between ``side`` and the rest
  are lost; a one-way partition loses only those sent *from* ``side``. A partition whose
  side is one node isolates that node;
- link faults (``LinkFault``, a scenario's network faults): during ``[start, end)``, on
  the links from ``senders`` to ``receivers``, a message is lost with probability
  ``drop``, sent twice with probability ``duplicate``, delayed by ``delay`` plus a
  uniform ``[0, jitter]``, and held back by a uniform ``[0, reorder_delay]`` with
  probability ``reorder``. Several active faults on one link all apply, in their order;
- crashes (``Crash``) are the world's business (the network only carries messages), but
  their description lives here so both simulations read the same schedule.

Every random choice is drawn from the ``random.Random`` the caller passes, in the order
messages are sent, so the same seed gives the same deliveries.

This module must never read the clock or use a random generator it was not given.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Crash", "LinkFault", "NetworkProfile", "Partition", "SimulatedNetwork"]


@dataclass(frozen=True, slots=True)
class NetworkProfile:
    """Link behaviour. Delays are one-way, in virtual seconds."""

    delay: float = 0.05  # base delay of every link ...
    link_spread: float = 0.0  # ... plus a per-link constant drawn from [0, link_spread]
    jitter: float = 0.005  # per-message extra delay, uniform in [0, jitter]
    drop: float = 0.0  # until heal_at: probability a message is lost
    duplicate: float = 0.0  # until heal_at: probability a message arrives twice
    reorder: float = 0.0  # until heal_at: probability of an extra delay ...
    reorder_delay: float = 0.2  # ... uniform in [0, reorder_delay]

    @property
    def max_healthy_delay(self) -> float:
        """The longest one-way delay once the network has healed."""
        return self.delay + self.link_spread + self.jitter


@dataclass(frozen=True, slots=True)
class Partition:
    """Until ``end`` (or heal_at, whichever is first), messages between ``side`` and the
    other nodes are lost; with ``one_way`` only those sent from ``side``."""

    start: float
    end: float
    side: tuple[int, ...]
    one_way: bool = False


@dataclass(frozen=True, slots=True)
class LinkFault:
    """During ``[start, end)``, what happens to messages from a member in ``senders`` to one
    in ``receivers`` (an empty set: every member). Delays in virtual seconds."""

    start: float
    end: float
    senders: frozenset[int] = frozenset()
    receivers: frozenset[int] = frozenset()
    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.2

    def covers(self, src: int, dst: int, now: float) -> bool:
        return (
            self.start <= now < self.end
            and (not self.senders or src in self.senders)
            and (not self.receivers or dst in self.receivers)
        )


@dataclass(frozen=True, slots=True)
class Crash:
    """Node ``node`` loses its volatile state at ``at`` and restarts at ``restart_at``
    (None: at heal_at, or 1 s later if that has passed). With ``after_actions`` = k the
    crash hits during the node's first step at or after ``at``, after k of its actions."""

    node: int
    at: float
    restart_at: float | None = None
    after_actions: int | None = None


class SimulatedNetwork:
    """Routes messages between ``n`` members by a profile, partitions, link faults and a
    heal time (which ends the profile's faults and the partitions, not the link faults:
    each of those has its own window)."""

    def __init__(
        self,
        n: int,
        profile: NetworkProfile,
        rng: random.Random,
        *,
        partitions: tuple[Partition, ...] = (),
        heal_at: float = 0.0,
        link_faults: tuple[LinkFault, ...] = (),
    ) -> None:
        self.profile = profile
        self.partitions = partitions
        self.heal_at = heal_at
        self.link_faults = link_faults
        self.rng = rng
        self.link_delay = [
            [profile.delay + profile.link_spread * rng.random() for _ in range(n)] for _ in range(n)
        ]

    def partitioned(self, src: int, dst: int, now: float) -> bool:
        for p in self.partitions:
            if p.start <= now < min(p.end, self.heal_at):
                src_in, dst_in = src in p.side, dst in p.side
                if src_in != dst_in and (src_in or not p.one_way):
                    return True
        return False

    def route(self, src: int, dst: int, now: float) -> tuple[float, ...] | str:
        """The delays after which copies of a message sent now from ``src`` to ``dst``
        arrive, or why it is lost ("partition", "drop")."""
        net = self.profile
        faulty = now < self.heal_at
        if faulty and self.partitions and self.partitioned(src, dst, now):
            return "partition"
        rng = self.rng
        if faulty and net.drop and rng.random() < net.drop:
            return "drop"
        active = [f for f in self.link_faults if f.covers(src, dst, now)]
        for fault in active:
            if fault.drop and rng.random() < fault.drop:
                return "drop"
        copies = 2 if faulty and net.duplicate and rng.random() < net.duplicate else 1
        for fault in active:
            if fault.duplicate and rng.random() < fault.duplicate:
                copies = 2
        delays = []  # below, ``x * rng.random()`` is ``rng.uniform(0, x)`` to the bit, inlined
        for _ in range(copies):
            delay = self.link_delay[src][dst] + net.jitter * rng.random()
            if faulty and net.reorder and rng.random() < net.reorder:
                delay += net.reorder_delay * rng.random()
            for fault in active:
                delay += fault.delay
                if fault.jitter:
                    delay += fault.jitter * rng.random()
                if fault.reorder and rng.random() < fault.reorder:
                    delay += fault.reorder_delay * rng.random()
            delays.append(delay)
        return tuple(delays)
