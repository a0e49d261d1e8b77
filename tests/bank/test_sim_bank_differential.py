"""The simulated bank held to the real bank service, on the same inputs.

Every deterministic simulation runs the bank as ``scenarios.sim.bank.SimBank``: the bank's
service core on memory storage, behind simulated HTTP with the real fault settings and
the real client's retries, with callbacks from the storage's outbox. This test sends the
same requests to it and to the real bank process (the real client over HTTP, SQLite,
signed callbacks to an endpoint on 127.0.0.1; ``bank_sides.py``) and compares

- every answer: per-decision status codes and error codes, the instruction each decision
  left (state, reject reason, terms), ``duplicate`` flags, a refused certificate's code, a
  status read; the bank's clock (``as_of_ms``) is set aside, as the two clocks differ;
- at the end: balances and holds, instruction states, the callbacks each side delivered
  (event id, type, instruction) and how many times, and that the books reconcile.

The programs are a script of named cases (holds; insufficient funds and an expired
deadline, REJECTED; pay; cancel; an ABORT before any PREPARE, a tombstone; the same report
again from the same client and from another; a COMMIT after an ABORT; too few signers;
status reads) and Hypothesis-drawn mixes of the same requests (default run: 8 programs of
up to 12 requests; ``-m slow``: 60 of up to 25).

Faults, with the same ``FaultConfig`` on both sides (an outage window in each bank's own
clock): an outage, or an error rate of 1, answers 503 until the client gives up after its
``max_attempts`` and changes nothing; an outage that ends while the client retries is
ridden out; an error rate before processing changes no answer, and as nothing else draws
from the injector's seeded generator, both banks fail the same attempts; duplicate
callbacks come twice with one event id; a receiver that was down gets every callback.

Four cases are the smallest reproductions of disagreements this test found, each with the
simulated bank on the wrong side and fixed since: a status read the bank keeps failing
must still be answered (as unavailable); callbacks refused together must all be retried;
``error_phase="after"`` commits and loses the answer; ``reorder_callback_window_ms``
holds callbacks back and shuffles them.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bank_adapter.client import InstructionStatus
from bank_adapter.devcommittee import DevCommittee
from bank_adapter.faults import FaultConfig
from bank_adapter.ledger import InstructionState, RejectReason
from bank_adapter.terms import PaymentTerms
from consensus.report import Action, Certificate
from scenarios.sim.bank import MAX_ATTEMPTS

from .bank_sides import Answer, BankSide, Callback, RealBank, RealSide, SimSide, real_bank
from .conftest import FAR_DEADLINE, NOW_MS

PAST_DEADLINE = 1_000_000_000  # unix seconds in 2001: expired by either bank's clock
SIM_SEED = 7  # the simulated network's jitter; no answer depends on it
#: Opening balances; every program opens its own accounts with these.
BALANCES = {"payer": 500, "other": 300, "payee": 0}


@pytest.fixture(scope="module")
def real(committee: DevCommittee, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealBank]:
    yield from real_bank(committee, tmp_path_factory.mktemp("real-bank"))


# --------------------------------------------------------------------------- programs


@dataclass(frozen=True, slots=True)
class Leg:
    """A settlement's payment terms, before the program gives it an id and its accounts."""

    payer: str
    amount: int
    deadline: int = FAR_DEADLINE


@dataclass(frozen=True, slots=True)
class Decide:
    """A certified report, one decision per (leg index, action), signed by ``signers``
    committee members (fewer than the threshold is refused), sent by client ``client``."""

    decisions: tuple[tuple[int, Action], ...]
    client: int = 0
    signers: int | None = None  # None: the threshold


@dataclass(frozen=True, slots=True)
class Resend:
    """The ``report``-th report sent so far (modulo), sent again by ``client``; with
    ``drop_first_terms`` its first PREPARE's terms are left out (the same idempotency key
    for another body)."""

    report: int
    client: int = 0
    drop_first_terms: bool = False


