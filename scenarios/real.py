"""Real-mode runs: chains, the bank and a committee of node processes, driven and checked.

``RealRun(scenario, out_dir).run()`` does what `dvpsim run` promises:

1. starts the chains the scenario asks for (anvil, Prague, 127.0.0.1 or the hosts file's
   ``services`` address: ``scenarios.hosts``) or connects to the
   given RPC URLs; deploys the tokens and one DvP coordinator per chain and configures each
   with the committee (keys admitted with their proofs of possession);
2. starts the bank service when the mode pays through the bank, with the parties'
   accounts (named by their addresses) and one API client per node;
3. provisions the committee (keys, keystores, node configs) and launches n node processes;
4. drives the settlements at the scenario's arrival rate: the seller creates and locks,
   the buyer locks in on-chain payment modes; settlements meant to fail do so as the
   scenario says (a buyer without funds, a counterparty that never prepares, a payment
   delayed past the deadline);
5. injects the scenario's faults (node kill and restart, bank latency and outages);
6. waits until every settlement ended on every leg, or the time limit;
7. judges the final chain and bank state with ``scenarios.checks`` (atomicity,
   conservation, exactly-once), writes ``history.jsonl`` and ``summary.json`` to the run
   folder and returns the summary.

The parts themselves (steps 1 to 3, and reading the final state over JSON-RPC and the
bank's API) are ``scenarios.real_world``. What both worlds share is used here as in the
simulated runner: the workload (``scenarios.workload``), when a settlement has ended and
the final-state audit and summary (``scenarios.accounting``), the history writer
(``scenarios.history``), what faults mean (``scenarios.faults``). This module drives,
injects, watches and judges; at the end it merges every node's trace (``node/trace.py``
records, written by the node processes) into the run's history, in time order.

Everything it starts is stopped by PID in ``finally`` (and by the kernel if the runner
itself is killed). Latencies are the runner's wall-clock observations: from the moment the
asset-lock transaction was mined to the moment the runner saw the asset leg COMMITTED.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import queue
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import coincurve
from eth_utils.crypto import keccak

from bank_adapter.client import BankApiError
from bank_adapter.sqlite_storage import SqliteStorage
from chain_adapters.bindings import (
    CoordinatorBinding,
)
from chain_adapters.evm import NEW_HEADS_REQUEST, connect, websocket_url
from chain_adapters.model import RECLAIMABLE
from chain_adapters.sender import TransactionReverted, TransactionSender, TxRequest
from node.modes import BANK, MODES
from scenarios import accounting, provenance
from scenarios.accounting import END_POLL_S, RunReport, Tracked
from scenarios.checks import SeenCertificate, check_all
from scenarios.faults import (
    BANK_FAULTS,
    FaultRecords,
    bank_fault_cleared,
    bank_fault_settings,
    fault_ends,
    write_byzantine,
)
from scenarios.history import BANK_STEPS, CHAIN_STEPS, REFUSED_STEP, History
from scenarios.hosts import LOCAL, Hosts
from scenarios.real_world import RealLedgers, RealWorld, RunError
from scenarios.schema import Scenario, ScenarioError
from scenarios.workload import (
    Planned,
    check_fits,
    deadline_after,
    party_steps,
    plan,
    reclaimer,
    terms_for,
)

POLL_S = 0.05  # how often the runner looks for released asset legs (latency resolution)
# ... unless the chain announces its blocks (``newHeads``): then each block wakes a look,
# and the clock is only a safety net.
HEADS_POLL_S = 0.25
BROADCASTERS = 4  # threads that send the load generator's signed locks to a chain
BROADCAST_TRIES = 3  # a lock whose sending fails (no answer) is sent again this often
# How often the runner reads its processes' CPU time (a killed one keeps its last).
CPU_SAMPLE_S = 1.0


class BlockHeads:
    """Tells when a chain mines a block: a thread subscribed to ``newHeads`` on the
    endpoint's WebSocket (anvil serves one on its HTTP port) sets ``news`` at each one, so
    the release watch looks when a release can have happened instead of adding its poll
    interval to every latency. ``subscribed`` is false while there is no subscription
    (another scheme, a refusal, a lost connection): the watch then polls on the clock.
    The thread ends with ``stop``."""

    def __init__(self, url: str, stop: threading.Event) -> None:
        self.url = websocket_url(url)
        self.stop = stop
        self.news = threading.Event()
        self.subscribed = False

    def start(self) -> None:
        if self.url is not None:
            threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect as ws_connect

        while not self.stop.is_set():
            try:
                assert self.url is not None
                with ws_connect(self.url, open_timeout=5) as ws:
                    ws.send(NEW_HEADS_REQUEST)
                    if "result" not in json.loads(ws.recv(timeout=5)):
                        return  # no subscriptions here: the clock it is
                    self.subscribed = True
                    while not self.stop.is_set():
                        try:
                            ws.recv(timeout=0.5)
                        except TimeoutError:
                            continue
                        self.news.set()
            except (OSError, ValueError, WebSocketException):
                pass
            finally:
                self.subscribed = False
            self.stop.wait(2.0)


class CpuLedger:
    """CPU seconds the processes of a run used from a starting point on, by role ("nodes",
    "bank", "anvil", "driver"). A process first seen after the start (a restarted node)
    counts from zero; one that is gone keeps its last reading. Readings are handed in, so
    the ledger itself reads no clock and no process."""

    ROLES = ("nodes", "bank", "anvil", "driver")

    def __init__(self) -> None:
        self._start: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._started = False

    def see(self, role: str, pid: int, cpu_s: float) -> None:
        """One reading of process ``pid``'s CPU seconds (user + system)."""
        if not self._started:
            self._start[pid] = cpu_s
        self._last[pid] = (role, cpu_s)

    def start(self) -> None:
        """The readings so far are the baseline; later ones count from them."""
        self._started = True

    def totals(self) -> dict[str, float]:
        """CPU seconds used since the baseline, by role (every role, 0.0 when none ran)."""
        used = dict.fromkeys(self.ROLES, 0.0)
        for pid, (role, cpu_s) in self._last.items():
            used[role] = used.get(role, 0.0) + max(0.0, cpu_s - self._start.get(pid, 0.0))
        return used


