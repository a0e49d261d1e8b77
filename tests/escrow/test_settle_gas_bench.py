"""`dvpsim bench settle-gas --quick` end to end: real transactions on its own anvil, the
gas target of the messaging-mode release and the duplicate transmission's execution gas (a
regression guard on gas, never on time)."""

from __future__ import annotations

import json

from dvpsim.benchmarks import settle_gas


def test_quick_bench_measures_every_row_and_meets_the_release_target() -> None:
    figures = settle_gas.run(quick=True)
    json.dumps(figures)  # the CLI writes it as JSON
    assert figures["committee"] == {"n": 31, "f": 10, "t": 21, "signers": 21}
    rows = {(r["row"], r["batch"]): r for r in figures["results"]}
    assert set(rows) == {
        (row, b) for row in settle_gas.QUICK_ROWS for b in settle_gas.QUICK_BATCHES
    }
    for r in figures["results"]:
        assert r["gas_per_settlement"] == round(r["gas"] / r["batch"])
        # Verification is paid once per report: batching must make settlements cheaper.
        assert (
            r["batch"] == 1 or r["gas_per_settlement"] < rows[(r["row"], 1)]["gas_per_settlement"]
        )
    target = figures["target"]
    assert (
        target["gas_per_settlement"]
        == rows[("messaging_chain_a_release", 32)]["gas_per_settlement"]
    )
    assert target["met"] and target["gas_per_settlement"] < 60_000
    # Paying an existing holder is cheaper than a fresh one (no zero-slot write).
    assert (
        figures["messaging_release_existing_holders"]["gas_per_settlement"]
        < target["gas_per_settlement"]
    )
    # A duplicate is refused before verification: a few thousand gas of execution, far
    # below the fully verified copy it used to be.
    duplicates = figures["duplicate_transmission"]
    assert [d["batch"] for d in duplicates["results"]] == list(settle_gas.QUICK_DUPLICATE_BATCHES)
    assert duplicates["met"]
    for d in duplicates["results"]:
        assert 0 < d["duplicate_execution_gas"] <= 5_000
        assert d["duplicate_gas"] < d["full_verification_gas"]
        assert d["full_verification_execution_gas"] > 150_000
