"""Admission: the coordinator refuses a settlement the committee's pace cannot serve in time.

- On anvil, DvPCoordinator and EscrowModel in lockstep (``GasTwin``: the same events or
  the same error for every call): below the floor everything is admitted; at it, a create
  is refused (``SettlementRefused``, nothing recorded, nothing locked) unless the last
  window's pace ends the open settlements within half the time the new one has.
- The model's rule as a property (Hypothesis, no chain): the open count is exactly the
  settlements created and not yet final, nothing below the floor is refused, and a
  refusal changes nothing but what the event says.
- In the simulated world, the overload bench's case at twice what the committee serves:
  without admission settlements wait past their deadlines and abort; with it the excess
  is refused at once and nothing aborts.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain_adapters.bindings import CoordinatorBinding
from chain_adapters.build import Artifact
from chain_adapters.devstack import deploy_escrow_stack
from chain_adapters.localchain import LocalChain
from chain_adapters.model import (
    ADMISSION_WINDOW,
    EscrowModel,
    Mode,
    SettlementCreated,
    SettlementRefused,
    State,
    Terms,
    checksum_address,
)
from consensus.report import Action, Decision, Report
from dvpsim.benchmarks.overload import abort_reasons, messaging_scenario
from scenarios.schema import ScenarioError, parse
from scenarios.sim.run import SimRun
from tests.escrow.escrow_helpers import ChainClock, GasTwin

FLOOR = 2
COORDINATOR = "0x" + "c0" * 20
SELLER = "0x" + "5e" * 20
BUYER = "0x" + "b7" * 20
ASSET = "0x" + "a5" * 20


def _names(outcome: object) -> list[str]:
    assert isinstance(outcome, list), outcome
    return [event.NAME for event in outcome]


def test_contract_refuses_what_the_pace_cannot_serve(
    chain: LocalChain, contracts: dict[str, Artifact]
) -> None:
    snapshot = chain.snapshot()
    try:
        w3 = chain.web3()
        stack = deploy_escrow_stack(w3, contracts, n=4, f=1, admission_floor=FLOOR)
        clock = ChainClock(int(w3.eth.get_block("latest")["timestamp"]))
        twin = GasTwin(chain, stack, random.Random(7), admission_floor=FLOOR, clock=clock)
        seller = twin.funded_party(stack.asset)
        buyer = twin.new_party()
        twin.now = (twin.now // ADMISSION_WINDOW + 1) * ADMISSION_WINDOW  # a window begins

        def lock(deadline_in: int = 3600) -> tuple[Terms, list[str]]:
            terms = twin.terms(Mode.ASSET_ESCROW, seller, buyer, deadline_in=deadline_in)
            return terms, _names(twin.create_and_lock(terms, seller))

        first = [lock() for _ in range(FLOOR)]
        assert all("SettlementCreated" in names for _, names in first)
        held = stack.asset.balance_of(seller)
        refused, names = lock()  # at the floor, and nothing ended in the last window
        assert names == ["SettlementRefused"]
        assert twin.model.state_of(refused.settlement_id) == State.NONE
        assert stack.coordinator.states_of([refused.settlement_id]) == [State.NONE]
        assert stack.asset.balance_of(seller) == held  # nothing was locked
        assert _names(twin.create(twin.terms(Mode.ASSET_ESCROW, seller, buyer), seller)) == [
            "SettlementRefused"
        ]
        # The committee ends both; in the next window the pace is 2 per 10 s.
        decisions = [(t.settlement_id, Action.ABORT, t.terms_hash()) for t, _ in first]
        twin.apply(twin.certify(decisions), [t for t, _ in first])
        assert twin.model.open_count == 0
        twin.now = (twin.now // ADMISSION_WINDOW + 1) * ADMISSION_WINDOW
        second = [lock() for _ in range(FLOOR)]
        # open 2 >= floor: 2 * 2 * 10 = 40 < 2 * (3600 - 1): admitted at that pace ...
        assert "SettlementCreated" in lock()[1]
        # ... but not with 20 s left: 3 * 2 * 10 = 60 >= 2 * 19.
        assert lock(deadline_in=20)[1] == ["SettlementRefused"]
        assert all("SettlementCreated" in names for _, names in second)
        assert twin.model.open_count == FLOOR + 1
        # every call agreed with the model (GasTwin checks) and its gas with the table
        for sample in twin.samples:
            assert sample.charges.reverted is False, sample.kind
        _raw_logs_read_as_web3_does(stack.coordinator)
    finally:
        chain.revert(snapshot)


def _raw_logs_read_as_web3_does(coordinator: CoordinatorBinding) -> None:
    """The runner reads locks, refusals and final events with ``event_logs`` (one raw
    eth_getLogs): the same logs, arguments, transactions and blocks as web3's get_logs,
    over the whole chain and over a range."""
    head = coordinator.w3.eth.block_number
    for name in ("LegLocked", "SettlementRefused", "SettlementAborted"):
        event = getattr(coordinator.contract.events, name)()
        for start, end in ((0, None), (head - 3, head - 1)):
            expected = [
                (name, dict(log["args"]), bytes(log["transactionHash"]), int(log["blockNumber"]))
                for log in event.get_logs(from_block=start, to_block=end or "latest")
            ]
            got = [
                (log.event, dict(log.args), log.transaction_hash, log.block_number)
                for log in coordinator.event_logs(name, from_block=start, to_block=end)
            ]
            assert got == expected, (name, start)
        assert coordinator.event_logs(name), name  # the test made some of each
    # several events at once: each one's logs, in chain order
    names = ("LegLocked", "SettlementRefused", "SettlementAborted")
    both = coordinator.event_logs(*names)
    assert sorted(both, key=lambda log: (log.block_number, log.log_index)) == both
    for name in names:
        assert [log for log in both if log.event == name] == coordinator.event_logs(name)
    assert {log.chain_id for log in both} == {coordinator.w3.eth.chain_id}


# ----------------------------------------------------------------------------- the rule


def _terms(index: int, deadline: int) -> Terms:
    return Terms(
        settlement_id=index.to_bytes(32, "big"),
        mode=int(Mode.ASSET_ESCROW),
        seller=SELLER,
        buyer=BUYER,
        asset_token=ASSET,
        asset_amount=10,
        payment_token="0x" + "00" * 20,
        payment_amount=0,
        deadline=deadline,
    )


_STEP = st.one_of(
    st.tuples(st.just("create"), st.integers(1, 120)),  # seconds before its deadline
    st.tuples(st.just("end"), st.integers(1, 8)),  # how many open ones a report ends
    st.tuples(st.just("wait"), st.integers(1, 3 * ADMISSION_WINDOW)),
)


@settings(max_examples=60, deadline=None)
@given(floor=st.integers(1, 6), steps=st.lists(_STEP, min_size=1, max_size=60))
def test_the_model_counts_and_refuses_by_the_rule(floor: int, steps: list[tuple[str, int]]) -> None:
    model = EscrowModel(COORDINATOR, admission_floor=floor)
    model.add_token(ASSET, SELLER).balances[checksum_address(SELLER)] = 10**9
    model.approve(ASSET, SELLER, COORDINATOR, 2**255)
    now, made = 10**6, 0
    created: list[Terms] = []
    ended: set[bytes] = set()
    ended_in: dict[int, int] = {}
    for kind, value in steps:
        now += 1
        if kind == "wait":
            now += value
        elif kind == "create":
            made += 1
            terms = _terms(made, now + value)
            open_ = len(created) - len(ended)
            window = now // ADMISSION_WINDOW
            last = ended_in.get(window - 1, 0)
            expect_refused = open_ >= floor and open_ * 2 * ADMISSION_WINDOW >= last * value
            balance = model.token(ASSET).balance_of(SELLER)
            events = model.create_and_lock(SELLER, terms, now)
            if expect_refused:
                assert events == [
                    SettlementRefused(
                        model.coordinator,
                        terms.settlement_id,
                        checksum_address(SELLER),
                        open_,
                        last,
                    )
                ]
                assert model.state_of(terms.settlement_id) == State.NONE
                assert model.token(ASSET).balance_of(SELLER) == balance
            else:
                assert isinstance(events[0], SettlementCreated)
                assert model.state_of(terms.settlement_id) == State.PREPARED
                created.append(terms)
        else:
            chosen = [t for t in created if t.settlement_id not in ended][:value]
            if not chosen:
                continue
            report = Report(
                bytes(32), 1, made * 100 + now % 100,
                tuple(Decision(t.settlement_id, Action.ABORT, t.terms_hash()) for t in chosen),
            )  # fmt: skip
            model.apply_report(report, chosen, now=now)
            ended.update(t.settlement_id for t in chosen)
            ended_in[now // ADMISSION_WINDOW] = ended_in.get(now // ADMISSION_WINDOW, 0) + len(
                chosen
            )
        assert model.open_count == len(created) - len(ended)
        assert model.open_count == sum(
            1 for t in created if model.state_of(t.settlement_id) == State.PREPARED
        )


def test_without_admission_nothing_is_counted_or_refused() -> None:
    model = EscrowModel(COORDINATOR)
    model.add_token(ASSET, SELLER).balances[checksum_address(SELLER)] = 10**9
    model.approve(ASSET, SELLER, COORDINATOR, 2**255)
    for i in range(50):
        events = model.create_and_lock(SELLER, _terms(i + 1, 10**6 + 5), 10**6)
        assert isinstance(events[0], SettlementCreated)
    assert model.open_count == 0 and model.ended_in(10**6 // ADMISSION_WINDOW) == 0


def test_a_negative_floor_is_one_line() -> None:
    raw = {
        "name": "x",
        "mode": "multi-chain-messaging",
        "chains": [{"name": "a", "chain_id": 1, "admission_floor": -1}],
        "bank": {"start": True},
    }
    with pytest.raises(ScenarioError) as caught:
        parse(raw, Path("<test>"))
    assert "chains[0].admission_floor" in str(caught.value)
    assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------- simulated


def _overload(tmp_path: Path, floor: int) -> tuple[dict[str, object], dict[str, int]]:
    """The overload bench's case in the simulated world, at about twice what one report of 6
    decisions per round serves, for 12 s with 10 s deadlines. Every node counted each
    refusal (``NodeStats.refused``, the ``dvpsim_settlements_refused`` metric)."""
    scenario = messaging_scenario("admission", 4, 1, 480, 40.0, 0.2, 120, 0.25, 10, floor)
    scenario = replace(scenario, timing=replace(scenario.timing, max_decisions_per_report=6))
    out = tmp_path / f"floor-{floor}"
    run = SimRun(scenario, out, crypto="fast")
    report = run.run()
    counted = [m.driver.stats.refused for m in run.world.members if m.driver is not None]
    assert counted == [report.summary["refused"]] * 4, counted
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return report.summary, abort_reasons(history, report.summary["aborted_ids"])


@pytest.mark.timeout(120)
def test_overload_refuses_at_once_instead_of_aborting_late(tmp_path: Path) -> None:
    without, reasons_without = _overload(tmp_path, 0)
    with_admission, reasons_with = _overload(tmp_path, 100)
    assert without["aborted"] > 0 and without["refused"] == 0, (without, reasons_without)
    assert with_admission["refused"] > 0
    assert with_admission["aborted"] == 0, reasons_with
    assert with_admission["ended"] == with_admission["settlements"]

    # Goodput (committed per second of the run's window): the refused took no room, and no
    # round went to settlements that expired waiting.
    def goodput(summary: dict[str, object]) -> float:
        return float(summary["committed"]) / float(summary["throughput_window_s"])  # type: ignore[arg-type]

    assert goodput(with_admission) > goodput(without), (with_admission, without)
    assert all(c["status"] == "valid" for c in with_admission["checks"].values())  # type: ignore[attr-defined]