@dataclass(frozen=True, slots=True)
class Read:
    """A status read of one leg."""

    leg: int


Step = Decide | Resend | Read


@dataclass(frozen=True, slots=True)
class Request:
    """One concrete request, the same bytes for both banks."""

    step: Step
    client: int = 0
    certificate: Certificate | None = None  # None: a status read
    terms: tuple[PaymentTerms, ...] = ()
    settlement_id: bytes = b""


@dataclass
class World:
    """A program's accounts and settlements: fresh ids, so programs share one real bank."""

    accounts: list[tuple[str, str, int]]
    terms: list[PaymentTerms]

    @classmethod
    def of(cls, legs: Sequence[Leg]) -> World:
        prefix = secrets.token_hex(4)
        name = {account: f"{prefix}-{account}" for account in BALANCES}
        return cls(
            accounts=[(name[a], "EUR", balance) for a, balance in BALANCES.items()],
            terms=[
                PaymentTerms(
                    secrets.token_bytes(32),
                    name[leg.payer],
                    name["payee"],
                    leg.amount,
                    "EUR",
                    leg.deadline,
                )
                for leg in legs
            ],
        )

    @property
    def account_ids(self) -> list[str]:
        return [account_id for account_id, _, _ in self.accounts]

    @property
    def settlement_ids(self) -> set[bytes]:
        return {t.settlement_id for t in self.terms}


def requests(committee: DevCommittee, world: World, program: Sequence[Step]) -> list[Request]:
    """The program's requests, certificates made once for both banks (each report is its
    own round); a Resend before any report reads the first leg's status instead."""
    made: list[Request] = []
    reports: list[Request] = []
    for round_, step in enumerate(program, start=1):
        if isinstance(step, Decide):
            report = committee.report(
                [
                    (world.terms[i].settlement_id, action, world.terms[i].terms_hash())
                    for i, action in step.decisions
                ],
                round=round_,
            )
            signers = committee.config.t if step.signers is None else step.signers
            prepares = tuple(world.terms[i] for i, a in step.decisions if a is Action.PREPARE)
            request = Request(
                step, step.client, committee.certify(report, range(signers)), prepares
            )
            reports.append(request)
        elif isinstance(step, Resend) and reports:
            first = reports[step.report % len(reports)]
            terms = first.terms[1:] if step.drop_first_terms else first.terms
            request = Request(step, step.client, first.certificate, terms)
        else:
            leg = step.leg if isinstance(step, Read) else 0
            request = Request(step, settlement_id=world.terms[leg].settlement_id)
        made.append(request)
    return made


@dataclass
class Transcript:
    """What one bank did with a program."""

    answers: list[Answer]
    attempts: list[int]  # HTTP attempts per request (retries included)
    balances: dict[str, tuple[int, int]] = field(default_factory=dict)
    states: dict[bytes, str] = field(default_factory=dict)
    callbacks: set[Callback] = field(default_factory=set)  # first deliveries
    deliveries: Counter[str] = field(default_factory=Counter)  # event id -> deliveries
    problems: list[str] = field(default_factory=list)


def send(side: BankSide, batch: Sequence[Request]) -> Transcript:
    answers, attempts = [], []
    for request in batch:
        before = side.attempts
        if request.certificate is None:
            answers.append(side.status(request.settlement_id))
        else:
            answers.append(side.report(request.client, request.certificate, request.terms))
        attempts.append(side.attempts - before)
    return Transcript(answers, attempts)


def finish(side: BankSide, world: World, transcript: Transcript) -> Transcript:
    """Wait for the callbacks, then read the final state (with the faults cleared)."""
    side.settle()
    side.set_faults(FaultConfig())
    delivered = side.callbacks(world.settlement_ids)
    transcript.balances = side.balances(world.account_ids)
    transcript.states = side.states(world.settlement_ids)
    transcript.callbacks = {c for c in delivered if c.new}
    transcript.deliveries = Counter(c.event_id for c in delivered)
    transcript.problems = side.problems()
    for callback in delivered:  # each delivery states the bank's clock when it was sent
        assert callback.as_of_ms is not None and callback.as_of_ms >= callback.created_ms
    return transcript


