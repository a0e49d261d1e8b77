"""`dvpsim bench backlog`: CPU per consensus round at a backlog of 100 and of 10,000 open
settlements (the overload rule: a round's cost does not grow with the backlog).

Four node drivers (``node.driver.NodeDriver``, n = 4, f = 1, the reference mode, real
BLS and Ed25519) in one process, messages handed over at once, timers on a virtual
clock. Every driver is told of the same B settlements, created and locked on the asset
chain in B different log positions; no bank answers, so every round serves the same
oldest settlements again (each leader observes, proposes, certifies the PREPAREs). A new
block arrives before every round and tells of the oldest 100 again (their locks), as the
targets' answers would under load, so every member builds its observation anew and a
driver that parks decided settlements (``SettlementBook.park``) serves them again. A
round serves at most ``max_decisions_per_report`` = 100 settlements, so both backlogs
give rounds of the same content: only the queue behind them differs.

Figures: CPU seconds (``time.process_time``, all four drivers together) per certified
round, after two warm-up rounds, and the ratio of the two backlogs (target: within 1.2).
Building the backlog is not timed. Nothing is asserted here; the figures are printed.

This module must never change the drivers' rules: it only feeds them events.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from chain_adapters.model import Leg as EscrowLeg
from chain_adapters.model import LegLocked, Mode, SettlementCreated, State, Terms, terms_hash
from consensus.events import Broadcast, Certified, MessageReceived, Send, Start
from consensus.harness import simulated_committee
from consensus.safety import PersistedState
from node.driver import ChainUpdate, DriverConfig, NodeDriver, SetTimer, TargetSpec, TimerFired
from node.legs import EscrowRecord

__all__ = ["measure", "run"]

COORDINATOR: Final = "0x" + "c0" * 20
SELLER, BUYER, TOKEN, ZERO = ("0x" + b * 20 for b in ("11", "22", "33", "00"))
SERVED_PER_ROUND: Final = 100
TARGET_RATIO: Final = 1.2


def _records(count: int) -> tuple[EscrowRecord, ...]:
    """``count`` settlements created and locked, each in a log position of its own."""
    positioned = "position" in {f.name for f in dataclasses.fields(EscrowRecord)}
    out = []
    for i in range(count):
        sid = i.to_bytes(32, "big")
        t = Terms(sid, int(Mode.ASSET_ESCROW), SELLER, BUYER, TOKEN, 10, ZERO, 500, 10**10)
        events = (
            SettlementCreated(COORDINATOR, sid, terms_hash(t), SELLER, t),
            LegLocked(COORDINATOR, sid, EscrowLeg.ASSET, SELLER, TOKEN, 10, State.PREPARED),
        )
        for k, event in enumerate(events):
            where = {"position": (1 + i // 50, 2 * i + k)} if positioned else {}
            out.append(EscrowRecord(event, **where))
    return tuple(out)


def measure(backlog: int, rounds: int, warmup: int = 2) -> dict[str, Any]:
    """CPU seconds per certified round with ``backlog`` open settlements."""
    config, keys = simulated_committee(
        4,
        1,
        targets=("chain-A", "bank"),
        delta_progress=30.0,
        delta_resend=5.0,
        delta_round=0.05,
        delta_grace=0.0,
        delta_stage=1.0,
        max_observation_bytes=32768,
        max_decisions_per_report=SERVED_PER_ROUND,
    )
    specs = (TargetSpec("chain-A", "A", "evm"), TargetSpec("bank", "bank", "bank", "USD"))
    drivers = [
        NodeDriver(DriverConfig(config, i, "multi-chain-messaging", specs), keys[i])
        for i in range(4)
    ]
    records = _records(backlog)
    news = tuple(
        r for r in records[: 2 * SERVED_PER_ROUND] if not isinstance(r.event, SettlementCreated)
    )
    timers: list[tuple[float, int, int, Any]] = []  # (at, order, member, timer)
    armed: dict[tuple[int, Any], float] = {}
    inbox: list[tuple[int, int, bytes]] = []  # (to, from, bytes), delivered at once
    certified = 0
    order = 0
    block = 0
    now = 0.0

    def carry_out(member: int, effects: tuple[Any, ...]) -> None:
        nonlocal certified, order
        for effect in effects:
            if isinstance(effect, Send):
                inbox.append((effect.to, member, effect.data))
            elif isinstance(effect, Broadcast):
                inbox.extend((j, member, effect.data) for j in range(4) if j != member)
            elif isinstance(effect, SetTimer):
                order += 1
                armed[(member, effect.timer)] = effect.at
                heapq.heappush(timers, (effect.at, order, member, effect.timer))
            elif isinstance(effect, Certified) and effect.target == "bank":
                certified += 1 if member == drivers[0].node.current_leader else 0

    for i, d in enumerate(drivers):
        carry_out(i, d.handle(Start(0.0, PersistedState())))
        carry_out(i, d.handle(ChainUpdate(0.0, "chain-A", records, 100)))
    began = 0.0
    goal = warmup + rounds
    while certified < goal:
        while inbox:
            to, sender, data = inbox.pop(0)
            carry_out(to, drivers[to].handle(MessageReceived(now, sender, data)))
        if certified >= warmup and not began:
            began = time.process_time()
        at, _, member, timer = heapq.heappop(timers)
        if armed.get((member, timer)) != at:
            continue  # re-armed or cancelled since
        now = max(now, at)
        if getattr(getattr(timer, "kind", None), "name", "") == "ROUND":
            # A new block before every round, as under load: every member observes anew
            # (an unchanged view would be answered from the driver's cache). It tells of
            # the served settlements again, as a target's answers would, so a driver that
            # parks decided settlements serves the same 100 each round at either backlog.
            block += 1
            for i, d in enumerate(drivers):
                carry_out(i, d.handle(ChainUpdate(now, "chain-A", news, 100 + block)))
        carry_out(member, drivers[member].handle(TimerFired(now, timer)))
    cpu = time.process_time() - began
    stats = drivers[0].stats
    return {
        "backlog": backlog,
        "rounds": rounds,
        "cpu_s_per_round": round(cpu / rounds, 5),
        "served_per_round": SERVED_PER_ROUND,
        # (read with getattr: the bench also runs on drivers from before the queue existed)
        "queued": getattr(stats, "queued", None),
        "observation_bytes": stats.observation_largest_bytes,
    }


def run(quick: bool = False) -> dict[str, Any]:
    console = Console(width=120)
    rounds = 10 if quick else 40
    small = measure(100, rounds)
    large = measure(1000 if quick else 10_000, rounds)
    ratio = round(large["cpu_s_per_round"] / small["cpu_s_per_round"], 2)
    table = Table(title="dvpsim bench backlog (n = 4, real crypto, 100 served per round)")
    for column in ("open settlements", "CPU ms / round", "queued", "observation B"):
        table.add_column(column, justify="right")
    for r in (small, large):
        table.add_row(
            f"{r['backlog']:,}",
            f"{1000 * r['cpu_s_per_round']:.2f}",
            "n/a" if r["queued"] is None else f"{r['queued']:,}",
            f"{r['observation_bytes']:,}",
        )
    console.print(table)
    console.print(
        f"ratio {large['backlog']:,} / {small['backlog']:,}: {ratio} (target <= {TARGET_RATIO})"
    )
    return {"quick": quick, "cases": [small, large], "ratio": ratio, "target": TARGET_RATIO}
