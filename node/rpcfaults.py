"""A node's chain endpoint failing it: an RPC outage, or an RPC that lies.

Both worlds feed a member's escrow leg tracker what its watcher read from its chain
endpoint (``EscrowRecord``s). These faults change that reading for one member only, the
same way in both worlds: during an outage the endpoint answers nothing (no reading, no
transmission: "rpc-error"); a lying endpoint reports events that did not happen or hides
ones that did. It is a data-plane fault of the oracle: the member is honest and believes
its endpoint, so it counts toward f.

Lies (``RPC_LIES``):

- ``fake-locks``: every settlement created is reported locked as well (a ``LegLocked``
  that leaves the escrow PREPARED), whether or not its seller ever locked;
- ``hide-locks``: no lock is reported.

This module only rewrites readings; it never talks to an endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from chain_adapters.model import LOCK_TRANSITIONS, Leg, LegLocked, Mode, SettlementCreated, State
from node.legs import EscrowRecord

__all__ = ["RPC_LIES", "RpcWindow", "active", "lie_about"]

RPC_LIES: Final = ("fake-locks", "hide-locks")


@dataclass(frozen=True, slots=True)
class RpcWindow:
    """During ``[start, end)`` (a world's own seconds), this member's endpoint is down
    (``lie`` empty) or tells ``lie``."""

    start: float
    end: float
    lie: str = ""


def active(windows: Iterable[RpcWindow], now: float) -> RpcWindow | None:
    """The window in force at ``now`` (the first one listed), if any."""
    return next((w for w in windows if w.start <= now < w.end), None)


def lie_about(records: Iterable[EscrowRecord], lie: str) -> tuple[EscrowRecord, ...]:
    """The records a lying endpoint reports instead of ``records``."""
    told = []
    for record in records:
        event = record.event
        if lie == "hide-locks" and isinstance(event, LegLocked):
            continue
        told.append(record)
        if lie == "fake-locks" and isinstance(event, SettlementCreated):
            terms = event.terms
            state = LOCK_TRANSITIONS[(terms.mode == Mode.SWAP, Leg.ASSET, State.CREATED)]
            fake = LegLocked(
                event.emitter,
                terms.settlement_id,
                Leg.ASSET,
                terms.seller,
                terms.asset_token,
                terms.asset_amount,
                state,
            )
            told.append(EscrowRecord(fake, record.retracted, record.position))
    return tuple(told)
