"""The node driver on its own: events in, effects out, no world at all.

A single-member committee (n = 1, f = 0) certifies on its own, so every path of the
driver (observation from the trackers, certificates, transmissions and their retries as
timers, the bank's polling) can be followed step by step.
"""

from __future__ import annotations

from bank_adapter.client import InstructionStatus
from bank_adapter.ledger import InstructionState
from chain_adapters.model import Leg as EscrowLeg
from chain_adapters.model import LegLocked, Mode, SettlementCreated, State, Terms, terms_hash
from consensus.events import Certified, Start
from consensus.harness import simulated_committee
from consensus.report import Action
from consensus.safety import PersistedState
from node.driver import (
    BankUpdate,
    ChainUpdate,
    DriverConfig,
    DriverTimer,
    DriverTimerKind,
    NodeDriver,
    Observed,
    ReadLeg,
    SetTimer,
    TargetSpec,
    TimerFired,
    TransmissionDone,
    TransmissionFinished,
    Transmit,
)
from node.dvp import decode_observation
from node.legs import EscrowRecord

COORDINATOR = "0x" + "c0" * 20
SELLER, BUYER, TOKEN, ZERO = ("0x" + b * 20 for b in ("11", "22", "33", "00"))


def sid(i: int) -> bytes:
    return i.to_bytes(32, "big")


def escrow_terms(i: int, deadline: int = 10**9) -> Terms:
    return Terms(sid(i), int(Mode.ASSET_ESCROW), SELLER, BUYER, TOKEN, 10, ZERO, 500, deadline)


def driver(
    mode: str = "multi-chain-messaging",
    max_observation_bytes: int = 32768,
    max_decisions_per_report: int = 256,
    bank_quiet_for: float = 2.0,
) -> NodeDriver:
    targets = ("chain-A", "bank") if mode != "single-chain-onchain" else ("chain-A",)
    config, keys = simulated_committee(
        1,
        0,
        targets=targets,
        delta_progress=2.0,
        delta_resend=0.5,
        delta_round=0.2,
        delta_grace=0.0,
        delta_stage=0.5,
        max_observation_bytes=max_observation_bytes,
        max_decisions_per_report=max_decisions_per_report,
    )
    specs = [TargetSpec("chain-A", "A", "evm")]
    if "bank" in targets:
        specs.append(TargetSpec("bank", "bank", "bank", "USD"))
    return NodeDriver(
        DriverConfig(config, 0, mode, tuple(specs), bank_quiet_for=bank_quiet_for), keys[0]
    )


def run_until(d: NodeDriver, effects: list, until: float, now: float) -> tuple[list, float]:  # type: ignore[type-arg]
    """Fire the driver's timers in deadline order until ``until``; every effect returned."""
    timers: dict = {}  # type: ignore[type-arg]
    seen = []
    pending = list(effects)
    while True:
        for effect in pending:
            seen.append(effect)
            if isinstance(effect, SetTimer):
                timers[effect.timer] = effect.at
        due = sorted((at, str(t), t) for t, at in timers.items())
        if not due or due[0][0] > until:
            return seen, now
        at, _, timer = due[0]
        del timers[timer]
        now = max(now, at)
        pending = list(d.handle(TimerFired(now, timer)))


def lock(d: NodeDriver, i: int, now: float, deadline: int = 10**9, block_time: int = 100) -> Terms:
    t = escrow_terms(i, deadline)
    created = SettlementCreated(COORDINATOR, sid(i), terms_hash(t), SELLER, t)
    locked = LegLocked(COORDINATOR, sid(i), EscrowLeg.ASSET, SELLER, TOKEN, 10, State.PREPARED)
    d.handle(ChainUpdate(now, "chain-A", (EscrowRecord(created), EscrowRecord(locked)), block_time))
    return t


