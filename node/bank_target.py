"""The bank as a node's target: observe instruction states, transmit certified decisions.

Observation. For every settlement the asset chain announced (``node.book``), the bank leg
is REQUESTED with terms derived from the escrow's terms. Its state at the bank comes from
the signed callbacks the bank delivers to this node's webhook receiver when one is
configured, and from polling ``GET /v1/instructions/{id}`` (the fallback every node
runs for instructions that are not final): PREVALIDATED -> PREPARED, REJECTED ->
REJECTED, EXECUTED -> COMMITTED, CANCELLED -> ABORTED. A leg not final after its
deadline by this node's clock is EXPIRED.

Transmission. Each decision of a certified report becomes one authenticated call:
PREPARE -> prevalidate (with the derived terms), COMMIT -> execute, ABORT -> cancel,
skipped when the bank already shows the result (idempotency check); the bank's
idempotency keys make a retried call harmless anyway.
"""

from __future__ import annotations

import logging
import time

import trio

from bank_adapter.client import BankApiError, BankClient, InstructionStatus
from bank_adapter.ledger import InstructionState
from consensus.report import Action, Certificate, Decision
from node.book import SettlementBook
from node.config import NodeConfig, TargetConfig
from node.dvp import Fact, FactKind

log = logging.getLogger("dvpsim.node.bank")

_FINAL = {InstructionState.REJECTED, InstructionState.EXECUTED, InstructionState.CANCELLED}
_FACT_OF_STATE = {
    InstructionState.PREVALIDATED: FactKind.PREPARED,
    InstructionState.REJECTED: FactKind.REJECTED,
    InstructionState.EXECUTED: FactKind.COMMITTED,
    InstructionState.CANCELLED: FactKind.ABORTED,
}
_DONE_BY = {
    Action.PREPARE: None,
    Action.COMMIT: InstructionState.EXECUTED,
    Action.ABORT: InstructionState.CANCELLED,
}
POLL_INTERVAL = 0.2
MAX_PARALLEL_CALLS = 8


class BankTarget:
    def __init__(self, config: TargetConfig, node: NodeConfig, book: SettlementBook) -> None:
        self.name, self.leg = config.name, config.leg
        self.config = config
        self.currency = config.currency
        self.book = book
        self.client = BankClient(config.url, config.client_id, config.client_secret.encode())
        self.statuses: dict[bytes, InstructionStatus] = {}
        self._wake = trio.Event()

    async def facts(self) -> set[Fact]:
        now = time.time()
        facts: set[Fact] = set()
        for sid in list(self.book.terms):
            terms = self.book.bank_terms(sid, self.currency)
            if terms is None:
                continue
            terms_hash = terms.terms_hash()
            facts.add(Fact(sid, self.leg, FactKind.REQUESTED, terms_hash))
            status = self.statuses.get(sid)
            if (
                status is not None
                and status.terms_hash == terms_hash
                and status.state in _FACT_OF_STATE
            ):
                facts.add(Fact(sid, self.leg, _FACT_OF_STATE[status.state], terms_hash))
            final = status is not None and status.state in _FINAL
            if not final and now > terms.deadline:
                facts.add(Fact(sid, self.leg, FactKind.EXPIRED, terms_hash))
        return facts

    async def transmit(self, certificate: Certificate) -> str:
        results: list[str] = []
        limiter = trio.CapacityLimiter(MAX_PARALLEL_CALLS)

        async def one(decision: Decision) -> None:
            async with limiter:
                results.append(await self._apply(decision, certificate))

        async with trio.open_nursery() as nursery:
            for decision in certificate.report.decisions:
                nursery.start_soon(one, decision)
        self._wake.set()
        if not results:
            return "empty"
        return "ok" if all(r in ("ok", "already-applied") for r in results) else "partial"

    async def _apply(self, decision: Decision, certificate: Certificate) -> str:
        sid = decision.settlement_id
        known = self.statuses.get(sid)
        done_state = _DONE_BY[decision.action]
        if known is not None and (
            known.state == done_state
            or (decision.action is Action.PREPARE and known.state != InstructionState.RECEIVED)
        ):
            return "already-applied"
        try:
            if decision.action is Action.PREPARE:
                terms = self.book.bank_terms(sid, self.currency)
                if terms is None or terms.terms_hash() != decision.terms_hash:
                    return "unknown-terms"
                status = await self.client.prevalidate(terms, certificate)
            elif decision.action is Action.COMMIT:
                status = await self.client.execute(sid, certificate)
            else:
                status = await self.client.cancel(sid, certificate)
        except BankApiError as exc:
            log.warning(
                "bank refused",
                extra={
                    "fields": {
                        "settlement": sid.hex(),
                        "action": decision.action.name,
                        "error": str(exc),
                    }
                },
            )
            return f"refused-{exc.code}"
        self.statuses[sid] = status
        return "ok"

    async def run(self) -> None:
        """Poll the status of every instruction that is not final (the callbacks' fallback)."""
        while True:
            pending = [
                sid
                for sid in list(self.book.terms)
                if not (sid in self.statuses and self.statuses[sid].state in _FINAL)
            ]
            limiter = trio.CapacityLimiter(MAX_PARALLEL_CALLS)

            async def poll(sid: bytes, limiter: trio.CapacityLimiter = limiter) -> None:
                async with limiter:
                    try:
                        status = await self.client.status(sid)
                    except BankApiError:
                        return
                    if status is not None:
                        self.statuses[sid] = status

            async with trio.open_nursery() as nursery:
                for sid in pending:
                    nursery.start_soon(poll, sid)
            with trio.move_on_after(POLL_INTERVAL):
                await self._wake.wait()
            self._wake = trio.Event()

    def close(self) -> None:
        pass
