"""The workload of a scenario: which settlements a run drives, when, and who does what.

Both worlds drive the same workload from the same scenario file:

- :func:`plan` gives the settlements in order: the i-th arrives ``i / arrival_rate``
  seconds after driving starts, has the id ``sha256("dvpsim/settlement/NAME/SEED/i")``,
  and is meant to fail for a reason of ``settlements.fail`` or not (failing ones are
  spread evenly through the run). A settlement meant to fail for lack of funds is bought
  by the ``poor-buyer`` account when the scenario has one;
- :func:`deadline_after` is the settlement's deadline, in seconds after it arrives (the
  short ``missed_deadline`` for settlements that must expire);
- :func:`terms_for` builds each chain leg's escrow terms from the mode registry;
- :func:`party_steps` says which party sends which call on which chain, in order:
  the seller creates the settlement and locks the asset (or only creates it when the
  seller is the one that never delivers), and in the on-chain payment modes the buyer
  locks the payment, unless the buyer is the one that cannot or does not;
- :func:`check_fits` refuses a workload its accounts cannot pay for, in one line.

This module plans only: it never sends anything and never reads a clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from chain_adapters.model import ZERO_ADDRESS, Terms
from chain_adapters.model import Mode as EscrowMode
from node.modes import MODES
from scenarios.schema import Scenario, ScenarioError

__all__ = [
    "ChainTokens",
    "PartyStep",
    "Planned",
    "check_fits",
    "deadline_after",
    "party_steps",
    "plan",
    "reclaimer",
    "terms_for",
]

#: Failure reasons that make the settlement expire: it gets the short deadline.
EXPIRING = ("deadline", "insufficient-funds")


@dataclass(frozen=True, slots=True)
class Planned:
    index: int
    settlement_id: bytes
    buyer: str  # account name
    fail: str  # "" or the scenario's failure reason
    at: float  # seconds after driving starts


@dataclass(frozen=True, slots=True)
class ChainTokens:
    """The token addresses of one chain leg (None where the mode has none there)."""

    asset: str | None
    payment: str | None


@dataclass(frozen=True, slots=True)
class PartyStep:
    chain: str  # "A" or "B"
    party: str  # account name
    call: str  # "create", "create_and_lock" or "lock_payment"
    label: str  # what the step is in the history: "create", "lock", "lock-payment"


def settlement_id(scenario: Scenario, index: int) -> bytes:
    return hashlib.sha256(
        f"dvpsim/settlement/{scenario.name}/{scenario.seed}/{index}".encode()
    ).digest()


def plan(scenario: Scenario) -> list[Planned]:
    s = scenario.settlements
    reasons: list[str] = []
    for failure in s.fail:
        reasons += [failure.reason] * failure.count
    # Spread the failing settlements evenly through the run.
    fails = [""] * s.count
    if reasons:
        step = s.count / len(reasons)
        for k, reason in enumerate(reasons):
            fails[min(s.count - 1, int(k * step + step / 2))] = reason
    accounts = {a.name for a in scenario.accounts}
    planned = []
    for i, reason in enumerate(fails):
        buyer = (
            "poor-buyer" if reason == "insufficient-funds" and "poor-buyer" in accounts else s.buyer
        )
        planned.append(Planned(i, settlement_id(scenario, i), buyer, reason, i / s.arrival_rate))
    return planned


def deadline_after(scenario: Scenario, item: Planned) -> int:
    """Seconds from the settlement's arrival to its deadline (whole seconds, at least 1)."""
    s = scenario.settlements
    seconds = s.missed_deadline if item.fail in EXPIRING else s.deadline
    return max(1, int(round(seconds)))


def terms_for(
    scenario: Scenario,
    item: Planned,
    addresses: Mapping[str, str],
    tokens: Mapping[str, ChainTokens],
    deadline: int,
) -> dict[str, Terms]:
    """Each chain leg's terms. ``addresses`` maps account names to addresses, ``tokens``
    chain legs to their token addresses, ``deadline`` is a chain timestamp."""
    s = scenario.settlements
    mode = MODES[scenario.mode]
    terms = {}
    for chain, escrow in mode.escrow:
        t = tokens[chain]
        asset_token, asset_amount = t.asset or ZERO_ADDRESS, s.asset_amount
        payment_token, payment_amount = t.payment or ZERO_ADDRESS, s.payment_amount
        if escrow == EscrowMode.PAYMENT_ESCROW:
            asset_token, asset_amount = ZERO_ADDRESS, 0
        if escrow == EscrowMode.ASSET_ESCROW:
            # The payment leg is elsewhere (the bank): no token here, but its amount is
            # part of the terms, so the committee asks for exactly what the escrow promised.
            payment_token = ZERO_ADDRESS
        terms[chain] = Terms(
            item.settlement_id,
            int(escrow),
            addresses[s.seller],
            addresses[item.buyer],
            asset_token,
            asset_amount,
            payment_token,
            payment_amount,
            deadline,
        )
    return terms


def party_steps(scenario: Scenario, item: Planned) -> list[PartyStep]:
    """The parties' calls for one settlement, in the order they are sent (each after the
    previous one is mined)."""
    s = scenario.settlements
    mode = scenario.mode
    buyer_acts = item.fail not in EXPIRING
    steps = []
    if item.fail == "deadline" and mode not in ("single-chain-onchain", "multi-chain-token"):
        steps.append(PartyStep("A", s.seller, "create", "create"))  # the seller never delivers
    else:
        steps.append(PartyStep("A", s.seller, "create_and_lock", "lock"))
    if mode == "single-chain-onchain" and buyer_acts:
        steps.append(PartyStep("A", item.buyer, "lock_payment", "lock-payment"))
    if mode == "multi-chain-token" and buyer_acts:
        steps.append(PartyStep("B", item.buyer, "create_and_lock", "lock-payment"))
    return steps


def reclaimer(scenario: Scenario, buyer: str, terms: Terms) -> str:
    """Who takes a locked leg back in the unsafe variant: whoever locked it (the seller
    for an asset leg, the buyer for a payment leg)."""
    seller_locks = terms.mode in (
        EscrowMode.ASSET_ESCROW,
        EscrowMode.SWAP,
        EscrowMode.BRIDGE_SELLER_SIDE,
    )
    return scenario.settlements.seller if seller_locks else buyer


def check_fits(scenario: Scenario) -> None:
    """Refuse a workload the accounts cannot pay for (ScenarioError, one line): what each
    party locks or pays over the run, when every settlement would commit."""
    s = scenario.settlements
    accounts = {a.name: a for a in scenario.accounts}
    on_bank = MODES[scenario.mode].uses_bank
    need: dict[tuple[str, str], int] = {}
    for item in plan(scenario):
        for step in party_steps(scenario, item):
            if step.call == "create":
                continue
            if step.party == s.seller:
                key = (step.party, "asset")
                need[key] = need.get(key, 0) + s.asset_amount
            else:
                key = (step.party, "payment")
                need[key] = need.get(key, 0) + s.payment_amount
        if on_bank and item.fail not in EXPIRING:
            key = (item.buyer, "bank_balance")
            need[key] = need.get(key, 0) + s.payment_amount
    for (name, kind), amount in sorted(need.items()):
        has = getattr(accounts[name], kind)
        if has < amount:
            raise ScenarioError(
                f"{scenario.path}: settlements: account {name!r} holds {kind} = {has} but "
                f"{s.count} settlements need {amount}: raise accounts.{kind} of {name!r} "
                f"or lower settlements.count"
            )
