"""Shared accounting and history: when a settlement has ended, and history fields that can
no longer overwrite the event's own time.

Both tests pin defects found while auditing real runs:
- a run could stop while the committee's last chain ABORT was still in flight: a
  settlement whose escrow was created (never locked) and past its deadline counted as
  ended once the bank had cancelled, so the summary's gas and the history missed that
  ABORT;
- the ``committee`` line's threshold ``t`` overwrote the event-time field ``t``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chain_adapters.build import REPO_ROOT
from chain_adapters.model import Mode, State, Terms
from scenarios.accounting import RawLegs, Tracked, ended
from scenarios.history import History, digest_of_lines
from scenarios.schema import load

SID = b"\x01" * 32
ADDRESS = "0x" + "11" * 20
OTHER = "0x" + "22" * 20
ZERO = "0x" + "00" * 20
REFERENCE = load(REPO_ROOT / "scenarios" / "reference.toml")  # multi-chain messaging


def tracked(deadline: int = 100) -> Tracked:
    terms = Terms(SID, int(Mode.ASSET_ESCROW), ADDRESS, OTHER, ADDRESS, 10, ZERO, 5, deadline)
    return Tracked(0, SID, "buyer", "deadline", terms={"A": terms})


def legs(chain: State, bank: str | None) -> RawLegs:
    return RawLegs({"A": {SID: chain}}, {SID: bank})


def test_a_created_escrow_is_open_until_its_abort_lands() -> None:
    item = tracked(deadline=100)
    # The seller created but never locked; the bank cancelled; chain time is past the
    # deadline. The committee's ABORT for the escrow is still on its way: not ended.
    assert not ended(REFERENCE, item, legs(State.CREATED, "CANCELLED"), chain_time=200)
    assert ended(REFERENCE, item, legs(State.ABORTED, "CANCELLED"), chain_time=200)


@pytest.mark.parametrize(
    ("chain", "bank", "chain_time", "expected"),
    [
        (State.PREPARED, "PREVALIDATED", 200, False),  # both held: open
        (State.COMMITTED, "EXECUTED", 50, True),  # settled before the deadline
        (State.ABORTED, "REJECTED", 50, True),  # the bank rejected: refunded
        (State.ABORTED, None, 50, True),  # refunded, the bank never heard of it
        (State.NONE, None, 101, False),  # nothing exists yet, deadline barely passed
        (State.NONE, None, 103, True),  # nothing ever came, well past the deadline
        (State.COMMITTED, "PREVALIDATED", 200, False),  # released, payment still held
    ],
)
def test_when_a_settlement_has_ended(
    chain: State, bank: str | None, chain_time: int, expected: bool
) -> None:
    assert ended(REFERENCE, tracked(100), legs(chain, bank), chain_time) is expected


def test_a_field_named_like_the_event_time_is_refused(tmp_path: Path) -> None:
    history = History(tmp_path / "h.jsonl", lambda: 1.5)
    with pytest.raises(ValueError, match="'t' is reserved"):
        history.write("committee", n=4, t=3)
    history.write("committee", n=4, threshold=3)
    history.close()
    (line,) = (tmp_path / "h.jsonl").read_text().splitlines()
    assert json.loads(line) == {"t": 1.5, "event": "committee", "n": 4, "threshold": 3}


def test_only_wall_clock_lines_stay_out_of_the_digest(tmp_path: Path) -> None:
    history = History(tmp_path / "h.jsonl", lambda: 0.0, line_buffered=False)
    history.write("run", world="sim")
    history.write("run-start", wall_clock=True, started_at=123.0)
    history.write("run-end", reason="ended")
    digest = history.digest()
    history.close()
    lines = (tmp_path / "h.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert digest == digest_of_lines(lines)
    assert digest == digest_of_lines([lines[0], lines[2]])
    assert digest != digest_of_lines([lines[0]])
