"""The dry-run target for tests and demos without chains: facts from a JSON file.

The facts file is a JSON list of {"settlement_id", "leg", "kind", "terms_hash"} (hex,
FactKind name). The pump reads it every ``POLL_INTERVAL`` and gives the driver the facts
of its leg, together with what any node transmitted so far (certificates are appended as
JSON lines, one file per node, and the COMMIT and ABORT decisions they carry count as
applied, as a chain's state would for everyone): a ``ReportedFacts`` event.
"""

from __future__ import annotations

import json
from pathlib import Path

import trio

from consensus.report import Action
from node.config import TargetConfig
from node.driver import NodeEvent, ReadLeg, ReportedFacts, Transmit
from node.dvp import Fact, FactKind
from node.legs import APPLIED_FACT
from node.pumps.base import Emit

POLL_INTERVAL = 0.1


class FilePump:
    def __init__(self, config: TargetConfig, node_index: int) -> None:
        self.name, self.leg = config.name, config.leg
        self.facts_path = Path(config.url.removeprefix("file://"))
        self.out_path = self.facts_path.with_name(
            f"{self.facts_path.stem}.{config.name}.node{node_index}.jsonl"
        )

    async def run(self, emit: Emit) -> None:
        last: frozenset[Fact] | None = None
        while True:
            facts = frozenset(await trio.to_thread.run_sync(self._read_facts))
            if facts != last:
                last = facts
                await emit(ReportedFacts(0.0, self.name, facts))
            await trio.sleep(POLL_INTERVAL)

    def _read_facts(self) -> set[Fact]:
        facts = self._applied()
        try:
            raw = json.loads(self.facts_path.read_text())
        except (OSError, json.JSONDecodeError):
            return facts
        for item in raw:
            if item.get("leg") == self.leg:
                facts.add(
                    Fact(
                        bytes.fromhex(item["settlement_id"]),
                        item["leg"],
                        FactKind[item["kind"]],
                        bytes.fromhex(item["terms_hash"]),
                    )
                )
        return facts

    def _applied(self) -> set[Fact]:
        applied = set()
        for out in self.facts_path.parent.glob(f"{self.facts_path.stem}.{self.name}.node*.jsonl"):
            for line in out.read_text().splitlines():
                try:
                    decisions = json.loads(line)["decisions"]
                except (json.JSONDecodeError, KeyError):
                    continue  # a line being written
                for sid, action, terms in decisions:
                    if Action[action] in APPLIED_FACT:
                        applied.add(
                            Fact(
                                bytes.fromhex(sid),
                                self.leg,
                                APPLIED_FACT[Action[action]],
                                bytes.fromhex(terms),
                            )
                        )
        return applied

    async def read(self, effect: ReadLeg) -> tuple[NodeEvent, ...]:
        return ()

    async def transmit(self, effect: Transmit) -> tuple[str, tuple[NodeEvent, ...]]:
        certificate = effect.certificate
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
        return "ok", ()

    def close(self) -> None:
        pass
