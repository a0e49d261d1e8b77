"""A run's history: one time-ordered JSON-lines file of typed events, the same in both worlds.

Every line is one JSON object with two fixed keys first, ``t`` (seconds since the run
began: wall-clock seconds in a real run, virtual seconds in a simulated one) and
``event`` (its type), then the event's own fields. The event types and their fields are
documented in ``docs/HISTORY.md`` and described machine-readably by
:data:`EVENT_FIELDS`. Lines are written as they happen and flushed line by line, so a
crash loses nothing already written.

A simulated run with the same seed writes the same file byte for byte. Records that carry
wall-clock facts (when a run started, how long it took on this machine) are written with
``"wall_clock": true`` and are the only ones left out of :meth:`History.digest`, the
history's fingerprint.

This module writes what it is given; it never decides what happened.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from scenarios.provenance import RUN_START_FIELDS

__all__ = [
    "BANK_STEPS",
    "CHAIN_STEPS",
    "REFUSED_STEP",
    "EVENT_FIELDS",
    "History",
    "certificate_signers",
    "digest_of_lines",
    "plain",
    "signed_actions",
]

#: Every event type, with the fields it always carries (besides ``t`` and ``event``).
EVENT_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    # the run
    "run-start": RUN_START_FIELDS,  # the first record (scenarios.provenance)
    "run": ("world", "scenario", "mode", "seed", "crypto"),
    "drive-start": (),
    "run-end": ("reason",),
    "unsafe-reclaim": ("party", "settlement"),
    "bank-unavailable": ("error",),
    "release-watch-failed": ("error",),
    "chain": ("leg", "chain_id"),
    "bank": ("accounts",),
    "party": ("name", "address"),
    "committee": ("leg", "n", "f", "threshold", "config_count"),
    "node-start": ("node",),
    "node-stop": ("node", "how"),
    "fault": ("phase", "kind"),
    "byzantine": ("node", "behaviours", "lie", "coalition"),
    "settlement": ("index", "settlement", "fail", "buyer", "deadline"),
    # leg steps, invoked and completed
    "leg": ("phase", "step", "settlement", "leg"),
    # protocol steps per node
    "epoch": ("node", "epoch", "leader"),
    "round": ("node", "epoch", "round"),
    "proposal": ("node", "epoch", "round"),
    "certificate": ("node", "epoch", "round"),
    "certified": ("node", "target", "epoch", "round", "decisions", "signers"),
    "observation": (
        "node",
        "epoch",
        "round",
        "bytes",
        "settlements",
        "left_out",
        "oldest_queued_s",
    ),
    "rejected": ("node", "sender", "reason"),
    "transmission": ("phase", "node", "target", "epoch", "round"),
    # messages between members
    "send": ("from", "to", "kind", "epoch"),
    "recv": ("from", "to", "kind", "epoch"),
    "lost": ("from", "to", "kind", "epoch", "why"),
}
_RESERVED: Final = frozenset({"t", "event"})
#: The "leg" step each coordinator event stands for (an escrow leg applied a decision, or
#: was reclaimed in the unsafe variant).
CHAIN_STEPS: Final = {
    "SettlementCommitted": "release",
    "SettlementAborted": "refund",
    "SettlementExpired": "refund",
}
#: The "leg" step of a settlement a coordinator's admission refused (SettlementRefused).
REFUSED_STEP: Final = "refused"
#: The "leg" step each bank event kind stands for (an instruction's state reached).
BANK_STEPS: Final = {
    "instruction.prevalidated": "hold",
    "instruction.executed": "pay",
    "instruction.cancelled": "cancel",
    "instruction.rejected": "reject",
}


def plain(value: Any) -> Any:
    """JSON for the values events carry: bytes as 0x-hex, enums by name."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if hasattr(value, "name"):
        return value.name
    return str(value)


#: Lines a batched history collects before it writes them.
_BATCH_LINES: Final = 512
#: One encoder for every line. ``json.dumps`` with options builds a new encoder per call,
#: and ``JSONEncoder.encode`` a new C encoder per call; this is the C encoder those build
#: for ``separators=(",", ":"), default=plain`` (the pure-Python one where C is missing),
#: made once. It writes the same bytes.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), default=plain)
_encode_chunks: Final[Callable[[Any, int], Any]] = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, plain, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
    )
    if json.encoder.c_make_encoder is not None  # type: ignore[attr-defined]
    else lambda entry, _level: _ENCODER.iterencode(entry)
)