def cpu_per_settlement(
    used: dict[str, float], settlements: int, node_processes: int
) -> dict[str, float | None]:
    """CPU seconds per settlement by role (``CpuLedger.totals``), and per node process
    ("per_node"); None for every one when no settlement ended."""
    if settlements <= 0:
        return {**dict.fromkeys(used), "per_node": None}
    shares: dict[str, float | None] = {
        role: round(cpu_s / settlements, 5) for role, cpu_s in used.items()
    }
    shares["per_node"] = round(used["nodes"] / settlements / max(1, node_processes), 5)
    return shares


def generator_figures(
    rate: float,
    offered_at: dict[int, float],
    begun_at: dict[int, float],
    sent_at: dict[int, float] | None = None,
) -> dict[str, Any]:
    """The offered load as driven: the scenario's ``rate``, the rate the settlements were
    begun at (from the first due time to the last begun), how late they began, and how
    late their locks reached the chain (due, begun and sent times in run seconds, by
    settlement index; ``sent_at`` only for fire-and-forget locks)."""
    lags = sorted(begun_at[i] - offered_at[i] for i in begun_at if i in offered_at)
    if not lags:
        return {"rate_per_s": rate, "driven": 0}
    span = max(begun_at.values()) - min(offered_at.values())
    figures: dict[str, Any] = {
        "rate_per_s": rate,
        "driven": len(lags),
        "driven_per_s": round((len(lags) - 1) / span, 1) if span > 0 else None,
        **_lag_figures("lag", lags),
    }
    sent = sorted(sent_at[i] - offered_at[i] for i in (sent_at or {}) if i in offered_at)
    if sent:
        figures["sent"] = len(sent)
        figures.update(_lag_figures("sent_lag", sent))
    return figures


