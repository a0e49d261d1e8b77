"""Property tests of the consensus core over generated schedules and adversaries.

Agreement, validity, liveness and determinism, each checked on simulations of the real
state machines (real Ed25519 and BLS) under generated network faults, crashes and
Byzantine members; and the negative control: with t = f+1, an equivocating leader makes
the search find conflicting certificates, proving the agreement checker can see them.

The default run keeps each search small; the ``slow`` variants run the same properties
with many more examples and a 7-member committee.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, find, given, note, settings
from hypothesis import strategies as st

from consensus.checkers import (
    check_agreement,
    check_determinism,
    check_fact_validity,
    check_liveness,
    liveness_bound,
)
from consensus.harness import Schedule
from consensus.outcome import MedianOutcome, decode_number
from consensus.pacemaker import leader
from tests.consensus.worlds import (
    Adversary,
    FactWorld,
    NumberWorld,
    adversaries,
    build,
    committee,
    fact_worlds,
    networks,
    schedules,
    simulate,
)

_FAST = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
_SLOW = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


def _describe(world: object, adversary: Adversary, schedule: Schedule) -> None:
    note(f"world={world!r}")
    note(f"adversary={adversary!r}")
    note(f"schedule={schedule!r}")


# --------------------------------------------------------------------------- agreement


def _agreement(n: int, f: int, data: st.DataObject) -> None:
    config, keys = committee(n, f)
    world = data.draw(fact_worlds(n, consistent=False), label="world")
    adversary = data.draw(adversaries(n, f), label="adversary")
    schedule = data.draw(schedules(n), label="schedule")
    _describe(world, adversary, schedule)
    _, result = simulate(config, keys, world, schedule, adversary)
    verdict = check_agreement(config, result.sightings)
    assert verdict.ok, verdict.detail


@_FAST
@given(st.data())
def test_agreement_with_default_threshold(data: st.DataObject) -> None:
    """Diverging honest views, at most f Byzantine members (equivocating leaders, members
    signing anything, ...), any faults: no two certificates conflict."""
    _agreement(4, 1, data)


@pytest.mark.slow
@_SLOW
@given(st.data())
def test_agreement_with_default_threshold_large(data: st.DataObject) -> None:
    _agreement(7, 2, data)


@_FAST
@given(st.data())
def test_agreement_against_equivocating_coalitions(data: st.DataObject) -> None:
    """The adversary that breaks t = f+1 (below), at the default threshold: safe."""
    config, keys = committee(4, 1)
    first_leader = leader(1, config.n, config.leader_selection_key)
    adversary = Adversary(((first_leader, ("equivocate", "sign-anything")),))
    world = data.draw(fact_worlds(4, consistent=False, max_time=0.5), label="world")
    schedule = data.draw(schedules(4, max_heal=1.0), label="schedule")
    _describe(world, adversary, schedule)
    _, result = simulate(config, keys, world, schedule, adversary)
    verdict = check_agreement(config, result.sightings)
    assert verdict.ok, verdict.detail


# --------------------------------------------------------------------------- the control


def test_unsafe_threshold_lets_the_search_find_conflicting_certificates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With t = f+1 the same kind of search finds conflicting certificates: the agreement
    checker is not blind. Hypothesis shrinks the first counterexample and we print it."""
    config, keys = committee(4, 1, t=2)
    first_leader = leader(1, config.n, config.leader_selection_key)

    @st.composite
    def cases(draw: st.DrawFn) -> tuple[FactWorld, Adversary, Schedule]:
        # Members see facts from the start or never; the adversary holds the first
        # leader (any member leads some epoch; the first one keeps the runs short).
        world = draw(fact_worlds(4, consistent=False, times=st.sampled_from([0.0, 0.0, None])))
        adversary = Adversary(((first_leader, ("equivocate",)),))
        # Faults play no part in this attack; a healthy network keeps the search short.
        schedule = Schedule(
            seed=draw(st.integers(0, 2**31)), network=draw(networks(faulty=False)), duration=1.5
        )
        return world, adversary, schedule

    def breaks_agreement(case: tuple[FactWorld, Adversary, Schedule]) -> bool:
        world, adversary, schedule = case
        _, result = simulate(config, keys, world, schedule, adversary)
        return not check_agreement(config, result.sightings).ok

    minimal = find(
        cases(),
        breaks_agreement,
        settings=settings(
            max_examples=300,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        ),
    )
    world, adversary, schedule = minimal
    _, result = simulate(config, keys, world, schedule, adversary)
    verdict = check_agreement(config, result.sightings)
    assert not verdict.ok
    first, second = verdict.witness
    assert first.certificate.report != second.certificate.report
    with capsys.disabled():
        print("\nminimal schedule breaking agreement with t = f+1:")
        print(f"  world     = {world!r}")
        print(f"  adversary = {adversary!r}")
        print(f"  schedule  = {schedule!r}")
        print(f"  violation : {verdict.detail}")


