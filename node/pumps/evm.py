"""An EVM chain's DvP coordinator as a node's target: watch its events, read it, send to it.

Watching. A background task polls the coordinator's events through the reorg-aware
watcher (``chain_adapters.watcher``) with the target's confirmation depth and gives the
driver each event as it is delivered, or retracted by a reorg, with the newest block's
timestamp (the leg's clock): a ``ChainUpdate`` event. What the events mean is the escrow
leg tracker's business (``node.legs``). The poll is woken by the chain's own news: a
``newHeads`` subscription on the endpoint's WebSocket (anvil serves one on its HTTP port)
starts a poll the moment a block is mined, so every member sees a lock within
milliseconds of each other and the first round after it can certify it. Polling every
``POLL_INTERVAL`` stays as the fallback (an endpoint without WebSocket, a lost
subscription, a reorg the endpoint does not announce).

Reading. ``ReadLeg`` (the driver asks after a retraction) reads the settlements' current
states from the coordinator (``statesOf``): a ``ChainStates`` event.

Transmission. ``applyReport`` with the terms the driver gives, through the transaction
sender (nonce, fees, bumping, retries), after the sender's last check that some decision
of the report would still change something here (if not, nothing is sent:
"already-applied"). Its gas limit comes from one execution of the call
(``eth_createAccessList``'s ``gasUsed``, with room for refunds and the sender's margin):
``eth_estimateGas`` searches with a dozen executions, each verifying the certificate
again, and took most of a release's time on anvil (78 ms of 110). A call that would
revert, or an endpoint without that method, goes through the sender's own estimate, which
names the revert. Another member's copy can still land first, between that check and
this one's block: the coordinator then refuses this copy before verifying it
(``ReportAlreadyApplied``, a few thousand gas), and that too is "already-applied", a
finished transmission, never an error to retry. One transaction at a time per target.

The contracts' ABIs come from the caller (compiled once per process); this module never
compiles anything.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio
import trio_websocket

from chain_adapters.bindings import CoordinatorBinding, chain_log_event
from chain_adapters.evm import NEW_HEADS_REQUEST, RpcError, connect, websocket_url
from chain_adapters.model import Terms
from chain_adapters.sender import TransactionReverted, TransactionSender, TxRequest
from chain_adapters.watcher import EventWatcher, Retracted, WatchRecord
from consensus.report import Certificate
from node.config import TargetConfig
from node.driver import ChainStates, ChainUpdate, NodeEvent, ReadLeg, Transmit
from node.legs import EscrowRecord
from node.netfaults import PlanFile
from node.pumps.base import Emit, TargetError
from node.rpcfaults import RpcWindow, active, lie_about

log = logging.getLogger("dvpsim.node.evm")

POLL_INTERVAL = 0.1
#: While the endpoint announces its blocks, a poll without news is only a safety net.
SUBSCRIBED_POLL_INTERVAL = 0.25
#: Pause before subscribing again after the WebSocket failed or closed.
RESUBSCRIBE_AFTER = 2.0
#: Gas a call may use beyond what one execution reported: refunds are counted after
#: the call (at most a fifth of the gas it burnt), and the limit must cover them too.
REFUND_ROOM = 1.25


class EvmPump:
    def __init__(
        self, config: TargetConfig, artifacts: Mapping[str, Any], plan: PlanFile | None = None
    ) -> None:
        """``plan``: the node's fault plan; its chain-endpoint windows (``node.rpcfaults``)
        make this endpoint answer nothing, or lie, to this node."""
        self.name = config.name
        self.config = config
        self.plan = plan
        try:
            self.rpc = connect(config.url, config.chain_id)
        except RpcError as exc:
            raise TargetError(f"target {config.name}: {exc}") from None
        address = "0x" + config.verifier.hex()
        self.binding = CoordinatorBinding(
            self.rpc.web3, self.rpc.web3.to_checksum_address(address), artifacts
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
        self._send_lock = trio.Lock()
        self._block_time = -1
        # The newest block as of the last watcher poll (nothing before the first).
        self._head_seen = Head(-1, b"", -1, self.watcher.confirmations)
        self._news = trio.Event()  # set when the endpoint announces a block
        self._subscribed = False

    # ------------------------------------------------------------------ watching

    async def run(self, emit: Emit) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_heads)
            while True:
                self._news = trio.Event()  # a block mined while this poll runs wakes the next
                try:
                    update = await trio.to_thread.run_sync(self._poll_once)
                except RpcError as exc:
                    log.warning(
                        "chain poll failed",
                        extra={"fields": {"target": self.name, "error": str(exc)}},
                    )
                    await trio.sleep(1.0)
                    continue
                if update is not None:
                    await emit(update)
                pause = SUBSCRIBED_POLL_INTERVAL if self._subscribed else POLL_INTERVAL
                with trio.move_on_after(pause):
                    await self._news.wait()

    async def _follow_heads(self) -> None:
        """Wake the poll at each block the endpoint announces (``eth_subscribe``
        ``newHeads`` over its WebSocket); on failure, poll on the clock and try again."""
        url = websocket_url(self.config.url)
        if url is None:
            return
        while True:
            try:
                async with trio_websocket.open_websocket_url(url) as ws:
                    await ws.send_message(NEW_HEADS_REQUEST)
                    answer = json.loads(await ws.get_message())
                    if "result" not in answer:
                        return  # the endpoint does not announce blocks: polling it is
                    self._subscribed = True
                    while True:
                        await ws.get_message()
                        self._news.set()
            except (OSError, ValueError, trio_websocket.HandshakeError) as exc:
                log.debug(
                    "block subscription failed",
                    extra={"fields": {"target": self.name, "error": repr(exc)}},
                )
            except trio_websocket.ConnectionClosed:
                pass
            finally:
                self._subscribed = False
            await trio.sleep(RESUBSCRIBE_AFTER)

    def _endpoint_fault(self) -> RpcWindow | None:
        return None if self.plan is None else active(self.plan.current().rpc, time.time())

    def _poll_once(self) -> ChainUpdate | None:
        fault = self._endpoint_fault()
        if fault is not None and not fault.lie:
            raise RpcError(f"{self.config.url}: no answer (an rpc-outage fault)")
        head = self._read_head()
        records: list[EscrowRecord] = []
        if not self._head_seen.unchanged(head, self.watcher.scanned_to):
            # Up to this head and no further: the leg's clock is never older than its events.
            polled = self.watcher.poll(head.number)
            records = [r for r in (_escrow_record(w) for w in polled) if r is not None]
            self._head_seen = head
        if fault is not None:
            records = list(lie_about(records, fault.lie))
        block_time = head.timestamp
        if not records and block_time == self._block_time:
            return None  # nothing new: the driver's clock for this leg stands still
        self._block_time = block_time
        return ChainUpdate(0.0, self.name, tuple(records), block_time)

    def _read_head(self) -> Head:
        """The newest block, in one raw call (no web3 formatting: this runs every poll)."""
        block = self.rpc.raw("eth_getBlockByNumber", ["latest", False])
        if not block:
            raise RpcError(f"{self.config.url}: no latest block")
        return Head(
            int(block["number"], 16),
            bytes.fromhex(block["hash"][2:]),
            int(block["timestamp"], 16),
            self.watcher.confirmations,
        )

    # ------------------------------------------------------------------ reading

    async def read(self, effect: ReadLeg) -> tuple[NodeEvent, ...]:
        ids = list(effect.settlement_ids)
        states = await trio.to_thread.run_sync(self.binding.states_of, ids)
        return (ChainStates(0.0, self.name, tuple(zip(ids, states, strict=True))),)

    # ------------------------------------------------------------------ transmission

    async def transmit(self, effect: Transmit) -> tuple[str, tuple[NodeEvent, ...]]:
        terms = [t for t in effect.terms if isinstance(t, Terms)]
        async with self._send_lock:
            result = await trio.to_thread.run_sync(self._send, effect.certificate, terms)
        return result, ()

    def _send(self, certificate: Certificate, terms: list[Terms]) -> str:
        fault = self._endpoint_fault()
        if fault is not None and not fault.lie:
            return "rpc-error"

        def already_done() -> bool:
            return not self.binding.pending_decisions(certificate.report)

        try:
            request = self._with_gas_limit(self.binding.apply_report_tx(certificate, terms))
            result = self.sender.send(request, already_done=already_done)
        except TransactionReverted as exc:
            if already_applied(exc, already_done):
                return "already-applied"
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

    def _with_gas_limit(self, request: TxRequest) -> TxRequest:
        """``request`` with a gas limit from one execution of the call; unchanged (the
        sender estimates, and names a revert) when that execution fails."""
        call = {
            "from": self.sender.address,
            "to": request.to,
            "data": "0x" + request.data.hex(),
            "value": hex(request.value),
        }
        try:
            answer = self.rpc.raw("eth_createAccessList", [call, "latest"])
        except Exception:  # a revert, or no such method: the sender's estimate decides
            return request
        if not isinstance(answer, Mapping) or answer.get("error") or "gasUsed" not in answer:
            return request
        used = (
            int(answer["gasUsed"], 16) if isinstance(answer["gasUsed"], str) else answer["gasUsed"]
        )
        gas = int(used * REFUND_ROOM * self.sender.gas_margin)
        return dataclasses.replace(request, gas=gas)

    def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Head:
    """The newest block of a chain as one poll saw it, and the watcher's confirmation
    depth."""

    number: int
    hash: bytes
    timestamp: int
    confirmations: int

    def unchanged(self, now: Head, scanned_to: int) -> bool:
        """Whether a watcher poll now would find nothing new: the newest block is the same
        block (same hash: a block's hash covers every block before it, so no reorg either)
        and the watcher has scanned every confirmed block up to it. Most polls find this
        (blocks come slower than the node polls), and it saves the watcher's calls."""
        return (
            now.number == self.number
            and now.hash == self.hash
            and scanned_to >= now.number - self.confirmations + 1
        )


def already_applied(exc: TransactionReverted, already_done: Callable[[], bool]) -> bool:
    """Whether a reverted transmission was a copy of a report already done: the estimate
    names ReportAlreadyApplied, or the transaction reverted on chain (a receipt carries no
    reason) and no decision of the report would change anything any more."""
    if exc.error.startswith("ReportAlreadyApplied"):
        return True
    if exc.error:
        return False
    try:
        return already_done()
    except RpcError:
        return False


def _escrow_record(record: WatchRecord) -> EscrowRecord | None:
    event = chain_log_event(record.log)
    if event is None:
        return None
    return EscrowRecord(
        event,
        retracted=isinstance(record, Retracted),
        position=(record.log.block_number, record.log.log_index),
    )