def run(
    side: BankSide, world: World, batch: Sequence[Request], faults: FaultConfig | None = None
) -> Transcript:
    if faults is not None:
        side.set_faults(faults)
    return finish(side, world, send(side, batch))


def both(real: RealBank, committee: DevCommittee, world: World) -> tuple[RealSide, SimSide]:
    return RealSide(real, world.accounts), SimSide(
        committee.config, world.accounts, genesis_ms=NOW_MS, seed=SIM_SEED
    )


def assert_agree(
    batch: Sequence[Request], real: Transcript, sim: Transcript, *, attempts: bool = False
) -> None:
    for i, (request, r, s) in enumerate(zip(batch, real.answers, sim.answers, strict=True)):
        assert s == r, f"request {i} {request.step}: the real bank answered {r}, the SimBank {s}"
        for answer in (r, s):
            assert answer.kind not in ("report", "status") or answer.as_of_ms is not None
    if attempts:
        assert sim.attempts == real.attempts
    assert sim.states == real.states
    assert sim.balances == real.balances
    assert sim.callbacks == real.callbacks
    assert sim.deliveries == real.deliveries
    assert real.problems == sim.problems == []


# --------------------------------------------------------------------------- named cases

#: ok, insufficient funds, expired, ok from the other payer, never prepared.
NAMED_LEGS = (
    Leg("payer", 100),
    Leg("payer", 10_000),
    Leg("payer", 50, PAST_DEADLINE),
    Leg("other", 50),
    Leg("payer", 20),
)
P, C, A = Action.PREPARE, Action.COMMIT, Action.ABORT
NAMED_PROGRAM: tuple[Step, ...] = (
    Decide(((0, P), (1, P), (2, P), (3, P))),  # 0: holds, two REJECTED
    Read(0),  # 1
    Read(4),  # 2: unknown
    Decide(((0, C), (3, A), (4, A))),  # 3: pay, cancel, tombstone
    Resend(1),  # 4: the same report again: the stored answers
    Resend(1, client=1),  # 5: from another client: duplicates
    Decide(((3, C),)),  # 6: COMMIT after ABORT
    Decide(((0, C),), signers=1),  # 7: too few signers
    Decide(((4, P),)),  # 8: PREPARE after the tombstone
    Resend(0, drop_first_terms=True),  # 9: the same key for another body
    *(Read(i) for i in range(5)),
)


def decision_outcomes(answer: Answer) -> list[tuple[int, str | None, str | None, bool | None]]:
    """(status, error code, instruction state, duplicate) of each decision of a report."""

    def of(i: InstructionStatus | None) -> tuple[str | None, bool | None]:
        return (None, None) if i is None else (i.state.value, i.duplicate)

    return [(r.status, r.error_code, *of(r.instruction)) for r in answer.results]


def check_named_cases(answers: Sequence[Answer]) -> None:
    """The script reaches what it names (on the real bank)."""
    rejects = [r.instruction and r.instruction.reject_reason for r in answers[0].results]
    assert rejects == [None, RejectReason.INSUFFICIENT_FUNDS, RejectReason.EXPIRED, None]
    assert decision_outcomes(answers[0]) == [
        (201, None, "PREVALIDATED", False),
        (422, "instruction_rejected", "REJECTED", False),
        (422, "instruction_rejected", "REJECTED", False),
        (201, None, "PREVALIDATED", False),
    ]
    assert answers[1].instruction is not None
    assert answers[1].instruction.state is InstructionState.PREVALIDATED
    assert answers[2] == Answer("status", instruction=None)
    assert decision_outcomes(answers[3]) == [
        (200, None, "EXECUTED", False),
        (200, None, "CANCELLED", False),
        (200, None, "CANCELLED", False),
    ]
    tombstone = answers[3].results[2].instruction
    assert tombstone is not None and tombstone.payer_account is None
    assert answers[4] == answers[3]
    assert [s[2:] for s in decision_outcomes(answers[5])] == [
        ("EXECUTED", True),
        ("CANCELLED", True),
        ("CANCELLED", True),
    ]
    assert decision_outcomes(answers[6]) == [(409, "invalid_state", None, None)]
    assert answers[7] == Answer("refused", code="certificate_invalid")
    assert decision_outcomes(answers[8]) == [(200, None, "CANCELLED", True)]
    assert [s[:2] for s in decision_outcomes(answers[9])] == [(400, "missing_field")] + [
        (422, "idempotency_key_reused")
    ] * 3


