"""The messages committee members exchange during epochs and rounds.

One round, led by the epoch's leader (OCR's report generation, with BLS shares)::

    leader   --OBSERVE-REQ(e, r)-->               every node
    node     --OBSERVATION(e, r, obs, sig)-->     leader      (Ed25519, identity key)
    leader   --PROPOSAL(e, r, >= quorum obs)-->   every node  (after DeltaGrace)
    node     --SHARES(e, r, one BLS share per target)--> leader
    leader   --CERTIFICATES(e, r, one per target)-->  every node

and the pacemaker's only all-to-all message, NEW-EPOCH(e). Every message is a frozen,
slotted dataclass validated at construction, so a message object that exists is
well-formed; whether it fits the current configuration (committee size, targets, size
limits) is checked by ``consensus.codec`` where peer bytes enter.

The sender of a message is not a field: the transport authenticates peers (libp2p Noise in
real mode, the simulated network in the harness). Observations are signed as well, because
the leader relays them to followers inside a proposal.

This module must never hold a message that violates the rules of its constructor, and
does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from mypy_extensions import mypyc_attr

from consensus.report import Certificate

__all__ = [
    "ED25519_SIGNATURE_LENGTH",
    "MAX_EPOCH",
    "MAX_ROUND",
    "SHARE_LENGTH",
    "Kind",
    "Message",
    "MessageError",
    "NewEpoch",
    "ObserveReq",
    "Proposal",
    "RoundCertificates",
    "Shares",
    "SignedObservation",
]

MAX_EPOCH: Final = 2**32 - 1
MAX_ROUND: Final = 2**64 - 1
ED25519_SIGNATURE_LENGTH: Final = 64
SHARE_LENGTH: Final = 96
#: Observer indices must fit the uint64 signer bitmap (see consensus.config.MAX_NODES).
_MAX_OBSERVER: Final = 63


class MessageError(ValueError):
    """A message field is out of range or malformed."""


class Kind(IntEnum):
    """Wire tag of each message type."""

    NEW_EPOCH = 1
    OBSERVE_REQ = 2
    OBSERVATION = 3
    PROPOSAL = 4
    SHARES = 5
    CERTIFICATES = 6


def _epoch(value: object) -> None:
    if type(value) is not int or not 1 <= value <= MAX_EPOCH:
        raise MessageError(f"epoch {value!r} must be an integer in [1, 2^32-1]")


def _round(value: object) -> None:
    if type(value) is not int or not 1 <= value <= MAX_ROUND:
        raise MessageError(f"round {value!r} must be an integer in [1, 2^64-1]")


@mypyc_attr(native_class=False)  # it judges its own fields (see native)
@dataclass(frozen=True, slots=True)
class NewEpoch:
    """The sender wants to move to ``epoch`` (or has moved there)."""

    epoch: int

    def __post_init__(self: Any) -> None:
        _epoch(self.epoch)


@mypyc_attr(native_class=False)  # it judges its own fields (see native)
@dataclass(frozen=True, slots=True)
class ObserveReq:
    """The leader opens round ``round`` of ``epoch``: send me your observation."""

    epoch: int
    round: int

    def __post_init__(self: Any) -> None:
        _epoch(self.epoch)
        _round(self.round)


@mypyc_attr(native_class=False)  # it judges its own fields (see native)
@dataclass(frozen=True, slots=True)
class SignedObservation:
    """A node's observation for one round, signed with its Ed25519 identity key over a
    domain-separated message that binds the committee, epoch, round and observer (see
    ``consensus.identity``)."""

    epoch: int
    round: int
    observer: int
    observation: bytes
    signature: bytes  # 64 B Ed25519

    def __post_init__(self: Any) -> None:
        _epoch(self.epoch)
        _round(self.round)
        if type(self.observer) is not int or not 0 <= self.observer <= _MAX_OBSERVER:
            raise MessageError(f"observer {self.observer!r} must be a node index in [0, 63]")
        if type(self.observation) is not bytes:
            raise MessageError("observation must be bytes")
        if type(self.signature) is not bytes or len(self.signature) != ED25519_SIGNATURE_LENGTH:
            raise MessageError("observation signature must be 64 bytes")


@mypyc_attr(native_class=False)  # it judges its own fields (see native)
@dataclass(frozen=True, slots=True)
class Proposal:
    """The leader's observation set for a round, ordered by observer, each observer once.
    Every follower recomputes the round's reports from exactly this set."""

    epoch: int
    round: int
    observations: tuple[SignedObservation, ...]

    def __post_init__(self: Any) -> None:
        _epoch(self.epoch)
        _round(self.round)
        if type(self.observations) is not tuple or not self.observations:
            raise MessageError("proposal must carry a non-empty tuple of observations")
        previous = -1
        for so in self.observations:
            if type(so) is not SignedObservation:
                raise MessageError("proposal observations must be SignedObservation")
            if so.epoch != self.epoch or so.round != self.round:
                raise MessageError(
                    f"proposal for ({self.epoch}, {self.round}) carries an observation "
                    f"for ({so.epoch}, {so.round})"
                )
            if so.observer <= previous:
                raise MessageError("proposal observations must be ordered by observer, each once")
            previous = so.observer


@mypyc_attr(native_class=False)  # it judges its own fields (see native)
@dataclass(frozen=True, slots=True)
class Shares:
    """A follower's BLS signature shares for a round: position i is its signature of the
    report for target i, or empty bytes when its safety rules forbid signing that report."""

    epoch: int
    round: int
    shares: tuple[bytes, ...]

    def __post_init__(self: Any) -> None:
        _epoch(self.epoch)
        _round(self.round)
        if type(self.shares) is not tuple or not self.shares:
            raise MessageError("shares must be a non-empty tuple")
        for share in self.shares:
            if type(share) is not bytes or len(share) not in (0, SHARE_LENGTH):
                raise MessageError("each share must be 96 bytes, or empty for a refusal")


@mypyc_attr(native_class=False)  # it judges its own fields (see native)
@dataclass(frozen=True, slots=True)
class RoundCertificates:
    """The round's certificates, one per target in target order (OCR's FINAL)."""

    epoch: int
    round: int
    certificates: tuple[Certificate, ...]

    def __post_init__(self: Any) -> None:
        _epoch(self.epoch)
        _round(self.round)
        if type(self.certificates) is not tuple or not self.certificates:
            raise MessageError("final must carry a non-empty tuple of certificates")
        for cert in self.certificates:
            if type(cert) is not Certificate:
                raise MessageError("final certificates must be Certificate")
            if cert.report.epoch != self.epoch or cert.report.round != self.round:
                raise MessageError(
                    f"final for ({self.epoch}, {self.round}) carries a certificate for "
                    f"({cert.report.epoch}, {cert.report.round})"
                )


Message = NewEpoch | ObserveReq | SignedObservation | Proposal | Shares | RoundCertificates
