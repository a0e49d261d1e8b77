"""The leg trackers: chain events and bank statuses in, facts out, each leg on its own clock."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from bank_adapter.client import InstructionStatus
from bank_adapter.ledger import InstructionState
from chain_adapters.model import Leg as EscrowLeg
from chain_adapters.model import (
    LegLocked,
    Mode,
    SettlementAborted,
    SettlementCommitted,
    SettlementCreated,
    State,
    Terms,
    terms_hash,
)
from consensus.report import Action, Decision
from node.dvp import Fact, FactKind
from node.legs import BankLegTracker, EscrowLegTracker, EscrowRecord, SettlementBook

COORDINATOR = "0x" + "c0" * 20
SELLER = "0x" + "11" * 20
BUYER = "0x" + "22" * 20
TOKEN = "0x" + "33" * 20
ZERO = "0x" + "00" * 20


def sid(i: int) -> bytes:
    return i.to_bytes(32, "big")


def terms(i: int, deadline: int = 1000) -> Terms:
    return Terms(sid(i), int(Mode.ASSET_ESCROW), SELLER, BUYER, TOKEN, 10, ZERO, 500, deadline)


def created(t: Terms) -> SettlementCreated:
    return SettlementCreated(COORDINATOR, t.settlement_id, terms_hash(t), SELLER, t)


def locked(t: Terms) -> LegLocked:
    return LegLocked(
        COORDINATOR, t.settlement_id, EscrowLeg.ASSET, SELLER, TOKEN, 10, State.PREPARED
    )


def kinds(facts: set[Fact], settlement: bytes, leg: str) -> set[FactKind]:
    return {f.kind for f in facts if f.settlement_id == settlement and f.target == leg}


# --------------------------------------------------------------------------- escrow legs


def test_escrow_events_become_facts_and_feed_the_bank_terms() -> None:
    book = SettlementBook()
    chain = EscrowLegTracker("A", book)
    t = terms(1)
    chain.apply([EscrowRecord(created(t)), EscrowRecord(locked(t))], block_time=100)
    assert kinds(chain.facts(), sid(1), "A") == {FactKind.PREPARED}
    assert book.terms[sid(1)] == t  # the asset chain announces the terms the bank leg needs
    assert book.bank_terms(sid(1), "USD") is not None
    commit = SettlementCommitted(COORDINATOR, sid(1), b"\x01" * 32, terms_hash(t))
    chain.apply([EscrowRecord(commit)], block_time=101)
    assert kinds(chain.facts(), sid(1), "A") == {FactKind.COMMITTED}
    assert chain.already_applied(Decision(sid(1), Action.COMMIT, terms_hash(t)))
    assert not chain.already_applied(Decision(sid(1), Action.ABORT, terms_hash(t)))


def test_escrow_expiry_follows_the_block_time_only() -> None:
    chain = EscrowLegTracker("A", SettlementBook())
    t = terms(1, deadline=1000)
    chain.apply([EscrowRecord(created(t)), EscrowRecord(locked(t))], block_time=1000)
    assert FactKind.EXPIRED not in kinds(chain.facts(), sid(1), "A")  # not past the deadline
    chain.apply([], block_time=1001)
    assert FactKind.EXPIRED in kinds(chain.facts(), sid(1), "A")
    # A chain's time never runs back (a reorg to an earlier head does not revive the leg).
    chain.apply([], block_time=990)
    assert chain.block_time == 1001
    # A final leg is never EXPIRED.
    chain.apply(
        [
            EscrowRecord(
                SettlementAborted(COORDINATOR, sid(1), b"\x02" * 32, terms_hash(t), State.PREPARED)
            )
        ],
        1002,
    )
    assert kinds(chain.facts(), sid(1), "A") == {FactKind.ABORTED}


def test_a_retracted_event_asks_for_a_reread_and_the_reread_decides() -> None:
    book = SettlementBook()
    chain = EscrowLegTracker("A", book)
    t = terms(1)
    chain.apply([EscrowRecord(created(t)), EscrowRecord(locked(t))], 100)
    book.settled.add(sid(1))
    refresh = chain.apply([EscrowRecord(locked(t), retracted=True)], 101)
    assert refresh == (sid(1),)
    assert sid(1) not in book.settled  # not over after all
    chain.refresh([(sid(1), State.CREATED)])
    assert kinds(chain.facts(), sid(1), "A") == set()  # created, nothing locked
    chain.refresh([(sid(1), State.NONE)])  # the settlement is gone with the reorg
    assert chain.facts() == set() and sid(1) not in book.terms


def test_transmission_terms_need_every_settlement() -> None:
    chain = EscrowLegTracker("A", SettlementBook())
    t = terms(1)
    chain.apply([EscrowRecord(created(t))], 100)
    from consensus.report import Report

    known = Report(b"\x00" * 32, 1, 1, (Decision(sid(1), Action.ABORT, terms_hash(t)),))
    unknown = Report(b"\x00" * 32, 1, 1, (Decision(sid(2), Action.ABORT, b"\x00" * 32),))
    assert chain.transmission_terms(known) == (t,)
    assert chain.transmission_terms(unknown) is None


# --------------------------------------------------------------------------- bank legs


def status(
    i: int, state: InstructionState, digest: bytes, as_of_ms: int | None = None
) -> InstructionStatus:
    return InstructionStatus(
        sid(i), state, None, digest, None, None, None, None, None, False, as_of_ms
    )


def bank_with(i: int, deadline: int = 1000) -> tuple[BankLegTracker, bytes]:
    book = SettlementBook()
    book.terms[sid(i)] = terms(i, deadline)
    bank = BankLegTracker("bank", "USD", book)
    known = bank.terms_of(sid(i))
    assert known is not None
    return bank, known[1]


def test_bank_statuses_become_facts_and_never_move_back() -> None:
    bank, digest = bank_with(1)
    assert kinds(bank.facts(), sid(1), "bank") == {FactKind.REQUESTED}
    bank.learn([status(1, InstructionState.PREVALIDATED, digest)], None, now=1.0)
    assert kinds(bank.facts(), sid(1), "bank") == {FactKind.REQUESTED, FactKind.PREPARED}
    bank.learn([status(1, InstructionState.EXECUTED, digest)], None, now=2.0)
    bank.learn([status(1, InstructionState.PREVALIDATED, digest)], None, now=3.0)  # a late poll
    assert kinds(bank.facts(), sid(1), "bank") == {FactKind.REQUESTED, FactKind.COMMITTED}
    assert bank.already_applied(Decision(sid(1), Action.COMMIT, digest))
    assert bank.already_applied(Decision(sid(1), Action.PREPARE, digest))


def test_a_status_for_other_terms_is_no_fact() -> None:
    bank, _ = bank_with(1)
    bank.learn([status(1, InstructionState.PREVALIDATED, b"\x09" * 32)], None, now=1.0)
    assert kinds(bank.facts(), sid(1), "bank") == {FactKind.REQUESTED}


def test_bank_expiry_follows_the_banks_clock_not_the_nodes() -> None:
    bank, digest = bank_with(1, deadline=1000)
    bank.learn([], None, now=10**9)  # however late the node's own clock: the bank said nothing
    assert FactKind.EXPIRED not in kinds(bank.facts(), sid(1), "bank")
    bank.learn([], 1_000_000, now=1.0)  # the bank at its deadline, to the millisecond
    assert FactKind.EXPIRED not in kinds(bank.facts(), sid(1), "bank")
    bank.learn([], 1_000_001, now=1.0)
    assert FactKind.EXPIRED in kinds(bank.facts(), sid(1), "bank")
    bank.learn([], 999_000, now=2.0)  # an older answer arriving late does not wind it back
    assert bank.bank_time_ms == 1_000_001
    bank.learn([status(1, InstructionState.CANCELLED, digest)], 1_000_002, now=3.0)
    assert FactKind.EXPIRED not in kinds(bank.facts(), sid(1), "bank")  # final now


def test_a_hold_whose_settlement_a_reorg_took_away_still_expires_and_is_asked_about() -> None:
    """The creation event left the book (a reorg); the bank still holds. The bank's record
    carries the terms hash and deadline: the hold stays a fact, expires by the bank's clock,
    and the tracker keeps asking the bank about it (or nothing would move its clock)."""
    bank, digest = bank_with(1, deadline=1000)
    held = InstructionStatus(
        sid(1), InstructionState.PREVALIDATED, None, digest, None, None, None, None, 1000, False
    )
    bank.learn([held], 900_000, now=0.0)
    del bank.book.terms[sid(1)]  # retracted
    assert kinds(bank.facts(), sid(1), "bank") == {FactKind.PREPARED}
    # No certificate this node saw sent it to the bank: asked about after 4 x 2 s.
    assert bank.stale(now=5.0, quiet_for=2.0, limit=32, serving=[sid(1)]) == ()
    assert bank.stale(now=8.5, quiet_for=2.0, limit=32, serving=[sid(1)]) == (sid(1),)
    bank.learn([], 1_000_001, now=6.0)
    assert kinds(bank.facts(), sid(1), "bank") == {FactKind.PREPARED, FactKind.EXPIRED}
    bank.learn([dataclasses.replace(held, state=InstructionState.CANCELLED)], None, now=7.0)
    assert kinds(bank.facts(), sid(1), "bank") == set()  # released: nothing left to say
    assert bank.stale(now=20.0, quiet_for=2.0, limit=32, serving=[sid(1)]) == ()


def test_polling_asks_only_about_quiet_open_instructions_and_paces_itself() -> None:
    book = SettlementBook()
    for i in range(5):
        book.terms[sid(i)] = terms(i)
    bank = BankLegTracker("bank", "USD", book)
    digest = bank.terms_of(sid(0))
    assert digest is not None
    for i in range(5):  # a certificate sent each to the bank
        bank.expect(Decision(sid(i), Action.PREPARE, bank.terms_of(sid(i))[1]))  # type: ignore[index]
    serving = [sid(i) for i in range(5)]
    assert (
        bank.stale(now=0.0, quiet_for=2.0, limit=32, serving=serving) == ()
    )  # first sight starts the clock
    bank.learn([status(1, InstructionState.EXECUTED, bank.terms_of(sid(1))[1])], None, now=1.0)  # type: ignore[index]
    book.settled.add(sid(2))
    stale = bank.stale(now=2.5, quiet_for=2.0, limit=32, serving=serving)
    assert stale == (sid(0), sid(3), sid(4))  # not the final one, not the settled one
    assert (
        bank.stale(now=3.0, quiet_for=2.0, limit=32, serving=serving) == ()
    )  # asked: quiet again for 2 s
    assert len(bank.stale(now=5.0, quiet_for=2.0, limit=2, serving=serving)) == 2
    # Settlements queued behind the served ones are not asked about.
    assert bank.stale(now=9.0, quiet_for=2.0, limit=32, serving=serving[:1]) == (sid(0),)


def test_a_settlement_that_waits_for_the_committee_is_asked_about_four_times_less_often() -> None:
    """Served settlements no certificate sent to the bank wait for the committee, not for
    the bank: asking about each every 2 s cost every node and the bank a request per
    settlement under load. They are asked after 8 s (this node may have missed the
    certificate); once a certificate decides one, after 2 s until the bank speaks of it."""
    bank, digest = bank_with(1)
    bank.book.terms[sid(2)] = terms(2)
    serving = [sid(1), sid(2)]
    assert bank.stale(now=0.0, quiet_for=2.0, limit=32, serving=serving) == ()
    assert bank.stale(now=7.0, quiet_for=2.0, limit=32, serving=serving) == ()
    bank.expect(Decision(sid(1), Action.PREPARE, digest))
    assert bank.stale(now=7.5, quiet_for=2.0, limit=32, serving=serving) == (sid(1),)
    assert bank.stale(now=8.5, quiet_for=2.0, limit=32, serving=serving) == (sid(2),)
    # The bank said it holds sid(1): what the PREPARE asked for; the committee again.
    held = status(1, InstructionState.PREVALIDATED, digest)
    bank.learn([held], None, now=9.0)
    assert bank.stale(now=12.0, quiet_for=2.0, limit=32, serving=serving[:1]) == ()
    bank.expect(Decision(sid(1), Action.COMMIT, digest))
    assert bank.stale(now=12.0, quiet_for=2.0, limit=32, serving=serving[:1]) == (sid(1),)
    # A late callback of the hold does not end the wait for the payment.
    bank.learn([held], None, now=12.5)
    assert bank.stale(now=15.0, quiet_for=2.0, limit=32, serving=serving[:1]) == (sid(1),)
    bank.learn([status(1, InstructionState.EXECUTED, digest)], None, now=15.5)
    assert bank.stale(now=40.0, quiet_for=2.0, limit=32, serving=serving[:1]) == ()  # final
    # A decision the bank already applied sets no wait.
    bank.expect(Decision(sid(1), Action.PREPARE, digest))
    assert bank.stale(now=40.0, quiet_for=2.0, limit=32, serving=serving[:1]) == ()


@settings(max_examples=100, deadline=None)
@given(
    states=st.lists(st.sampled_from(list(InstructionState)), min_size=1, max_size=8),
    order=st.randoms(use_true_random=False),
)
def test_bank_facts_do_not_depend_on_the_order_statuses_arrive_in(states, order) -> None:  # type: ignore[no-untyped-def]
    """Callbacks, polls and transmission answers race; the tracker keeps the furthest state,
    whatever order the same statuses come in (final states never compete: one per leg)."""
    finals = [
        s
        for s in states
        if s in (InstructionState.EXECUTED, InstructionState.CANCELLED, InstructionState.REJECTED)
    ]
    if len(set(finals)) > 1:
        states = [s for s in states if s not in finals[1:] or s == finals[0]]
    first, digest = bank_with(1)
    second, _ = bank_with(1)
    shuffled = list(states)
    order.shuffle(shuffled)
    for s in states:
        first.learn([status(1, s, digest)], None, now=1.0)
    for s in shuffled:
        second.learn([status(1, s, digest)], None, now=1.0)
    assert first.facts() == second.facts()
