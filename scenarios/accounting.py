"""Accounting shared by both worlds: when a settlement has ended, the final-state audit,
and the run's summary.

A runner (real or simulated) tracks its settlements as :class:`Tracked` and, at the end,
reads the final state of its chains and bank through :class:`Ledgers`, a read-only view
each world implements over its own parts (JSON-RPC and the bank's API in real mode, the
escrow models and the bank's storage in sim). Everything else is here, once:

- :func:`ended`: a settlement has ended when none of its legs is still open at its
  target. A leg that exists at its target (a created escrow, a bank instruction) must
  have applied a decision; a leg that never came to exist counts as ended only once the
  deadline passed and some other leg is final (nothing can come for it any more). A
  created but unlocked escrow is open: the committee's ABORT for it is still on its way;
- :func:`run_state`: turns the final state into the checkers' ``RunState``: each
  settlement's leg states and value movements, total supplies before and after, every
  party's expected against actual balances, every certificate seen (the members'
  sightings a runner gathered with :func:`sighting`, and each decision a chain or the
  bank applied) and the legs really prepared at their targets;
- :func:`summary`: the figures of ``summary.json`` (:func:`write_summary`), and
  :class:`RunReport`, what a run hands back.

This module never talks to a chain or the bank itself and never reads a clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from chain_adapters.model import State, Terms
from consensus.config import default_schedule
from node.driver import BANK_POLL_INTERVAL
from node.legs import bank_account
from node.modes import BANK, MODES
from scenarios.checks import (
    LegState,
    LivenessWindow,
    Movement,
    RunState,
    SeenCertificate,
    SettlementOutcome,
    Verdict,
    expectation_differences,
    passed,
)
from scenarios.history import plain
from scenarios.schema import Scenario

__all__ = [
    "END_POLL_S",
    "HEARTBEAT_S",
    "Ledgers",
    "RunReport",
    "Tracked",
    "chain_leg_state",
    "bank_leg_state",
    "ended",
    "heal_at",
    "leg_states",
    "liveness_bound",
    "percentile",
    "run_state",
    "short_id",
    "sighting",
    "summary",
    "supplies",
    "throughput",
    "write_summary",
]

_MOVEMENT_OF_EVENT: Final = {
    "SettlementCommitted": Movement.RELEASE,
    "SettlementAborted": Movement.REFUND,
    "SettlementExpired": Movement.REFUND,
}
_OPEN_ON_CHAIN: Final = frozenset(
    {State.CREATED, State.ASSET_LOCKED, State.PAYMENT_LOCKED, State.PREPARED}
)


#: Both runners: empty blocks keep an automining chain's time moving this often.
HEARTBEAT_S: Final = 1.0
#: Both runners: how often they read every leg to see whether every settlement ended.
END_POLL_S: Final = 0.5
#: A watcher's poll of its chain endpoint (``node.pumps.evm``; the simulated world's too).
WATCH_POLL_S: Final = 0.1
#: Per certified step, for what the timing model leaves out: processing, RPC and queueing.
PROCESSING_S: Final = 1.0


def liveness_bound(scenario: Scenario) -> float:
    """Seconds within which, once faults have healed (or its deadline passed), a
    settlement must end with at most f members faulty. Per certified step of the mode
    (PREPARE where a leg needs one, COMMIT, and COMMIT again for a leg that waits for
    another): a round (DeltaRound + DeltaGrace), the transmission stages ((stages - 1) *
    DeltaStage), seeing the previous step (a block past the confirmations, a watcher poll,
    a bank poll, twice any bank latency) and the processing allowance; plus f + 1 leaders
    that time out (DeltaProgress each) and a resend (DeltaResend) before an honest one
    leads, a block to pass the deadline, and the runner's end poll. docs/ARCHITECTURE.md
    gives the same formula."""
    mode = MODES[scenario.mode]
    timing = scenario.timing
    steps = (
        any(leg.needs_prepare_request for leg in mode.legs)
        + 1
        + any(leg.after is not None for leg in mode.legs)
    )
    block = max((c.block_time if c.block_time > 0 else HEARTBEAT_S) for c in scenario.chains)
    confirmations = max(c.confirmations for c in scenario.chains)
    latency = max(
        (f.value / 1000 for f in scenario.faults if f.kind == "bank-latency"), default=0.0
    )
    seeing = (confirmations + 1) * block + WATCH_POLL_S
    if mode.uses_bank:
        seeing += BANK_POLL_INTERVAL + 2 * latency
    stages = len(default_schedule(scenario.committee.n))
    step = (
        timing.delta_round
        + timing.delta_grace
        + (stages - 1) * timing.delta_stage
        + seeing
        + PROCESSING_S
    )
    pacemaker = (scenario.committee.f + 1) * timing.delta_progress + timing.delta_resend
    return round(steps * step + pacemaker + block + END_POLL_S, 3)


def heal_at(scenario: Scenario, drive_start: float) -> float:
    """Run seconds when the last fault ended: a fault with a duration ends after it; a
    stopped node stays down (it counts toward f) while the rest heals at once; a reorg
    is over when it happened; any other
    fault without a duration never ends (inf: liveness then judges only whether every
    settlement ended)."""
    ends = [0.0]
    for fault in scenario.faults:
        if fault.kind in ("stop-node", "reorg"):
            ends.append(fault.at)  # a stopped node counts toward f; a reorg is instant
        elif fault.duration > 0:
            ends.append(fault.at + fault.duration)
        else:
            return float("inf")
    return drive_start + max(ends)


@dataclass
class Tracked:
    """One settlement a run drives, and what the runner saw of it."""

    index: int
    settlement_id: bytes
    buyer: str  # account name
    fail: str  # "" or the scenario's failure reason
    terms: dict[str, Terms] = field(default_factory=dict)  # chain leg -> its terms
    locked_at: float | None = None  # run seconds: the asset lock was mined
    released_at: float | None = None  # run seconds: the asset leg ended
    final: dict[str, LegState] = field(default_factory=dict)
    deadline_at: float | None = None  # run seconds: its deadline (set with its terms)
    ended_at: float | None = None  # run seconds: the runner saw every leg end
    refused_at: float | None = None  # run seconds: the asset chain's admission refused it

    @property
    def deadline(self) -> int | None:
        return next(iter(self.terms.values())).deadline if self.terms else None

    def record(self, deadline: int) -> dict[str, Any]:
        """The fields of the history's "settlement" line for this settlement."""
        return {
            "index": self.index,
            "settlement": self.settlement_id,
            "fail": self.fail,
            "buyer": self.buyer,
            "deadline": deadline,
        }


