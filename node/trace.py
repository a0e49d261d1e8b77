"""History records of what a node did: one function, used by both worlds.

A run's history (``docs/HISTORY.md``) holds, per node, the protocol's steps: epochs
entered, rounds a leader started, proposals, certificates formed and accepted,
observations, transmissions sent and how they ended, and, where asked for, every message
sent and received. Both worlds turn the node driver's effects into those records with
:func:`effect_records` and :func:`message_record`, so a real run and a simulated one
describe the same things with the same fields. The caller adds the time.

Message kinds, epochs and rounds are read from the first bytes of the canonical encoding
(``consensus.codec``): a map whose first keys are "k", "e" and "r".

A member that runs as twins (two copies with one member index, ``node.byzantine.TWINS``)
is named by its index in both copies' records; the twin copy's own records carry
``"twin": true`` after ``"node"``, and a message to or from it ``"to_twin": true`` or
``"from_twin": true``.

This module only describes: it never decides anything and does no I/O.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

import msgpack

from consensus.events import Broadcast, Certified, EpochStarted, Rejected, Send
from consensus.messages import Kind
from node.driver import FINISHED_OK, Effect, Observed, TransmissionFinished, Transmit

__all__ = ["KIND_NAMES", "effect_records", "message_header", "message_record", "twin_record"]

KIND_NAMES: Final = {
    Kind.NEW_EPOCH: "new-epoch",
    Kind.OBSERVE_REQ: "observe-req",
    Kind.OBSERVATION: "observation",
    Kind.PROPOSAL: "proposal",
    Kind.SHARES: "shares",
    Kind.CERTIFICATES: "certificates",
}


@lru_cache(maxsize=256)
def message_header(data: bytes) -> tuple[str, int, int | None]:
    """(kind name, epoch, round or None) of an encoded consensus message; ("malformed",
    -1, None) when its head is not canonical."""
    try:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(data) or 1)
        unpacker.feed(data)
        size = unpacker.read_map_header()
        head: dict[str, Any] = {}
        for _ in range(min(size, 3)):
            key = unpacker.unpack()
            if key not in ("k", "e", "r"):
                break
            head[key] = unpacker.unpack()
        kind = KIND_NAMES[Kind(head["k"])]
        epoch = int(head["e"])
    except Exception:
        return "malformed", -1, None
    round_ = head.get("r")
    return kind, epoch, round_ if isinstance(round_, int) else None


def message_record(
    event: str,
    sender: int,
    receiver: int,
    data: bytes,
    *,
    sender_twin: bool = False,
    receiver_twin: bool = False,
) -> dict[str, Any]:
    """A "send", "recv" or "lost" record of one message between two members (``*_twin``:
    that end is a member's twin copy)."""
    kind, epoch, round_ = message_header(data)
    record: dict[str, Any] = {"event": event, "from": sender, "to": receiver, "kind": kind}
    record["epoch"] = epoch
    if round_ is not None:
        record["round"] = round_
    if sender_twin:
        record["from_twin"] = True
    if receiver_twin:
        record["to_twin"] = True
    return record


def twin_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` (a node's) as its twin copy's: ``"twin": true`` right after ``"node"``."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        out[key] = value
        if key == "node":
            out["twin"] = True
    return out


def effect_records(node: int, effect: Effect, twin: bool = False) -> list[dict[str, Any]]:
    """The history records one driver effect stands for (none for most of them);
    ``twin``: the node is a member's twin copy (``twin_record``)."""
    records = _records(node, effect)
    if twin and records:
        return [twin_record(r) for r in records]
    return records


def _records(node: int, effect: Effect) -> list[dict[str, Any]]:
    if isinstance(effect, Broadcast):
        kind, epoch, round_ = message_header(effect.data)
        # A leader's broadcasts mark the round's steps; followers never broadcast these.
        if kind == "observe-req":
            return [{"event": "round", "node": node, "epoch": epoch, "round": round_}]
        if kind == "proposal":
            return [{"event": "proposal", "node": node, "epoch": epoch, "round": round_}]
        if kind == "certificates":
            return [{"event": "certificate", "node": node, "epoch": epoch, "round": round_}]
        return []
    if isinstance(effect, Send):
        return []
    if isinstance(effect, Certified):
        report = effect.certificate.report
        return [
            {
                "event": "certified",
                "node": node,
                "target": effect.target,
                "epoch": report.epoch,
                "round": report.round,
                "decisions": [
                    ["0x" + d.settlement_id.hex(), d.action.name] for d in report.decisions
                ],
                "signers": effect.certificate.signers,
            }
        ]
    if isinstance(effect, EpochStarted):
        return [{"event": "epoch", "node": node, "epoch": effect.epoch, "leader": effect.leader}]
    if isinstance(effect, Rejected):
        return [
            {"event": "rejected", "node": node, "sender": effect.sender, "reason": effect.reason}
        ]
    if isinstance(effect, Observed):
        return [
            {
                "event": "observation",
                "node": node,
                "epoch": effect.epoch,
                "round": effect.round,
                "bytes": effect.size,
                "settlements": effect.settlements,
                "left_out": effect.left_out,
                "oldest_queued_s": effect.oldest_queued,
            }
        ]
    if isinstance(effect, Transmit):
        report = effect.certificate.report
        return [
            {
                "event": "transmission",
                "phase": "invoke",
                "node": node,
                "target": effect.target,
                "epoch": report.epoch,
                "round": report.round,
                "attempt": effect.attempt,
                "decisions": len(report.decisions),
            }
        ]
    if isinstance(effect, TransmissionFinished):
        return [
            {
                "event": "transmission",
                "phase": "ok" if effect.result in FINISHED_OK else "fail",
                "node": node,
                "target": effect.target,
                "epoch": effect.epoch,
                "round": effect.round,
                "result": effect.result,
                "attempts": effect.attempts,
            }
        ]
    return []
