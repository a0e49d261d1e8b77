"""A node's wrong clock: the world-to-node mapping and its inverse agree."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from node.clockfaults import ClockFault, node_time, world_time


@st.composite
def faults(draw: st.DrawFn) -> list[ClockFault]:
    """Clock faults on disjoint windows (one node's faults never overlap: the schema)."""
    out = []
    at = draw(st.floats(0.0, 5.0))
    for _ in range(draw(st.integers(0, 3))):
        length = draw(st.one_of(st.floats(0.1, 5.0), st.just(math.inf)))
        skew = draw(st.one_of(st.just(0.0), st.floats(0.0, 3.0)))
        out.append(ClockFault(at, at + length, skew, draw(st.floats(-0.9, 2.0))))
        if length == math.inf:
            break
        at += length + draw(st.floats(0.0, 2.0))
    return out


@settings(max_examples=500, deadline=None)
@given(faults(), st.floats(-5.0, 40.0))
def test_a_deadline_falls_due_at_the_first_world_time_the_node_reads_it(
    windows: list[ClockFault], deadline: float
) -> None:
    t = world_time(deadline, windows)
    assert node_time(t, windows) >= deadline - 1e-9
    assert node_time(t - 1e-6, windows) < deadline + 1e-9


def test_drift_and_skew() -> None:
    fast = [ClockFault(10.0, 20.0, skew=2.0, drift=1.0)]
    assert node_time(5.0, fast) == 5.0
    assert node_time(10.0, fast) == 12.0  # the jump
    assert node_time(15.0, fast) == 22.0  # twice as fast
    assert node_time(25.0, fast) == 37.0  # normal again, keeping the 12 s gained
    assert world_time(11.0, fast) == 10.0  # inside the jump: due at once
    assert world_time(22.0, fast) == 15.0
    assert world_time(37.0, fast) == 25.0
