"""The one wire codec for consensus messages: msgpack maps with a strict schema.

Every message is a msgpack map whose first key ``"k"`` is the message kind; each kind has
an exact key set, in a fixed order. Decoding is where peer bytes enter, so it refuses,
with a ``CodecError`` naming the reason:

- input longer than the configuration's message limit (checked before parsing);
- anything but a map with exactly the kind's keys (unknown or missing fields);
- wrong types (booleans are not integers, strings are not bytes, no floats or extensions);
- values out of range for this committee (node indices, number of targets, observation
  and report sizes);
- bytes that do not re-encode to themselves: every message has one encoding, so a
  re-serialised or padded copy of a message is not a different message.

Certificates travel inside CERTIFICATES messages as ``[config_digest, decisions, signers,
signature]``; their epoch and round are the message's.

This module must never raise anything but ``CodecError`` on peer input, never return a
message that fails the message constructors' rules, and does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import msgpack

from consensus.config import ConsensusConfig
from consensus.messages import (
    ED25519_SIGNATURE_LENGTH,
    SHARE_LENGTH,
    Kind,
    Message,
    MessageError,
    NewEpoch,
    ObserveReq,
    Proposal,
    RoundCertificates,
    Shares,
    SignedObservation,
)
from consensus.report import Action, Certificate, Decision, Report, ReportError

__all__ = ["CodecError", "CodecLimits", "decode", "encode", "peek_kind"]

_KEYS: Final[dict[int, tuple[str, ...]]] = {
    Kind.NEW_EPOCH: ("k", "e"),
    Kind.OBSERVE_REQ: ("k", "e", "r"),
    Kind.OBSERVATION: ("k", "e", "r", "o", "b", "s"),
    Kind.PROPOSAL: ("k", "e", "r", "os"),
    Kind.SHARES: ("k", "e", "r", "sh"),
    Kind.CERTIFICATES: ("k", "e", "r", "c"),
}
_SIGNERS_MAX: Final = 2**64 - 1


class CodecError(ValueError):
    """Peer bytes that are not a valid consensus message for this committee."""


@dataclass(frozen=True, slots=True)
class CodecLimits:
    """What a committee's configuration allows on the wire."""

    n: int
    targets: int
    max_message_bytes: int
    max_observation_bytes: int
    max_decisions_per_report: int

    @classmethod
    def from_config(cls, config: ConsensusConfig) -> CodecLimits:
        return cls(
            n=config.n,
            targets=len(config.targets),
            max_message_bytes=config.message_limit,
            max_observation_bytes=config.max_observation_bytes,
            max_decisions_per_report=config.max_decisions_per_report,
        )


# --------------------------------------------------------------------------- encoding


def _certificate_fields(cert: Certificate) -> list[Any]:
    return [
        cert.report.config_digest,
        [[d.settlement_id, int(d.action), d.terms_hash] for d in cert.report.decisions],
        cert.signers,
        cert.signature,
    ]


# The kinds as plain ints, and one packer for every message: a message is encoded many
# thousand times a simulated run. ``Packer.pack`` runs in C under the GIL and resets its
# buffer each call, so one packer serves every caller.
_KIND_NEW_EPOCH: Final = Kind.NEW_EPOCH.value
_KIND_OBSERVE_REQ: Final = Kind.OBSERVE_REQ.value
_KIND_OBSERVATION: Final = Kind.OBSERVATION.value
_KIND_PROPOSAL: Final = Kind.PROPOSAL.value
_KIND_SHARES: Final = Kind.SHARES.value
_KIND_CERTIFICATES: Final = Kind.CERTIFICATES.value
_pack: Final = msgpack.Packer(use_bin_type=True).pack