def test_a_locked_asset_leads_to_a_certified_prepare_transmitted_to_the_bank() -> None:
    d = driver()
    start = list(d.handle(Start(0.0, PersistedState())))
    lock(d, 1, now=0.01)
    effects, _ = run_until(d, start, until=2.0, now=0.01)
    observed = [e for e in effects if isinstance(e, Observed)]
    assert observed and max(o.settlements for o in observed) == 1
    transmits = [e for e in effects if isinstance(e, Transmit)]
    assert transmits, "the PREPARE was never transmitted"
    first = transmits[0]
    assert first.target == "bank" and first.attempt == 0
    assert [dec.action for dec in first.certificate.report.decisions] == [Action.PREPARE]
    assert len(first.terms) == 1 and first.terms[0].settlement_id == sid(1)
    # Persist before the shares leave (the driver keeps the consensus node's order).
    kinds = [type(e).__name__ for e in effects]
    assert "Persist" in kinds and kinds.index("Persist") < kinds.index("Certified")
    assert any(isinstance(e, Certified) for e in effects)


def test_failed_transmissions_are_retried_by_timer_and_counted_once() -> None:
    d = driver()
    start = list(d.handle(Start(0.0, PersistedState())))
    lock(d, 1, now=0.01)
    effects, now = run_until(d, start, until=1.0, now=0.01)
    transmit = next(e for e in effects if isinstance(e, Transmit))
    report = transmit.certificate.report
    done = d.handle(TransmissionDone(now, "bank", report.epoch, report.round, "error"))
    retry = [e for e in done if isinstance(e, SetTimer)]
    assert len(retry) == 1 and retry[0].timer == DriverTimer(
        DriverTimerKind.RETRY, "bank", report.epoch, report.round
    )
    assert retry[0].at == now + d.config.retry_delays[0]
    again = d.handle(TimerFired(retry[0].at, retry[0].timer))
    second = [e for e in again if isinstance(e, Transmit)]
    assert len(second) == 1 and second[0].attempt == 1
    finished = d.handle(TransmissionDone(retry[0].at, "bank", report.epoch, report.round, "ok"))
    assert [e.result for e in finished if isinstance(e, TransmissionFinished)] == ["ok"]
    assert d.stats.transmissions == {"bank:ok": 1}


def test_a_target_that_shows_every_decision_applied_is_not_sent_to_again() -> None:
    d = driver()
    start = list(d.handle(Start(0.0, PersistedState())))
    lock(d, 1, now=0.01)
    effects, now = run_until(d, start, until=1.0, now=0.01)
    transmit = next(e for e in effects if isinstance(e, Transmit))
    report = transmit.certificate.report
    d.handle(TransmissionDone(now, "bank", report.epoch, report.round, "error"))
    bank_terms = transmit.terms[0]
    status = InstructionStatus(
        sid(1), InstructionState.PREVALIDATED, None, bank_terms.terms_hash(),
        None, None, None, None, None, False, None,
    )  # fmt: skip
    d.handle(BankUpdate(now, "bank", (status,), 1))
    retry = DriverTimer(DriverTimerKind.RETRY, "bank", report.epoch, report.round)
    again = d.handle(TimerFired(now + 1, retry))
    assert not any(isinstance(e, Transmit) for e in again)
    assert [e.result for e in again if isinstance(e, TransmissionFinished)] == ["already-applied"]


def test_the_bank_is_polled_by_a_timer_for_quiet_instructions() -> None:
    d = driver()
    start = d.handle(Start(0.0, PersistedState()))
    poll = next(e for e in start if isinstance(e, SetTimer) and isinstance(e.timer, DriverTimer))
    assert poll.timer.kind is DriverTimerKind.POLL and poll.at == 0.5
    lock(d, 1, now=0.1)
    assert not any(isinstance(e, ReadLeg) for e in d.handle(TimerFired(0.5, poll.timer)))
    # Quiet for 2.5 s, but no certificate sent it to the bank: it waits for the committee,
    # so it is asked about after 4 x 2 s only.
    assert not any(isinstance(e, ReadLeg) for e in d.handle(TimerFired(3.0, poll.timer)))
    effects = d.handle(TimerFired(9.0, poll.timer))
    assert [e for e in effects if isinstance(e, ReadLeg)] == [ReadLeg("bank", (sid(1),))]
    assert any(isinstance(e, SetTimer) and e.timer == poll.timer for e in effects)


