"""Byzantine members in real node processes: the behaviours of the scenario vocabulary act
in the node's own driver (``node.byzantine``), shown by what the nodes traced (a run with
Byzantine members traces every message), each mirroring its test in
tests/sim/test_byzantine.py. The liars and equivocating leaders of the unsafe catalogue:
tests/e2e/test_scenarios.py."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from chain_adapters.build import REPO_ROOT
from consensus.devkeys import dev_leader_selection_key, dev_member_secrets
from consensus.pacemaker import leader
from scenarios.history import certificate_signers, signed_actions
from scenarios.real import RealRun
from scenarios.schema import Byzantine, Scenario, load

pytestmark = pytest.mark.e2e


def _run(
    tmp: Path, *groups: Byzantine, base: Scenario | None = None, count: int = 6, **changes: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``base`` (the reference case with ``count`` settlements, none meant to fail, by
    default) with the Byzantine ``groups``."""
    if base is None:
        reference = load(REPO_ROOT / "scenarios" / "reference.toml")
        base = dataclasses.replace(
            reference,
            settlements=dataclasses.replace(
                reference.settlements, count=count, arrival_rate=2.0, fail=()
            ),
        )
    scenario = dataclasses.replace(base, byzantine=groups, **changes)
    report = RealRun(scenario, tmp / "run").run()
    records = [json.loads(line) for line in (tmp / "run" / "history.jsonl").open()]
    return report.summary, records


def _first_leader(scenario: Scenario) -> int:
    """The leader of epoch 1: the committee's keys come from the scenario's seed."""
    secrets = dev_member_secrets(scenario.committee.n, scenario.seed)
    key = dev_leader_selection_key([m.identity_seed for m in secrets])
    return leader(1, scenario.committee.n, key)


@pytest.mark.slow  # real node processes: 15-25 s; the default run keeps the others
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


@pytest.mark.slow  # real node processes: 15-25 s; the default run keeps the others
def test_a_silent_member_takes_part_in_nothing_and_changes_no_outcome(tmp_path: Path) -> None:
    summary, records = _run(tmp_path, Byzantine((1,), ("silent",)))
    assert not [r for r in records if r["event"] == "certified" and r["node"] == 1]
    assert 1 not in certificate_signers(records)
    assert summary["passed"], summary["checks"]


@pytest.mark.slow  # real node processes: 15-25 s; the default run keeps the others
def test_a_member_withholding_its_shares_sends_none_and_is_in_no_certificate(
    tmp_path: Path,
) -> None:
    summary, records = _run(tmp_path, Byzantine((3,), ("withhold-shares",)))
    sent = Counter(r["kind"] for r in records if r["event"] == "send" and r["from"] == 3)
    assert sent["observation"] > 0, "it takes part ..."
    assert sent["shares"] == 0, "... but never sends a share"
    assert 3 not in certificate_signers(records) and {0, 1, 2} <= certificate_signers(records)
    assert summary["passed"], summary["checks"]


def test_an_equivocating_leader_keeps_one_side_from_every_commit(tmp_path: Path) -> None:
    """The leader of epoch 1 (which it keeps: r_max is high) splits the honest members:
    the two after it (the commit side, t-1) get every proposal, the third never one that
    commits: it misses those rounds or gets a variant that commits nothing. With the
    default threshold that changes no outcome."""
    reference = load(REPO_ROOT / "scenarios" / "reference.toml")
    first = _first_leader(reference)
    summary, records = _run(
        tmp_path,
        Byzantine((first,), ("equivocate",)),
        count=8,
        timing=dataclasses.replace(reference.timing, r_max=250),
    )
    n = reference.committee.n
    commit_side = {(first + 1) % n, (first + 2) % n}
    (abort_side,) = set(range(n)) - {first, *commit_side}
    got: dict[int, set[int]] = {}
    for r in records:
        if (
            r["event"] == "recv"
            and r["kind"] == "proposal"
            and (r["from"], r["epoch"])
            == (
                first,
                1,
            )
        ):
            got.setdefault(r["round"], set()).add(r["to"])
    commits = {
        r["round"]: r["signers"]
        for r in records
        if r["event"] == "certified"
        and r["epoch"] == 1
        and any(action == "COMMIT" for _, action in r["decisions"])
    }
    assert len(commits) >= 3, "the leader's epoch certified rounds that commit"
    for round_, signers in commits.items():
        # The commit side got the proposal; the abort side did not sign it (it got none,
        # or a variant that commits nothing).
        assert commit_side <= got[round_] and not signers >> abort_side & 1, round_
    # Rounds that commit nothing reach everyone; the abort side misses the others.
    assert any(members == set(range(n)) - {first} for members in got.values())
    reached = Counter(member for members in got.values() for member in members)
    assert all(reached[abort_side] < reached[j] for j in commit_side), reached
    assert summary["passed"], summary["checks"]


@pytest.mark.slow  # about 45 s
def test_a_member_that_signs_anything_signs_both_sides_of_one_settlement(
    tmp_path: Path,
) -> None:
    """equivocation-default-threshold.toml with member 0 signing anything: its share is
    in a COMMIT and an ABORT certificate of one settlement, an honest member's never."""
    base = load(REPO_ROOT / "scenarios" / "equivocation-default-threshold.toml")
    summary, records = _run(
        tmp_path, *base.byzantine, Byzantine((0,), ("sign-anything",)), base=base
    )
    signed = signed_actions(records)
    both = {member for (member, _), actions in signed.items() if actions == {"COMMIT", "ABORT"}}
    assert 0 in both and not both & {1, 2}, signed
    assert summary["checks"]["no-conflicting-certificates"]["status"] == "invalid"
