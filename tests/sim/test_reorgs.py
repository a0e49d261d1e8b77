"""Chain reorganisations in the simulated world, triggered from test code.

Counting: a reorg of depth k replaces the k newest blocks (their transactions do not come
back); an event with c confirmations sits in a block with c - 1 blocks on top
(confirmations = 1: in a block, as ``chain_adapters.watcher`` counts). An event survives a
depth-k reorg when its block has at least k blocks on top, i.e. c >= k + 1.

The reorg is triggered the moment the bank has paid for the settlement, the worst moment
for the asset leg: the payment is final, the release may not have landed yet.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chain_adapters.build import REPO_ROOT
from scenarios.schema import load
from scenarios.sim.chain import SimChain
from scenarios.sim.run import SimReport, SimRun

REFERENCE = REPO_ROOT / "scenarios" / "reference.toml"


def lock_block(chain: SimChain) -> int:
    return next(b.number for b in chain.blocks for _, call in b.calls if call.label == "lock")


def run_with_reorg(tmp: Path, confirmations: int, depth: int, *, deep_enough: bool) -> SimReport:
    """The reference case with one settlement on a chain with 1 s blocks; when the bank has
    paid, chain A reorganises ``depth`` blocks (with ``deep_enough``: once the lock's block
    is among them)."""
    base = load(REFERENCE)
    chain = dataclasses.replace(base.chains[0], confirmations=confirmations, block_time=1.0)
    scenario = dataclasses.replace(
        base,
        chains=(chain,),
        settlements=dataclasses.replace(base.settlements, count=1, fail=()),
    )
    run = SimRun(scenario, tmp / f"c{confirmations}-d{depth}", crypto="fast")
    state = {"done": False}

    def watch() -> None:
        bank = run.bank
        assert bank is not None
        if not state["done"] and "EXECUTED" in bank.states().values():
            a = run.chains["A"]
            lock_is_shallow = a.head.number - lock_block(a) + 1 <= depth
            if a.head.number >= depth and (not deep_enough or lock_is_shallow):
                state["done"] = True
                run.world.reorg("A", depth)
                return
        if not state["done"]:
            run.queue.after(0.05, watch)

    run.queue.after(0.05, watch)
    report = run.run()
    assert state["done"], "the reorg never happened"
    return report


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_with_a_block_on_top_per_reorged_block_atomicity_holds(tmp_path: Path, depth: int) -> None:
    report = run_with_reorg(tmp_path, confirmations=depth + 1, depth=depth, deep_enough=False)
    checks = report.summary["checks"]
    assert {name: c["status"] for name, c in checks.items()} == {
        "atomicity": "valid",
        "conservation": "valid",
        "exactly-once": "valid",
        "no-conflicting-certificates": "valid",
        "validity": "valid",
        "liveness": "valid",
    }
    assert report.summary["committed"] == 1, "the settlement did not end committed"
    history = (report.out_dir / "history.jsonl").read_text()
    assert '"kind":"reorg"' in history


@pytest.mark.parametrize(("confirmations", "depth"), [(1, 1), (1, 2), (2, 2), (3, 3)])
def test_a_reorg_deeper_than_the_confirmations_breaks_atomicity_after_payment(
    tmp_path: Path, confirmations: int, depth: int
) -> None:
    report = run_with_reorg(tmp_path, confirmations, depth, deep_enough=True)
    atomicity = report.summary["checks"]["atomicity"]
    assert atomicity["status"] == "invalid"
    assert "seller paid but the asset was not delivered" in atomicity["witness"]
    assert "A=none, bank=committed" in atomicity["witness"]
    # The certified lock is gone from the final chain: the COMMIT is no longer valid.
    validity = report.summary["checks"]["validity"]
    assert validity["status"] == "invalid"
    assert "but leg A was never prepared at its target" in validity["witness"]
    assert report.summary["checks"]["no-conflicting-certificates"]["status"] == "valid"
    assert not report.ok