def test_a_settlement_certified_to_the_bank_is_asked_about_when_quiet_for_2_s() -> None:
    d = driver()
    start = list(d.handle(Start(0.0, PersistedState())))
    poll = next(e for e in start if isinstance(e, SetTimer) and isinstance(e.timer, DriverTimer))
    lock(d, 1, now=0.01)
    effects, now = run_until(d, start, until=2.0, now=0.01)
    assert any(isinstance(e, Certified) and e.target == "bank" for e in effects)
    # The PREPARE went to the bank and no callback came. Parked while the decision
    # travels, it is back in the order when its time is up (first sight starts the quiet
    # clock), and the bank is asked about it 2 s on, not 8.
    assert not any(isinstance(e, ReadLeg) for e in d.handle(TimerFired(now + 2.5, poll.timer)))
    asked = [e for e in d.handle(TimerFired(now + 5.0, poll.timer)) if isinstance(e, ReadLeg)]
    assert asked == [ReadLeg("bank", (sid(1),))]


def test_settled_settlements_leave_the_observation() -> None:
    d = driver("single-chain-onchain")
    d.handle(Start(0.0, PersistedState()))
    t = escrow_terms(1)
    created = SettlementCreated(COORDINATOR, sid(1), terms_hash(t), SELLER, t)
    from chain_adapters.model import SettlementCommitted

    committed = SettlementCommitted(COORDINATOR, sid(1), b"\x01" * 32, terms_hash(t))
    lock(d, 2, now=0.1)
    d.handle(ChainUpdate(0.2, "chain-A", (EscrowRecord(created), EscrowRecord(committed)), 100))
    data, settlements, left_out = d.observation()
    assert {f.settlement_id for f in decode_observation(data)} == {sid(2)}
    assert settlements == 1 and left_out == 0
    assert d.book.settled == {sid(1)}


def test_a_full_observation_counts_who_waits() -> None:
    d = driver("single-chain-onchain", max_observation_bytes=1000)
    d.handle(Start(0.0, PersistedState()))
    for i in range(100):
        lock(d, i, now=0.1)
    data, settlements, left_out = d.observation()
    assert len(data) <= 1000 and 0 < settlements < 100 and settlements + left_out == 100
    assert len(decode_observation(data)) == settlements


def test_the_driver_is_a_function_of_its_events() -> None:
    """The same events give the same effects, byte for byte (no clock, no randomness)."""

    def trace() -> list[str]:
        d = driver()
        out = [repr(e) for e in d.handle(Start(0.0, PersistedState()))]
        lock(d, 1, now=0.05)
        effects, _ = run_until(d, [], until=0.0, now=0.05)
        timers = [e for e in d.handle(TimerFired(0.2, DriverTimer(DriverTimerKind.POLL, "bank")))]
        out += [repr(e) for e in effects + timers]
        return out

    assert trace() == trace()


def test_events_for_a_target_of_another_kind_are_a_world_bug() -> None:
    d = driver()
    d.handle(Start(0.0, PersistedState()))
    try:
        d.handle(BankUpdate(0.1, "chain-A", (), None))
    except ValueError as exc:
        assert "chain-A" in str(exc)
    else:
        raise AssertionError("a bank update for a chain target was accepted")


