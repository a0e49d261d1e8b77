"""What a scenario's faults mean, the same in both worlds.

A scenario lists faults (``[[faults]]``: kind, at, node, duration, value). Node faults
stop or kill a member (and restart it after ``duration``); bank faults change the bank's
fault settings (``bank_adapter.faults.FaultConfig``), which the real runner sets through
the bank's admin API and the simulated bank takes directly. Bank faults *add up*: a later
fault changes its own settings and keeps the others (a duplicate-callback fault from the
start still holds after an outage began), and a fault with a ``duration`` is taken back
when it ends (an outage carries its own window).

This module computes settings; it never applies them and never reads a clock (times are
parameters).
"""

from __future__ import annotations

from typing import Any

from scenarios.schema import Fault

__all__ = [
    "BANK_FAULTS",
    "NODE_FAULTS",
    "bank_fault_cleared",
    "bank_fault_settings",
    "fault_ends",
    "fault_record",
]

NODE_FAULTS = ("kill-node", "stop-node")
BANK_FAULTS = ("bank-outage", "bank-latency", "bank-error-rate", "bank-duplicate-callbacks")

_KEYS = {
    "bank-latency": ("latency_ms",),
    "bank-error-rate": ("error_rate",),
    "bank-duplicate-callbacks": ("duplicate_callback_rate",),
    "bank-outage": ("outage_start_s", "outage_end_s"),
}


def fault_ends(fault: Fault) -> bool:
    """Whether a fault is undone after its duration (a stopped node stays down)."""
    return fault.duration > 0 and fault.kind != "stop-node"


def fault_record(fault: Fault) -> dict[str, Any]:
    """The fields of the history's "fault" line of a scenario fault (both worlds)."""
    return {
        "kind": fault.kind,
        "node": fault.node,
        "duration": fault.duration,
        "value": fault.value,
    }


def bank_fault_settings(
    current: dict[str, Any], fault: Fault, bank_now_s: float, seed: int
) -> dict[str, Any]:
    """The bank's fault settings once ``fault`` begins at the bank's time ``bank_now_s``."""
    settings = dict(current)
    settings["seed"] = seed
    if fault.kind == "bank-latency":
        settings["latency_ms"] = int(fault.value)
    elif fault.kind == "bank-error-rate":
        settings["error_rate"] = float(fault.value)
    elif fault.kind == "bank-duplicate-callbacks":
        settings["duplicate_callback_rate"] = float(fault.value or 1.0)
    elif fault.kind == "bank-outage":
        settings["outage_start_s"] = bank_now_s
        settings["outage_end_s"] = bank_now_s + fault.duration
    return settings


def bank_fault_cleared(current: dict[str, Any], fault: Fault) -> dict[str, Any]:
    """The settings once ``fault`` (one with a duration) ends."""
    return {k: v for k, v in current.items() if k not in _KEYS.get(fault.kind, ())}