# --------------------------------------------------------------------------- validity


@_FAST
@given(st.data())
def test_certified_facts_were_observed_by_an_honest_member(data: st.DataObject) -> None:
    config, keys = committee(4, 1)
    world = data.draw(fact_worlds(4, consistent=data.draw(st.booleans())), label="world")
    adversary = data.draw(
        adversaries(4, 1, names=("liar", "equivocate", "sign-anything", "flood")),
        label="adversary",
    )
    schedule = data.draw(schedules(4), label="schedule")
    _describe(world, adversary, schedule)
    _, result = simulate(config, keys, world, schedule, adversary)
    honest_observations = [o[4] for o in result.observations]
    verdict = check_fact_validity(config, result.sightings, honest_observations)
    assert verdict.ok, verdict.detail


@_FAST
@given(st.data())
def test_median_lies_between_honest_values(data: st.DataObject) -> None:
    """With at most f liars in a set of at least 2f+1, the certified median is a value
    between the smallest and largest honest observation."""
    config, keys = committee(4, 1)
    adversary = data.draw(
        adversaries(4, 1, names=("liar-number", "equivocate", "sign-anything")), label="adversary"
    )
    schedule = data.draw(schedules(4), label="schedule")
    world = NumberWorld()
    _describe(world, adversary, schedule)
    _, result = simulate(config, keys, world, schedule, adversary, outcome=MedianOutcome())
    honest_values = [decode_number(o[4]) for o in result.observations]
    low = min(v for v in honest_values if v is not None)
    high = max(v for v in honest_values if v is not None)
    for sighting in result.sightings:
        for decision in sighting.certificate.report.decisions:
            assert low <= int.from_bytes(decision.terms_hash, "big") <= high


# --------------------------------------------------------------------------- liveness


def _liveness(n: int, f: int, data: st.DataObject) -> None:
    config, keys = committee(n, f)
    world = data.draw(fact_worlds(n, consistent=True), label="world")
    adversary = data.draw(adversaries(n, f), label="adversary")
    honest = [i for i in range(n) if i not in adversary.nodes]
    schedule = data.draw(schedules(n, crashable=honest), label="schedule")
    bound = liveness_bound(config, schedule.network, schedule.observation_delay)
    schedule = Schedule(
        seed=schedule.seed,
        network=schedule.network,
        partitions=schedule.partitions,
        crashes=schedule.crashes,
        heal_at=schedule.heal_at,
        duration=schedule.heal_at + bound + 0.5,
    )
    _describe(world, adversary, schedule)
    _, result = simulate(config, keys, world, schedule, adversary)
    verdict = check_liveness(result, schedule.heal_at, bound)
    assert verdict.ok, verdict.detail


@_FAST
@given(st.data())
def test_every_honest_member_certifies_within_the_bound_after_healing(
    data: st.DataObject,
) -> None:
    _liveness(4, 1, data)


@pytest.mark.slow
@_SLOW
@given(st.data())
def test_liveness_large(data: st.DataObject) -> None:
    _liveness(7, 2, data)


# --------------------------------------------------------------------------- determinism


@settings(
    max_examples=6,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_same_seed_same_history_byte_for_byte(data: st.DataObject) -> None:
    config, keys = committee(4, 1)
    world = data.draw(fact_worlds(4, consistent=False), label="world")
    adversary = data.draw(adversaries(4, 1), label="adversary")
    schedule = data.draw(schedules(4, after_heal=1.5), label="schedule")
    _describe(world, adversary, schedule)
    verdict = check_determinism(lambda: build(config, keys, world, schedule, adversary))
    assert verdict.ok, verdict.detail
