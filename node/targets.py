"""Targets: where a node observes legs and where it transmits certified reports.

Each target of a node's config becomes an adapter with two duties:

- ``facts()``: what this node currently sees about the legs on that target (escrow
  events on a chain, instruction states at the bank), as ``node.dvp.Fact`` values;
- ``transmit(certificate)``: hand a certified report to the target (a transaction to the
  chain's coordinator, an authenticated call to the bank), skipping what is already
  applied there.

The observer merges every adapter's facts into the node's observation; the transmitter
routes each certificate to the adapter of its target. Kinds:

- ``evm``: a DvP coordinator on an EVM chain (``chain_adapters``);
- ``bank``: the bank payment service (``bank_adapter``);
- ``file``: a dry-run target for tests and demos without chains: facts are read from a
  JSON file, certificates are appended as JSON lines and the decisions they carry are
  then reported back as applied.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio

from consensus.report import Action, Certificate
from node.book import SettlementBook
from node.config import NodeConfig, TargetConfig
from node.dvp import Fact, FactKind, fit_observation, settled

log = logging.getLogger("dvpsim.node")

LEFT_OUT_WARNING_EVERY_S = 10.0


class TargetError(Exception):
    """A target cannot be reached or set up; one line."""


class TargetAdapter(Protocol):
    name: str
    leg: str

    async def facts(self) -> set[Fact]: ...

    async def transmit(self, certificate: Certificate) -> str: ...


@dataclass
class BuiltTargets:
    observer: Any
    transmitter: Any
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    close: Callable[[], None] = lambda: None


class CompositeObserver:
    """Every target's facts in one observation, without settlements that are over."""

    def __init__(
        self,
        adapters: list[TargetAdapter],
        mode: str,
        max_bytes: int,
        book: SettlementBook | None = None,
    ) -> None:
        self.adapters = adapters
        self.mode = mode
        self.max_bytes = max_bytes
        self.book = book  # told which settlements are over, so targets stop reporting them
        self.largest_bytes = 0  # the largest observation so far (metrics: headroom)
        self.settlements_left_out = 0  # summed over rounds: settlements that did not fit
        self._warned_at = -LEFT_OUT_WARNING_EVERY_S

    async def observe(self, epoch: int, round_: int) -> bytes:
        facts: set[Fact] = set()
        for adapter in self.adapters:
            facts |= await adapter.facts()
        over = settled(self.mode, facts)
        if self.book is not None:
            self.book.settled |= over
        data, left_out = fit_observation(
            (f for f in facts if f.settlement_id not in over), self.max_bytes
        )
        self.largest_bytes = max(self.largest_bytes, len(data))
        if left_out:
            # Those settlements wait for a round with room: say so, they are not lost.
            self.settlements_left_out += left_out
            now = time.monotonic()
            if now - self._warned_at > LEFT_OUT_WARNING_EVERY_S:
                self._warned_at = now
                log.warning(
                    "observation full",
                    extra={
                        "fields": {
                            "left_out": left_out,
                            "max_bytes": self.max_bytes,
                            "hint": "raise timing.max_observation_bytes or lower the load",
                        }
                    },
                )
        return data


class CompositeTransmitter:
    def __init__(self, adapters: list[TargetAdapter]) -> None:
        self.by_name = {a.name: a for a in adapters}

    async def transmit(self, target: str, certificate: Certificate) -> str:
        adapter = self.by_name.get(target)
        if adapter is None:
            return "unknown-target"
        return await adapter.transmit(certificate)


_APPLIED = {Action.COMMIT: FactKind.COMMITTED, Action.ABORT: FactKind.ABORTED}


class FileTarget:
    """The dry-run target (module docstring). Facts file: a JSON list of
    {"settlement_id", "leg", "kind", "terms_hash"} (hex, FactKind name)."""

    def __init__(self, config: TargetConfig, node_index: int) -> None:
        self.name, self.leg = config.name, config.leg
        self.facts_path = Path(config.url.removeprefix("file://"))
        self.out_path = self.facts_path.with_name(
            f"{self.facts_path.stem}.{config.name}.node{node_index}.jsonl"
        )

    def _applied(self) -> set[Fact]:
        # What any node transmitted counts as applied, as a chain's state would for everyone.
        applied = set()
        for out in self.facts_path.parent.glob(f"{self.facts_path.stem}.{self.name}.node*.jsonl"):
            for line in out.read_text().splitlines():
                try:
                    decisions = json.loads(line)["decisions"]
                except (json.JSONDecodeError, KeyError):
                    continue  # a line being written
                for sid, action, terms in decisions:
                    if Action[action] in _APPLIED:
                        applied.add(
                            Fact(
                                bytes.fromhex(sid),
                                self.leg,
                                _APPLIED[Action[action]],
                                bytes.fromhex(terms),
                            )
                        )
        return applied

    async def facts(self) -> set[Fact]:
        applied = self._applied()
        try:
            raw = json.loads(await trio.Path(self.facts_path).read_text())
        except (OSError, json.JSONDecodeError):
            return applied
        seen = {
            Fact(
                bytes.fromhex(item["settlement_id"]),
                item["leg"],
                FactKind[item["kind"]],
                bytes.fromhex(item["terms_hash"]),
            )
            for item in raw
            if item.get("leg") == self.leg
        }
        return seen | applied

    async def transmit(self, certificate: Certificate) -> str:
        report = certificate.report
        line = {
            "epoch": report.epoch,
            "round": report.round,
            "signers": certificate.signers,
            "signature": certificate.signature.hex(),
            "config_digest": report.config_digest.hex(),
            "decisions": [
                [d.settlement_id.hex(), d.action.name, d.terms_hash.hex()] for d in report.decisions
            ],
        }
        async with await trio.open_file(self.out_path, "a") as out:
            await out.write(json.dumps(line) + "\n")
        return "ok"


def build_targets(config: NodeConfig) -> BuiltTargets:
    adapters: list[TargetAdapter] = []
    background: list[Callable[[], Awaitable[None]]] = []
    closers: list[Callable[[], None]] = []
    book = SettlementBook()  # what the chains announced, shared with the bank leg
    for target in config.targets:
        if target.kind == "file":
            adapters.append(FileTarget(target, config.index))
        elif target.kind == "evm":
            from node.evm_target import EvmTarget

            evm = EvmTarget(target, config, book)
            adapters.append(evm)
            background.append(evm.run)
            closers.append(evm.close)
        elif target.kind == "bank":
            from node.bank_target import BankTarget

            bank = BankTarget(target, config, book)
            adapters.append(bank)
            background.append(bank.run)
            closers.append(bank.close)
        else:  # node.config rejects other kinds
            raise TargetError(f"{config.path}: target {target.name}: unknown kind {target.kind!r}")

    def close() -> None:
        for closer in closers:
            closer()

    observer = CompositeObserver(adapters, config.mode, config.timing.max_observation_bytes, book)
    return BuiltTargets(observer, CompositeTransmitter(adapters), background, close)
