"""Overload rules of a node's observation: bounded, oldest first, the same for every
arrival order, and no settlement starves (``node.driver`` ``_observe_trackers``).

A node serves the oldest open settlements of its ``SettlementBook.order``: at most a
report's worth (``max_decisions_per_report``) that fit in ``max_observation_bytes``. The
properties below hold the driver to that over random backlogs, positions, delivery
orders and batchings of the chain's events, and over rounds in which served settlements
end and newer ones keep arriving.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from bank_adapter.client import InstructionStatus
from bank_adapter.ledger import InstructionState
from chain_adapters.model import Leg as EscrowLeg
from chain_adapters.model import (
    LegLocked,
    Mode,
    SettlementCommitted,
    SettlementCreated,
    State,
    Terms,
    terms_hash,
)
from node.driver import BankUpdate, ChainUpdate, NodeDriver
from node.dvp import decode_observation
from node.legs import EscrowRecord
from tests.node.test_driver import BUYER, COORDINATOR, SELLER, TOKEN, ZERO
from tests.node.test_driver import driver as reference_driver


def sid(i: int) -> bytes:
    # Ids in no relation to age: a hash-like spread, so "oldest" cannot mean "lowest id".
    return random.Random(i).randbytes(32)


def driver(served: int, max_bytes: int = 32768) -> NodeDriver:
    return reference_driver("multi-chain-messaging", max_bytes, served)


def records(
    i: int, position: tuple[int, int], locked: bool = True, deadline: int = 10**9
) -> list[EscrowRecord]:
    t = Terms(sid(i), int(Mode.ASSET_ESCROW), SELLER, BUYER, TOKEN, 10, ZERO, 500, deadline)
    out = [
        EscrowRecord(
            SettlementCreated(COORDINATOR, sid(i), terms_hash(t), SELLER, t), position=position
        )
    ]
    if locked:
        lock = LegLocked(COORDINATOR, sid(i), EscrowLeg.ASSET, SELLER, TOKEN, 10, State.PREPARED)
        out.append(EscrowRecord(lock, position=(position[0], position[1] + 1)))
    return out


def committed(i: int) -> EscrowRecord:
    return EscrowRecord(SettlementCommitted(COORDINATOR, sid(i), b"\0" * 32, b"\0" * 32))


def served(d: NodeDriver) -> list[bytes]:
    data, count, _ = d.observation()
    ids = {f.settlement_id for f in decode_observation(data)}
    assert len(ids) == count
    return sorted(ids)


backlogs = st.lists(
    st.tuples(st.integers(1, 500), st.integers(0, 20)), min_size=1, max_size=120, unique=True
)


@settings(max_examples=60, deadline=None)
@given(
    positions=backlogs,
    per_round=st.integers(1, 16),
    max_bytes=st.sampled_from([600, 2000, 32768]),
    shuffle=st.randoms(use_true_random=False),
    batches=st.integers(1, 6),
)
def test_a_node_serves_the_oldest_open_settlements_whatever_the_arrival_order(
    positions: list[tuple[int, int]],
    per_round: int,
    max_bytes: int,
    shuffle: random.Random,
    batches: int,
) -> None:
    # Log index steps of 2: a settlement's lock is the log after its creation.
    placed = [(block, 2 * index) for block, index in positions]
    events = [r for i, at in enumerate(placed) for r in records(i, at)]
    in_order = driver(per_round, max_bytes)
    in_order.handle(ChainUpdate(0.0, "chain-A", tuple(events), 100))
    # The same events delivered in another order and in several updates.
    shuffled = driver(per_round, max_bytes)
    creations = [e for e in events if isinstance(e.event, SettlementCreated)]
    locks = [e for e in events if not isinstance(e.event, SettlementCreated)]
    shuffle.shuffle(creations)
    shuffle.shuffle(locks)
    chunk = max(1, len(creations) // batches)
    for start in range(0, len(creations), chunk):
        part = tuple(creations[start : start + chunk])
        shuffled.handle(ChainUpdate(0.0, "chain-A", part, 100))
    shuffled.handle(ChainUpdate(0.0, "chain-A", tuple(locks), 100))

    data, count, queued = in_order.observation()
    assert shuffled.observation() == (data, count, queued)  # the arrival order is no matter
    assert len(data) <= max_bytes
    assert 1 <= count <= per_round  # bounded by a report's worth, and something is served
    assert count + queued == len(placed)  # every open settlement is served or queued
    oldest = [sid(i) for _, i in sorted((at, i) for i, at in enumerate(placed))][:count]
    assert served(in_order) == sorted(oldest)


@settings(max_examples=40, deadline=None)
@given(
    initial=st.integers(1, 60),
    per_round=st.integers(1, 8),
    rounds=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 6)), min_size=1, max_size=40),
    choice=st.randoms(use_true_random=False),
)
def test_no_settlement_starves_while_newer_ones_keep_arriving(
    initial: int, per_round: int, rounds: list[tuple[int, int]], choice: random.Random
) -> None:
    """Each round some served settlements end and new ones arrive (in later blocks). A
    queued settlement's place only moves forward, and it is served once fewer than a
    report's worth of older ones are open."""
    d = driver(per_round)
    block, count = 1, 0
    age: dict[bytes, int] = {}

    def arrive(k: int) -> None:
        nonlocal block, count
        new = []
        for _ in range(k):
            age[sid(count)] = count
            new += records(count, (block, 2 * count))
            count += 1
        block += 1
        d.handle(ChainUpdate(0.0, "chain-A", tuple(new), 100))

    arrive(initial)
    place: dict[bytes, int] = {}
    for ended, arriving in rounds:
        serving = served(d)
        open_ids = sorted((age[s], s) for s in age if s not in d.book.settled)
        ahead = {s: n for n, (_, s) in enumerate(open_ids)}
        for s, n in ahead.items():
            assert n <= place.get(s, n)  # never pushed back by newer arrivals
            if n < per_round:
                assert s in serving  # close enough to the front: served
        place = ahead
        done = choice.sample(serving, min(ended, len(serving)))
        if done:
            d.handle(ChainUpdate(0.0, "chain-A", tuple(committed(age[s]) for s in done), 100))
            # The bank leg ends too, so the settlement is closed on every leg.
            bank = d.trackers["bank"]
            statuses = []
            for s in done:
                terms = bank.terms_of(s)  # type: ignore[union-attr]
                assert terms is not None
                statuses.append(
                    InstructionStatus(
                        s,
                        InstructionState.EXECUTED,
                        None,
                        terms[1],
                        None,
                        None,
                        None,
                        None,
                        None,
                        False,
                    )
                )
            d.handle(BankUpdate(0.0, "bank", tuple(statuses), None))
            d.observation()  # the node notices they are over
            assert all(s in d.book.settled for s in done)
        arrive(arriving)