class Ledgers(Protocol):
    """The final state of a run's chains and bank, read-only."""

    def chain_states(self, leg: str, ids: Sequence[bytes]) -> list[State]: ...

    def coordinator(self, leg: str) -> str: ...

    def token(self, leg: str, kind: str) -> str | None:
        """The address of the ``kind`` ("asset" or "payment") token on ``leg``, if any."""

    def balance(self, leg: str, token: str, holder: str) -> int: ...

    def coordinator_events(self) -> Mapping[tuple[str, bytes], Sequence[str]]:
        """Per (leg, settlement id): the names of SettlementCommitted, SettlementAborted
        and SettlementExpired events, in chain order."""

    def report_gas(self) -> Sequence[int]:
        """Gas of every transaction that applied a certified report."""

    def bank_states(self, ids: Sequence[bytes]) -> Mapping[bytes, str | None]:
        """Each settlement's instruction state at the bank (None: no instruction)."""

    def prepared_legs(self) -> set[tuple[str, bytes]]:
        """(leg target, settlement id) of every leg really prepared at its target: an escrow
        a ``LegLocked`` event left PREPARED (in the final chain), a payment the bank held."""

    def bank_balance(self, account_id: str) -> int: ...


# --------------------------------------------------------------------------- leg states


def chain_leg_state(state: State) -> LegState:
    if state == State.COMMITTED:
        return LegState.COMMITTED
    if state in (State.ABORTED, State.EXPIRED):
        return LegState.ABORTED
    if state in (State.ASSET_LOCKED, State.PAYMENT_LOCKED, State.PREPARED):
        return LegState.PREPARED
    return LegState.NONE


def bank_leg_state(state: str | None) -> LegState:
    return {
        "PREVALIDATED": LegState.PREPARED,
        "EXECUTED": LegState.COMMITTED,
        "CANCELLED": LegState.ABORTED,
    }.get(state or "", LegState.NONE)


@dataclass(frozen=True, slots=True)
class RawLegs:
    """The raw state of each leg of some settlements: chain states and bank states."""

    chains: dict[str, dict[bytes, State]]
    bank: dict[bytes, str | None] | None


