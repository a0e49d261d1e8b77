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
from hypothesis import strategies as st

from chain_adapters.build import REPO_ROOT
from node.byzantine import BEHAVIOURS, LIES, TWINS
from node.rpcfaults import RPC_LIES
from scenarios.schema import Byzantine, Fault, Scenario, load
from scenarios.sim.run import SimRun

REFERENCE = load(REPO_ROOT / "scenarios" / "reference.toml")
N = REFERENCE.committee.n
SLOW_SCHEDULES = 10_000


@st.composite
def network_faults(draw: st.DrawFn) -> tuple[Fault, ...]:
    """Up to two network faults on disjoint windows within the drive's first 6 s."""
    faults = []
    at = 0.0
    for _ in range(draw(st.integers(0, 2))):
        at += draw(st.floats(0.0, 2.0))
        duration = draw(st.floats(0.25, 2.5))
        kind = draw(
            st.sampled_from(("partition", "isolate", "drop", "delay", "duplicate", "reorder"))
        )
        if kind == "partition":
            side = draw(st.sets(st.integers(0, N - 1), min_size=1, max_size=N - 1))
            fault = Fault(
                kind, at, duration=duration, side=tuple(sorted(side)), one_way=draw(st.booleans())
            )
        elif kind == "isolate":
            fault = Fault(kind, at, duration=duration, node=draw(st.integers(0, N - 1)))
        elif kind == "delay":
            fault = Fault(
                kind,
                at,
                duration=duration,
                value=draw(st.floats(1.0, 200.0)),
                jitter=draw(st.floats(0.0, 50.0)),
            )
        else:
            fault = Fault(kind, at, duration=duration, value=draw(st.floats(0.05, 0.5)))
        faults.append(fault)
        at += duration
    return tuple(faults)


@st.composite
def faulty_members(draw: st.DrawFn) -> tuple[tuple[Byzantine, ...], tuple[Fault, ...]]:
    """At most f faulty members: Byzantine ones (one table: a coalition) with any
    behaviours (twins: each runs as two copies, whose second copy the network faults'
    plain indexes leave on the other side of a partition), or honest ones whose process
    or chain endpoint fails for a while."""
    members = sorted(draw(st.sets(st.integers(0, N - 1), max_size=REFERENCE.committee.f)))
    if not members:
        return (), ()
    if draw(st.booleans()):
        behaviours = draw(
            st.lists(st.sampled_from((*BEHAVIOURS, TWINS)), min_size=1, max_size=2, unique=True)
        )
        return (Byzantine(tuple(members), tuple(behaviours), draw(st.sampled_from(LIES))),), ()
    faults = []
    for node in members:
        kind = draw(
            st.sampled_from(("pause-node", "kill-node", "rpc-outage", "lying-rpc", "clock"))
        )
        at, duration = draw(st.floats(0.0, 4.0)), draw(st.floats(0.5, 3.0))
        lie = draw(st.sampled_from(RPC_LIES)) if kind == "lying-rpc" else ""
        skew = draw(st.floats(0.0, 5.0)) if kind == "clock" else 0.0
        drift = draw(st.floats(-0.9, 3.0)) if kind == "clock" else 0.0
        faults.append(
            Fault(kind, at, node=node, duration=duration, lie=lie, value=skew, drift=drift)
        )
    return (), tuple(faults)


SCHEDULES = st.builds(
    lambda network, members, seed: dataclasses.replace(
        REFERENCE,
        seed=seed,
        time_limit=60.0,
        settlements=dataclasses.replace(REFERENCE.settlements, count=6, arrival_rate=2.0),
        faults=network + members[1],
        byzantine=members[0],
    ),
    network_faults(),
    faulty_members(),
    st.integers(0, 2**31),
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
