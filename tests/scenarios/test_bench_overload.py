"""`dvpsim bench overload`'s own logic, without running anything real: the capacity search
against a committee of known capacity, abort reasons read from history lines, the figures
of a summary with and without the newer keys; and the runner's CPU ledger and generator
figures that real runs put in their summaries. The benchmark end to end is in
``tests/e2e/test_bench_overload_real.py`` (slow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dvpsim import cli
from dvpsim.benchmarks.overload import (
    CapacitySearch,
    Trial,
    abort_reasons,
    backpressure,
    cpu_per_settlement,
    figures,
    find_capacity,
    scenario,
    steady_per_s,
)
from scenarios.real import CpuLedger, generator_figures
from scenarios.real import cpu_per_settlement as cpu_shares


class Committee:
    """A committee that settles everything up to ``capacity`` per second, and beyond it
    only that much (the rest expires at its deadline); it counts what it was offered."""

    def __init__(self, capacity: float) -> None:
        self.capacity = capacity
        self.offered: list[float] = []

    def measure(self, rate: float) -> Trial:
        self.offered.append(rate)
        count = int(rate * 10)
        committed = min(count, int(self.capacity * 10))
        return Trial(rate, count, committed, count - committed, 10.0, 11.0)


@pytest.mark.parametrize("capacity", [5.0, 39.0, 40.0, 97.0, 150.0, 300.0])
def test_the_search_brackets_the_capacity_within_its_tolerance(capacity: float) -> None:
    committee = Committee(capacity)
    search = find_capacity(committee.measure, start=40.0, max_trials=12, bisections=6)
    assert search.capacity is not None
    assert search.capacity <= capacity  # it never reports a rate that did not hold
    assert search.capacity >= 0.9 * capacity
    assert [t.rate for t in search.trials] == committee.offered


def test_the_search_is_bounded_in_runs_and_rate() -> None:
    committee = Committee(10_000.0)
    search = find_capacity(committee.measure, start=40.0, ceiling=500.0, max_trials=12)
    assert max(committee.offered) == 500.0
    assert search.capacity == 500.0
    bounded = find_capacity(Committee(97.0).measure, start=40.0, max_trials=3, bisections=5)
    assert len(bounded.trials) == 3
    assert bounded.capacity == 80.0  # 40 and 80 held, 160 did not: no run left to bisect


def test_a_committee_that_settles_nothing_has_no_capacity() -> None:
    committee = Committee(0.0)
    search = find_capacity(committee.measure, start=40.0, floor=4.0, max_trials=20)
    assert search == CapacitySearch(None, search.trials)
    assert committee.offered == [40.0, 20.0, 10.0, 5.0]  # halving stops at the floor


def test_a_rate_holds_only_with_99_percent_committed_no_deadline_abort_and_no_backlog() -> None:
    assert Trial(10.0, 100, 99, 0, 10.0, 15.0).holds
    assert not Trial(10.0, 100, 98, 0, 10.0, 11.0).holds
    assert not Trial(10.0, 100, 100, 1, 10.0, 11.0).holds
    assert not Trial(10.0, 0, 0, 0, 10.0, None).holds
    # Everything committed in time, but 18 s after a 10 s load stopped: a backlog that
    # a longer run would have let grow into deadline aborts.
    assert not Trial(75.0, 750, 750, 0, 10.0, 28.3).holds
    assert Trial(10.0, 50, 50, 0, 5.0, 9.9).holds  # a short window may drain for 5 s
    assert not Trial(10.0, 50, 50, 0, 5.0, 10.1).holds


def test_a_rate_the_committee_does_not_keep_pace_with_does_not_hold() -> None:
    # 160/s offered for 5 s, 120/s committed while it lasted: the backlog of 200 drains
    # within the 5 s a short window allows, yet the committee never kept pace.
    assert Trial(160.0, 800, 800, 0, 5.0, 9.5).holds
    assert not Trial(160.0, 800, 800, 0, 5.0, 9.5, steady_per_s=120.0).holds
    assert not Trial(160.0, 800, 800, 0, 5.0, 9.5, steady_per_s=150.0).holds  # 0.94
    assert Trial(160.0, 800, 800, 0, 5.0, 9.5, steady_per_s=152.0).holds  # 0.95


def test_the_steady_rate_counts_commits_in_the_second_half_of_the_window() -> None:
    history: list[dict[str, Any]] = [{"t": 0.0, "event": "run-start", "started_at": 0.0}]
    for i in range(40):  # 10/s for 4 s from t = 1; each ends 0.5 s after it began
        sid = f"0x{i:02x}"
        history.append({"t": 1 + i / 10, "event": "settlement", "settlement": sid})
        if i % 4 == 0:  # aborted: refunded, never counted
            history.append({"t": 1.5 + i / 10, "event": "leg", "phase": "ok", "step": "refund",
                            "settlement": sid, "leg": "A"})  # fmt: skip
            continue
        history.append({"t": 1.3 + i / 10, "event": "leg", "phase": "ok", "step": "pay",
                        "settlement": sid, "leg": "bank"})  # fmt: skip
        history.append({"t": 1.5 + i / 10, "event": "leg", "phase": "ok", "step": "release",
                        "settlement": sid, "leg": "A"})  # fmt: skip
    # The second half is t in [3, 5): releases of i = 15..34, less the five refunded
    # (16, 20, ..., 32); a settlement counts at its last step only (i = 14 and 15 paid
    # before 3 s, yet 15 counts: it was released at 3.0 s).
    assert steady_per_s(history, 4.0) == 15 / 2.0
    assert steady_per_s(history[:1], 4.0) is None


def _history() -> list[dict[str, Any]]:
    return [
        {"t": 0.0, "event": "run-start", "started_at": 1000.0, "wall_clock": True},
        {"t": 5.0, "event": "settlement", "settlement": "0xaa", "deadline": 1030, "offered": 5.0},
        {"t": 5.1, "event": "settlement", "settlement": "0xbb", "deadline": 1030, "offered": 5.1},
        {"t": 5.2, "event": "settlement", "settlement": "0xcc", "deadline": 1030, "offered": 5.2},
        {"t": 5.3, "event": "settlement", "settlement": "0xdd", "deadline": 1030, "offered": 5.3},
        {"t": 6.0, "event": "leg", "phase": "ok", "step": "reject", "settlement": "0xaa",
         "leg": "bank"},
        {"t": 7.0, "event": "leg", "phase": "ok", "step": "refund", "settlement": "0xaa",
         "leg": "A"},
        {"t": 31.0, "event": "leg", "phase": "ok", "step": "refund", "settlement": "0xbb",
         "leg": "A"},
        {"t": 9.0, "event": "leg", "phase": "ok", "step": "refund", "settlement": "0xcc",
         "leg": "A"},
        {"t": 9.5, "event": "leg", "phase": "ok", "step": "release", "settlement": "0xdd",
         "leg": "A"},
        {"t": 5.4, "event": "settlement", "settlement": "0xee", "deadline": 1030, "offered": 5.4},
        {"t": 30.0, "event": "leg", "phase": "ok", "step": "reject", "settlement": "0xee",
         "leg": "bank"},  # the bank rejects an expired instruction
        {"t": 32.0, "event": "leg", "phase": "ok", "step": "refund", "settlement": "0xee",
         "leg": "A"},
    ]  # fmt: skip


def test_abort_reasons_come_from_the_history() -> None:
    reasons = abort_reasons(_history(), ["0xaa", "0xbb", "0xcc", "0xee"])
    assert reasons == {"bank rejection": 1, "deadline": 2, "other": 1}


def _summary(**newer: Any) -> dict[str, Any]:
    return {
        "settlements": 4,
        "ended": 4,
        "committed": 1,
        "aborted": 3,
        "aborted_ids": ["0xaa", "0xbb", "0xcc"],
        "throughput_window_s": 2.0,
        "latency_p50_s": 1.5,
        "latency_p99_s": 2.5,
        "observation_largest_bytes": 900,
        "observation_left_out": 0,
        "gas_per_settlement_reports": 60_000,
        "messages_per_settlement": 4.0,
        "passed": True,
        "wall_s": 40.0,
        **newer,
    }


def test_figures_of_a_summary_without_the_newer_keys_say_na() -> None:
    run = scenario("unit", 2.0, 2.0, 30)
    result = figures(run, _summary(), _history())
    assert result["goodput_per_s"] == 0.5
    assert result["deadline_aborts"] == 1
    assert result["open"] == 0
    assert result["driven_per_s"] == 10.0  # 5 settlements begun 0.4 s apart
    assert result["backpressure"] == {}
    assert result["locks_refused"] == 0
    assert result["cpu_s_per_settlement"] is None
    assert cpu_per_settlement(result["cpu_s_per_settlement"]) == "n/a"
    assert result["max_observation_bytes"] == run.timing.max_observation_bytes


def test_figures_carry_backpressure_and_cpu_keys_when_the_summary_has_them() -> None:
    cpu = {"nodes": 0.4, "per_node": 0.1, "bank": 0.02, "anvil": 0.03, "driver": None}
    summary = _summary(rounds_refused=3, settlements_queued=17, cpu_s_per_settlement=cpu)
    assert backpressure(summary) == {"rounds_refused": 3, "settlements_queued": 17}
    result = figures(scenario("unit", 2.0, 2.0, 30), summary, _history())
    assert cpu_per_settlement(result["cpu_s_per_settlement"]) == "0.1/0.02/0.03/n/a"


def test_the_cpu_ledger_counts_from_the_baseline_and_keeps_gone_processes() -> None:
    ledger = CpuLedger()
    ledger.see("nodes", 101, 5.0)
    ledger.see("nodes", 102, 7.0)
    ledger.see("anvil", 200, 50.0)
    ledger.start()
    ledger.see("nodes", 101, 6.5)
    ledger.see("nodes", 102, 8.0)  # then killed: no reading any more
    ledger.see("nodes", 103, 0.5)  # its restart counts from zero
    ledger.see("anvil", 200, 53.0)
    ledger.see("driver", 300, 2.0)  # first seen after the baseline
    ledger.see("nodes", 101, 7.0)
    assert ledger.totals() == {"nodes": 3.5, "bank": 0.0, "anvil": 3.0, "driver": 2.0}
    shares = cpu_shares(ledger.totals(), 10, 2)
    assert shares == {"nodes": 0.35, "bank": 0.0, "anvil": 0.3, "driver": 0.2, "per_node": 0.175}
    assert set(cpu_shares(ledger.totals(), 0, 2).values()) == {None}


def test_generator_figures_show_how_late_settlements_began() -> None:
    offered = {i: i * 0.1 for i in range(100)}
    begun = {i: i * 0.1 + (0.5 if i == 99 else 0.01) for i in range(100)}
    figures_ = generator_figures(10.0, offered, begun)
    assert figures_["driven"] == 100
    assert figures_["lag_p50_s"] == 0.01
    assert figures_["lag_max_s"] == 0.5
    assert figures_["driven_per_s"] == round(99 / 10.4, 1)
    assert "sent" not in figures_  # locks that waited for their receipts
    sent = {i: i * 0.1 + 0.05 for i in range(0, 100, 2)}  # half the locks reached the chain
    with_sent = generator_figures(10.0, offered, begun, sent)
    assert (with_sent["sent"], with_sent["sent_lag_max_s"]) == (50, 0.05)
    assert generator_figures(10.0, {}, {}) == {"rate_per_s": 10.0, "driven": 0}


def test_bench_options_of_another_benchmark_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["bench", "e2e", "--hog"]) == 2
    assert cli.main(["bench", "overload", "--n31"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "dvpsim bench: --hog applies to overload only, not e2e",
        "dvpsim bench: --n31 applies to e2e only, not overload",
    ]
