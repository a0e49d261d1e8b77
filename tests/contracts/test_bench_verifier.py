"""`dvpsim bench verifier --quick`: runs end to end on its own anvil and reports figures that
hang together (gas from mined transactions, the three aggregation variants, timings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dvpsim import cli


@pytest.mark.slow
def test_quick_bench_writes_consistent_figures(tmp_path: Path) -> None:
    out = tmp_path / "verifier.json"
    assert cli.main(["bench", "verifier", "--quick", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    rows = {row["n"]: row for row in figures["gas"]}
    assert sorted(rows) == [4, 31]
    for n, row in rows.items():
        assert row["t"] == (n + row["f"]) // 2 + 1
        # Real transactions: more than the intrinsic cost, BLS above one pairing's price.
        assert row["verify_tx_gas"] > 21_000 + 2 * 32_600 + 37_700
        assert 21_000 < row["ecdsa_f_plus_1_gas"] < row["ecdsa_t_gas"] or row["f"] + 1 == row["t"]
    # More non-signers to subtract costs more gas; more ECDSA signatures cost more.
    assert rows[31]["verify_tx_gas"] > rows[4]["verify_tx_gas"]
    assert rows[31]["ecdsa_f_plus_1_gas"] > rows[4]["ecdsa_f_plus_1_gas"]
    (variants,) = figures["aggregation_variants"]
    assert variants["key_table_gas"] == rows[31]["verify_tx_gas"]
    assert variants["non_signers_in_calldata_gas"] > 0 and variants["all_keys_in_calldata_gas"] > 0
    timings = figures["python_timings"]
    assert timings["fast_t21"]["committee_size"] == 21
    assert timings["reference_t21"]["fast_aggregate_verify_ms"] > 0
