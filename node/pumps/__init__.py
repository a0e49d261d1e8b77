"""Pumps: the real-world side of a node's targets, driven by the node runtime.

A pump watches its target and turns what it sees into node events (chain events with
their confirmations and reorgs, bank statuses and callbacks, a file's facts), reads a
target's state when the driver asks (``ReadLeg``), and hands certificates to the target
(``Transmit``), answering with the result. It decides nothing: what to observe, what to
transmit, when to retry and what to ask the bank about are the driver's choices
(``node.driver``); a pump only moves data between the world and the driver.

- ``evm``: a DvP coordinator on an EVM chain (``node.pumps.evm``);
- ``bank``: the bank payment service (``node.pumps.bank``);
- ``file``: a dry-run target for tests and demos without chains (``node.pumps.file``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.config import NodeConfig
from node.netfaults import PlanFile
from node.pumps.bank import BankPump
from node.pumps.base import Emit, Pump, TargetError
from node.pumps.evm import EvmPump
from node.pumps.file import FilePump

__all__ = ["BankPump", "Emit", "EvmPump", "FilePump", "Pump", "TargetError", "build_pumps"]


def build_pumps(
    config: NodeConfig, artifacts: Mapping[str, Any] | None = None, plan: PlanFile | None = None
) -> dict[str, Pump]:
    """One pump per target of ``config``, by consensus target name. ``artifacts`` are the
    compiled contracts' ABIs (loaded once by the caller; needed for ``evm`` targets);
    ``plan``: the node's fault plan, whose chain-endpoint faults its EVM pumps apply."""
    pumps: dict[str, Pump] = {}
    for target in config.targets:
        if target.kind == "file":
            pumps[target.name] = FilePump(target, config.index)
        elif target.kind == "evm":
            if artifacts is None:
                raise TargetError(f"target {target.name}: the contracts' ABIs were not loaded")
            pumps[target.name] = EvmPump(target, artifacts, plan)
        elif target.kind == "bank":
            pumps[target.name] = BankPump(target)
        else:  # node.config rejects other kinds
            raise TargetError(f"{config.path}: target {target.name}: unknown kind {target.kind!r}")
    return pumps
