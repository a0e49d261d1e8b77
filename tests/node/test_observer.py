"""The node's observer: settled settlements leave the observation and the book tells the
targets to stop reporting them; an observation that does not fit says how many
settlements waited."""

from __future__ import annotations

import logging

import pytest
import trio

from consensus.report import Certificate
from node.book import SettlementBook
from node.dvp import Fact, FactKind, decode_observation
from node.targets import CompositeObserver

TA = b"\x0a" * 32
TB = b"\x0b" * 32


class FakeTarget:
    """A target that reports fixed facts, except for settlements the book calls settled
    (as the EVM and bank targets do)."""

    def __init__(self, name: str, leg: str, facts: set[Fact], book: SettlementBook) -> None:
        self.name, self.leg = name, leg
        self._facts = facts
        self.book = book

    async def facts(self) -> set[Fact]:
        return {f for f in self._facts if f.settlement_id not in self.book.settled}

    async def transmit(self, certificate: Certificate) -> str:
        return "ok"


def sid(i: int) -> bytes:
    return i.to_bytes(32, "big")


def test_settled_settlements_leave_the_observation_and_the_targets() -> None:
    book = SettlementBook()
    chain = {
        Fact(sid(1), "A", FactKind.COMMITTED, TA),  # settled: both legs applied
        Fact(sid(2), "A", FactKind.PREPARED, TA),  # open
    }
    bank = {
        Fact(sid(1), "bank", FactKind.COMMITTED, TB),
        Fact(sid(2), "bank", FactKind.REQUESTED, TB),
    }
    observer = CompositeObserver(
        [FakeTarget("chain", "A", chain, book), FakeTarget("bank", "bank", bank, book)],
        "multi-chain-messaging",
        32768,
        book,
    )
    first = decode_observation(trio.run(observer.observe, 1, 1))
    assert {f.settlement_id for f in first} == {sid(2)}
    assert book.settled == {sid(1)}
    # Next round: the targets no longer report it, and it stays settled.
    second = decode_observation(trio.run(observer.observe, 1, 2))
    assert second == first and book.settled == {sid(1)}
    assert observer.settlements_left_out == 0 and observer.largest_bytes > 0


def test_a_full_observation_counts_and_logs_who_waits(caplog: pytest.LogCaptureFixture) -> None:
    book = SettlementBook()
    many = {Fact(sid(i), "A", FactKind.PREPARED, TA) for i in range(100)}
    observer = CompositeObserver(
        [FakeTarget("chain", "A", many, book)], "single-chain-onchain", 1000, book
    )
    with caplog.at_level(logging.WARNING, logger="dvpsim.node"):
        data = trio.run(observer.observe, 1, 1)
        trio.run(observer.observe, 1, 2)
    kept = len(decode_observation(data))
    assert len(data) <= 1000 and 0 < kept < 100
    assert observer.settlements_left_out == 2 * (100 - kept)
    assert observer.largest_bytes == len(data)
    warnings = [r for r in caplog.records if r.getMessage() == "observation full"]
    assert len(warnings) == 1  # at most one warning per LEFT_OUT_WARNING_EVERY_S