def read_legs(scenario: Scenario, ledgers: Ledgers, ids: Sequence[bytes]) -> RawLegs:
    mode = MODES[scenario.mode]
    chains = {
        leg: dict(zip(ids, ledgers.chain_states(leg, ids), strict=True)) for leg in mode.chains
    }
    bank = dict(ledgers.bank_states(ids)) if mode.uses_bank else None
    return RawLegs(chains, bank)


def leg_states(scenario: Scenario, raw: RawLegs, sid: bytes) -> dict[str, LegState]:
    mode = MODES[scenario.mode]
    legs = {}
    for target in mode.targets:
        if target == BANK:
            assert raw.bank is not None
            legs[target] = bank_leg_state(raw.bank.get(sid))
        else:
            legs[target] = chain_leg_state(raw.chains[target].get(sid, State.NONE))
    return legs


def ended(scenario: Scenario, item: Tracked, raw: RawLegs, chain_time: int) -> bool:
    """Whether ``item`` has ended (module docstring)."""
    if not item.terms:
        return False
    if item.refused_at is not None:
        return True  # admission refused it: nothing was recorded or locked
    sid = item.settlement_id
    open_leg = False
    final_leg = False
    for leg, states in raw.chains.items():
        state = states.get(sid, State.NONE)
        open_leg |= state in _OPEN_ON_CHAIN
        final_leg |= state in (State.COMMITTED, State.ABORTED, State.EXPIRED)
        del leg
    if raw.bank is not None:
        bank = raw.bank.get(sid)
        open_leg |= bank == "PREVALIDATED"
        final_leg |= bank in ("EXECUTED", "CANCELLED", "REJECTED")
    if open_leg:
        return False
    deadline = item.deadline or 0
    if final_leg:
        every_leg_exists = all(
            raw.chains[leg].get(sid, State.NONE) != State.NONE for leg in raw.chains
        )
        return every_leg_exists or chain_time > deadline
    return chain_time > deadline + 2  # nothing was ever created: nothing can come


# --------------------------------------------------------------------------- final state


def holders(ledgers: Ledgers, leg: str, parties: Mapping[str, str]) -> list[str]:
    """Everyone who can hold tokens on a chain: the parties and that chain's coordinator."""
    return [*parties.values(), ledgers.coordinator(leg)]


def supplies(
    scenario: Scenario,
    ledgers: Ledgers,
    parties: Mapping[str, str],
    tracked: Sequence[Tracked],
) -> dict[str, int]:
    """Every token's total over all holders, and the bank's total over the parties.

    In the token-transfer mode an asset lives on both chains: native where it was issued,
    bridged where COMMIT minted it. Its supply is then what circulates natively plus what
    is bridged, where the native units locked as backing of committed settlements no
    longer count: bridged value without backing (or the reverse) shows.
    """
    mode = MODES[scenario.mode]
    totals: dict[str, int] = {}
    if scenario.mode == "multi-chain-token":
        s = scenario.settlements
        ids = [t.settlement_id for t in tracked if t.terms]
        committed = {
            leg: sum(1 for state in ledgers.chain_states(leg, ids) if state == State.COMMITTED)
            for leg in mode.chains
        }
        a_asset, a_payment = ledgers.token("A", "asset"), ledgers.token("A", "payment")
        b_asset, b_payment = ledgers.token("B", "asset"), ledgers.token("B", "payment")
        assert a_asset and a_payment and b_asset and b_payment
        owners = list(parties.values())
        totals["asset (A+B)"] = (
            sum(ledgers.balance("A", a_asset, h) for h in holders(ledgers, "A", parties))
            - s.asset_amount * committed["A"]
            + sum(ledgers.balance("B", b_asset, h) for h in owners)
        )
        totals["payment (A+B)"] = (
            sum(ledgers.balance("B", b_payment, h) for h in holders(ledgers, "B", parties))
            - s.payment_amount * committed["B"]
            + sum(ledgers.balance("A", a_payment, h) for h in owners)
        )
        return totals
    for leg in mode.chains:
        for kind in ("asset", "payment"):
            token = ledgers.token(leg, kind)
            if token is None:
                continue
            totals[f"{kind}@{leg}"] = sum(
                ledgers.balance(leg, token, h) for h in holders(ledgers, leg, parties)
            )
    if mode.uses_bank:
        totals["bank"] = sum(ledgers.bank_balance(bank_account(a)) for a in parties.values())
    return totals