class History:
    """history.jsonl (module docstring). ``clock`` gives the seconds since the run began."""

    def __init__(
        self, path: Path, clock: Callable[[], float], *, line_buffered: bool = True
    ) -> None:
        """``line_buffered``: every line reaches the file as it is written (a real run's
        history survives a crash of the runner). A simulated run writes thousands of lines
        a second and can be replayed from its seed: it collects lines and writes them in
        batches, and closes the file in a ``finally``."""
        self.path = path
        self._clock = clock
        self._line_buffered = line_buffered
        self._file = path.open("w", buffering=1 if line_buffered else 1 << 16)
        self._lock = threading.Lock()
        self._digest = hashlib.sha256()
        self._pending: list[str] = []  # digested lines not written yet (batched mode)

    def write(self, event: str, /, *, wall_clock: bool = False, **fields: Any) -> None:
        self.write_at(self._clock(), event, wall_clock=wall_clock, **fields)

    def write_at(
        self, at: float, event: str, /, *, wall_clock: bool = False, **fields: Any
    ) -> None:
        clash = _RESERVED.intersection(fields)
        if clash:
            raise ValueError(f"history field {sorted(clash)[0]!r} is reserved; rename it")
        entry: dict[str, Any] = {"t": round(at, 6), "event": event}
        entry.update(fields)
        if wall_clock:
            entry["wall_clock"] = True
        self._line("".join(_encode_chunks(entry, 0)), digested=not wall_clock)

    def write_message(
        self, t: float, event: str, sender: int, receiver: int, kind: str, epoch: int,
        round_: int | None, why: str | None = None, sender_twin: bool = False,
        receiver_twin: bool = False,
    ) -> None:  # fmt: skip
        """A "send", "recv" or "lost" record: the same line ``write_at`` gives for it,
        formatted directly (a simulation writes one per message, many thousand a run). The
        time is written as its repr, as json writes a finite float. ``*_twin``: that end
        is a member's twin copy (``node.trace``)."""
        tail = "" if round_ is None else f',"round":{round_}'
        if why is not None:
            tail += f',"why":"{why}"'
        if sender_twin:
            tail += ',"from_twin":true'
        if receiver_twin:
            tail += ',"to_twin":true'
        self._line(
            f'{{"t":{round(t, 6)!r},"event":"{event}","from":{sender},"to":{receiver},'
            f'"kind":"{kind}","epoch":{epoch}{tail}}}'
        )

    def write_records(self, t: float, records: Iterable[dict[str, Any]]) -> None:
        """Records of ``node.trace`` (fresh dicts with an "event" key; they are consumed)."""
        for record in records:
            event = record.pop("event")
            self.write_at(t, event, **record)

    def _line(self, line: str, digested: bool = True) -> None:
        with self._lock:
            if self._line_buffered:
                self._file.write(line + "\n")
                if digested:
                    self._digest.update(line.encode() + b"\n")
                return
            if not digested:
                self._flush()
                self._file.write(line + "\n")
                return
            self._pending.append(line + "\n")
            if len(self._pending) >= _BATCH_LINES:
                self._flush()

    def _flush(self) -> None:
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._file.write(text)
            self._digest.update(text.encode())

    def digest(self) -> str:
        """sha256 of every line written so far except the wall-clock ones."""
        with self._lock:
            self._flush()
            return self._digest.copy().hexdigest()

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._flush()
                self._file.close()


def digest_of_lines(lines: Iterable[str]) -> str:
    """The digest :meth:`History.digest` gives, recomputed from a history file's lines."""
    digest = hashlib.sha256()
    for line in lines:
        if not line:
            continue
        if json.loads(line).get("wall_clock"):
            continue
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def signed_actions(records: Iterable[Mapping[str, Any]]) -> dict[tuple[int, str], set[str]]:
    """(member, settlement id) -> the COMMIT and ABORT decisions on that settlement whose
    certificates carry the member's share, from the "certified" records' signer bitmaps.
    An honest member never has both."""
    signed: dict[tuple[int, str], set[str]] = {}
    for record in records:
        if record["event"] != "certified":
            continue
        signers = int(record["signers"])
        for sid, action in record["decisions"]:
            if action not in ("COMMIT", "ABORT"):
                continue
            for member in range(signers.bit_length()):
                if signers >> member & 1:
                    signed.setdefault((member, str(sid)), set()).add(str(action))
    return signed


def certificate_signers(records: Iterable[Mapping[str, Any]]) -> set[int]:
    """Every member whose share is in some certificate a member accepted (the "certified"
    records' signer bitmaps)."""
    bits = 0
    for record in records:
        if record["event"] == "certified":
            bits |= int(record["signers"])
    return {i for i in range(bits.bit_length()) if bits >> i & 1}