def test_the_named_cases_agree(real: RealBank, committee: DevCommittee) -> None:
    world = World.of(NAMED_LEGS)
    batch = requests(committee, world, NAMED_PROGRAM)
    real_side, sim_side = both(real, committee, world)
    on_real, on_sim = run(real_side, world, batch), run(sim_side, world, batch)
    check_named_cases(on_real.answers)
    assert_agree(batch, on_real, on_sim)
    payer, other, payee = world.account_ids
    assert on_real.balances == {payer: (400, 0), other: (300, 0), payee: (100, 0)}
    assert {c.type for c in on_real.callbacks} == {
        "instruction.prevalidated",
        "instruction.rejected",
        "instruction.executed",
        "instruction.cancelled",
    }


# --------------------------------------------------------------------------- drawn programs

LEGS = 5
legs = st.lists(
    st.builds(
        Leg,
        payer=st.sampled_from(["payer", "payer", "other"]),
        amount=st.one_of(st.integers(1, 400), st.just(10_000)),
        deadline=st.sampled_from([FAR_DEADLINE] * 4 + [PAST_DEADLINE]),
    ),
    min_size=LEGS,
    max_size=LEGS,
)
decide = st.builds(
    Decide,
    decisions=st.lists(
        st.tuples(st.integers(0, LEGS - 1), st.sampled_from([P, P, C, A])),
        min_size=1,
        max_size=4,
        unique_by=lambda d: d[0],
    ).map(tuple),
    client=st.integers(0, 1),
    signers=st.sampled_from([None] * 7 + [1]),
)
resend = st.builds(
    Resend, report=st.integers(0, 30), client=st.integers(0, 1), drop_first_terms=st.booleans()
)
read = st.builds(Read, leg=st.integers(0, LEGS - 1))


def programs(max_size: int) -> st.SearchStrategy[list[Step]]:
    return st.lists(st.one_of(decide, decide, decide, resend, read), min_size=1, max_size=max_size)


def check_program(
    real: RealBank, committee: DevCommittee, legs: list[Leg], program: list[Step]
) -> None:
    world = World.of(legs)
    batch = requests(committee, world, program)
    real_side, sim_side = both(real, committee, world)
    on_real = run(real_side, world, batch)
    for answer in on_real.answers:  # the mix reached: --hypothesis-show-statistics
        event(answer.kind)
        for outcome in decision_outcomes(answer):
            event(f"decision {outcome}")
    assert_agree(batch, on_real, run(sim_side, world, batch))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(legs=legs, program=programs(12))
def test_drawn_programs_agree(
    real: RealBank, committee: DevCommittee, legs: list[Leg], program: list[Step]
) -> None:
    check_program(real, committee, legs, program)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(legs=legs, program=programs(25))
def test_many_drawn_programs_agree(
    real: RealBank, committee: DevCommittee, legs: list[Leg], program: list[Step]
) -> None:
    check_program(real, committee, legs, program)


# --------------------------------------------------------------------------- faults

ONE_PREPARE = (Decide(((0, P),)), Read(0))