def encode(message: Message) -> bytes:
    """The canonical bytes of a message."""
    body: dict[str, Any]
    if isinstance(message, NewEpoch):
        body = {"k": _KIND_NEW_EPOCH, "e": message.epoch}
    elif isinstance(message, ObserveReq):
        body = {"k": _KIND_OBSERVE_REQ, "e": message.epoch, "r": message.round}
    elif isinstance(message, SignedObservation):
        body = {
            "k": _KIND_OBSERVATION,
            "e": message.epoch,
            "r": message.round,
            "o": message.observer,
            "b": message.observation,
            "s": message.signature,
        }
    elif isinstance(message, Proposal):
        body = {
            "k": _KIND_PROPOSAL,
            "e": message.epoch,
            "r": message.round,
            "os": [[so.observer, so.observation, so.signature] for so in message.observations],
        }
    elif isinstance(message, Shares):
        body = {
            "k": _KIND_SHARES,
            "e": message.epoch,
            "r": message.round,
            "sh": list(message.shares),
        }
    else:
        body = {
            "k": _KIND_CERTIFICATES,
            "e": message.epoch,
            "r": message.round,
            "c": [_certificate_fields(c) for c in message.certificates],
        }
    packed: bytes = _pack(body)
    return packed


# --------------------------------------------------------------------------- decoding


