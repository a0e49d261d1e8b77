"""`dvpsim report`: the data it extracts from real simulated runs, its refusals of folders
that are not runs, and the page itself in a real headless Chromium (no console error, one
lane per settlement leg, a screenshot)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chain_adapters.build import REPO_ROOT
from dvpsim.cli import main
from dvpsim.report import read_run, render_html, write_report
from scenarios.accounting import percentile
from scenarios.schema import load
from scenarios.sim.run import SimRun

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _sim(name: str, out: Path) -> Path:
    SimRun(load(REPO_ROOT / "scenarios" / f"{name}.toml"), out, crypto="fast").run()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _sim("reference", tmp_path_factory.mktemp("reference") / "run")


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").open()]


def history_legs(run_dir: Path) -> set[tuple[str, str]]:
    """Every (settlement, leg) the history's "leg" lines name."""
    return {(r["settlement"], r["leg"]) for r in _records(run_dir) if r["event"] == "leg"}


def test_the_lanes_hold_every_node_and_every_leg_step_of_the_run(reference: Path) -> None:
    view = read_run(reference)
    records = _records(reference)
    summary = json.loads((reference / "summary.json").read_text())
    assert [lane.node for lane in view.nodes] == ["0", "1", "2", "3"]
    assert {(lane.settlement, lane.leg) for lane in view.legs} == history_legs(reference)
    assert len(view.legs) == len(history_legs(reference)) == 2 * summary["settlements"]
    assert [lane.index for lane in view.legs[::2]] == list(range(summary["settlements"]))
    outcomes = {(lane.settlement, lane.leg): lane.outcome for lane in view.legs}
    for sid in summary["committed_ids"]:
        assert (outcomes[(sid, "A")], outcomes[(sid, "bank")]) == ("release", "pay")
    for sid in summary["aborted_ids"]:
        assert outcomes[(sid, "A")] == "refund"
    assert sum(1 for lane in view.legs if lane.fail) == 2 * summary["expected_to_fail"]
    leg_lines = sum(1 for r in records if r["event"] == "leg")
    assert sum(len(lane.steps) for lane in view.legs) == leg_lines
    counted = Counter(r["event"] for r in records)
    assert sum(len(n.rounds) for n in view.nodes) == counted["round"]
    assert sum(len(n.certificates) for n in view.nodes) == counted["certificate"]
    assert sum(len(n.accepted) for n in view.nodes) == counted["certified"]
    transmissions = Counter(r["phase"] for r in records if r["event"] == "transmission")
    assert sum(len(n.transmissions_ok) for n in view.nodes) == transmissions["ok"]
    assert not any(n.transmissions_open or n.down for n in view.nodes)
    assert view.faults == ()


def test_latencies_messages_and_verdicts_agree_with_the_summary(reference: Path) -> None:
    view = read_run(reference)
    summary = json.loads((reference / "summary.json").read_text())
    assert len(view.latencies) == summary["committed"]
    assert percentile(view.latencies, 0.5) == summary["latency_p50_s"]
    assert percentile(view.latencies, 0.99) == summary["latency_p99_s"]
    sends = [r for r in _records(reference) if r["event"] == "send"]
    assert sum(view.messages_per_round) + view.messages_without_round == len(sends)
    assert sum(view.message_kinds.values()) == len(sends)
    assert len(sends) == pytest.approx(summary["messages_per_settlement"] * 20, abs=1)
    assert {v.check: v.status for v in view.verdicts} == {
        name: check["status"] for name, check in summary["checks"].items()
    }


def test_a_witness_names_its_settlement_nodes_and_times(tmp_path: Path) -> None:
    """unsafe-equivocation-low-threshold: the conflicting certificates' witness names a
    settlement, a node and two times; its lanes are marked on the page."""
    run = _sim("unsafe-equivocation-low-threshold", tmp_path / "run")
    view = read_run(run)
    verdict = next(v for v in view.verdicts if v.check == "no-conflicting-certificates")
    assert verdict.status == "invalid"
    (sid,) = verdict.settlements
    assert sid.startswith(verdict.witness[:18])
    assert verdict.nodes and all(n in {lane.node for lane in view.nodes} for n in verdict.nodes)
    assert len(verdict.times) == 2 and all(view.start <= t <= view.end for t in verdict.times)
    page = render_html(view)
    assert page.count('class="lane leg-lane witness"') == sum(
        1 for lane in view.legs if lane.settlement == sid
    )
    assert f'href="#leg-{sid}-' in page
    assert page.count('class="witness-time"') == sum(
        len(v.times) for v in view.verdicts if v.status != "valid"
    )


def test_fault_windows_pair_every_begin_with_its_end(tmp_path: Path) -> None:
    run = _sim("network-faults", tmp_path / "run")
    view = read_run(run)
    faults = [r for r in _records(run) if r["event"] == "fault"]
    begins = [r for r in faults if r["phase"] == "begin"]
    assert len(view.faults) == len(begins) == len(faults) // 2 > 0
    assert sorted((w.kind, w.start) for w in view.faults) == sorted(
        (r["kind"], r["t"]) for r in begins
    )
    assert all(w.start <= w.end for w in view.faults)
    assert render_html(view).count('class="fault"') == len(view.faults)