def test_the_bank_is_read_one_request_at_a_time() -> None:
    """A slow bank must be asked less, not more: while a read is unanswered, polls skip."""
    d = driver(bank_quiet_for=0.5)  # 4 x 0.5 s: no certificate sent them to the bank
    start = d.handle(Start(0.0, PersistedState()))
    poll = next(e for e in start if isinstance(e, SetTimer) and isinstance(e.timer, DriverTimer))
    lock(d, 1, now=0.1)
    lock(d, 2, now=0.1)
    d.handle(TimerFired(0.5, poll.timer))  # first sight: the quiet clocks start
    first = [e for e in d.handle(TimerFired(3.0, poll.timer)) if isinstance(e, ReadLeg)]
    assert first == [ReadLeg("bank", (sid(1), sid(2)))]
    # Unanswered: the quiet instructions are due again, but no second read starts.
    assert not any(isinstance(e, ReadLeg) for e in d.handle(TimerFired(5.5, poll.timer)))
    d.handle(BankUpdate(6.0, "bank", (), None, read=True))  # answered (even with nothing)
    again = [e for e in d.handle(TimerFired(6.5, poll.timer)) if isinstance(e, ReadLeg)]
    assert again == [ReadLeg("bank", (sid(1), sid(2)))]
    # A read never answered is given up after a while, and the next one may start.
    assert not any(isinstance(e, ReadLeg) for e in d.handle(TimerFired(9.0, poll.timer)))
    late = [e for e in d.handle(TimerFired(30.0, poll.timer)) if isinstance(e, ReadLeg)]
    assert late == [ReadLeg("bank", (sid(1), sid(2)))]


def bank_status(transmit: Transmit, state: InstructionState) -> InstructionStatus:
    bank_terms = transmit.terms[0]
    return InstructionStatus(
        bank_terms.settlement_id, state, None, bank_terms.terms_hash(),
        None, None, None, None, None, False, None,
    )  # fmt: skip


def test_the_asset_commit_is_certified_with_the_payment_and_sent_only_once_paid() -> None:
    """Reference mode, ``A`` after the bank: the asset leg's COMMIT is certified in the
    same round as the bank's, but no Transmit to the chain leaves before this node sees
    the payment executed; then the newest waiting certificate goes and older ones it
    covers end as superseded."""
    d = driver()
    timers: dict = {}  # type: ignore[type-arg]
    now = 0.0

    def step(effects: tuple, until: float) -> list:  # type: ignore[type-arg]
        """Carry out ``effects`` and fire due timers up to ``until``; every effect seen."""
        nonlocal now
        seen, pending = [], list(effects)
        while True:
            for e in pending:
                seen.append(e)
                if isinstance(e, SetTimer):
                    timers[e.timer] = e.at
            due = sorted((at, str(t), t) for t, at in timers.items() if at <= until)
            if not due:
                now = until
                return seen
            at, _, timer = due[0]
            del timers[timer]
            now = max(now, at)
            pending = list(d.handle(TimerFired(now, timer)))

    step(d.handle(Start(0.0, PersistedState())), 0.0)
    lock(d, 1, now=0.01)
    effects = step((), 1.0)
    prepare = next(e for e in effects if isinstance(e, Transmit) and e.target == "bank")
    held = bank_status(prepare, InstructionState.PREVALIDATED)
    effects = step(d.handle(BankUpdate(now, "bank", (held,), 1)), now + 1.0)
    to_chain = [e for e in effects if isinstance(e, Certified) and e.target == "chain-A"]
    to_bank = [e for e in effects if isinstance(e, Certified) and e.target == "bank"]
    assert to_chain and to_bank  # certified beside the payment's
    first_chain, first_bank = to_chain[0].certificate.report, to_bank[0].certificate.report
    assert (first_chain.epoch, first_chain.round) == (first_bank.epoch, first_bank.round)
    assert any(isinstance(e, Transmit) and e.target == "bank" for e in effects)
    assert not any(isinstance(e, Transmit) and e.target == "chain-A" for e in effects)
    paid = d.handle(BankUpdate(now, "bank", (bank_status(prepare, InstructionState.EXECUTED),), 2))
    sent = [e for e in paid if isinstance(e, Transmit)]
    assert [e.target for e in sent] == ["chain-A"]
    assert [dec.action for dec in sent[0].certificate.report.decisions] == [Action.COMMIT]
    report = sent[0].certificate.report
    rounds = {(c.certificate.report.epoch, c.certificate.report.round) for c in to_chain}
    assert (report.epoch, report.round) in rounds
    superseded = [
        e for e in paid if isinstance(e, TransmissionFinished) and e.result == "superseded"
    ]
    assert len(superseded) <= len(to_chain) - 1  # older waiting copies it covers end there