def failing(side: BankSide, fault: str) -> FaultConfig:
    """A bank that fails every API request: an outage without end, or an error rate of 1."""
    if fault == "outage":
        now = side.now_s()
        return FaultConfig(outage_start_s=now - 1, outage_end_s=now + 3600)
    return FaultConfig(error_rate=1.0, seed=1)


@pytest.mark.parametrize("fault", ["outage", "error_rate"])
def test_a_failing_bank_is_given_up_on_after_the_clients_attempts_and_nothing_changes(
    real: RealBank, committee: DevCommittee, fault: str
) -> None:
    world = World.of([Leg("payer", 100)])
    batch = requests(committee, world, ONE_PREPARE)
    transcripts = []
    for side in both(real, committee, world):
        side.set_faults(failing(side, fault))
        failed = send(side, batch[:1])
        side.set_faults(FaultConfig())
        transcripts.append(finish(side, world, send(side, batch)))
        assert failed.answers == [Answer("unavailable")]
        assert failed.attempts == [MAX_ATTEMPTS]
    on_real, on_sim = transcripts
    # Nothing was applied while failing: afterwards the PREPARE is applied the first time.
    assert decision_outcomes(on_real.answers[0]) == [(201, None, "PREVALIDATED", False)]
    assert_agree(batch, on_real, on_sim)


def test_an_outage_that_ends_while_the_client_retries_is_ridden_out(
    real: RealBank, committee: DevCommittee
) -> None:
    world = World.of([Leg("payer", 100)])
    batch = requests(committee, world, ONE_PREPARE[:1])
    transcripts = []
    for side in both(real, committee, world):
        now = side.now_s()
        # The client's fifth attempt comes at least 0.375 s after its first.
        transcript = run(
            side, world, batch, FaultConfig(outage_start_s=now - 1, outage_end_s=now + 0.3)
        )
        assert 2 <= transcript.attempts[0] < MAX_ATTEMPTS
        transcripts.append(transcript)
    assert_agree(batch, *transcripts)


def test_an_error_rate_fails_requests_before_processing_and_changes_no_answer(
    real: RealBank, committee: DevCommittee
) -> None:
    world = World.of(NAMED_LEGS)
    batch = requests(committee, world, NAMED_PROGRAM)
    # Only API requests draw from the injector's seeded generator here (no callback
    # faults): each draws its latency jitter, then whether it fails. With the same seed and
    # the same requests in the same order, both banks fail the same attempts (faults.py).
    faults = FaultConfig(error_rate=0.4, latency_ms=1, latency_jitter_ms=4, seed=11)
    real_side, sim_side = both(real, committee, world)
    on_real, on_sim = run(real_side, world, batch, faults), run(sim_side, world, batch, faults)
    assert_agree(batch, on_real, on_sim, attempts=True)
    assert sum(on_real.attempts) > len(batch)  # the fault fired
    check_named_cases(on_real.answers)  # and changed no answer


def test_duplicate_callbacks_come_twice_with_the_same_event_id(
    real: RealBank, committee: DevCommittee
) -> None:
    world = World.of([Leg("payer", 100), Leg("payer", 30), Leg("payer", 10_000)])
    program = (Decide(((0, P), (1, P), (2, P))), Decide(((0, C), (1, A))))
    batch = requests(committee, world, program)
    transcripts = []
    for side in both(real, committee, world):
        transcript = run(side, world, batch, FaultConfig(duplicate_callback_rate=1.0, seed=5))
        delivered = side.callbacks(world.settlement_ids)
        assert len(transcript.callbacks) == 5 and len(delivered) == 10
        assert set(transcript.deliveries.values()) == {2}
        # The second delivery is the same event: same id, type and instruction.
        assert {c for c in delivered if not c.new} == transcript.callbacks
        transcripts.append(transcript)
    assert_agree(batch, *transcripts)