def test_a_stopped_node_is_down_until_it_restarts(tmp_path: Path) -> None:
    run = _sim("kill-restart", tmp_path / "run")
    view = read_run(run)
    stops = [r for r in _records(run) if r["event"] == "node-stop"]
    assert stops
    down = [(lane.node, span.start) for lane in view.nodes for span in lane.down]
    assert sorted(down) == sorted((str(r["node"]), r["t"]) for r in stops)


def _report(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_writes_the_page_and_prints_its_path(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _report([str(reference)], capsys)
    assert (code, out) == (0, f"{reference / 'report.html'}\n")
    target = tmp_path / "page.html"
    code, out, _ = _report([str(reference), "--out", str(target)], capsys)
    assert (code, out) == (0, f"{target}\n")
    page = target.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>")
    for network in ("http://", "https://", "//cdn", '<link rel="stylesheet"', "src="):
        assert network not in page
    code, out, err = _report([str(reference), "--out", str(tmp_path / "no" / "page.html")], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("dvpsim report: cannot write ") and err.count("\n") == 1


RUN_LINE = '{"t":0,"event":"run"}\n'


@pytest.mark.parametrize(
    "history, summary, says",
    [
        (None, None, "it has no history.jsonl"),
        (RUN_LINE, None, "it has no summary.json"),
        (RUN_LINE, "{not json", "summary.json: not readable JSON"),
        (RUN_LINE, "[1]", "not a run summary"),
        (RUN_LINE + "not json\n", "{}", "history.jsonl:2: not a JSON line"),
        ('{"event":"run"}\n', "{}", "history.jsonl:1: not a history line"),
        ("", "{}", "is empty"),
        ('{"t":0,"event":"leg","phase":"ok"}\n', "{}", "a line lacks a field docs/HISTORY.md"),
    ],
)
def test_a_folder_that_is_not_a_run_is_one_line_and_exit_2(
    history: str | None,
    summary: str | None,
    says: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if history is not None:
        (tmp_path / "history.jsonl").write_text(history)
    if summary is not None:
        (tmp_path / "summary.json").write_text(summary)
    code, out, err = _report([str(tmp_path)], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("dvpsim report: ") and err.count("\n") == 1, err
    assert says in err, err
    assert not (tmp_path / "report.html").exists()


def test_a_path_that_is_no_folder_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _report([str(tmp_path / "nothing-here")], capsys)
    assert (code, out) == (2, "")
    assert (
        err
        == f"dvpsim report: {tmp_path / 'nothing-here'} is not a folder (give a run folder of dvpsim run or sim)\n"
    )


# --- the page in a real browser ------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} missing: install them with "
            "`apt-get install -y chromium chromium-driver` (scripts/setup.sh tries to)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dvpsim-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1300,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def load_page(driver: Any, page: Path) -> tuple[float, list[dict[str, Any]]]:
    """Open ``page``; the seconds until it had loaded, and the console's errors."""
    began = time.perf_counter()
    driver.get(page.resolve().as_uri())
    loaded = time.perf_counter() - began
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    return loaded, errors


def test_the_page_loads_clean_with_one_lane_per_settlement_leg(
    reference: Path, browser: Any, tmp_path: Path
) -> None:
    page = write_report(reference, tmp_path / "report.html")
    loaded, errors = load_page(browser, page)
    assert errors == []
    lanes = browser.find_elements("css selector", ".leg-lane")
    assert len(lanes) == len(history_legs(reference))
    shown = {(e.get_attribute("data-settlement"), e.get_attribute("data-leg")) for e in lanes}
    assert shown == history_legs(reference)
    assert len(browser.find_elements("css selector", ".node-lane")) == 4
    assert len(browser.find_elements("css selector", "tr.verdict")) == 6
    # The filter: one settlement's two legs, then all again.
    box = browser.find_element("css selector", "#leg-filter")
    box.send_keys(lanes[0].get_attribute("data-settlement")[:12])
    assert len(browser.find_elements("css selector", ".leg-lane:not(.hidden)")) == 2
    assert browser.find_element("css selector", "#leg-count").text == f"2 of {len(lanes)}"
    box.clear()
    box.send_keys(" ")  # an input event with an empty query
    assert len(browser.find_elements("css selector", ".leg-lane:not(.hidden)")) == len(lanes)
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0
    assert loaded < 5.0
    assert browser.get_log("browser") == []
    print(f"report page loaded in {loaded:.2f} s; screenshot {shot}")


@pytest.mark.slow  # about 5 s: a 1,000-settlement simulated run
def test_a_thousand_settlements_still_load_quickly(browser: Any, tmp_path: Path) -> None:
    base = load(REPO_ROOT / "scenarios" / "reference.toml")
    scenario = dataclasses.replace(
        base,
        accounts=tuple(
            dataclasses.replace(a, asset=100 * a.asset, bank_balance=100 * a.bank_balance)
            for a in base.accounts
        ),
        settlements=dataclasses.replace(base.settlements, count=1000),
        time_limit=600,
    )
    run = tmp_path / "run"
    SimRun(scenario, run, crypto="fast").run()
    began = time.perf_counter()
    page = write_report(run)
    written = time.perf_counter() - began
    loaded, errors = load_page(browser, page)
    assert errors == []
    lanes = browser.find_elements("css selector", ".leg-lane")
    assert len(lanes) == len(history_legs(run)) == 2000
    size = page.stat().st_size
    print(
        f"1,000 settlements: report written in {written:.2f} s, {size / 1e6:.1f} MB, loaded in {loaded:.2f} s"
    )
    assert written < 5.0 and loaded < 3.0 and size < 5e6
