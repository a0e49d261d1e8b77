"""The pacemaker: epochs, their leaders, and when to move on (OCR's leader election).

Each epoch ``e >= 1`` has one leader, drawn from a permutation of the committee keyed by
the configuration's ``leader_selection_key``: epochs ``b*n .. b*n+n-1`` are led by the n
members in the order of permutation ``b``, so every member leads exactly once in each
block of n epochs and at most ``2f`` consecutive epochs can have faulty leaders.

A node that sees no certificate for DeltaProgress asks for epoch ``e+1`` with NEW-EPOCH and
repeats its highest request every DeltaResend while it is pending (``ne > e``). Once the node
is in the epoch it asked for, the repeat is only a heartbeat for members that fell behind,
and it comes every DeltaProgress instead (``resend_interval``): OCR repeats it every
DeltaResend always, which is n(n-1) messages per DeltaResend whether or not anyone needs
them; at n = 31 and DeltaResend 0.5 s that was 87% of all messages, enough to saturate the
machine, delay rounds past DeltaProgress and make the committee change epochs over and over. With ``newepoch[j]`` the highest epoch
member j asked for:

- f+1 members asked for more than ``ne`` (what I asked for): ask for the highest epoch
  f+1 of them asked for (join: at least one honest node wants it);
- 2f+1 members asked for more than ``e``: move to the highest epoch 2f+1 of them asked for
  (move: the honest majority of a quorum wants it).

These are the two rules of OCR's pacemaker (``sortedGreaterThan`` and its index), kept as
pure functions here; ``Pacemaker`` holds the counters and ``consensus.protocol`` turns its
answers into messages, timers and persistence.

This module must never read a clock, a random generator or the network; the permutation
is a function of the key alone.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from consensus.safety import PacemakerRecord

__all__ = [
    "Pacemaker",
    "join_epoch",
    "keyed_permutation",
    "leader",
    "PROGRESS_BACKOFF_DOUBLINGS",
    "move_epoch",
    "progress_timeout",
    "resend_interval",
]

#: How often DeltaProgress doubles for epochs that follow one another without a
#: certificate (``progress_timeout``).
PROGRESS_BACKOFF_DOUBLINGS = 1


@lru_cache(maxsize=1024)
def keyed_permutation(key: bytes, label: bytes, n: int) -> tuple[int, ...]:
    """A permutation of range(n) determined by (key, label): Fisher-Yates driven by
    SHA-256(key || len(label) || label || counter). The modulo bias is below 2^-56 for
    n <= 256 and harmless here (the permutation needs to be fixed, not secret)."""
    order = list(range(n))
    prefix = key + len(label).to_bytes(2, "big") + label
    for counter, i in enumerate(range(n - 1, 0, -1)):
        digest = hashlib.sha256(prefix + counter.to_bytes(4, "big")).digest()
        j = int.from_bytes(digest[:8], "big") % (i + 1)
        order[i], order[j] = order[j], order[i]
    return tuple(order)


def leader(epoch: int, n: int, key: bytes) -> int:
    """The leader of ``epoch``: position ``epoch mod n`` of the permutation of block
    ``epoch // n``."""
    block, position = divmod(epoch, n)
    return keyed_permutation(key, b"leader" + block.to_bytes(8, "big"), n)[position]


def _kth_highest_above(values: list[int], floor: int, k: int) -> int | None:
    above = sorted(v for v in values if v > floor)
    if len(above) < k:
        return None
    return above[len(above) - k]


def join_epoch(newepoch: list[int], ne: int, f: int) -> int | None:
    """The epoch to ask for when f+1 members asked for more than ``ne``, else None."""
    return _kth_highest_above(newepoch, ne, f + 1)


def move_epoch(newepoch: list[int], e: int, f: int) -> int | None:
    """The epoch to move to when 2f+1 members asked for more than ``e``, else None."""
    return _kth_highest_above(newepoch, e, 2 * f + 1)


def resend_interval(e: int, ne: int, delta_resend: float, delta_progress: float) -> float:
    """How long until a node repeats its NEW-EPOCH: DeltaResend while its request for
    ``ne`` is pending (``ne > e``), DeltaProgress once it is in that epoch (a heartbeat
    for members that missed the move; one that times out asks and hears it again)."""
    return delta_resend if ne > e else delta_progress


def progress_timeout(delta_progress: float, failed_epochs: int) -> float:
    """How long a node waits for a certificate in an epoch it enters after
    ``failed_epochs`` epochs in a row without one: DeltaProgress, doubled per failed
    epoch up to PROGRESS_BACKOFF_DOUBLINGS times (PBFT's view-change timeouts double the
    same way). When the committee is slow rather than faulty (an overloaded machine takes
    longer than DeltaProgress for a round), a longer epoch lets a round finish instead of
    changing leaders over and over, each change costing n(n-1) NEW-EPOCH messages more;
    the cap keeps a faulty leader's epoch bounded. A certificate resets the count."""
    return delta_progress * 2.0 ** min(failed_epochs, PROGRESS_BACKOFF_DOUBLINGS)


class Pacemaker:
    """The counters of OCR's pacemaker. ``e``: current epoch; ``ne``: highest epoch this
    node asked for; ``newepoch[j]``: highest epoch member j asked for."""

    __slots__ = ("e", "ne", "newepoch")

    def __init__(self, n: int, record: PacemakerRecord | None) -> None:
        self.e = 1
        self.ne = 1
        self.newepoch = [0] * n
        # A record of another committee size or with ne < e is corrupt: start afresh
        # (costs liveness for one epoch change, never safety).
        if (
            record is not None
            and len(record.highest_received) == n
            and 1 <= record.epoch <= record.highest_sent_epoch
        ):
            self.e = record.epoch
            self.ne = record.highest_sent_epoch
            self.newepoch = list(record.highest_received)

    def record(self) -> PacemakerRecord:
        return PacemakerRecord(self.e, self.ne, tuple(self.newepoch))