def check_refused_callbacks_are_retried(
    real: RealBank, committee: DevCommittee, program: Sequence[Step], refuse: int
) -> None:
    """The receiver refuses (is down for) its next ``refuse`` deliveries, then takes all."""
    world = World.of([Leg("payer", 100), Leg("other", 30)])
    batch = requests(committee, world, program)
    transcripts = []
    for side in both(real, committee, world):
        before = side.callback_attempts
        side.refuse_callbacks(refuse)
        transcript = run(side, world, batch)
        assert set(transcript.deliveries.values()) == {1}
        # A POST carries one callback or a batch of those due together: every refused one
        # was followed by more, and there were never more POSTs than callbacks.
        attempts = side.callback_attempts - before
        assert refuse < attempts <= len(transcript.callbacks) + refuse
        transcripts.append(transcript)
    assert_agree(batch, *transcripts)


def test_a_callback_the_receiver_refused_is_retried_until_it_takes_it(
    real: RealBank, committee: DevCommittee
) -> None:
    check_refused_callbacks_are_retried(real, committee, (Decide(((0, P),)), Decide(((0, C),))), 1)


# --------------------------------------------------------------------------- discrepancies


def test_a_status_read_the_bank_keeps_failing_is_given_up_on_in_the_simulation_too(
    real: RealBank, committee: DevCommittee
) -> None:
    world = World.of([Leg("payer", 100)])
    batch = requests(committee, world, (Read(0),))
    real_side, sim_side = both(real, committee, world)
    on_real = run(real_side, world, batch, failing(real_side, "outage"))
    assert on_real.answers == [Answer("unavailable")]
    assert on_real.attempts == [MAX_ATTEMPTS]
    on_sim = run(sim_side, world, batch, failing(sim_side, "outage"))
    assert_agree(batch, on_real, on_sim, attempts=True)


def test_callbacks_refused_together_are_all_retried_in_the_simulation_too(
    real: RealBank, committee: DevCommittee
) -> None:
    check_refused_callbacks_are_retried(real, committee, (Decide(((0, P), (1, P))),), 2)


def test_an_answer_lost_after_commit_is_lost_in_the_simulation_too(
    real: RealBank, committee: DevCommittee
) -> None:
    world = World.of([Leg("payer", 100)])
    batch = requests(committee, world, ONE_PREPARE)
    transcripts = []
    for side in both(real, committee, world):
        side.set_faults(FaultConfig(error_rate=1.0, error_phase="after", seed=1))
        lost = send(side, batch[:1])
        side.set_faults(FaultConfig())  # only POSTs lose answers; the read is exact
        transcripts.append((lost, finish(side, world, send(side, batch[1:]))))
    (real_lost, real_after), (sim_lost, sim_after) = transcripts
    assert real_lost.answers == [Answer("unavailable")]
    assert real_lost.attempts == [MAX_ATTEMPTS]
    held = real_after.answers[0].instruction
    assert held is not None and held.state is InstructionState.PREVALIDATED
    assert (sim_lost.answers, sim_lost.attempts) == (real_lost.answers, real_lost.attempts)
    assert_agree(batch[1:], real_after, sim_after)


def test_a_reordering_window_holds_callbacks_back_in_the_simulation_too(
    real: RealBank, committee: DevCommittee
) -> None:
    world = World.of([Leg("payer", 10 + i) for i in range(6)])
    program = (Decide(tuple((i, P) for i in range(6))), Decide(tuple((i, C) for i in range(6))))
    batch = requests(committee, world, program)
    window_ms = 1000
    longest = []
    for side in both(real, committee, world):
        run(side, world, batch, FaultConfig(reorder_callback_window_ms=window_ms, seed=9))
        # By the bank's own clock: when the callback was sent, less when its event was made.
        delays = [
            c.as_of_ms - c.created_ms
            for c in side.callbacks(world.settlement_ids)
            if c.as_of_ms is not None
        ]
        longest.append(max(delays))
    real_longest, sim_longest = longest
    # 12 hold-backs uniform in [0, window]: all below half of it with probability 2**-12.
    assert real_longest > window_ms // 2
    assert sim_longest > window_ms // 2
