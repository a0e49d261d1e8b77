"""An EVM chain's DvP coordinator as a node's target: watch its events, transmit reports.

Observation. A background task polls the coordinator's events through the reorg-aware
watcher (``chain_adapters.watcher``) with the target's confirmation depth, and keeps, per
settlement of this leg, its terms (``SettlementCreated``) and state (every state-changing
event carries it). Retracted events (a reorg) undo what they said: the settlement's state
is read again from the chain. Facts: PREPARED, COMMITTED, ABORTED (an unsafe self-refund,
EXPIRED on chain, also rolled the leg back: it reads as ABORTED), and EXPIRED when the
latest block's timestamp passed the deadline of a leg that is not final. The asset leg's
terms also go into the node's ``SettlementBook`` for the bank leg.

Transmission. ``applyReport`` with each decision's terms, through the transaction sender
(nonce, fees, bumping, retries), after the idempotency check: if no decision of the report
would still change anything here, nothing is sent.
"""

from __future__ import annotations

import logging

import trio

from chain_adapters.bindings import CoordinatorBinding, chain_log_event
from chain_adapters.build import compile_contracts
from chain_adapters.evm import RpcError, connect
from chain_adapters.model import (
    LegLocked,
    SettlementAborted,
    SettlementCommitted,
    SettlementCreated,
    SettlementExpired,
    State,
    Terms,
    terms_hash,
)
from chain_adapters.sender import TransactionReverted, TransactionSender
from chain_adapters.watcher import Delivered, EventWatcher, Retracted
from consensus.report import Certificate
from node.book import SettlementBook
from node.config import NodeConfig, TargetConfig
from node.dvp import Fact, FactKind

log = logging.getLogger("dvpsim.node.evm")

POLL_INTERVAL = 0.1
_FACT_OF_STATE = {
    State.PREPARED: FactKind.PREPARED,
    State.COMMITTED: FactKind.COMMITTED,
    State.ABORTED: FactKind.ABORTED,
    State.EXPIRED: FactKind.ABORTED,
}
_FINAL = {State.COMMITTED, State.ABORTED, State.EXPIRED}


class EvmTarget:
    def __init__(self, config: TargetConfig, node: NodeConfig, book: SettlementBook) -> None:
        from node.targets import TargetError

        self.name, self.leg = config.name, config.leg
        self.config = config
        self.book = book
        self.is_asset_leg = config.leg == "A"
        try:
            self.rpc = connect(config.url, config.chain_id)
        except RpcError as exc:
            raise TargetError(f"target {config.name}: {exc}") from None
        address = "0x" + config.verifier.hex()
        self.binding = CoordinatorBinding(
            self.rpc.web3, self.rpc.web3.to_checksum_address(address), compile_contracts()
        )
        self.watcher = EventWatcher(
            self.rpc,
            [self.binding.address],
            confirmations=max(1, config.confirmations),
            decoder=self.binding.decoder,
        )
        # Other transactions land between estimate and execution (locks, other nodes'
        # reports) and can move storage slots to costlier transitions: keep headroom.
        self.sender = TransactionSender(
            self.rpc,
            config.transmitter_key,
            revert_decoder=self.binding.decode_error,
            gas_margin=1.5,
        )
        self.terms: dict[bytes, Terms] = {}
        self.states: dict[bytes, State] = {}
        self._hashes: dict[bytes, tuple[Terms, bytes]] = {}
        self.block_time = 0
        self._send_lock = trio.Lock()

    # ------------------------------------------------------------------ observation

    async def facts(self) -> set[Fact]:
        facts: set[Fact] = set()
        over = self.book.settled
        for sid, terms in list(self.terms.items()):
            if sid in over:
                continue
            state = self.states.get(sid, State.CREATED)
            h = self._hash_of(sid, terms)
            kind = _FACT_OF_STATE.get(state)
            if kind is not None:
                facts.add(Fact(sid, self.leg, kind, h))
            if state not in _FINAL and self.block_time > terms.deadline:
                facts.add(Fact(sid, self.leg, FactKind.EXPIRED, h))
        return facts

    def _hash_of(self, sid: bytes, terms: Terms) -> bytes:
        # Every round observes every open settlement: hash each one's terms once.
        cached = self._hashes.get(sid)
        if cached is None or cached[0] is not terms:
            cached = (terms, terms_hash(terms))
            self._hashes[sid] = cached
        return cached[1]

    def _poll_once(self) -> None:
        records = self.watcher.poll()
        refresh: set[bytes] = set()
        for record in records:
            event = chain_log_event(record.log)
            if event is None:
                continue
            sid = getattr(event, "settlement_id", None)
            if sid is None:
                continue
            if isinstance(record, Retracted):
                refresh.add(sid)
                self.book.settled.discard(sid)  # not over after all: report it again
                continue
            assert isinstance(record, Delivered)
            if isinstance(event, SettlementCreated):
                self.terms[sid] = event.terms
                self.states.setdefault(sid, State.CREATED)
                if self.is_asset_leg:
                    self.book.terms[sid] = event.terms
            elif isinstance(event, LegLocked):
                self.states[sid] = event.state
            elif isinstance(event, SettlementCommitted):
                self.states[sid] = State.COMMITTED
            elif isinstance(event, SettlementAborted):
                self.states[sid] = State.ABORTED
            elif isinstance(event, SettlementExpired):
                self.states[sid] = State.EXPIRED
        if refresh:
            ids = sorted(refresh)
            for sid, state in zip(ids, self.binding.states_of(ids), strict=True):
                if state == State.NONE:
                    self.terms.pop(sid, None)
                    self.states.pop(sid, None)
                    if self.is_asset_leg:
                        self.book.terms.pop(sid, None)
                else:
                    self.states[sid] = state
        self.block_time = int(
            self.rpc.call("latest block", lambda: self.rpc.eth.get_block("latest")["timestamp"])
        )

    async def run(self) -> None:
        while True:
            try:
                await trio.to_thread.run_sync(self._poll_once)
            except RpcError as exc:
                log.warning(
                    "chain poll failed", extra={"fields": {"target": self.name, "error": str(exc)}}
                )
                await trio.sleep(1.0)
            await trio.sleep(POLL_INTERVAL)

    # ------------------------------------------------------------------ transmission

    async def transmit(self, certificate: Certificate) -> str:
        report = certificate.report
        terms: list[Terms] = []
        for decision in report.decisions:
            t = self.terms.get(decision.settlement_id)
            if t is None:
                return "unknown-settlement"
            terms.append(t)
        async with self._send_lock:
            return await trio.to_thread.run_sync(self._send, certificate, terms)

    def _send(self, certificate: Certificate, terms: list[Terms]) -> str:
        def already_done() -> bool:
            return not self.binding.pending_decisions(certificate.report)

        try:
            result = self.sender.send(
                self.binding.apply_report_tx(certificate, terms), already_done=already_done
            )
        except TransactionReverted as exc:
            log.warning(
                "report reverted", extra={"fields": {"target": self.name, "error": str(exc)}}
            )
            return "reverted"
        except RpcError as exc:
            log.warning(
                "transmission failed", extra={"fields": {"target": self.name, "error": str(exc)}}
            )
            return "rpc-error"
        if result.skipped:
            return "already-applied"
        return "ok"

    def close(self) -> None:
        pass