def short_id(sid: bytes) -> str:
    """A settlement's id as verdicts and their witnesses name it."""
    return "0x" + sid.hex()[:16]


def sighting(record: Mapping[str, Any], at: float) -> SeenCertificate:
    """A member's sighting of a certificate, from its history record ("certified": node,
    target, epoch, round, decisions as [settlement id hex, action], signers' bitmap; a
    twin copy's record says "twin": it is "node 2b"), at run second ``at``."""
    signers = int(record.get("signers", 0))
    return SeenCertificate(
        f"node {record['node']}{'b' if record.get('twin') else ''}",
        round(at, 6),
        str(record["target"]),
        int(record["epoch"]),
        int(record["round"]),
        tuple(
            (short_id(bytes.fromhex(str(sid)[2:])), str(action))
            for sid, action in record["decisions"]
        ),
        tuple(i for i in range(signers.bit_length()) if signers >> i & 1),
    )


#: The decision each coordinator event applied (an unsafe self-refund applied none).
_DECISION_OF_EVENT: Final = {"SettlementCommitted": "COMMIT", "SettlementAborted": "ABORT"}
#: The decision each final bank state applied.
_DECISION_OF_BANK_STATE: Final = {"EXECUTED": "COMMIT", "CANCELLED": "ABORT"}


def run_state(
    scenario: Scenario,
    ledgers: Ledgers,
    parties: Mapping[str, str],
    tracked: Sequence[Tracked],
    supply_before: Mapping[str, int],
    seen: Sequence[SeenCertificate] | None = None,
    timed: tuple[float, float] | None = None,
) -> RunState:
    """What the checks judge, read from ``ledgers`` once the run is over. Also records
    every settlement's final leg states (ended or not) on it, for the summary. ``seen``:
    the certificates members accepted (None: not gathered; the certificate checks then
    say unknown). ``timed``: (drive start, run end) in run seconds, for liveness."""
    s = scenario.settlements
    mode = MODES[scenario.mode]
    ids = [t.settlement_id for t in tracked]
    raw = read_legs(scenario, ledgers, ids)
    events = ledgers.coordinator_events()
    outcomes = []
    for item in tracked:
        legs = leg_states(scenario, raw, item.settlement_id)
        if item.terms:
            item.final = legs
        movements: list[tuple[str, Movement]] = []
        for leg in mode.chains:
            for name in events.get((leg, item.settlement_id), ()):
                movements.append((leg, _MOVEMENT_OF_EVENT[name]))
        if BANK in legs and legs[BANK] is LegState.COMMITTED:
            movements.append((BANK, Movement.PAYMENT))
        asset_to_buyer = (
            s.asset_amount
            if legs.get(mode.asset_leg) is LegState.COMMITTED
            and (mode.asset_leg, Movement.REFUND) not in movements
            else 0
        )
        paid = s.payment_amount if legs.get(mode.payment_leg) is LegState.COMMITTED else 0
        outcomes.append(
            SettlementOutcome(
                short_id(item.settlement_id),
                legs,
                asset_to_buyer,
                paid,
                s.asset_amount,
                s.payment_amount,
                tuple(movements),
                item.deadline_at,
                item.ended_at,
            )
        )
    before = dict(supply_before)
    after = supplies(scenario, ledgers, parties, tracked)
    _expected_balances(scenario, ledgers, parties, tracked, outcomes, raw, before, after)
    certificates = None
    if seen is not None:
        certificates = (*seen, *_applied(events, raw))
    prepared = frozenset((leg, short_id(sid)) for leg, sid in ledgers.prepared_legs())
    liveness = None
    if timed is not None:
        drive_start, run_end = timed
        liveness = LivenessWindow(heal_at(scenario, drive_start), liveness_bound(scenario), run_end)
    return RunState(tuple(outcomes), before, after, certificates, prepared, liveness)


def _applied(
    events: Mapping[tuple[str, bytes], Sequence[str]], raw: RawLegs
) -> list[SeenCertificate]:
    """Every decision a chain or the bank applied, as a sighting of its certificate."""
    applied = [
        SeenCertificate(f"chain {leg}", None, leg, None, None, ((short_id(sid), decision),))
        for (leg, sid), names in sorted(events.items())
        for name in names
        if (decision := _DECISION_OF_EVENT.get(name)) is not None
    ]
    for sid, state in sorted((raw.bank or {}).items()):
        decision = _DECISION_OF_BANK_STATE.get(state or "")
        if decision is not None:
            applied.append(
                SeenCertificate("bank", None, BANK, None, None, ((short_id(sid), decision),))
            )
    return applied


