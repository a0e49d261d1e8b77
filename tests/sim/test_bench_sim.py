"""`dvpsim bench sim` keeps working: one of its cases, run as the benchmark runs it (a fresh
process pinned to one core), reports its figures. Times are printed by the benchmark,
never asserted here."""

from __future__ import annotations

from dvpsim.benchmarks.sim import _case, variant


def test_a_bench_case_runs_in_its_own_process_and_reports_figures() -> None:
    figures = _case({"name": "single-chain-onchain"}, "fast")
    assert figures["passed"] and figures["ended"] == figures["settlements"] == 8
    assert figures["span_s"] > 0 and figures["wall_s"] > 0 and figures["cold_wall_s"] > 0
    assert figures["ratio"] is not None and figures["ratio"] > 0


def test_bench_variants_scale_the_committee_and_the_workload() -> None:
    bigger = variant("reference", n=16, count=100, seed=3)
    assert (bigger.committee.n, bigger.committee.f, bigger.committee.t) == (16, 5, 11)
    assert bigger.settlements.count == 100 and bigger.seed == 3
    failing = sum(f.count for f in bigger.settlements.fail)
    assert 0 < failing < 100  # the failure mix scales with the count
