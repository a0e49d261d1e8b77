"""dvpsim as a well-behaved tool: `--version`, `--set`/`--seed` overrides, `--json`,
`-q`/`-v`, bundled scenarios by name, shell completion, each subcommand's own usage, the
exit codes (0 met, 1 not met, 2 bad input, 3 undecided, 4 internal error), run folders
(`--out`/`--force`, the run-start record, the JSON Schemas) and secret files made 0600.

Most cases call the command line in this process (``dvpsim.cli.main``) on small simulated
runs with fast crypto, so the whole file takes a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chain_adapters.build import REPO_ROOT
from dvpsim.cli import main
from dvpsim.runcli import exit_code
from node.provision import make_keys, write_committee
from processes.private import write_private
from scenarios import overrides
from scenarios.history import digest_of_lines
from scenarios.provenance import SCHEMA_VERSION, dvpsim_version, scenario_sha256
from scenarios.schema import ScenarioError
from scenarios.sim.run import SimRun
from tests.run_schemas import assert_run_folder_conforms, errors

SMALL = ["single-chain-onchain", "--crypto", "fast", "--set", "settlements.count=3"]


@pytest.fixture(autouse=True)
def _keep_sigterm() -> Iterator[None]:
    # dvpsim.cli.main turns SIGTERM into SystemExit and hooks unraisable exceptions; give
    # pytest its own handler and hook back.
    handler, hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    yield
    signal.signal(signal.SIGTERM, handler)
    sys.unraisablehook = hook


STOPPED_IN_A_FINALIZER = """
import os, signal, sys, time, weakref
from dvpsim import cli
cli._terminate_on_sigterm()

class Held:
    pass

def finalizer():
    os.kill(os.getpid(), signal.{name})
    for _ in range(100_000):  # the handler runs here, inside the finalizer
        pass

held = Held()
weakref.finalize(held, finalizer)
del held
for _ in range(100):  # 5 s: a stop that was dropped lets this end with exit 0
    time.sleep(0.05)
