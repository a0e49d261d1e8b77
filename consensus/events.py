"""Events a consensus node takes in and actions it gives out.

The node state machine (``consensus.protocol``) is driven only through
``Node.handle(event) -> tuple[Action, ...]``. The runtime around it, the in-memory harness
(``consensus.harness``) or the real node process (``node/``), turns actions into I/O and
I/O into events:

=====================  ==================================================================
event                  meaning
=====================  ==================================================================
Start                  the node (re)starts; ``persisted`` is what its Persist actions wrote
MessageReceived        bytes from an authenticated peer
TimerFired             a timer set by SetTimer reached its time
ObservationReady       the answer to RequestObservation
ObservationChanged     (a hint) what the node would observe changed: new facts; a leader
                       whose round has finished starts the next one without waiting
                       for the rest of DeltaRound (``Node`` docstring: the round pace)
=====================  ==================================================================

=====================  ==================================================================
action                 the runtime must
=====================  ==================================================================
Persist                write the update durably *before* releasing any later action of
                       the same step (the ordering contract of ``consensus.safety``)
Send / Broadcast       deliver bytes to one peer / to every other member
SetTimer / CancelTimer arm (replacing any earlier deadline of the same timer) / disarm
RequestObservation     observe the world for (epoch, round), answer with ObservationReady
Transmit               send the certificate to its target (if not already applied there)
Certified              (information) a valid certificate was accepted
EpochStarted           (information) the node entered an epoch
Rejected               (information) peer input or a stale event was refused; the node's
                       state did not change
=====================  ==================================================================

Every event carries ``now``: the only clock the node ever sees.

This module must never hold mutable state, and does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from consensus.report import Certificate
from consensus.safety import PersistedState, PersistUpdate

__all__ = [
    "Action",
    "Broadcast",
    "CancelTimer",
    "Certified",
    "EpochStarted",
    "Event",
    "MessageReceived",
    "ObservationChanged",
    "ObservationReady",
    "Persist",
    "Rejected",
    "RequestObservation",
    "Send",
    "SetTimer",
    "Start",
    "Timer",
    "TimerFired",
    "TimerKind",
    "Transmit",
]


class TimerKind(IntEnum):
    PROGRESS = 1  # pacemaker: no certificate in this epoch for DeltaProgress
    RESEND = 2  # pacemaker: re-broadcast NEW-EPOCH (DeltaResend pending, DeltaProgress not)
    ROUND = 3  # leader: DeltaRound since the round started
    GRACE = 4  # leader: DeltaGrace since the observation quorum arrived
    RETRANSMIT = 5  # leader: resend the unfinished round's request every DeltaResend
    TRANSMIT = 6  # transmission: this node's stage for a certificate is due


@dataclass(frozen=True, slots=True)
class Timer:
    """A timer's identity; setting it again replaces its deadline."""

    kind: TimerKind
    epoch: int = 0
    round: int = 0
    target: int = 0


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Start:
    now: float
    persisted: PersistedState


@dataclass(frozen=True, slots=True)
class MessageReceived:
    now: float
    sender: int
    data: bytes


@dataclass(frozen=True, slots=True)
class TimerFired:
    now: float
    timer: Timer


@dataclass(frozen=True, slots=True)
class ObservationReady:
    now: float
    epoch: int
    round: int
    observation: bytes


@dataclass(frozen=True, slots=True)
class ObservationChanged:
    now: float


Event = Start | MessageReceived | TimerFired | ObservationReady | ObservationChanged


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Persist:
    update: PersistUpdate


@dataclass(frozen=True, slots=True)
class Send:
    to: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Broadcast:
    """To every member but the sender (the node has already handled its own copy)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SetTimer:
    timer: Timer
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: Timer


@dataclass(frozen=True, slots=True)
class RequestObservation:
    epoch: int
    round: int


@dataclass(frozen=True, slots=True)
class Transmit:
    target: str
    certificate: Certificate


@dataclass(frozen=True, slots=True)
class Certified:
    target: str
    certificate: Certificate


@dataclass(frozen=True, slots=True)
class EpochStarted:
    epoch: int
    leader: int


@dataclass(frozen=True, slots=True)
class Rejected:
    sender: int | None  # None for a local event (a stale timer or observation)
    reason: str


Action = (
    Persist
    | Send
    | Broadcast
    | SetTimer
    | CancelTimer
    | RequestObservation
    | Transmit
    | Certified
    | EpochStarted
    | Rejected
)
