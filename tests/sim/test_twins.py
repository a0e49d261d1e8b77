"""Twins in the simulated world: a member run as two honest copies with its keys and
separate safety stores. A message for the member reaches whichever copies the network
lets through; network faults name the twin copy as "2b". On two sides of a partition
with t = f+1 each copy leads its side to its own report for the same round (the conflict
shows in the messages and in the check's witness); with the default t neither side
certifies until the partition heals, and every check passes."""

from __future__ import annotations

import dataclasses
import json
import statistics
import tomllib
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from chain_adapters.build import REPO_ROOT
from scenarios.schema import Byzantine, Fault, ScenarioError, load, parse
from scenarios.sim.run import SimReport, SimRun

SCENARIOS = REPO_ROOT / "scenarios"
REFERENCE = SCENARIOS / "reference.toml"
TWINS = Byzantine((2,), ("twins",))


def records_of(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "history.jsonl").open()]


def copy(record: dict[str, Any], end: str) -> str:
    """The copy at one end of a message record ("from" or "to"): "2" or "2b"."""
    return f"{record[end]}{'b' if record.get(f'{end}_twin') else ''}"


def run(tmp: Path, name: str) -> tuple[SimReport, list[dict[str, Any]]]:
    report = SimRun(load(SCENARIOS / f"{name}.toml"), tmp / name, crypto="fast").run()
    return report, records_of(tmp / name)


def window(records: list[dict[str, Any]]) -> tuple[float, float]:
    """The partition's window, with the messages already in flight when it opened."""
    fault = next(r for r in records if r["event"] == "fault" and r["phase"] == "begin")
    return fault["t"] + 0.05, fault["t"] + fault["duration"]


SIDE_A, SIDE_B = {"0", "1", "2"}, {"2b", "3", "4"}  # and member 5 alone


def test_twins_on_two_sides_of_a_partition_certify_two_reports_for_one_round_at_t_f_plus_one(
    tmp_path: Path,
) -> None:
    report, records = run(tmp_path, "unsafe-twins")
    assert report.ok, report.summary["expectation_differences"]
    start, end = window(records)
    inside = [r for r in records if start <= r["t"] < end]
    received = [r for r in inside if r["event"] == "recv"]
    # No message crosses the partition, none reaches or leaves member 5.
    ends = [{copy(r, "from"), copy(r, "to")} for r in received]
    assert not [e for e in ends if e & SIDE_A and e & SIDE_B or "5" in e]
    # Both sides enter epoch 2, led by member 2: each copy sends its side the proposals of
    # the same rounds.
    proposals: defaultdict[tuple[int, int], set[tuple[str, str]]] = defaultdict(set)
    for r in received:
        if r["kind"] == "proposal":
            proposals[(r["epoch"], r["round"])].add((copy(r, "from"), copy(r, "to")))
    both = [k for k, v in proposals.items() if {src for src, _ in v} == {"2", "2b"}]
    assert both and all(k[0] == 2 for k in both)
    for key in both:
        assert {to for src, to in proposals[key] if src == "2"} == {"0", "1"}
        assert {to for src, to in proposals[key] if src == "2b"} == {"3", "4"}
    # Each side certifies its own report of one round: two reports for one (epoch, round).
    reports: defaultdict[tuple[str, int, int], dict[str, set[str]]] = defaultdict(dict)
    for r in inside:
        if r["event"] == "certified":
            who = f"{r['node']}{'b' if r.get('twin') else ''}"
            key = json.dumps(r["decisions"])
            reports[(r["target"], r["epoch"], r["round"])].setdefault(key, set()).add(who)
    split = {k: v for k, v in reports.items() if len(v) > 1}
    assert split, "no round got two reports"
    for sides in split.values():
        assert sorted(who <= SIDE_A for who in sides.values()) == [False, True]
        assert sorted(who <= SIDE_B for who in sides.values()) == [False, True]
    check = report.summary["checks"]["no-conflicting-certificates"]
    assert check["status"] == "invalid"
    assert (
        check["witness"].startswith("two reports for ")
        and "member(s) 2 signed both" in (check["witness"])
    )
    # The twinned member counts toward f: the run's other checks all hold.
    others = {n: c["status"] for n, c in report.summary["checks"].items() if c is not check}
    assert set(others.values()) == {"valid"}


