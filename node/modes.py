"""The settlement modes: the one registry every layer reads (docs/ARCHITECTURE.md).

A mode says which legs a settlement has, where each lives, in which order the legs are
prepared and committed, and which escrow mode each chain's coordinator holds its leg in.
The DvP rules (``node.dvp``), node configs (``node.config``), scenario files
(``scenarios.schema``), workload planning and accounting (``scenarios``) all take their
answers from here, so a mode is added or changed in exactly one place.

This module holds data only: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from chain_adapters.model import Mode as EscrowMode

__all__ = ["MODES", "SCENARIO_MODES", "BANK", "Leg", "SettlementMode", "mode"]

#: The target name of the bank's leg; every other leg lives on a chain ("A", "B").
BANK: Final = "bank"


@dataclass(frozen=True, slots=True)
class Leg:
    """One leg of a settlement: where it lives and how the committee drives it."""

    target: str  # "A", "B" (a chain's coordinator) or "bank"
    needs_prepare_request: bool = False  # the bank: held only when a certified PREPARE asks
    after: str | None = None  # COMMIT reaches this leg only once `after` has COMMITTED


@dataclass(frozen=True, slots=True)
class SettlementMode:
    name: str
    summary: str
    legs: tuple[Leg, ...]  # in preparation order
    escrow: tuple[tuple[str, EscrowMode], ...]  # chain leg -> the coordinator's escrow mode
    asset_leg: str  # where the buyer receives the asset
    payment_leg: str  # where the seller is paid
    scenario: bool = True  # runnable from a scenario file

    @property
    def targets(self) -> tuple[str, ...]:
        """Leg targets in preparation order, e.g. ("A", "bank")."""
        return tuple(leg.target for leg in self.legs)

    @property
    def chains(self) -> tuple[str, ...]:
        """The chain legs ("A", "B"), in order; the bank is not a chain."""
        return tuple(target for target, _ in self.escrow)

    @property
    def uses_bank(self) -> bool:
        return BANK in self.targets

    def escrow_mode(self, chain: str) -> EscrowMode:
        return dict(self.escrow)[chain]


_ALL = (
    SettlementMode(
        "single-chain-onchain",
        "asset and payment escrowed in one coordinator; COMMIT swaps both",
        # One coordinator holds both legs: one COMMIT swaps.
        (Leg("A"),),
        (("A", EscrowMode.SWAP),),
        asset_leg="A",
        payment_leg="A",
    ),
    SettlementMode(
        "single-chain-bank",
        "asset on chain, payment hold at the bank, both committed in one round",
        # RTGS style: once the hold is in place, one round commits both legs at once.
        (Leg("A"), Leg(BANK, needs_prepare_request=True)),
        (("A", EscrowMode.ASSET_ESCROW),),
        asset_leg="A",
        payment_leg=BANK,
    ),
    SettlementMode(
        "multi-chain-messaging",
        "the reference case: asset escrow on chain A, payment at the bank, paid before release",
        (Leg("A", after=BANK), Leg(BANK, needs_prepare_request=True)),
        (("A", EscrowMode.ASSET_ESCROW),),
        asset_leg="A",
        payment_leg=BANK,
    ),
    SettlementMode(
        "multi-chain-messaging-evm",
        "asset escrow on chain A, payment escrow on chain B; only instructions cross",
        (Leg("A"), Leg("B")),
        (("A", EscrowMode.ASSET_ESCROW), ("B", EscrowMode.PAYMENT_ESCROW)),
        asset_leg="A",
        payment_leg="B",
        scenario=False,  # the runners do not drive it yet; nodes support it
    ),
    SettlementMode(
        "multi-chain-token",
        "two chains: lock on the source chain, mint on the destination chain",
        (Leg("A"), Leg("B")),
        (("A", EscrowMode.BRIDGE_SELLER_SIDE), ("B", EscrowMode.BRIDGE_BUYER_SIDE)),
        asset_leg="B",
        payment_leg="A",
    ),
)

#: Every mode a node can run, by name.
MODES: Final[Mapping[str, SettlementMode]] = {m.name: m for m in _ALL}
#: The modes a scenario file may name (the runners can drive them).
SCENARIO_MODES: Final = tuple(m.name for m in _ALL if m.scenario)


def mode(name: str) -> SettlementMode:
    return MODES[name]
