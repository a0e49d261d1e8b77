"""Byzantine members attacking real settlements in the simulated world: each behaviour
shows in message or leg records, f of them change no outcome, and f+1 colluding liars
break atomicity and validity with a witness."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from chain_adapters.build import REPO_ROOT
from scenarios.history import certificate_signers
from scenarios.schema import Byzantine, ScenarioError, load, parse
from scenarios.sim.run import SimReport, SimRun

REFERENCE = REPO_ROOT / "scenarios" / "reference.toml"


def run_with(
    tmp: Path, *groups: Byzantine, count: int = 6, failing: bool = False, **changes: Any
) -> tuple[SimReport, list[dict[str, Any]]]:
    """The reference case with ``count`` settlements (with its failing ones when
    ``failing``) and the Byzantine ``groups``."""
    base = load(REFERENCE)
    fail = base.settlements.fail if failing else ()
    scenario = dataclasses.replace(
        base,
        settlements=dataclasses.replace(base.settlements, count=count, fail=fail),
        byzantine=groups,
        **changes,
    )
    out = tmp / "-".join(["run", *(b for g in groups for b in g.behaviours)])
    report = SimRun(scenario, out, crypto="fast").run()
    records = [json.loads(line) for line in (out / "history.jsonl").open()]
    return report, records


def statuses(report: SimReport) -> dict[str, str]:
    return {name: check["status"] for name, check in report.summary["checks"].items()}


def sent_by(records: list[dict[str, Any]], node: int) -> Counter[str]:
    return Counter(r["kind"] for r in records if r["event"] == "send" and r["from"] == node)


def first_leader(tmp: Path) -> int:
    _, records = run_with(tmp / "honest", count=1)
    return next(r["leader"] for r in records if r["event"] == "epoch" and r["epoch"] == 1)


def test_f_liars_change_nothing_and_f_plus_one_colluding_break_atomicity(tmp_path: Path) -> None:
    report, _ = run_with(tmp_path, Byzantine((2,), ("lie",), "claim-payment"), count=20)
    assert report.ok, report.summary["checks"]
    report, records = run_with(tmp_path, Byzantine((2, 3), ("lie",), "claim-payment"), count=20)
    checks = report.summary["checks"]
    assert statuses(report)["atomicity"] == "invalid"
    assert (
        "asset delivered to the buyer but the seller was not paid" in checks["atomicity"]["witness"]
    )
    assert statuses(report)["validity"] == "invalid"
    assert "but leg bank was never prepared at its target" in checks["validity"]["witness"]
    # The consequence in the leg records: assets released that the bank never paid for.
    released = {r["settlement"] for r in records if r["event"] == "leg" and r["step"] == "release"}
    paid = {r["settlement"] for r in records if r["event"] == "leg" and r["step"] == "pay"}
    assert released - paid
    byzantine = [r for r in records if r["event"] == "byzantine"]
    assert [(r["node"], r["lie"], r["coalition"]) for r in byzantine] == [
        (2, "claim-payment", [2, 3]),
        (3, "claim-payment", [2, 3]),
    ]


def test_f_plus_one_liars_claiming_a_lock_get_the_seller_paid_for_nothing(tmp_path: Path) -> None:
    # Settlements meant to fail for lack of the seller's asset are never locked on chain.
    report, _ = run_with(
        tmp_path, Byzantine((2, 3), ("lie",), "claim-lock"), count=20, failing=True
    )
    assert (
        "seller paid but the asset was not delivered"
        in (report.summary["checks"]["atomicity"]["witness"])
    )


def test_silent_members_send_nothing_and_f_plus_one_stop_every_settlement(
    tmp_path: Path,
) -> None:
    report, records = run_with(tmp_path, Byzantine((1,), ("silent",)))
    assert sum(sent_by(records, 1).values()) == 0
    assert report.ok, report.summary["checks"]
    report, records = run_with(tmp_path, Byzantine((1, 2), ("silent",)), time_limit=60.0)
    assert report.summary["ended"] == 0
    assert statuses(report)["liveness"] == "invalid"


def test_withheld_and_invalid_shares_never_count_toward_a_certificate(tmp_path: Path) -> None:
    report, records = run_with(tmp_path, Byzantine((3,), ("withhold-shares",)))
    assert sent_by(records, 3)["shares"] == 0 and 3 not in certificate_signers(records)
    assert report.ok, report.summary["checks"]
    report, records = run_with(tmp_path, Byzantine((3,), ("invalid-shares",)))
    assert sent_by(records, 3)["shares"] > 0, "it sends shares ..."
    assert 3 not in certificate_signers(records), "... that never verify"
    assert {0, 1, 2} <= certificate_signers(records)
    assert report.ok, report.summary["checks"]


def test_flood_and_replay_are_refused_and_change_nothing(tmp_path: Path) -> None:
    report, records = run_with(tmp_path, Byzantine((3,), ("flood",)))
    refused = [r for r in records if r["event"] == "rejected" and r["sender"] == 3]
    assert any(r["reason"].startswith("malformed message") for r in refused)
    assert report.ok, report.summary["checks"]
    report, records = run_with(tmp_path, Byzantine((3,), ("replay",)))
    # It forwards what others sent: messages only a leader sends come from it.
    assert sent_by(records, 3)["certificates"] > 0
    assert any(
        r["reason"] == "PROPOSAL from a node that does not lead this epoch"
        for r in records
        if r["event"] == "rejected" and r["sender"] == 3
    )
    assert report.ok, report.summary["checks"]


def test_an_equivocating_leader_sends_followers_different_proposals(tmp_path: Path) -> None:
    leader = first_leader(tmp_path)
    follower = next(i for i in range(4) if i != leader)
    report, records = run_with(
        tmp_path, Byzantine((leader, follower), ("equivocate", "sign-anything"))
    )
    # When it proposes, the coalition member gets every variant, an honest one only its
    # own (resends of the round's request then reach everyone alike).
    proposals = Counter(
        (r["to"], r["epoch"], r["round"])
        for r in records
        if r["event"] == "recv" and r["kind"] == "proposal" and r["from"] == leader
    )
    rounds = {(e, r) for (_, e, r) in proposals}
    assert rounds
    for e, r in rounds:
        honest = [proposals[(to, e, r)] for to in range(4) if to not in (leader, follower)]
        assert proposals[(follower, e, r)] == max(honest) + 1
    # Honest followers see the other story too (the round's request resent) and refuse it.
    refused = [
        r
        for r in records
        if r["event"] == "rejected" and r["reason"].startswith("second, different PROPOSAL")
    ]
    assert {r["node"] for r in refused} - {leader, follower}
    # The coalition member signs every variant: the leader certifies two for one round.
    formed = Counter(
        (r["epoch"], r["round"])
        for r in records
        if r["event"] == "certificate" and r["node"] == leader
    )
    assert max(formed.values()) >= 2
    # With the safe threshold, honest members never certify two stories.
    assert statuses(report)["no-conflicting-certificates"] == "valid"


def test_small_scope_mutations_are_refused_and_change_no_outcome(tmp_path: Path) -> None:
    """ByzzFuzz-style: a leader whose messages come out a round or epoch off, or as an
    earlier proposal, or with a certificate's decision flipped."""
    leader = first_leader(tmp_path)
    report, records = run_with(tmp_path, Byzantine((leader,), ("mutate",)), count=8)
    refused = [r for r in records if r["event"] == "rejected" and r["sender"] == leader]
    assert refused, "no mutated message was refused"
    assert any("stale" in r["reason"] or "not the open round" in r["reason"] for r in refused)
    assert report.ok, report.summary["checks"]


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"nodes": [0, 4], "behaviours": ["silent"]}, "byzantine[0].nodes", "node 4 is not in"),
        ({"nodes": [1], "behaviours": ["gossip"]}, "byzantine[0].behaviours", "unknown behaviour"),
        ({"nodes": [1], "behaviours": ["lie"], "lie": "fib"}, "byzantine[0].lie", "unknown lie"),
        ({"nodes": [], "behaviours": ["lie"]}, "byzantine[0].nodes", "no members"),
    ],
)
def test_a_bad_byzantine_table_is_one_line(table: dict[str, Any], key: str, words: str) -> None:
    import tomllib

    raw = tomllib.loads(REFERENCE.read_text())
    raw["byzantine"] = [table]
    with pytest.raises(ScenarioError) as info:
        parse(raw, REFERENCE)
    message = str(info.value)
    assert message.startswith(f"{REFERENCE}: {key}: ") and words in message and "\n" not in message