def _int(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise CodecError(f"{what} must be an integer in [{low}, {high}]")
    return value


def _bytes(value: object, what: str, *, exactly: int | None = None, at_most: int = 0) -> bytes:
    if type(value) is not bytes:
        raise CodecError(f"{what} must be binary")
    if exactly is not None and len(value) != exactly:
        raise CodecError(f"{what} must be {exactly} bytes, got {len(value)}")
    if exactly is None and len(value) > at_most:
        raise CodecError(f"{what} is {len(value)} bytes, limit {at_most}")
    return value


def _list(value: object, what: str, *, at_most: int, exactly: int | None = None) -> list[Any]:
    if type(value) is not list:
        raise CodecError(f"{what} must be an array")
    if exactly is not None and len(value) != exactly:
        raise CodecError(f"{what} must have {exactly} entries, got {len(value)}")
    if len(value) > at_most:
        raise CodecError(f"{what} has {len(value)} entries, limit {at_most}")
    return value


def _decision(value: object, where: str) -> Decision:
    fields = _list(value, where, at_most=3, exactly=3)
    action_value = _int(fields[1], f"{where} action", 1, 255)
    try:
        action = Action(action_value)
    except ValueError:
        raise CodecError(f"{where} has unknown action {action_value}") from None
    return Decision(
        settlement_id=_bytes(fields[0], f"{where} settlement id", exactly=32),
        action=action,
        terms_hash=_bytes(fields[2], f"{where} terms hash", exactly=32),
    )


def _certificate(
    value: object, epoch: int, round_: int, index: int, limits: CodecLimits
) -> Certificate:
    where = f"certificate {index}"
    fields = _list(value, where, at_most=4, exactly=4)
    raw_decisions = _list(fields[1], f"{where} decisions", at_most=limits.max_decisions_per_report)
    report = Report(
        config_digest=_bytes(fields[0], f"{where} config digest", exactly=32),
        epoch=epoch,
        round=round_,
        decisions=tuple(_decision(d, f"{where} decision {i}") for i, d in enumerate(raw_decisions)),
    )
    signers = _int(fields[2], f"{where} signers", 1, _SIGNERS_MAX)
    if signers >> limits.n:
        raise CodecError(f"{where} names a signer outside the committee of {limits.n}")
    return Certificate(
        report=report,
        signers=signers,
        signature=_bytes(fields[3], f"{where} signature", exactly=SHARE_LENGTH),
    )


def _build(body: dict[str, Any], kind: int, limits: CodecLimits) -> Message:
    epoch = _int(body["e"], "epoch", 1, 2**32 - 1)
    if kind == Kind.NEW_EPOCH:
        return NewEpoch(epoch)
    round_ = _int(body["r"], "round", 1, 2**64 - 1)
    if kind == Kind.OBSERVE_REQ:
        return ObserveReq(epoch, round_)
    if kind == Kind.OBSERVATION:
        return SignedObservation(
            epoch=epoch,
            round=round_,
            observer=_int(body["o"], "observer", 0, limits.n - 1),
            observation=_bytes(body["b"], "observation", at_most=limits.max_observation_bytes),
            signature=_bytes(body["s"], "observation signature", exactly=ED25519_SIGNATURE_LENGTH),
        )
    if kind == Kind.PROPOSAL:
        entries = _list(body["os"], "proposal observations", at_most=limits.n)
        observations = []
        for i, entry in enumerate(entries):
            fields = _list(entry, f"proposal observation {i}", at_most=3, exactly=3)
            observations.append(
                SignedObservation(
                    epoch=epoch,
                    round=round_,
                    observer=_int(fields[0], f"proposal observation {i} observer", 0, limits.n - 1),
                    observation=_bytes(
                        fields[1],
                        f"proposal observation {i}",
                        at_most=limits.max_observation_bytes,
                    ),
                    signature=_bytes(
                        fields[2],
                        f"proposal observation {i} signature",
                        exactly=ED25519_SIGNATURE_LENGTH,
                    ),
                )
            )
        return Proposal(epoch, round_, tuple(observations))
    if kind == Kind.SHARES:
        shares = _list(body["sh"], "shares", at_most=limits.targets, exactly=limits.targets)
        for i, share in enumerate(shares):
            if type(share) is not bytes or len(share) not in (0, SHARE_LENGTH):
                raise CodecError(f"share {i} must be 96 bytes, or empty for a refusal")
        return Shares(epoch, round_, tuple(shares))
    certs = _list(body["c"], "certificates", at_most=limits.targets, exactly=limits.targets)
    return RoundCertificates(
        epoch,
        round_,
        tuple(_certificate(c, epoch, round_, i, limits) for i, c in enumerate(certs)),
    )


def decode(data: object, limits: CodecLimits) -> Message:
    """Parse peer bytes into a message, or raise CodecError (see the module docstring).
    ``data`` is typed ``object``: anything else than bytes is refused here, by the same
    error, compiled (``native``) or not."""
    if type(data) is not bytes:
        raise CodecError("message must be bytes")
    return _decode(data, limits)


@lru_cache(maxsize=128)
def _decode(data: bytes, limits: CodecLimits) -> Message:
    # Kept for recent messages: a broadcast reaches every member with the same bytes, and
    # a simulation decodes all of them in one process. Messages are immutable; a refusal
    # (CodecError) is not kept and is raised again for the same bytes.
    if len(data) > limits.max_message_bytes:
        raise CodecError(f"message is {len(data)} bytes, limit {limits.max_message_bytes}")
    try:
        body = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=8,
            max_bin_len=limits.max_message_bytes,
            max_array_len=max(limits.n, limits.max_decisions_per_report, 4),
            max_map_len=8,
            max_ext_len=0,
        )
    except Exception as e:  # noqa: BLE001 - any parser failure on peer bytes is the same verdict
        raise CodecError(f"not a msgpack message within limits: {str(e)[:120]}") from None
    if type(body) is not dict:
        raise CodecError("message must be a msgpack map")
    kind = body.get("k")
    if type(kind) is not int or kind not in _KEYS:
        raise CodecError(f"unknown message kind {kind!r}")
    expected = _KEYS[kind]
    if tuple(body) != expected:
        raise CodecError(
            f"{Kind(kind).name} message must have exactly the fields {list(expected)}, "
            f"got {list(body)}"
        )
    try:
        message = _build(body, kind, limits)
    except (MessageError, ReportError) as e:
        raise CodecError(str(e)) from None
    if encode(message) != data:
        raise CodecError(f"{Kind(kind).name} message is not in canonical encoding")
    return message


def peek_kind(data: bytes) -> Kind | None:
    """The kind of a canonically encoded message from its first bytes, without parsing
    the rest (for the harness's bookkeeping); None when the prefix is not canonical."""
    # A canonical message starts with a fixmap header, the key "k" (0xa1 0x6b) and a
    # positive fixint kind.
    if len(data) >= 4 and 0x80 <= data[0] <= 0x8F and data[1:3] == b"\xa1k":
        try:
            return Kind(data[3])
        except ValueError:
            return None
    return None
