"""`dvpsim bench overload --quick` end to end (slow: several real runs, about 5 minutes):
a capacity found by real runs, each load offered and accounted for, CPU seconds per
settlement for every process role, and nothing left running."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from dvpsim import cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(1500)
def test_quick_overload_bench_measures_capacity_and_every_load(tmp_path: Path) -> None:
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    out = tmp_path / "overload.json"
    assert cli.main(["bench", "overload", "--quick", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    capacity = figures["capacity"]
    assert capacity is not None and capacity > 0
    assert any(t["holds"] and t["rate"] == capacity for t in figures["trials"])
    assert [load["load"] for load in figures["loads"]] == [1.0, 1.5, 2.0, 3.0]
    for load in figures["loads"]:
        assert load["offered_per_s"] == pytest.approx(capacity * load["load"])
        # Every settlement offered is committed, refused at its lock by the chain's
        # admission, aborted for a reason, or still open.
        ended = load["committed"] + load["refused"] + load["aborted"] + load["open"]
        assert ended == load["settlements"]
        assert sum(load["abort_reasons"].values()) == load["aborted"]
        assert load["observation_largest_bytes"] <= load["max_observation_bytes"]
        cpu = load["cpu_s_per_settlement"]
        assert set(cpu) == {"nodes", "per_node", "bank", "anvil", "driver"}
        assert all(value > 0 for value in cpu.values())
    leftover = {p.pid for p in psutil.Process().children(recursive=True)} - children_before
    assert leftover == set()