@settings(max_examples=60, deadline=None)
@given(
    backlog=st.lists(st.booleans(), min_size=1, max_size=80),
    per_round=st.integers(1, 16),
    shuffle=st.randoms(use_true_random=False),
)
def test_settlements_past_their_deadline_are_served_after_the_live_ones(
    backlog: list[bool], per_round: int, shuffle: random.Random
) -> None:
    """Under overload the rounds go to settlements that can still commit: one whose
    deadline passed (on the chain's clock) waits until the live ones leave room, and then
    the oldest of those comes first. Every open settlement is still served or queued, and
    the arrival order is still no matter."""
    clock = 1_000  # the chain's block time; True in ``backlog``: its deadline passed
    events = [
        r
        for i, expired in enumerate(backlog)
        for r in records(i, (1 + i, 0), deadline=clock - 1 if expired else 10**9)
    ]
    d = driver(per_round)
    d.handle(ChainUpdate(0.0, "chain-A", tuple(events), clock))
    other = driver(per_round)
    shuffled = list(events)
    shuffle.shuffle(shuffled)
    other.handle(ChainUpdate(0.0, "chain-A", tuple(shuffled), clock))
    _, count, queued = d.observation()
    assert count + queued == len(backlog)
    live = [sid(i) for i, expired in enumerate(backlog) if not expired]
    late = [sid(i) for i, expired in enumerate(backlog) if expired]
    assert served(d) == sorted((live + late)[:count])  # the live first, each oldest first
    assert served(other) == served(d)
    # The walk met each late one once: the next rounds look at what they serve.
    d.handle(ChainUpdate(1.0, "chain-A", (), clock + 1))  # a new block: observed anew
    assert d.observation()[1:] == (count, queued)
    assert d.stats.observation_walked <= count + 1


def test_a_rounds_walk_stops_at_what_it_serves_whatever_the_backlog() -> None:
    """The work of one observation (settlements looked at) does not grow with the
    backlog: 10 or 10,000 open settlements, the same 16 served and looked at."""
    looked: list[int] = []
    for backlog in (10, 10_000):
        d = driver(16)
        events = [r for i in range(backlog) for r in records(i, (1 + i // 100, 2 * i))]
        d.handle(ChainUpdate(0.0, "chain-A", tuple(events), 100))
        _, count, queued = d.observation()
        assert count == min(16, backlog) and queued == backlog - count
        looked.append(d.stats.observation_walked)
    assert looked[0] == 10 and looked[1] == 17  # the served ones, and the first that waits


def test_a_decided_settlement_awaits_its_target_without_taking_room_until_news_or_its_turn() -> (
    None
):
    """Once a certificate decided a settlement, the node leaves it out of its observations
    while nothing changes about it (its decision is on the way to the target), so newer
    settlements get the room; news about it, or the end of the transmission schedule's
    time, brings it back."""
    from consensus.events import Start
    from consensus.safety import PersistedState
    from tests.node.test_driver import run_until

    d = driver(4)
    start = list(d.handle(Start(0.0, PersistedState())))
    d.handle(ChainUpdate(0.01, "chain-A", tuple(records(0, (1, 0))), 100))
    effects, now = run_until(d, start, until=0.5, now=0.01)
    assert any(e.__class__.__name__ == "Certified" for e in effects)
    assert served(d) == []  # decided (PREPARE to the bank), awaiting the bank
    _, count, queued = d.observation()
    assert count == 0 and queued == 0  # neither served nor queued: in flight
    d.handle(ChainUpdate(now, "chain-A", tuple(records(1, (2, 0))), 100))
    assert served(d) == [sid(1)]  # the room goes to a newer one
    # Its turn comes again once the schedule had its time, with no news.
    d.handle(ChainUpdate(now + 60.0, "chain-A", (), 100))
    assert sid(0) in served(d)
