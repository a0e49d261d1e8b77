"""A seed replays a simulated run exactly: the same history, byte for byte, in one process
and across processes with different hash seeds; and the fast crypto stand-in changes
nothing but the crypto named in the run record.

Only records that carry wall-clock facts (``"wall_clock": true``: when the run started on
this machine) differ between two runs of one seed, and only those are left out of the
history digest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain_adapters.build import REPO_ROOT
from scenarios.history import digest_of_lines
from scenarios.schema import Scenario, load
from scenarios.sim.run import SimRun

SCENARIOS = REPO_ROOT / "scenarios"
#: Shipped scenarios, shortened so a property can run many of them.
QUICK = ("reference", "single-chain-onchain", "multi-chain-token", "kill-restart", "bank-faults")


def quick(name: str, seed: int, count: int = 6) -> Scenario:
    scenario = load(SCENARIOS / f"{name}.toml")
    settlements = scenario.settlements
    fails = tuple(dataclasses.replace(f, count=min(f.count, 1)) for f in settlements.fail)[
        : max(0, count - 1)
    ]
    return dataclasses.replace(
        scenario,
        seed=seed,
        settlements=dataclasses.replace(settlements, count=count, fail=fails),
    )


def history_of(scenario: Scenario, crypto: str = "fast") -> tuple[list[str], str]:
    with tempfile.TemporaryDirectory(prefix="dvpsim-determinism-") as tmp:
        report = SimRun(scenario, Path(tmp), crypto=crypto).run()
        lines = (Path(tmp) / "history.jsonl").read_text().splitlines()
    return lines, report.digest


def without_wall_clock(lines: list[str]) -> list[str]:
    return [line for line in lines if not json.loads(line).get("wall_clock")]


@settings(max_examples=8, deadline=None)
@given(name=st.sampled_from(QUICK), seed=st.integers(0, 2**31))
def test_the_same_seed_gives_a_byte_identical_history(name: str, seed: int) -> None:
    first, first_digest = history_of(quick(name, seed))
    second, second_digest = history_of(quick(name, seed))
    assert without_wall_clock(first) == without_wall_clock(second)
    assert first_digest == second_digest == digest_of_lines(first) == digest_of_lines(second)
    # Only the wall-clock records differ, and only they are outside the digest.
    differing = [a for a, b in zip(first, second, strict=True) if a != b]
    assert all(json.loads(line).get("wall_clock") for line in differing)
    assert len(first) > 100


def test_different_seeds_give_different_histories() -> None:
    _, a = history_of(quick("reference", 1))
    _, b = history_of(quick("reference", 2))
    assert a != b


_DIGEST_SCRIPT = """
import json, sys, tempfile
from pathlib import Path
from scenarios.sim.run import SimRun
from tests.sim.test_determinism import quick
digests = []
for name, seed in json.loads(sys.argv[1]):
    with tempfile.TemporaryDirectory() as tmp:
        digests.append(SimRun(quick(name, seed), Path(tmp), crypto=sys.argv[2]).run().digest)
print(json.dumps(digests))
"""


def digests_in_a_process(runs: list[tuple[str, int]], crypto: str, hash_seed: str) -> list[str]:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", _DIGEST_SCRIPT, json.dumps(runs), crypto],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    digests: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return digests


@settings(max_examples=3, deadline=None)
@given(
    runs=st.lists(
        st.tuples(st.sampled_from(QUICK), st.integers(0, 2**31)),
        min_size=1,
        max_size=3,
        unique=True,
    )
)
def test_the_history_does_not_depend_on_the_process_or_its_hash_seed(
    runs: list[tuple[str, int]],
) -> None:
    here = [history_of(quick(name, seed))[1] for name, seed in runs]
    for hash_seed in ("0", "4242"):
        assert digests_in_a_process(runs, "fast", hash_seed) == here


def test_with_real_crypto_too_the_history_does_not_depend_on_the_process() -> None:
    runs = [("reference", 7)]
    here = [history_of(quick("reference", 7), "real")[1]]
    assert digests_in_a_process(runs, "real", "1") == here


@pytest.mark.parametrize("name", ["reference", "bank-faults", "kill-restart", "multi-chain-token"])
def test_fast_crypto_gives_the_same_history_as_real_crypto(name: str) -> None:
    """Signatures never enter the history; everything else must be identical, so what the
    fast mode finds is what real crypto would have found on the same seed."""
    scenario = quick(name, 11, count=8)
    real, _ = history_of(scenario, "real")
    fast, _ = history_of(scenario, "fast")

    def comparable(lines: list[str]) -> list[str]:
        out = []
        for line in without_wall_clock(lines):
            record = json.loads(line)
            if record["event"] == "run":
                record.pop("crypto")
            out.append(json.dumps(record))
        return out

    assert comparable(real) == comparable(fast)
    assert sum(1 for line in real if '"crypto":"real"' in line) == 1