#: Escrow states in which the asset, or the on-chain payment, sits in the escrow.
_HOLDS_ASSET: Final = frozenset({State.ASSET_LOCKED, State.PREPARED})
_HOLDS_PAYMENT: Final = frozenset({State.PAYMENT_LOCKED, State.PREPARED})


def _expected_balances(
    scenario: Scenario,
    ledgers: Ledgers,
    parties: Mapping[str, str],
    tracked: Sequence[Tracked],
    outcomes: Sequence[SettlementOutcome],
    raw: RawLegs,
    expected: dict[str, int],
    actual: dict[str, int],
) -> None:
    """Each party's final balances must be its opening balances moved by exactly the
    committed settlements, less what is still locked in an escrow at the end (a double
    payment or release shows here)."""
    s = scenario.settlements
    mode = MODES[scenario.mode]
    for account in scenario.accounts:
        name = account.name
        address = parties[name]
        asset_delta = pay_delta = 0
        for item in tracked:
            # An open settlement's locked legs: the value sits in the escrow.
            asset_state = raw.chains.get(mode.asset_leg, {}).get(item.settlement_id)
            payment_state = raw.chains.get(mode.payment_leg, {}).get(item.settlement_id)
            if name == s.seller and asset_state in _HOLDS_ASSET:
                asset_delta -= s.asset_amount
            if name == item.buyer and payment_state in _HOLDS_PAYMENT:
                pay_delta -= s.payment_amount
        for item, outcome in zip(tracked, outcomes, strict=True):
            if not (outcome.asset_to_buyer > 0 or outcome.paid_to_seller > 0):
                continue
            if name == s.seller:
                asset_delta -= outcome.asset_to_buyer
                pay_delta += outcome.paid_to_seller
            elif name == item.buyer:
                asset_delta += outcome.asset_to_buyer
                pay_delta -= outcome.paid_to_seller
        pairs: list[tuple[str, int, int]] = []
        if scenario.mode == "multi-chain-token":
            # The asset and the payment each exist on both chains (locked there, minted here).
            for kind, opening, delta in (
                ("asset", account.asset, asset_delta),
                ("payment", account.payment, pay_delta),
            ):
                have = 0
                for leg in mode.chains:
                    token = ledgers.token(leg, kind)
                    if token is not None:
                        have += ledgers.balance(leg, token, address)
                pairs.append((f"{name}: {kind}@A+B", opening + delta, have))
        else:
            asset = ledgers.token("A", "asset")
            assert asset is not None
            pairs.append(
                (
                    f"{name}: asset@A",
                    account.asset + asset_delta,
                    ledgers.balance("A", asset, address),
                )
            )
            payment = ledgers.token("A", "payment")
            if payment is not None:
                pairs.append(
                    (
                        f"{name}: payment@A",
                        account.payment + pay_delta,
                        ledgers.balance("A", payment, address),
                    )
                )
            if mode.uses_bank:
                pairs.append(
                    (
                        f"{name}: bank",
                        account.bank_balance + pay_delta,
                        ledgers.bank_balance(bank_account(address)),
                    )
                )
        for key, want, have in pairs:
            expected[key], actual[key] = want, have


# --------------------------------------------------------------------------- summary


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def throughput(tracked: Sequence[Tracked]) -> tuple[float | None, float | None]:
    """Ended settlements per second from the first lock to the last release, and that
    window in seconds."""
    done = [t for t in tracked if t.locked_at is not None and t.released_at is not None]
    if len(done) < 2:
        return None, None
    span = max(t.released_at or 0.0 for t in done) - min(t.locked_at or 0.0 for t in done)
    if span <= 0:
        return None, None
    return round(len(done) / span, 1), round(span, 1)


def balance_key(key: str) -> dict[str, str]:
    """A party's balance key ("buyer: asset@A", "seller: payment@A+B", "buyer: bank") as
    the summary's structured fields: the party, the asset ("asset", "payment") and the
    place it is held (a chain leg, "A+B" for both chains, or "bank", in payment units)."""
    party, _, holding = key.partition(": ")
    if holding == "bank":
        return {"party": party, "asset": "payment", "place": "bank"}
    asset, _, place = holding.partition("@")
    return {"party": party, "asset": asset, "place": place}