sys.exit(0)
"""


@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143), ("SIGINT", -signal.SIGINT)])
def test_a_stop_signal_that_lands_in_a_finalizer_still_stops_the_command(
    name: str, code: int
) -> None:
    """Python drops an exception a signal handler raises inside a finalizer ("Exception
    ignored"); a stopped benchmark then went on with its next run. The command sends the
    signal again, and it stops (SIGTERM: exit 143; Ctrl-C: KeyboardInterrupt, which a bare
    script ends by dying of SIGINT)."""
    result = subprocess.run(
        [sys.executable, "-c", STOPPED_IN_A_FINALIZER.format(name=name)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert "Exception ignored" in result.stderr  # it did land in the finalizer
    assert result.returncode == code, result.stderr


def dvpsim(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the command line in this process: (exit code, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse: --version, --help, usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def history(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- the parser


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = dvpsim(capsys, "--version")
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert code == 0
    assert (
        out.strip() == f"dvpsim {dvpsim_version()}" == f"dvpsim {pyproject['project']['version']}"
    )


@pytest.mark.parametrize("command", ["run", "sim"])
def test_an_unknown_option_shows_the_subcommands_usage(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, out, err = dvpsim(capsys, command, "reference", "--bogus")
    assert code == 2 and out == ""
    assert err.startswith(f"usage: dvpsim {command} ")
    assert err.strip().endswith(f"dvpsim {command}: error: unrecognized arguments: --bogus")


def test_scenarios_lists_every_bundled_scenario_with_a_description(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = dvpsim(capsys, "scenarios")
    lines = out.splitlines()
    names = sorted(p.stem for p in (REPO_ROOT / "scenarios").glob("*.toml"))
    assert code == 0 and [line.split()[0] for line in lines] == names
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # each has a description
    reference = next(line for line in lines if line.split()[0] == "reference")
    assert (
        "The reference case, the demo of README.md: multi-chain messaging with the bank"
        in reference
    )


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_prints_a_script_for_the_shell(
    capsys: pytest.CaptureFixture[str], shell: str, tmp_path: Path
) -> None:
    code, out, _ = dvpsim(capsys, "completion", shell)
    assert code == 0
    for word in ("sim", "scenarios", "--check-determinism", "--set"):
        assert word in out
    if shell == "bash":
        script = tmp_path / "dvpsim.bash"
        script.write_text(out)
        assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


# --------------------------------------------------------------------------- overrides


def test_overrides_reach_nested_tables_array_entries_and_new_tables() -> None:
    data = {"name": "x", "chains": [{"name": "a"}, {"name": "b"}], "committee": {"n": 4}}
    changed = overrides.apply(
        data,
        [
            overrides.parse_override(text)
            for text in (
                "committee.n=7",
                "committee.f=2",
                "chains.1.block_time=0.5",
                "timing.delta_round = 1.5",
                'expect=["atomicity"]',
                "mode=single-chain-bank",  # not TOML: a string
            )
        ],
    )
    assert changed["committee"] == {"n": 7, "f": 2}
    assert changed["chains"][1] == {"name": "b", "block_time": 0.5}
    assert changed["timing"] == {"delta_round": 1.5}
    assert changed["expect"] == ["atomicity"] and changed["mode"] == "single-chain-bank"
    assert data["committee"] == {"n": 4}  # the input is left as it was


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("committee", "--set 'committee': expected KEY=VALUE: e.g. --set committee.n=7"),
        ("=3", "expected KEY=VALUE"),
        ("committee..n=3", "has an empty part"),
        ("chains.2.block_time=1", "chains is an array of 1: address an entry by its index, 0 to 0"),
        ("chains.x.block_time=1", "chains is an array of 1"),
        ("name.first=1", "name is the value 'reference', not a table: set name itself"),
        ("committee.colour=1", "committee.colour: unknown key: remove it or use one of f, n"),
        ("committee.n=true", "committee.n: expected an integer, got bool True"),
        ("committee.f=2", "committee.f: f = 2 is too large for n = 4"),
    ],
)
def test_a_bad_override_is_one_line(text: str, words: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        overrides.load(overrides.resolve("reference"), [text])
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_set_and_seed_change_the_run_and_are_recorded(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, _, _ = dvpsim(
        capsys, "sim", *SMALL, "--set", "committee.n=7", "--set", "committee.f=2",
        "--seed", "9", "--out", str(out), "-q",
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0
    assert (summary["n"], summary["f"], summary["seed"], summary["settlements"]) == (7, 2, 9, 3)
    assert summary["overrides"] == ["settlements.count=3", "committee.n=7", "committee.f=2"]
    assert history(out)[0]["overrides"] == summary["overrides"]


# --------------------------------------------------------------------------- output modes


def test_json_puts_only_the_summary_on_stdout(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = dvpsim(capsys, "sim", *SMALL, "--out", str(tmp_path / "run"), "--json")
    assert code == 0
    assert json.loads(out) == json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "expectation" in err and err.strip().endswith("exit 0")  # the table went to stderr


def test_quiet_prints_only_the_verdict_and_verbose_adds_progress(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = dvpsim(capsys, "sim", *SMALL, "--out", str(tmp_path / "q"), "-q")
    assert code == 0 and err == ""
    assert out == "dvpsim sim: expectation met (pass): exit 0\n"
    code, out, _ = dvpsim(capsys, "sim", *SMALL, "--out", str(tmp_path / "v"), "-v")
    assert code == 0
    assert f"dvpsim sim: dvpsim {dvpsim_version()}, scenario " in out
    assert "dvpsim sim: settlements ended 3/3\n" in out
    assert "check: atomicity" in out  # the table, as in the normal mode


def test_a_bundled_scenario_is_found_by_name_from_any_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no scenarios/ here
    code, _, _ = dvpsim(capsys, "sim", *SMALL, "--out", "run", "-q")
    assert code == 0
    assert history(tmp_path / "run")[0]["scenario_path"] == str(
        overrides.bundled_folder() / "single-chain-onchain.toml"
    )


# --------------------------------------------------------------------------- exit codes


def test_exit_1_when_a_check_decides_against_the_expectation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = dvpsim(
        capsys, "sim", *SMALL, "--set", 'expect=["atomicity"]', "--out", str(tmp_path / "r")
    )
    assert code == 1
    assert "expectation not met: atomicity: expected invalid, got valid: exit 1" in out
    assert "--set 'expect=[\"atomicity\"]'" in out  # the replay command keeps the overrides


def test_exit_3_when_settlements_are_left_open_and_checks_cannot_decide(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = dvpsim(
        capsys, "sim", *SMALL, "--set", "time_limit=1", "--out", str(tmp_path / "r"), "-q"
    )
    assert code == 3
    assert "undecided: " in out and "settlement(s) left open at the end: exit 3" in out


def test_exit_1_takes_precedence_over_3() -> None:
    checks = {
        "atomicity": {"status": "invalid", "witness": "0x01"},
        "liveness": {"status": "unknown", "witness": "open"},
    }
    summary = {"expectation_met": False, "expect": "pass", "checks": checks}
    assert exit_code(summary) == 1  # invalid and unknown: 1
    checks["atomicity"]["status"] = "valid"
    assert exit_code(summary) == 3  # only the unknown one
    assert exit_code({**summary, "expect": ["atomicity"]}) == 1  # valid, meant to fail
    checks["atomicity"]["status"] = "unknown"
    assert exit_code({**summary, "expect": ["atomicity"]}) == 3  # could not decide
    assert exit_code({**summary, "expectation_met": True}) == 0


def test_exit_1_when_check_determinism_finds_two_histories(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two different histories on demand: the second run gets another seed.
    import dataclasses

    import scenarios.sim.run as sim_run

    runs: list[int] = []

    class ReseededRun(SimRun):
        def __init__(self, scenario: Any, out_dir: Path, **options: Any) -> None:
            runs.append(1)
            if len(runs) == 2:
                scenario = dataclasses.replace(scenario, seed=scenario.seed + 1)
            super().__init__(scenario, out_dir, **options)

    monkeypatch.setattr(sim_run, "SimRun", ReseededRun)
    code, out, _ = dvpsim(
        capsys, "sim", *SMALL, "--check-determinism", "--out", str(tmp_path / "r"), "-q"
    )
    assert code == 1 and len(runs) == 2
    assert "NOT DETERMINISTIC" in out
    assert out.strip().endswith("not deterministic: two runs of one seed differ: exit 1")


def test_exit_4_on_an_internal_error_with_the_traceback_in_the_run_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug cannot be had on demand: the run raises what no input should make it raise.
    def broken(self: SimRun) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(SimRun, "run", broken)
    code, out, err = dvpsim(capsys, "sim", *SMALL, "--out", str(tmp_path / "r"))
    log = tmp_path / "r" / "error.log"
    assert code == 4 and out == ""
    assert one_line(err) == f"dvpsim sim: internal error (KeyError: 'a bug'); traceback in {log}"
    assert "Traceback" in log.read_text() and "KeyError: 'a bug'" in log.read_text()


def _not_utf8(tmp: Path) -> str:
    path = tmp / "latin1.toml"
    path.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    return str(path)


def _bad_toml(tmp: Path) -> str:
    path = tmp / "bad.toml"
    path.write_text("name = \n")
    return str(path)


def _under_a_file(tmp: Path) -> str:
    (tmp / "plain").write_text("")
    return str(tmp / "plain" / "x.toml")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda tmp: str(tmp), "a folder, not a scenario: give the path of a .toml file in it"),
        (_not_utf8, "not UTF-8 text (byte "),
        (_under_a_file, "cannot be read (Not a directory): check the path"),
        (lambda tmp: str(tmp / "none.toml"), "no such file: give the path of a scenario"),
        (lambda tmp: "no-such-bundled-name", "no such file"),
        (_bad_toml, "not valid TOML ("),
    ],
    ids=["folder", "not-utf8", "under-a-file", "missing", "unknown-name", "bad-toml"],
)
@pytest.mark.parametrize("command", ["run", "sim"])
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, make: Any, words: str
) -> None:
    code, out, err = dvpsim(capsys, command, make(tmp_path), "--json")
    assert code == 2 and out == ""
    assert one_line(err).startswith(f"dvpsim {command}: ") and words in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_scenario_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "secret.toml"
    path.write_text('name = "x"\n')
    path.chmod(0)
    code, _, err = dvpsim(capsys, "sim", str(path))
    assert code == 2 and "cannot be read (Permission denied)" in one_line(err)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--set", "chains.4.block_time=1"], "chains is an array of 1"),
        (["--seed", "-1"], "--seed -1 is out of range"),
        (["--out", "{file}"], "a file, not a folder"),
        (["--out", "{file}/run"], "cannot be used (Not a directory)"),
    ],
)
@pytest.mark.parametrize("command", ["run", "sim"])
def test_bad_options_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, argv: list[str], words: str
) -> None:
    (tmp_path / "file").write_text("")
    argv = [a.replace("{file}", str(tmp_path / "file")) for a in argv]
    code, out, err = dvpsim(capsys, command, "single-chain-onchain", *argv)
    assert code == 2 and out == ""
    assert words in one_line(err)


# --------------------------------------------------------------------------- run folders


def test_out_refuses_a_folder_that_is_not_empty(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    for command in ("run", "sim"):
        code, _, err = dvpsim(capsys, command, *SMALL[:1], "--out", str(tmp_path))
        assert code == 2
        assert one_line(err) == (
            f"dvpsim {command}: --out {tmp_path}: not empty: give a new folder, or --force to "
            "replace the earlier run in it"
        )
    # --force leaves a folder alone that holds no run.
    code, _, err = dvpsim(capsys, "sim", *SMALL, "--out", str(tmp_path), "--force")
    assert code == 2 and "not a run folder" in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_force_replaces_an_earlier_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert dvpsim(capsys, "sim", *SMALL, "--out", str(out), "-q")[0] == 0
    (out / "leftover.txt").write_text("from the first run")
    (out / "more").mkdir()
    first = history(out)[0]["started_at"]
    code, _, _ = dvpsim(capsys, "sim", *SMALL, "--seed", "5", "--out", str(out), "-q", "--force")
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["history.jsonl", "summary.json"]
    records = history(out)
    assert [r["event"] for r in records].count("run-start") == 1
    assert records[0]["seed"] == 5 and records[0]["started_at"] >= first


def test_a_sim_run_folder_describes_itself_and_holds_to_the_schemas(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, _, _ = dvpsim(capsys, "sim", *SMALL, "--out", str(out), "-q", "--check-determinism")
    assert code == 0  # the run-start record (wall clock) leaves the digest deterministic
    assert_run_folder_conforms(out)
    start = history(out)[0]
    scenario, _ = overrides.load(overrides.resolve("single-chain-onchain"), SMALL[-1:])
    assert start == {
        "t": 0.0,
        "event": "run-start",
        "schema_version": SCHEMA_VERSION,
        "dvpsim_version": dvpsim_version(),
        "scenario_path": str(overrides.bundled_folder() / "single-chain-onchain.toml"),
        "overrides": ["settlements.count=3"],
        "scenario_sha256": scenario_sha256(scenario),
        "seed": scenario.seed,
        "started_at": start["started_at"],
        "wall_clock": True,
    }
    summary = json.loads((out / "summary.json").read_text())
    lines = (out / "history.jsonl").read_text().splitlines()
    assert digest_of_lines(lines) == digest_of_lines(lines[1:]) == summary["history_digest"]
    assert {"party": "seller", "asset": "asset", "place": "A"}.items() <= summary["balances"][
        [b["party"] for b in summary["balances"]].index("seller")
    ].items()


def test_the_scenario_hash_follows_the_effective_scenario_not_the_file() -> None:
    path = overrides.resolve("reference")
    plain, _ = overrides.load(path)
    same, _ = overrides.load(path, ["committee.n=4"])  # the file's own value
    other, _ = overrides.load(path, ["committee.n=5"])
    seeded, _ = overrides.load(path, seed=plain.seed + 1)
    assert scenario_sha256(plain) == scenario_sha256(same)
    assert len({scenario_sha256(s) for s in (plain, other, seeded)}) == 3


def test_the_schemas_reject_what_they_must() -> None:
    assert errors("history-event.schema.json", {"t": 0.0, "event": "run-start"})  # no fields
    assert errors("history-event.schema.json", {"t": 0.0, "event": "no-such-event"})
    assert not errors("history-event.schema.json", {"t": 1.5, "event": "drive-start"})
    balance = {"party": "buyer", "asset": "asset", "place": "A", "expected": 1, "actual": 1}
    assert errors("summary.schema.json", {"balances": [{**balance, "key": "buyer: asset@A"}]})


# --------------------------------------------------------------------------- secret files


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_files_are_created_0600(tmp_path: Path) -> None:
    old = os.umask(0)  # even where the umask would leave them open to all
    try:
        write_private(tmp_path / "token", "t")
        (tmp_path / "wide").write_text("old")
        (tmp_path / "wide").chmod(0o644)
        write_private(tmp_path / "wide", "new")  # an earlier, wider file is replaced
        members = make_keys(4, 7, [4001, 4002, 4003, 4004])
        write_committee(
            tmp_path / "c", members, f=1, mode="single-chain-onchain", targets_for=lambda i: []
        )
    finally:
        os.umask(old)
    assert _mode(tmp_path / "token") == _mode(tmp_path / "wide") == 0o600
    assert (tmp_path / "wide").read_text() == "new"
    for node in ("node0", "node3"):
        for name in ("password", "bls.keystore", "identity.key", "config.json"):
            assert _mode(tmp_path / "c" / node / name) == 0o600, (node, name)


def test_the_bank_client_secrets_file_is_created_0600(tmp_path: Path) -> None:
    from bank_adapter.devcommittee import DevCommittee
    from bank_adapter.process import BankProcess

    bank = BankProcess(tmp_path / "bank", DevCommittee.create())  # written, not started
    assert bank.pid is None
    assert _mode(tmp_path / "bank" / "clients.json") == 0o600


def test_the_history_schema_lists_every_event_with_its_fields() -> None:
    from scenarios.history import EVENT_FIELDS
    from tests.run_schemas import SCHEMAS

    schema = json.loads((SCHEMAS / "history-event.schema.json").read_text())
    assert schema["properties"]["event"]["enum"] == list(EVENT_FIELDS)
    required = {
        rule["if"]["properties"]["event"]["const"]: [
            name for name in rule["then"]["required"] if name != "wall_clock"
        ]
        for rule in schema["allOf"]
    }
    assert required == {event: list(fields) for event, fields in EVENT_FIELDS.items()}
