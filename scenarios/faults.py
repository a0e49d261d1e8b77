"""What a scenario's faults mean, the same in both worlds.

A scenario lists faults (``[[faults]]``: kind, at, duration and the kind's own keys,
``scenarios.schema.Fault``). Node faults stop or kill a member (and restart it after
``duration``); bank faults change the bank's fault settings
(``bank_adapter.faults.FaultConfig``), which the real runner sets through the bank's admin
API and the simulated bank takes directly; network faults become the simulated network's
partitions and link faults (``consensus.network``), and in a real run the same windows
act on the encoded frames each node sends (``node.netfaults``). Bank faults *add up*: a later
fault changes its own settings and keeps the others (a duplicate-callback fault from the
start still holds after an outage began), and a fault with a ``duration`` is taken back
when it ends (an outage carries its own window).

This module computes settings; it never applies them and never reads a clock (times are
parameters). It also writes the history's fault lines (:class:`FaultRecords`), the same in
both worlds.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from consensus.network import LinkFault, Partition
from node.clockfaults import ClockFault
from node.rpcfaults import RpcWindow
from scenarios.history import History
from scenarios.schema import ENDPOINT_FAULTS, NETWORK_FAULTS, Fault, Scenario

__all__ = [
    "BANK_FAULTS",
    "NETWORK_FAULTS",
    "ENDPOINT_FAULTS",
    "NODE_FAULTS",
    "bank_fault_cleared",
    "bank_fault_settings",
    "FaultRecords",
    "fault_ends",
    "fault_record",
    "network_faults",
    "clock_windows",
    "rpc_windows",
    "write_byzantine",
]

NODE_FAULTS = ("kill-node", "stop-node")  # the member crashes (see fault_ends for restarts)
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


#: Faults with no duration of their own: they end as they begin.
INSTANT_FAULTS = ("reorg",)


class FaultRecords:
    """The history's "fault" lines of one run, the same in both worlds: each fault begins
    and ends in the history. A fault ends when it is undone; an instant one (a reorg) ends
    as it begins; one still in force when the run ends (a stopped node, a lying endpoint or
    a clock "to the end", or one whose end the run did not reach) ends with the run, its
    end line marked ``"run_end": true``. After :meth:`close` nothing more begins or ends:
    a fault due after the run's end never acts. Thread-safe: the real runner begins and
    ends faults on a thread of its own."""

    def __init__(self, history: History) -> None:
        self._history = history
        self._open: list[Fault] = []
        self._closed = False
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    def begin(self, fault: Fault, **measured: Any) -> bool:
        """Write ``fault``'s begin line, with what acting on it measured (a reorg's
        replaced blocks); False, and nothing written, once the run ended."""
        with self._lock:
            if self._closed:
                return False
            self._history.write("fault", phase="begin", **fault_record(fault), **measured)
            if fault.kind in INSTANT_FAULTS:
                self._end_line(fault)
            else:
                self._open.append(fault)
            return True

    def end(self, fault: Fault) -> bool:
        """Write ``fault``'s end line; False, and nothing written, if it is not in force."""
        with self._lock:
            if self._closed or fault not in self._open:
                return False
            self._open.remove(fault)
            self._end_line(fault)
            return True

    def close(self) -> None:
        """The run ended: end every fault still in force."""
        with self._lock:
            self._closed = True
            for fault in self._open:
                self._end_line(fault, run_end=True)
            self._open.clear()

    def _end_line(self, fault: Fault, **extra: Any) -> None:
        self._history.write("fault", phase="end", kind=fault.kind, node=fault.node, **extra)


#: How long a reordered message is held back at most (seconds).
REORDER_DELAY_S = 0.2


def fault_record(fault: Fault) -> dict[str, Any]:
    """The fields of the history's "fault" line of a scenario fault (both worlds): kind,
    node, duration and value, then the network keys the fault sets."""
    record: dict[str, Any] = {
        "kind": fault.kind,
        "node": fault.node,
        "duration": fault.duration,
        "value": fault.value,
    }
    if fault.jitter:
        record["jitter"] = fault.jitter
    if fault.side:
        record["side"] = list(fault.side)
    if fault.one_way:
        record["one_way"] = True
    if fault.from_nodes:
        record["from"] = list(fault.from_nodes)
    if fault.to_nodes:
        record["to"] = list(fault.to_nodes)
    if fault.kind.startswith("unsafe-"):
        record["unsafe"] = True
    if fault.kind == "reorg":
        record["leg"] = fault.leg or "A"
    if fault.lie:
        record["lie"] = fault.lie
    if fault.drift:
        record["drift"] = fault.drift
    return record


