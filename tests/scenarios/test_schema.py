"""Scenario files: valid ones load, every mistake is one line naming file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenarios.schema import MODES, ScenarioError, load, parse

MINIMAL = """
name = "t"
mode = "single-chain-onchain"
[committee]
n = 4
f = 1
[[chains]]
name = "A"
chain_id = 31337
[[accounts]]
name = "seller"
asset = 100
[[accounts]]
name = "buyer"
payment = 100000
[settlements]
count = 3
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_minimal_scenario_loads_with_defaults(tmp_path: Path) -> None:
    scenario = load(_write(tmp_path, MINIMAL))
    assert scenario.committee.t == 3
    assert (
        scenario.timing.delta_progress > scenario.timing.delta_round > scenario.timing.delta_grace
    )
    assert scenario.chains[0].rpc_url == "" and scenario.settlements.count == 3


@pytest.mark.parametrize(
    ("edit", "key", "words"),
    [
        (
            ("[committee]\nn = 4\nf = 1", "[committee]\nn = 4\nf = 2"),
            "committee.f",
            "too large for n = 4",
        ),
        (("count = 3", "count = 3\ncolour = 1"), "settlements.colour", "unknown key"),
        (  # never honoured by either world, so no longer a key
            ("[committee]\nn = 4\nf = 1", "[committee]\nn = 4\nf = 1\nobservation_quorum = 3"),
            "committee.observation_quorum",
            "unknown key",
        ),
        (("n = 4", 'n = "four"'), "committee.n", "expected an integer"),
        (("n = 4", "n = true"), "committee.n", "expected an integer"),
        (('mode = "single-chain-onchain"', 'mode = "teleport"'), "mode", "unknown mode"),
        (("f = 1", "f = 1\nthreshold = 2"), "committee.threshold", "below the safe"),
        (("chain_id = 31337", "chain_id = -5"), "chains[0].chain_id", "not a valid chain id"),
        (
            ("count = 3", 'count = 3\n[[settlements.fail]]\ncount = 1\nreason = "bad-luck"'),
            "settlements.fail[0].reason",
            "unknown reason",
        ),
        (
            ("count = 3", 'count = 3\n[[settlements.fail]]\ncount = 5\nreason = "deadline"'),
            "settlements.fail",
            "failing settlements",
        ),
        (('name = "buyer"', 'name = "purchaser"'), "settlements.buyer", "not defined"),
        (("asset = 100", "asset = -1"), "accounts[0].asset", "negative"),
        (
            ("count = 3", "count = 3\n[timing]\ndelta_grace = 1.0\ndelta_round = 0.5"),
            "timing.delta_grace",
            "not below delta_round",
        ),
        (("count = 3", "count = 3\n[timing]\nr_max = 300"), "timing.r_max", "must be in 1..254"),
        (
            ('mode = "single-chain-onchain"', 'mode = "single-chain-bank"'),
            "bank",
            "no [bank] table",
        ),
        (
            ('mode = "single-chain-onchain"', 'mode = "multi-chain-token"'),
            "chains",
            "needs 2 chain(s)",
        ),
        (
            ("count = 3", 'count = 3\n[[faults]]\nkind = "kill-node"\nat = 1.0\nnode = 9'),
            "faults[0].node",
            "not in the committee",
        ),
        (('name = "t"', 'name = "t"\nexpect = "fail"'), "expect", 'neither "pass" nor'),
        (('name = "t"', 'name = "t"\nexpect = []'), "expect", 'neither "pass" nor'),
        (('name = "t"', 'name = "t"\nexpect = ["atomicty"]'), "expect", "unknown check"),
        (
            ('name = "t"', 'name = "t"\nexpect = ["atomicity", "atomicity"]'),
            "expect",
            "named twice",
        ),
    ],
)
def test_each_mistake_is_one_line_with_file_key_and_fix(
    tmp_path: Path, edit: tuple[str, str], key: str, words: str
) -> None:
    path = _write(tmp_path, MINIMAL.replace(*edit, 1))
    with pytest.raises(ScenarioError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: "), message
    assert words in message
    assert message.count(": ") >= 3  # file: key: problem: fix


def test_network_faults_load_with_their_links_and_sides(tmp_path: Path) -> None:
    text = MINIMAL + (
        '[[faults]]\nkind = "partition"\nat = 1.0\nduration = 2.0\nside = [0]\none_way = true\n'
        '[[faults]]\nkind = "delay"\nat = 1.0\nduration = 2.0\nvalue = 50.0\njitter = 5.0\n'
        "from = [0, 1]\nto = [2]\n"
        '[[faults]]\nkind = "delay"\nat = 1.5\nduration = 2.0\nvalue = 20.0\nfrom = [3]\n'
    )
    partition, delay, other = load(_write(tmp_path, text)).faults
    assert partition.side == (0,) and partition.one_way
    assert (delay.from_nodes, delay.to_nodes, delay.jitter) == ((0, 1), (2,), 5.0)
    assert other.from_nodes == (3,) and other.to_nodes == ()  # disjoint links may overlap


def test_expect_is_pass_by_default_or_the_checks_that_must_fail(tmp_path: Path) -> None:
    assert load(_write(tmp_path, MINIMAL)).expect == ()
    assert load(_write(tmp_path, 'expect = "pass"\n' + MINIMAL)).expect == ()
    text = 'expect = ["exactly-once", "atomicity"]\n' + MINIMAL
    assert load(_write(tmp_path, text)).expect == ("exactly-once", "atomicity")


def test_threshold_below_safe_allowed_only_when_asked(tmp_path: Path) -> None:
    text = MINIMAL.replace("f = 1", "f = 1\nthreshold = 2\nunsafe_allow_low_threshold = true")
    assert load(_write(tmp_path, text)).committee.t == 2


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load(_write(tmp_path, "name = \n"))
    with pytest.raises(ScenarioError, match="no such file"):
        load(tmp_path / "nope.toml")


@settings(max_examples=200, deadline=None)
@given(n=st.integers(-2, 300), f=st.integers(-2, 100), mode=st.sampled_from(MODES))
def test_committee_rule_matches_bft_bound(n: int, f: int, mode: str) -> None:
    raw = {
        "name": "p",
        "mode": mode,
        "committee": {"n": n, "f": f},
        "chains": [{"name": "A", "chain_id": 1}, {"name": "B", "chain_id": 2}],
        "bank": {},
        "accounts": [{"name": "seller"}, {"name": "buyer"}],
    }
    valid = f >= 0 and 1 <= n <= 256 and n >= 3 * f + 1
    try:
        scenario = parse(raw)
    except ScenarioError as exc:
        assert not valid, exc
        assert str(exc).split(": ")[1] in ("committee.f", "committee.n")
    else:
        assert valid
        assert scenario.committee.t == (n + f) // 2 + 1


def test_shipped_scenarios_are_valid() -> None:
    shipped = sorted(Path(__file__).resolve().parents[2].joinpath("scenarios").glob("*.toml"))
    for path in shipped:
        load(path)


def test_a_folder_or_a_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    from scenarios.schema import ScenarioError, load

    with pytest.raises(ScenarioError, match=r": a folder, not a scenario: give the path"):
        load(tmp_path)
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ScenarioError, match=r"not UTF-8 text \(byte 11\): save the scenario"):
        load(latin1)