def _lag_figures(name: str, lags: list[float]) -> dict[str, float]:
    """p50, p99 and max of sorted ``lags``, as ``name``_p50_s, ..."""
    return {
        f"{name}_p50_s": round(lags[len(lags) // 2], 4),
        f"{name}_p99_s": round(lags[min(len(lags) - 1, int(0.99 * len(lags)))], 4),
        f"{name}_max_s": round(lags[-1], 4),
    }


@dataclass(frozen=True, slots=True)
class Eip1559Fields:
    """The fields of an EIP-1559 (type 2) transaction without access list, in their
    signing order."""

    chain_id: int
    nonce: int
    max_priority_fee_per_gas: int
    max_fee_per_gas: int
    gas: int
    to: str
    value: int
    data: bytes


def signed_eip1559(key: coincurve.PrivateKey, tx: Eip1559Fields) -> bytes:
    """The signed raw transaction: 0x02 || rlp([fields..., [], y_parity, r, s]), signed over
    keccak(0x02 || rlp([fields..., []])), with a kept coincurve key and RLP written here:
    ~40 us a lock on this machine (the load generator signs every lock). eth_account gives
    the same bytes (a test holds them together); it, and ``rlp.encode`` with eth_keys
    (which derives the public key again for every signature), took 3.5 times the CPU."""
    fields = (
        _rlp_int(tx.chain_id),
        _rlp_int(tx.nonce),
        _rlp_int(tx.max_priority_fee_per_gas),
        _rlp_int(tx.max_fee_per_gas),
        _rlp_int(tx.gas),
        _rlp_bytes(bytes.fromhex(tx.to.removeprefix("0x"))),
        _rlp_int(tx.value),
        _rlp_bytes(tx.data),
        _RLP_EMPTY_LIST,  # the access list
    )
    signature = key.sign_recoverable(keccak(b"\x02" + _rlp_list(fields)), hasher=None)
    r, s, y_parity = signature[:32], signature[32:64], signature[64]
    return b"\x02" + _rlp_list(
        (
            *fields,
            _rlp_int(y_parity),
            _rlp_bytes(r.lstrip(b"\x00")),
            _rlp_bytes(s.lstrip(b"\x00")),
        )
    )


_RLP_EMPTY_LIST = b"\xc0"


def _rlp_length(length: int, offset: int) -> bytes:
    """RLP's prefix of a string (``offset`` 0x80) or list (0xc0) of ``length`` bytes."""
    if length < 56:
        return bytes((offset + length,))
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((offset + 55 + len(encoded),)) + encoded


def _rlp_bytes(value: bytes) -> bytes:
    if len(value) == 1 and value[0] < 0x80:
        return value
    return _rlp_length(len(value), 0x80) + value


def _rlp_int(value: int) -> bytes:
    """A non-negative integer: big-endian without leading zeros (0 is the empty string)."""
    return _rlp_bytes(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _rlp_list(items: Sequence[bytes]) -> bytes:
    body = b"".join(items)
    return _rlp_length(len(body), 0xC0) + body


class LockPipeline:
    """The load generator's locks from one key to one chain, sent without waiting on the
    chain: the generator signs each lock (nonces counted here from the key's pending
    count, the gas limit of the first lock's estimate, fees quoted once with room for the
    base fee to quadruple) and queues it; ``BROADCASTERS`` threads, each with its own
    connection, hand the signed bytes to the chain, several at a time (a chain holds a
    nonce that arrives early until the ones before it came). ``on_sent(token, tx_hash,
    error)`` is called from a broadcaster for each lock: the hash, or why the chain
    refused it. Only for the load generator: no receipt is read, no fee is bumped."""

    def __init__(
        self,
        sender: TransactionSender,
        private_key: str,
        first: TxRequest,
        on_sent: Callable[[Any, bytes | None, str], None],
    ) -> None:
        rpc = sender.rpc
        self._key = coincurve.PrivateKey(bytes.fromhex(private_key.removeprefix("0x")))
        self._chain_id = rpc.expected_chain_id
        self._gas = sender.estimate(first)
        self._nonce = sender.resync_nonce()
        base = int(rpc.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
        tip = sender.fees.priority_fee
        self._tip = int(rpc.eth.max_priority_fee) if tip is None else tip
        self._max_fee = min(4 * base + self._tip, sender.fees.max_fee_per_gas)
        self._on_sent = on_sent
        url = urllib.parse.urlsplit(rpc.url)
        self._address = (url.hostname or "127.0.0.1", url.port or 80, url.path or "/")
        self._queue: queue.SimpleQueue[tuple[Any, bytes] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._broadcast_loop, daemon=True) for _ in range(BROADCASTERS)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, token: Any, request: TxRequest) -> None:
        """Sign ``request`` with the next nonce and queue it; ``token`` comes back in
        ``on_sent``."""
        raw = signed_eip1559(
            self._key,
            Eip1559Fields(
                self._chain_id,
                self._nonce,
                min(self._tip, self._max_fee),
                self._max_fee,
                self._gas,
                request.to,
                request.value,
                request.data,
            ),
        )
        self._nonce += 1
        self._queue.put((token, raw))

    def close(self, timeout: float = 60.0) -> None:
        """Send what is queued, then stop the broadcasters."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)

    def _broadcast_loop(self) -> None:
        host, port, path = self._address
        connection = http.client.HTTPConnection(host, port, timeout=30)
        while (job := self._queue.get()) is not None:
            token, raw = job
            tx_hash, error = None, "no answer"
            for _ in range(BROADCAST_TRIES):
                try:
                    tx_hash, error = self._send(connection, path, raw)
                    break
                except (OSError, http.client.HTTPException) as exc:
                    error = f"no answer from the chain: {exc}"
                    connection.close()
                    connection = http.client.HTTPConnection(host, port, timeout=30)
            self._on_sent(token, tx_hash, error)
        connection.close()

    @staticmethod
    def _send(
        connection: http.client.HTTPConnection, path: str, raw: bytes
    ) -> tuple[bytes | None, str]:
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "eth_sendRawTransaction",
                "params": ["0x" + raw.hex()],
            }
        )
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        answer = json.loads(connection.getresponse().read())
        if "error" not in answer:
            return bytes.fromhex(answer["result"][2:]), ""
        message = str(answer["error"].get("message", answer["error"]))
        if "already known" in message.lower():
            return bytes(keccak(raw)), ""
        return None, message


class RealRun(RealWorld):
    """One real-mode run of a scenario (module docstring)."""

    def __init__(
        self,
        scenario: Scenario,
        out_dir: Path,
        progress: Callable[[str, int, int], None] | None = None,
        *,
        fire_and_forget: bool = False,
        hosts: Hosts = LOCAL,
        overrides: Sequence[str] = (),
    ) -> None:
        """``overrides``: the ``--set`` texts the scenario was made with (the run-start
        record names them)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        self._began_wall = time.time()
        history = History(out_dir / "history.jsonl", lambda: time.time() - self._began_wall)
        # The first record (wall-clock facts stay out of the digest).
        self.origin = provenance.run_start(scenario, overrides, self._began_wall)
        history.write("run-start", wall_clock=True, **self.origin)
        super().__init__(
            scenario,
            out_dir,
            history,
            progress or (lambda _what, _done, _total: None),
            fire_and_forget=fire_and_forget,
            hosts=hosts,
        )
        # fire_and_forget: the parties send their locks without waiting for receipts (the
        # throughput benchmark); lock times are then send times.
        self._pipelines: dict[tuple[str, str], LockPipeline] = {}  # fire_and_forget locks
        self.sent_at: dict[int, float] = {}  # fire_and_forget: run seconds a lock was sent
        self.tracked: list[Tracked] = []
        self.gas_used = 0
        self._bank_faults: dict[str, Any] = {}  # the bank's fault settings now
        self.fault_records = FaultRecords(self.history)
        # The load generator's pace: when each settlement was due (its offered time) and
        # when the driver began it, in run seconds, by index.
        self.offered_at: dict[int, float] = {}
        self.begun_at: dict[int, float] = {}
        self.cpu = CpuLedger()
        self._cpu_lock = threading.Lock()

    def _plan(self) -> list[Tracked]:
        return [Tracked(p.index, p.settlement_id, p.buyer, p.fail) for p in plan(self.scenario)]

    def _drive_one(self, item: Tracked, offered_at: float) -> None:
        """Drive one settlement that was due at ``offered_at`` (run seconds)."""
        self.offered_at[item.index] = offered_at
        self.begun_at[item.index] = time.time() - self._began_wall
        planned = Planned(item.index, item.settlement_id, item.buyer, item.fail, 0.0)
        # Deadlines count from now by the wall clock: the latest block's timestamp is only
        # as recent as the last transaction (anvil stamps new blocks with the wall clock).
        deadline = int(time.time()) + deadline_after(self.scenario, planned)
        # In run seconds: the first whole chain second past the deadline.
        item.deadline_at = deadline + 1.0 - self._began_wall
        addresses = {name: party["address"] for name, party in self.parties.items()}
        item.terms = terms_for(self.scenario, planned, addresses, self._tokens(), deadline)
        self.history.write("settlement", **item.record(deadline), offered=round(offered_at, 6))
        for step in party_steps(self.scenario, planned):
            side = self.chains[step.chain]
            terms = item.terms[step.chain]
            sender = self.parties[step.party]["senders"][step.chain]
            request = getattr(side.coordinator, f"{step.call}_tx")(terms)
            self.history.write(
                "leg",
                phase="invoke",
                step=step.label,
                settlement=item.settlement_id,
                leg=step.chain,
            )
            if step.label == "lock" and self.fire_and_forget:
                self._pipeline(step.chain, step.party, request).submit((item, step), request)
                continue
            try:
                result = sender.send(request)
            except TransactionReverted as exc:
                self.history.write(
                    "leg",
                    phase="fail",
                    step=step.label,
                    settlement=item.settlement_id,
                    leg=step.chain,
                    error=str(exc),
                )
                return  # the parties stop at the first refused call
            self.gas_used += result.gas_used
            if step.label == "lock":
                item.locked_at = time.time() - self._began_wall
            self.history.write(
                "leg",
                phase="ok",
                step=step.label,
                settlement=item.settlement_id,
                leg=step.chain,
                tx=result.tx_hash,
                gas=result.gas_used,
            )

    def _pipeline(self, leg: str, party: str, first: TxRequest) -> LockPipeline:
        """The fire-and-forget lock pipeline of ``party`` on chain ``leg``."""
        if (leg, party) not in self._pipelines:
            self._pipelines[(leg, party)] = LockPipeline(
                self.parties[party]["senders"][leg],
                self.parties[party]["key"],
                first,
                self._lock_sent,
            )
        return self._pipelines[(leg, party)]

    def _lock_sent(self, token: Any, tx_hash: bytes | None, error: str) -> None:
        """A fire-and-forget lock reached the chain (``tx_hash``) or was refused: the
        load goes on past a refused one (one lost settlement, not a stopped load)."""
        item, step = token
        fields = {"step": step.label, "settlement": item.settlement_id, "leg": step.chain}
        if tx_hash is None:
            self.history.write("leg", phase="fail", **fields, error=error)
            return
        item.locked_at = self.sent_at[item.index] = time.time() - self._began_wall
        self.history.write("leg", phase="ok", **fields, tx=tx_hash, gas=0)

    def _drive(self) -> None:
        """Settlements at the scenario's arrival rate, each due at a fixed time from the
        start: a driver that fell behind catches up at once rather than shifting the rest,
        so the offered load is the scenario's whatever the system does (with
        ``fire_and_forget`` nothing here waits for a receipt). How late each one began is
        recorded (``offered_at``, ``begun_at``) and summarised ("generator")."""
        s = self.scenario.settlements
        began = time.monotonic()
        began_run_s = time.time() - self._began_wall
        for item in self.tracked:
            if self._stop.is_set():
                return
            offset = item.index / s.arrival_rate
            delay = began + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._drive_one(item, began_run_s + offset)
        for pipeline in self._pipelines.values():
            pipeline.close()

    def _read_cpu(self) -> None:
        """One reading of the CPU seconds of every process of the run (``CpuLedger``)."""
        import psutil

        roles = [("nodes", proc.pid) for proc in list(self.nodes.values())]
        if self.bank is not None and self.bank.pid is not None:
            roles.append(("bank", self.bank.pid))
        roles += [
            ("anvil", side.local.pid) for side in self.chains.values() if side.local is not None
        ]
        roles.append(("driver", os.getpid()))
        with self._cpu_lock:
            for role, pid in roles:
                try:
                    times = psutil.Process(pid).cpu_times()
                except psutil.Error:
                    continue  # gone (a killed node): its last reading stands
                self.cpu.see(role, pid, times.user + times.system)

    def _sample_cpu(self) -> None:
        while not self._stop.wait(CPU_SAMPLE_S):
            self._read_cpu()

    def _unsafe_reclaimer(self) -> None:
        """In the unsafe variant, parties take their locked legs back once the deadline passed."""
        while not self._stop.wait(0.25):
            for item in self.tracked:
                for leg, terms in item.terms.items():
                    side = self.chains[leg]
                    if side.coordinator.state_of(item.settlement_id) not in RECLAIMABLE:
                        continue
                    now = int(side.rpc.eth.get_block("latest")["timestamp"])
                    if now <= terms.deadline:
                        continue
                    party = reclaimer(self.scenario, item.buyer, terms)
                    try:
                        self.parties[party]["senders"][leg].send(
                            side.coordinator.reclaim_after_deadline_tx(terms)
                        )
                        self.history.write(
                            "unsafe-reclaim", settlement=item.settlement_id, leg=leg, party=party
                        )
                    except TransactionReverted as exc:
                        self.history.write(
                            "unsafe-reclaim-failed", settlement=item.settlement_id, error=str(exc)
                        )

    def _faults(self, began: float) -> None:
        """Each fault at its time after driving began, and its end after its duration."""
        due: list[tuple[float, int, str, Any]] = []
        for k, fault in enumerate(self.scenario.faults):
            due.append((fault.at, k, "begin", fault))
            if fault_ends(fault):
                due.append((fault.at + fault.duration, k, "end", fault))
        due.sort(key=lambda entry: entry[:2])
        while not self._stop.wait(0.05):
            now = time.monotonic() - began
            while due and due[0][0] <= now:
                _, _, phase, fault = due.pop(0)
                if phase == "begin":
                    self._begin_fault(fault)
                else:
                    self._end_fault(fault)
            if not due:
                # Stay alive: the kernel's parent-death signal follows the *thread* that
                # started a process, so nodes restarted here would die with this thread.
                self._stop.wait()
                return

    def _begin_fault(self, fault: Any) -> None:
        if self.fault_records.closed:
            return  # due after the run ended
        if fault.kind == "reorg":
            dropped, replaced = self._reorg(fault.leg or "A", int(fault.value))
            self.fault_records.begin(fault, dropped=dropped, replaced=replaced)
            return
        if not self.fault_records.begin(fault):
            return
        if fault.kind == "kill-node":
            self.nodes[fault.node].kill()
            self.history.write("node-stop", node=fault.node, how="kill")
        elif fault.kind == "stop-node":
            self.nodes[fault.node].stop()
            self.history.write("node-stop", node=fault.node, how="stop")
        elif fault.kind == "pause-node":
            os.kill(self.nodes[fault.node].pid, signal.SIGSTOP)
        elif fault.kind == "unsafe-wipe-restart":
            self.nodes[fault.node].kill()
            self.history.write("node-stop", node=fault.node, how="kill")
            data = self.node_paths[fault.node].parent / "data"
            for store in data.glob("safety.sqlite*"):  # it forgets what it signed
                store.unlink()
        elif fault.kind in BANK_FAULTS and self.bank is not None:
            self._bank_faults = bank_fault_settings(
                self._bank_faults, fault, time.time(), self.scenario.seed
            )
            self._bank_admin("PUT", "/admin/faults", self._bank_faults)

    def _reorg(self, leg: str, depth: int) -> tuple[int, int]:
        """anvil's own reorg of chain ``leg`` (``anvil_reorg``: the newest ``depth`` blocks
        replaced, their transactions gone), measured: (transactions in the replaced blocks,
        blocks whose hash changed at the same heights)."""
        side = self.chains[leg]
        rpc = connect(side.rpc.url, side.chain_id)  # this thread's own connection
        head = int(rpc.eth.block_number)
        heights = range(max(1, head - depth + 1), head + 1)
        before = {h: rpc.eth.get_block(h) for h in heights}
        rpc.raw("anvil_reorg", [depth, []])
        dropped = sum(len(b["transactions"]) for b in before.values())
        replaced = sum(1 for h, b in before.items() if rpc.eth.get_block(h)["hash"] != b["hash"])
        return dropped, replaced

    def _end_fault(self, fault: Any) -> None:
        if not self.fault_records.end(fault):
            return  # the run ended first
        if fault.kind in ("kill-node", "unsafe-wipe-restart"):
            self._start_node(fault.node)
        elif fault.kind == "pause-node":
            os.kill(self.nodes[fault.node].pid, signal.SIGCONT)
        elif fault.kind in BANK_FAULTS and self.bank is not None:
            self._bank_faults = bank_fault_cleared(self._bank_faults, fault)
            self._bank_admin("PUT", "/admin/faults", self._bank_faults)

    def _read_legs(self, items: list[Tracked]) -> accounting.RawLegs:
        ledgers = RealLedgers(self)
        try:
            return accounting.read_legs(self.scenario, ledgers, [t.settlement_id for t in items])
        except OSError as exc:  # urllib's errors: a bank outage or a slow bank
            raise BankApiError(503, "unavailable", str(exc)) from None

    def _watch_releases(self) -> None:
        """Record when each asset leg ends (the latency figure), from the first lock on:
        a thread of its own, so the driver's pace never delays a reading. It reads the
        chain through its own connection (web3 providers are not shared across threads):
        the asset coordinator's final events (``CHAIN_STEPS``) and admission refusals of
        the blocks since its last look, so a look costs what ended since, however many
        settlements are open. It pauses at least twice as long as its last look took, so
        it takes at most about a third of the runner's time. It looks when the chain mines
        a block (``BlockHeads``), so a quiet run's figure carries no poll interval of its
        own; every ``POLL_S`` without a subscription. (A reorg fault drops the replaced
        blocks' transactions, so a release it undid lands again in a newer block; the
        first time it was seen stays its time.)"""
        asset_leg = MODES[self.scenario.mode].asset_leg
        side = self.chains[asset_leg]
        rpc = connect(side.rpc.url, side.chain_id)
        binding = CoordinatorBinding(rpc.web3, side.coordinator.address, self.artifacts)
        by_id = {t.settlement_id: t for t in self.tracked}
        next_block = 0
        heads = BlockHeads(side.rpc.url, self._releases_seen)
        heads.start()
        pause, gap = POLL_S, 0.0
        looked = time.monotonic()
        while True:
            # A block (each one may release) or the clock, but never sooner than ``gap``
            # after the last look began: the look's own cost bounds how often it runs.
            heads.news.wait(pause if not heads.subscribed else HEADS_POLL_S)
            self._releases_seen.wait(max(0.0, looked + gap - time.monotonic()))
            heads.news.clear()
            last = self._releases_seen.is_set()  # one more look after the run ended
            looked = time.monotonic()
            try:
                head = int(rpc.web3.eth.block_number)
                logs = (
                    binding.event_logs(
                        *CHAIN_STEPS, "SettlementRefused", from_block=next_block, to_block=head
                    )
                    if head >= next_block
                    else []
                )
            except Exception as exc:  # a chain that stopped answering: try again
                self.history.write("release-watch-failed", error=str(exc))
                if last:
                    return
                continue
            now = time.time() - self._began_wall
            for log in logs:
                item = by_id.get(bytes(log.arg("settlementId")))
                if item is None:
                    continue
                if log.event == "SettlementRefused":
                    # Admission refused it: nothing was locked, and it has ended.
                    if item.refused_at is None:
                        item.refused_at = now
                elif item.released_at is None:
                    # The release itself enters the history from the chain's logs, with
                    # its transaction and block (``_chain_steps``); here only the latency.
                    item.released_at = now
            next_block = head + 1
            gap = 2 * (time.monotonic() - looked)
            pause = max(POLL_S, gap)
            if last:
                return

    def _wait_for_end(self, deadline: float) -> str:
        """Wait until every settlement ended on every leg, or the time limit."""
        total = len(self.tracked)
        done: set[int] = set()  # an ended settlement stays ended: only the others are read
        while time.monotonic() < deadline:
            open_items = [t for t in self.tracked if t.index not in done]
            try:
                raw = self._read_legs(open_items)
            except BankApiError as exc:  # a bank outage: look again later
                self.history.write("bank-unavailable", error=str(exc))
                time.sleep(END_POLL_S)
                continue
            chain_time = int(self.chains["A"].rpc.eth.get_block("latest")["timestamp"])
            for t in open_items:
                if accounting.ended(self.scenario, t, raw, chain_time):
                    done.add(t.index)
                    t.ended_at = time.time() - self._began_wall
            self.progress("settlements ended", len(done), total)
            if len(done) == total and all(t.terms for t in self.tracked):
                return "ended"
            time.sleep(END_POLL_S)
        return "time limit"

    def run(self) -> RunReport:
        s = self.scenario
        try:
            check_fits(s)
        except ScenarioError as exc:
            raise RunError(str(exc)) from None
        with ExitStack() as stack:
            stack.callback(self.history.close)
            self.history.write(
                "run", world="real", scenario=s.name, mode=s.mode, seed=s.seed, crypto="real"
            )
            write_byzantine(self.history, s)
            self.start(stack)
            addresses = self.addresses
            supply_before = accounting.supplies(s, RealLedgers(self), addresses, ())
            self.start_nodes()
            self.tracked = self._plan()
            self.history.write("drive-start")
            self.write_fault_plans(time.time())
            drive_start = time.time() - self._began_wall
            self._read_cpu()
            self.cpu.start()
            began = time.monotonic()
            watcher = threading.Thread(target=self._watch_releases, daemon=True)
            watcher.start()
            threads = [
                threading.Thread(target=self._heartbeat, daemon=True),
                threading.Thread(target=self._sample_rss, daemon=True),
                threading.Thread(target=self._sample_cpu, daemon=True),
                threading.Thread(target=self._faults, args=(began,), daemon=True),
            ]
            if s.unsafe_self_refund:
                threads.append(threading.Thread(target=self._unsafe_reclaimer, daemon=True))
            for thread in threads:
                thread.start()
            self._drive()
            reason = self._wait_for_end(began + s.time_limit)
            self._read_cpu()
            cpu_used = self.cpu.totals()
            cpu_window_s = round(time.time() - self._began_wall - drive_start, 1)
            self._releases_seen.set()
            watcher.join(timeout=10)
            self.fault_records.close()
            self.history.write("run-end", reason=reason)
            if self.bank is not None and s.faults:
                self._bank_admin("PUT", "/admin/faults", {})  # read the final state at full speed
            node_metrics = self._scrape_nodes()
            ledgers = RealLedgers(self)
            state = accounting.run_state(
                s,
                ledgers,
                addresses,
                self.tracked,
                supply_before,
                self._node_sightings(),
                (drive_start, time.time() - self._began_wall),
            )
            chain_steps = self._chain_steps(ledgers)
            verdicts = check_all(state)
            summary = accounting.summary(
                s,
                "real",
                state,
                verdicts,
                self.tracked,
                ledgers,
                messages=sum(m.get("dvpsim_messages_out_total", 0) for m in node_metrics.values()),
                party_gas=self.gas_used,
                observation_largest_bytes=int(
                    max(
                        (
                            m.get("dvpsim_observation_largest_bytes", 0)
                            for m in node_metrics.values()
                        ),
                        default=0,
                    )
                ),
                observation_left_out=int(
                    sum(
                        m.get("dvpsim_observation_settlements_left_out_total", 0)
                        for m in node_metrics.values()
                    )
                ),
                queue=(
                    int(
                        max(
                            (
                                m.get("dvpsim_settlements_queued_peak", 0)
                                for m in node_metrics.values()
                            ),
                            default=0,
                        )
                    ),
                    float(
                        max(
                            (
                                m.get("dvpsim_oldest_queued_seconds_peak", 0.0)
                                for m in node_metrics.values()
                            ),
                            default=0.0,
                        )
                    ),
                ),
                extra={
                    **self.origin,
                    "crypto": "real",
                    "gas_source": "anvil receipts",
                    "sim_duration_s": None,
                    "wall_s": round(time.time() - self._began_wall, 1),
                    "node_rss_peak_mb": round(max(self.rss_peak_mb.values(), default=0.0), 1),
                    "generator": generator_figures(
                        s.settlements.arrival_rate, self.offered_at, self.begun_at, self.sent_at
                    ),
                    "cpu_s": {role: round(cpu_s, 2) for role, cpu_s in cpu_used.items()},
                    "cpu_window_s": cpu_window_s,
                    "out_dir": str(self.out),
                },
            )
            # CPU seconds per ended settlement, by process role, over the drive (from
            # drive-start until every settlement ended or the time limit).
            summary["cpu_s_per_settlement"] = cpu_per_settlement(
                cpu_used, int(summary["ended"]), len(self.nodes)
            )
        self._merge_node_traces(chain_steps + self._bank_steps())
        accounting.write_summary(self.out, summary)
        return RunReport(s.name, s.mode, self.out, verdicts, summary)

    def _node_records(self) -> list[dict[str, Any]]:
        """Every record of every node's trace (``node/trace.py``: written line by line as
        they happen, times in unix seconds); a line cut by a kill is skipped."""
        records = []
        for node_path in self.node_paths:
            trace = node_path.parent / "data" / "trace.jsonl"
            if not trace.exists():
                continue
            for raw in trace.read_text().splitlines():
                try:
                    records.append(json.loads(raw))
                except json.JSONDecodeError:
                    continue
        return records

    def _node_sightings(self) -> list[SeenCertificate]:
        """Every certificate a member accepted: the "certified" records of the traces."""
        return [
            accounting.sighting(record, record["t"] - self._began_wall)
            for record in self._node_records()
            if record.get("event") == "certified"
        ]

    def _chain_steps(self, ledgers: RealLedgers) -> list[dict[str, Any]]:
        """The committee's releases and refunds on every chain, and the asset chain's
        admission refusals, from the coordinators' logs: "leg" records with the
        transaction, the block and its time (unix seconds)."""
        records = []
        stamps: dict[tuple[str, int], int] = {}

        def record(leg: str, step: str, sid: bytes, tx: bytes, block: int, **extra: int) -> None:
            if (leg, block) not in stamps:
                rpc = self.chains[leg].rpc
                stamps[(leg, block)] = int(rpc.eth.get_block(block)["timestamp"])
            records.append(
                {
                    "t": stamps[(leg, block)],
                    "event": "leg",
                    "phase": "ok",
                    "step": step,
                    "settlement": "0x" + sid.hex(),
                    "leg": leg,
                    "tx": "0x" + tx.hex(),
                    "block": block,
                    **extra,
                }
            )

        for leg, name, sid, tx, block in ledgers.final_logs():
            record(leg, CHAIN_STEPS[name], sid, tx, block)
        asset_leg = MODES[self.scenario.mode].asset_leg
        refusals = self.chains[asset_leg].coordinator.event_logs("SettlementRefused")
        for log in refusals:
            record(asset_leg, REFUSED_STEP, bytes(log.arg("settlementId")), log.transaction_hash,
                   log.block_number, open=int(log.arg("open")),
                   ended_last_window=int(log.arg("endedLastWindow")))  # fmt: skip
        return records

    def _bank_steps(self) -> list[dict[str, Any]]:
        """The bank's holds, payments, cancellations and rejections, from its ledger's
        events (read from the bank's database once the service has stopped)."""
        if self.bank is None or not self.bank.db.exists():
            return []
        storage = SqliteStorage(self.bank.db)
        try:
            events = storage.snapshot().events
        finally:
            storage.close()
        return [
            {
                "t": stored.event.created_ms / 1000,
                "event": "leg",
                "phase": "ok",
                "step": BANK_STEPS.get(stored.event.kind, stored.event.kind),
                "settlement": "0x" + stored.event.settlement_id.hex(),
                "leg": BANK,
                "bank_id": stored.event.event_id,
            }
            for stored in events
        ]

    def _merge_node_traces(self, steps: list[dict[str, Any]]) -> None:
        """One time-ordered history: the runner's own records, the legs' steps read from the
        chains and the bank, and every node's trace (``node/trace.py`` records the node
        processes wrote with their wall clock). Times in ``steps`` are unix seconds."""
        path = self.out / "history.jsonl"
        lines: list[tuple[float, int, str]] = []
        for order, line in enumerate(path.read_text().splitlines()):
            # The run-start record stays first whatever time a merged record carries.
            at = -math.inf if order == 0 else json.loads(line)["t"]
            lines.append((at, order, line))
        records = [*steps, *self._node_records()]
        for order, record in enumerate(records, start=len(lines) + 1):
            at = round(float(record.pop("t")) - self._began_wall, 6)
            event = record.pop("event")
            line = json.dumps({"t": at, "event": event, **record}, separators=(",", ":"))
            lines.append((at, order, line))
        lines.sort(key=lambda entry: entry[:2])
        merged = path.with_suffix(".merging")
        merged.write_text("".join(line + "\n" for _, _, line in lines))
        merged.replace(path)