def _member_windows(
    faults: tuple[Fault, ...], kinds: tuple[str, ...], drive_start: float
) -> dict[int, list[tuple[Fault, float, float]]]:
    """Each member's faults of ``kinds`` with their absolute windows (``drive_start`` plus
    the faults' own times; one without a duration lasts to the end)."""
    windows: dict[int, list[tuple[Fault, float, float]]] = {}
    for fault in faults:
        if fault.kind in kinds:
            start = drive_start + fault.at
            end = start + fault.duration if fault.duration > 0 else math.inf
            # Endpoint and clock faults name a member (its first copy): never "2b".
            windows.setdefault(int(fault.node), []).append((fault, start, end))
    return windows


def rpc_windows(faults: tuple[Fault, ...], drive_start: float) -> dict[int, tuple[RpcWindow, ...]]:
    """Each member's chain-endpoint faults as windows (``_member_windows``)."""
    return {
        node: tuple(RpcWindow(start, end, f.lie) for f, start, end in windows)
        for node, windows in _member_windows(faults, ENDPOINT_FAULTS, drive_start).items()
    }


def _first_copy(label: int | str) -> int:
    if isinstance(label, str):
        raise ValueError(f"{label!r} names a twin copy: give network_faults the endpoints")
    return label


def network_faults(
    faults: tuple[Fault, ...],
    drive_start: float,
    endpoint: Callable[[int | str], int] = _first_copy,
) -> tuple[tuple[Partition, ...], tuple[LinkFault, ...]]:
    """A scenario's network faults as partitions and link faults with absolute windows
    (``drive_start`` plus the faults' own times): what they mean, in one place. Both are
    over the network's endpoints: ``endpoint`` gives the endpoint of a fault's node label
    (``Scenario.endpoint``: a member index is its first copy, "2b" the twin of member 2,
    endpoint n + j for the j-th twinned member)."""
    partitions = []
    links = []
    for fault in faults:
        if fault.kind not in NETWORK_FAULTS:
            continue
        start, end = drive_start + fault.at, drive_start + fault.at + fault.duration
        if fault.kind == "partition":
            side = tuple(endpoint(label) for label in fault.side)
            partitions.append(Partition(start, end, side, fault.one_way))
        elif fault.kind == "isolate":
            partitions.append(Partition(start, end, (endpoint(fault.node),)))
        else:
            rate = {fault.kind: fault.value}
            links.append(
                LinkFault(
                    start,
                    end,
                    frozenset(endpoint(label) for label in fault.from_nodes),
                    frozenset(endpoint(label) for label in fault.to_nodes),
                    drop=rate.get("drop", 0.0),
                    duplicate=rate.get("duplicate", 0.0),
                    delay=rate.get("delay", 0.0) / 1000,
                    jitter=fault.jitter / 1000,
                    reorder=rate.get("reorder", 0.0),
                    reorder_delay=REORDER_DELAY_S,
                )
            )
    return tuple(partitions), tuple(links)


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


def write_byzantine(history: History, scenario: Scenario) -> None:
    """One "byzantine" line per Byzantine member: what it does (``"twins"`` among the
    behaviours for a member that runs as two copies) and its coalition."""
    for group in scenario.byzantine:
        for node in group.nodes:
            history.write(
                "byzantine",
                node=node,
                behaviours=list(group.behaviours),
                lie=group.lie,
                coalition=list(group.nodes),
            )


def clock_windows(
    faults: tuple[Fault, ...], drive_start: float
) -> dict[int, tuple[ClockFault, ...]]:
    """Each member's clock faults (``_member_windows``)."""
    return {
        node: tuple(ClockFault(start, end, f.value, f.drift) for f, start, end in windows)
        for node, windows in _member_windows(faults, ("clock",), drive_start).items()
    }


def rogue_key_refused(scenario: Scenario, who: str) -> str:
    """The one line a run with a rogue key ends with: the file, the key, who refused the
    key and the fix."""
    rogue = scenario.rogue_member()
    assert rogue is not None
    member, key = rogue
    return (
        f"{scenario.path}: {key}: member {member} publishes a rogue BLS key (g*x less the "
        f"other members' keys) without a valid proof of possession, refused by {who}: "
        f"remove rogue_key to run, or give member {member} a key it holds"
    )