def test_with_the_default_threshold_neither_side_certifies_until_the_partition_heals(
    tmp_path: Path,
) -> None:
    report, records = run(tmp_path, "twins-default-threshold")
    assert report.ok, report.summary["checks"]
    start, end = window(records)
    inside = [r for r in records if start <= r["t"] < end]
    # Both copies lead their side in epoch 2 and their sides sign their proposals...
    shares = {
        (copy(r, "from"), copy(r, "to"))
        for r in inside
        if r["event"] == "recv" and r["kind"] == "shares"
    }
    assert {("0", "2"), ("1", "2"), ("3", "2b"), ("4", "2b")} <= shares
    # ... but three members never reach t = 4: no certificate until it heals.
    assert not [r for r in inside if r["event"] == "certified"]
    assert [r for r in records if r["event"] == "certified" and r["t"] >= end]
    assert report.summary["ended"] == report.summary["settlements"]


def reference_with_twins(tmp: Path, *faults: Fault) -> tuple[SimReport, list[dict[str, Any]]]:
    base = load(REFERENCE)
    scenario = dataclasses.replace(
        base,
        settlements=dataclasses.replace(base.settlements, count=6, arrival_rate=1.0, fail=()),
        byzantine=(TWINS,),
        faults=faults,
    )
    report = SimRun(scenario, tmp / "run", crypto="fast").run()
    return report, records_of(tmp / "run")


def test_a_message_for_the_member_reaches_both_copies_and_a_fault_can_isolate_one(
    tmp_path: Path,
) -> None:
    report, records = reference_with_twins(tmp_path, Fault("isolate", 1.0, node="2b", duration=3))
    assert report.ok, report.summary["checks"]
    drive = next(r["t"] for r in records if r["event"] == "drive-start")
    starts = [(r["node"], r.get("twin", False)) for r in records if r["event"] == "node-start"]
    assert starts == [(0, False), (1, False), (2, False), (3, False), (2, True)]
    # Before the fault every message for member 2 goes to both copies, and arrives.
    before = [r for r in records if r["event"] == "recv" and r["t"] < drive + 1.0]
    for copy_of_2 in ("2", "2b"):
        assert {copy(r, "from") for r in before if copy(r, "to") == copy_of_2} == {"0", "1", "3"}
    # The two copies never message each other.
    assert not [r for r in records if r["event"] in ("send", "recv") and r["from"] == r["to"]]
    # Isolated, the twin copy hears nothing and is heard by no one; the first copy is not.
    inside = [r for r in records if r["event"] == "recv" and drive + 1.05 <= r["t"] < drive + 4.0]
    assert not [r for r in inside if "2b" in (copy(r, "from"), copy(r, "to"))]
    assert [r for r in inside if copy(r, "to") == "2"] and [
        r for r in inside if copy(r, "from") == "2"
    ]
    lost = [
        r
        for r in records
        if r["event"] == "lost" and drive + 1.05 <= r["t"] < drive + 4.0 and r["why"] == "partition"
    ]
    assert lost and all("2b" in (copy(r, "from"), copy(r, "to")) for r in lost)
    byzantine = next(r for r in records if r["event"] == "byzantine")
    assert (byzantine["node"], byzantine["behaviours"]) == (2, ["twins"])


