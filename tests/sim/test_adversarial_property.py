"""A Hypothesis property in the simulated world: under random schedules of network faults
that heal, and at most f faulty members (Byzantine with any behaviours, twins among them,
or honest with a paused, killed-and-restarted process, a failing or lying chain endpoint,
or a clock that runs wrong), every check
holds: atomicity, conservation, exactly-once, no conflicting certificates, validity and
liveness after heal.

The default run draws a modest number of schedules; the slow run (scripts/test-slow.sh)
draws ``SLOW_SCHEDULES`` with fast crypto. A failing schedule prints the scenario it ran
(faults, Byzantine members, seed), which `dvpsim sim` can replay as a file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
from hypothesis import HealthCheck, given, settings

from dvpsim.testing import bundled, schedules
from scenarios.schema import Budget, Scenario
from scenarios.sim.run import SimRun

REFERENCE = bundled("reference")
SLOW_SCHEDULES = 10_000

#: Up to two faults that heal (network faults, a paused or killed-and-restarted process, a
#: failing or lying chain endpoint, a wrong clock) within the drive's first 6 s, and at
#: most f faulty members in all: the public strategies' default budget (dvpsim.testing,
#: the vocabulary dvpsim explore draws from too).
BUDGET = Budget(faults=2, window=6.0, max_duration=3.0)
SCHEDULES = schedules(
    dataclasses.replace(
        REFERENCE,
        time_limit=60.0,
        settlements=dataclasses.replace(REFERENCE.settlements, count=6, arrival_rate=2.0),
    ),
    BUDGET,
)


def check_schedule(scenario: Scenario) -> None:
    with TemporaryDirectory(prefix="dvpsim-property-") as tmp:
        report = SimRun(scenario, Path(tmp), crypto="fast").run()
    failed = {n: c for n, c in report.summary["checks"].items() if c["status"] != "valid"}
    assert not failed, (
        f"{failed}\nfaults={scenario.faults}\nbyzantine={scenario.byzantine}\nseed={scenario.seed}"
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SCHEDULES)
def test_every_check_holds_under_healing_faults_and_at_most_f_byzantine(
    scenario: Scenario,
) -> None:
    check_schedule(scenario)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 10,000 schedules take about 10 to 20 minutes on one core
@settings(max_examples=SLOW_SCHEDULES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SCHEDULES)
def test_every_check_holds_over_ten_thousand_schedules(scenario: Scenario) -> None:
    check_schedule(scenario)
