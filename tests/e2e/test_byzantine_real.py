"""Byzantine members in real node processes: the behaviours of the scenario vocabulary act
in the node's own driver (``node.byzantine``), shown by what the nodes traced. The liars
of the unsafe catalogue: tests/e2e/test_scenarios.py."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from chain_adapters.build import REPO_ROOT
from scenarios.history import certificate_signers
from scenarios.real import RealRun
from scenarios.schema import Byzantine, load

pytestmark = pytest.mark.e2e


def _run(tmp: Path, *groups: Byzantine) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    base = load(REPO_ROOT / "scenarios" / "reference.toml")
    scenario = dataclasses.replace(
        base,
        settlements=dataclasses.replace(base.settlements, count=6, arrival_rate=2.0, fail=()),
        byzantine=groups,
    )
    report = RealRun(scenario, tmp / "run").run()
    records = [json.loads(line) for line in (tmp / "run" / "history.jsonl").open()]
    return report.summary, records


def test_a_flooding_replaying_mutating_member_with_invalid_shares_changes_no_outcome(
    tmp_path: Path,
) -> None:
    summary, records = _run(
        tmp_path, Byzantine((3,), ("flood", "invalid-shares", "replay", "mutate"))
    )
    refused = [r for r in records if r["event"] == "rejected" and r["sender"] == 3]
    reasons = Counter(r["reason"].split(":")[0] for r in refused)
    assert reasons["malformed message"] > 0, reasons  # the flood
    assert any(r["reason"].startswith("PROPOSAL from a node that does not lead") for r in refused)
    assert 3 not in certificate_signers(records) and {0, 1, 2} <= certificate_signers(
        records
    )  # bad shares
    assert summary["passed"], summary["checks"]


def test_a_silent_member_takes_part_in_nothing_and_changes_no_outcome(tmp_path: Path) -> None:
    summary, records = _run(tmp_path, Byzantine((1,), ("silent",)))
    assert not [r for r in records if r["event"] == "certified" and r["node"] == 1]
    assert 1 not in certificate_signers(records)
    assert summary["passed"], summary["checks"]