def summary(
    scenario: Scenario,
    world: str,
    state: RunState,
    verdicts: Sequence[Verdict],
    tracked: Sequence[Tracked],
    ledgers: Ledgers,
    *,
    messages: float,
    party_gas: int,
    observation_largest_bytes: int,
    observation_left_out: int,
    queue: tuple[int, float] = (0, 0.0),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``summary.json``: the same keys in both worlds (``extra`` adds world-only ones).
    ``queue``: the most settlements any node had queued behind the ones it served, and
    the longest any was first in that line (backpressure, ``node.driver``)."""
    mode = MODES[scenario.mode]
    committed = sum(1 for o in state.settlements if set(o.legs.values()) == {LegState.COMMITTED})
    # Aborted: nothing committed and nothing left prepared, unless admission refused it
    # (then nothing ever began: "refused").
    aborted_ids = sorted(
        "0x" + t.settlement_id.hex()
        for t, o in zip(tracked, state.settlements, strict=True)
        if LegState.COMMITTED not in o.legs.values()
        and LegState.PREPARED not in o.legs.values()
        and t.refused_at is None
    )
    aborted = len(aborted_ids)
    ended_count = sum(1 for t in tracked if t.final and LegState.PREPARED not in t.final.values())
    # Settlements the scenario asked for that did not end (never driven ones included).
    open_count = max(len(tracked), scenario.settlements.count) - ended_count
    differences = expectation_differences(scenario.expect, verdicts, open_count)
    latencies = [
        (t.released_at or 0.0) - (t.locked_at or 0.0)
        for t in tracked
        if t.locked_at is not None
        and t.released_at is not None
        and t.final.get(mode.asset_leg) is LegState.COMMITTED
    ]
    count = max(1, len(tracked))
    rate, window = throughput(tracked)
    result: dict[str, Any] = {
        "scenario": scenario.name,
        "mode": scenario.mode,
        "world": world,
        "seed": scenario.seed,
        "n": scenario.committee.n,
        "f": scenario.committee.f,
        "t": scenario.committee.t,
        "settlements": len(tracked),
        "ended": ended_count,
        "committed": committed,
        "aborted": aborted,
        "refused": sum(1 for t in tracked if t.refused_at is not None),
        "expected_to_fail": sum(1 for t in tracked if t.fail),
        "committed_ids": sorted(
            "0x" + t.settlement_id.hex()
            for t, o in zip(tracked, state.settlements, strict=True)
            if set(o.legs.values()) == {LegState.COMMITTED}
        ),
        "aborted_ids": aborted_ids,
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p99_s": percentile(latencies, 0.99),
        "gas_per_settlement_reports": sum(ledgers.report_gas()) // count,
        "gas_per_settlement_parties": party_gas // count,
        "messages_per_settlement": round(messages / count, 1),
        "observation_largest_bytes": observation_largest_bytes,
        "observation_left_out": observation_left_out,
        "queued_peak": queue[0],
        "queued_longest_s": round(queue[1], 3),
        "throughput_per_s": rate,
        "throughput_window_s": window,
        "checks": {v.invariant: {"status": v.status, "witness": v.witness} for v in verdicts},
        "balances": [
            {
                **balance_key(key),
                "expected": state.supply_before[key],
                "actual": state.supply_after.get(key),
            }
            for key in sorted(state.supply_before)
            if ": " in key
        ],
        "passed": passed(verdicts) and open_count == 0,
        "expect": list(scenario.expect) or "pass",
        "expectation_met": not differences,
        "expectation_differences": list(differences),
    }
    if extra:
        result.update(extra)
    return result


def write_summary(out_dir: Path, summary: Mapping[str, Any]) -> None:
    """``out_dir/summary.json``, indented, bytes as 0x-hex and enums by name."""
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=plain))


@dataclass
class RunReport:
    """What a run hands back: where it wrote, the checks' verdicts and its summary."""

    scenario: str
    mode: str
    out_dir: Path
    verdicts: tuple[Verdict, ...]
    summary: dict[str, Any]

    @property
    def ok(self) -> bool:
        """The run showed what its scenario expects (``expect``: by default every check
        valid and every settlement ended; the summary's "expectation_met")."""
        return bool(self.summary["expectation_met"])