def test_a_link_fault_names_the_twin_copy_on_its_links_only(tmp_path: Path) -> None:
    report, records = reference_with_twins(
        tmp_path,
        Fault("drop", 1.0, duration=3.0, value=1.0, from_nodes=("2b",), to_nodes=(0,)),
        Fault("delay", 1.0, duration=3.0, value=100.0, from_nodes=(3,), to_nodes=("2b",)),
    )
    assert report.ok, report.summary["checks"]
    drive = next(r["t"] for r in records if r["event"] == "drive-start")
    inside = [r for r in records if drive + 1.0 <= r["t"] < drive + 4.0]
    lost = {(copy(r, "from"), copy(r, "to")) for r in inside if r["event"] == "lost"}
    assert lost == {("2b", "0")}
    links = {(copy(r, "from"), copy(r, "to")) for r in inside if r["event"] == "recv"}
    assert ("2", "0") in links and ("2b", "1") in links and ("2b", "0") not in links
    # 100 ms more from 3 to the twin copy only: compare the two copies of member 2 (each
    # message paired with the first send under its header).
    sent: dict[tuple[str, str, str, int, Any], float] = {}
    delays: defaultdict[str, list[float]] = defaultdict(list)
    for r in inside:
        if r["event"] not in ("send", "recv"):
            continue
        key = (copy(r, "from"), copy(r, "to"), r["kind"], r["epoch"], r.get("round"))
        if r["event"] == "send":
            sent.setdefault(key, r["t"])
        elif r["event"] == "recv" and key[0] == "3" and key in sent:
            delays[key[1]].append(r["t"] - sent[key])
    assert statistics.median(delays["2b"]) >= 0.1 > 0.01 > statistics.median(delays["2"])


def test_twins_are_honest_copies_that_count_toward_f() -> None:
    scenario = dataclasses.replace(load(REFERENCE), byzantine=(TWINS,))
    assert scenario.byzantine_spec(2) is None  # both copies run the honest driver
    assert scenario.honest_members() == {0, 1, 3}
    assert scenario.twins() == (2,) and scenario.endpoints == 5
    assert (scenario.endpoint(3), scenario.endpoint("2b")) == (3, 4)
    assert scenario.endpoint_label(4) == "2b"
    spec = dataclasses.replace(
        scenario, byzantine=(Byzantine((2,), ("twins", "silent")),)
    ).byzantine_spec(2)
    assert spec is not None and spec.behaviours == ("silent",)  # both copies silent


TWIN_TABLE = {"nodes": [2], "behaviours": ["twins"]}


@pytest.mark.parametrize(
    ("byzantine", "fault", "key", "words"),
    [
        (
            [],
            {"kind": "partition", "at": 1.0, "duration": 2.0, "side": [0, "2b"]},
            "faults[0].side",
            "names the twin copy of node 2, but node 2 has no twin",
        ),
        (
            [{"nodes": [9], "behaviours": ["twins"]}],
            None,
            "byzantine[0].nodes",
            "node 9 is not in the committee of 4",
        ),
        (
            [TWIN_TABLE],
            {"kind": "isolate", "at": 1.0, "duration": 2.0, "node": "9b"},
            "faults[0].node",
            "node 9 is not in the committee of 4",
        ),
        (
            [TWIN_TABLE],
            {"kind": "kill-node", "at": 1.0, "duration": 2.0, "node": "2b"},
            "faults[0].node",
            "acts on a member's first copy",
        ),
        (
            [TWIN_TABLE],
            {"kind": "drop", "at": 1.0, "duration": 2.0, "value": 1.0, "from": [0, "2c"]},
            "faults[0].from",
            "neither a member index nor a twin copy",
        ),
        (
            [TWIN_TABLE],
            {"kind": "partition", "at": 1.0, "duration": 2.0, "side": [0, 1, 2, 3, "2b"]},
            "faults[0].side",
            "a partition needs members on both sides",
        ),
        (
            [{"nodes": [2], "behaviours": ["twin"]}],
            None,
            "byzantine[0].behaviours",
            "unknown behaviour 'twin'",
        ),
    ],
)
def test_a_bad_twin_is_one_line_naming_file_key_and_fix(
    byzantine: list[dict[str, Any]], fault: dict[str, Any] | None, key: str, words: str
) -> None:
    raw = tomllib.loads(REFERENCE.read_text())
    raw["byzantine"] = byzantine
    raw["faults"] = [fault] if fault else []
    with pytest.raises(ScenarioError) as info:
        parse(raw, REFERENCE)
    message = str(info.value)
    assert message.startswith(f"{REFERENCE}: {key}: ") and words in message, message
    assert "\n" not in message and message.count(":") >= 3
