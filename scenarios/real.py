"""Real-mode runs: chains, the bank and a committee of node processes, driven and checked.

``RealRun(scenario, out_dir).run()`` does what `dvpsim run` promises:

1. starts the chains the scenario asks for (anvil, Prague, 127.0.0.1) or connects to the
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

Everything it starts is stopped by PID in ``finally`` (and by the kernel if the runner
itself is killed). Latencies are the runner's wall-clock observations: from the moment the
asset-lock transaction was mined to the moment the runner saw the asset leg COMMITTED.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account

from bank_adapter.client import BankApiError, SyncBankClient
from bank_adapter.devcommittee import DevCommittee
from bank_adapter.process import BankProcess
from bank_adapter.terms import BANK_CHAIN_ID, BANK_VERIFIER_ID
from chain_adapters.bindings import (
    CoordinatorBinding,
    TokenBinding,
    deploy_bridged_token,
    deploy_coordinator,
    deploy_token,
)
from chain_adapters.build import compile_contracts
from chain_adapters.evm import Rpc, connect
from chain_adapters.localchain import DEV_PRIVATE_KEYS, LocalChain, free_port, start_chain
from chain_adapters.model import ZERO_ADDRESS, Mode, State, Terms
from chain_adapters.sender import TransactionReverted, TransactionSender
from chain_adapters.verifier import configure_bls_verifier
from consensus.report import CommitteeConfig
from dvpsim.process import ManagedProcess
from node.book import bank_account
from node.provision import (
    MemberKeys,
    NodeStartError,
    make_keys,
    start_node,
    wait_node_ready,
    write_committee,
)
from scenarios.checks import (
    LegState,
    Movement,
    RunState,
    SettlementOutcome,
    Verdict,
    check_all,
    passed,
)
from scenarios.schema import Scenario

MODE_TARGET_LEGS = {
    "single-chain-onchain": ("A",),
    "single-chain-bank": ("A", "bank"),
    "multi-chain-messaging": ("A", "bank"),
    "multi-chain-token": ("A", "B"),
}
HEARTBEAT_S = 1.0  # empty blocks keep chain time moving on automining chains
POLL_S = 0.05  # how often the runner looks for released asset legs (latency resolution)
END_POLL_S = 0.5  # how often it reads every leg to see whether the run has ended
# Node transactions run between a party's gas estimate and its lock: a release that empties
# the escrow's balance makes the next lock's token transfer write a zero slot again (+20k).
PARTY_GAS_MARGIN = 1.6


class RunError(Exception):
    """The run could not be set up; one line."""


@dataclass
class ChainSide:
    name: str
    chain_id: int
    rpc: Rpc
    coordinator: CoordinatorBinding
    asset: TokenBinding | None = None  # the asset token on this chain (locked or minted)
    payment: TokenBinding | None = None
    local: LocalChain | None = None


@dataclass
class Tracked:
    index: int
    settlement_id: bytes
    buyer: str
    fail: str  # "" or the scenario's failure reason
    terms: dict[str, Terms] = field(default_factory=dict)  # leg -> terms on that chain
    locked_at: float | None = None  # wall clock when the asset lock was mined
    released_at: float | None = None  # wall clock when the runner saw the asset leg final
    final: dict[str, LegState] = field(default_factory=dict)


class History:
    """history.jsonl: one JSON object per line, flushed as it goes (nothing lost on a crash)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", buffering=1)
        self._lock = threading.Lock()
        self.began = time.time()

    def write(self, event: str, **fields: Any) -> None:
        entry = {"t": round(time.time() - self.began, 4), "event": event, **fields}
        with self._lock:
            self._file.write(json.dumps(entry, default=_plain) + "\n")

    def close(self) -> None:
        self._file.close()


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if hasattr(value, "name"):
        return value.name
    return str(value)


@dataclass
class RunReport:
    scenario: str
    mode: str
    out_dir: Path
    verdicts: tuple[Verdict, ...]
    summary: dict[str, Any]

    @property
    def ok(self) -> bool:
        return passed(self.verdicts) and self.summary.get("ended", 0) == self.summary.get(
            "settlements", -1
        )


class RealRun:
    def __init__(
        self,
        scenario: Scenario,
        out_dir: Path,
        progress: Callable[[str, int, int], None] | None = None,
        *,
        fire_and_forget: bool = False,
    ) -> None:
        # fire_and_forget: the parties send their locks without waiting for receipts (the
        # throughput benchmark); lock times are then send times.
        self.fire_and_forget = fire_and_forget
        self._lock_gas: int | None = None  # fire_and_forget: the gas limit every lock uses
        self.rss_peak_mb: dict[int, float] = {}
        self.scenario = scenario
        self.out = out_dir
        self.out.mkdir(parents=True, exist_ok=True)
        self.progress = progress or (lambda _what, _done, _total: None)
        self.history = History(self.out / "history.jsonl")
        self.artifacts = compile_contracts()
        self.chains: dict[str, ChainSide] = {}
        self.nodes: dict[int, ManagedProcess] = {}
        self.node_paths: list[Path] = []
        self.bank: BankProcess | None = None
        self.bank_client: SyncBankClient | None = None
        self.bank_admin_token = ""
        self.tracked: list[Tracked] = []
        self.parties: dict[str, Any] = {}
        self.gas_used = 0
        self._deployer_senders: dict[str, TransactionSender] = {}
        self._report_gas: dict[bytes, int] = {}
        self._stop = threading.Event()
        self._releases_seen = threading.Event()  # the run ended: the release watcher stops
        self._rng_seed = scenario.seed

    # ------------------------------------------------------------------ set-up

    def _key(self, label: str) -> str:
        return (
            "0x"
            + hashlib.sha256(
                f"dvpsim/{self.scenario.name}/{self._rng_seed}/{label}".encode()
            ).hexdigest()
        )

    def _start_chains(self, stack: ExitStack) -> None:
        legs = [leg for leg in MODE_TARGET_LEGS[self.scenario.mode] if leg != "bank"]
        for leg, chain in zip(legs, self.scenario.chains, strict=False):
            local = None
            url = chain.rpc_url
            if not url:
                local = stack.enter_context(
                    start_chain(
                        chain.chain_id,
                        log_dir=self.out / "chains",
                        accounts=10,
                        block_time=chain.block_time or None,
                    )
                )
                url = local.rpc_url
            rpc = connect(url, chain.chain_id)
            self.history.write(
                "chain", leg=leg, chain_id=chain.chain_id, url=url, pid=local.pid if local else None
            )
            w3 = rpc.web3
            deployer = w3.eth.accounts[0]
            coordinator = deploy_coordinator(
                w3,
                self.artifacts,
                unsafe_self_refund_after_deadline=self.scenario.unsafe_self_refund,
                sender=deployer,
            )
            self.chains[leg] = ChainSide(chain.name, chain.chain_id, rpc, coordinator, local=local)

    def _deploy_tokens(self) -> None:
        mode = self.scenario.mode
        a = self.chains["A"]
        w3 = a.rpc.web3
        a.asset = deploy_token(w3, "AssetToken", self.artifacts)
        if mode == "single-chain-onchain":
            a.payment = deploy_token(w3, "PaymentToken", self.artifacts)
        if mode == "multi-chain-token":
            b = self.chains["B"]
            b.payment = deploy_token(b.rpc.web3, "PaymentToken", self.artifacts)
            # What COMMIT mints: the payment to the seller on A, the asset to the buyer on B.
            a.payment = deploy_bridged_token(
                w3, "Bridged Payment", "bPAY", 2, a.coordinator.address, self.artifacts
            )
            b.asset = deploy_bridged_token(
                b.rpc.web3, "Bridged Asset", "bAST", 0, b.coordinator.address, self.artifacts
            )

    def _fund_parties(self) -> None:
        scenario = self.scenario
        for i, account in enumerate(scenario.accounts):
            key = DEV_PRIVATE_KEYS[1 + i]
            address = Account.from_key(key).address
            self.parties[account.name] = {
                "key": key,
                "address": address,
                "account": account,
                "senders": {},
            }
        a = self.chains["A"]
        for name, party in self.parties.items():
            account = party["account"]
            for leg, side in self.chains.items():
                party["senders"][leg] = TransactionSender(
                    side.rpc,
                    party["key"],
                    revert_decoder=side.coordinator.decode_error,
                    gas_margin=PARTY_GAS_MARGIN,
                    # The load generator sends dozens of locks a second: one fee quote
                    # per block time is enough.
                    fee_quote_ttl=0.25 if self.fire_and_forget else 0.0,
                )
            deployer_sender = self._deployer_sender("A")
            if account.asset and a.asset is not None:
                deployer_sender.send(a.asset.mint_tx(party["address"], account.asset))
            if account.payment:
                pay_leg = "B" if scenario.mode == "multi-chain-token" else "A"
                side = self.chains[pay_leg]
                if side.payment is not None:
                    self._deployer_sender(pay_leg).send(
                        side.payment.mint_tx(party["address"], account.payment)
                    )
            # Approve the coordinators once for everything the party will lock.
            for leg, side in self.chains.items():
                for token in (side.asset, side.payment):
                    if token is not None and token.minter() != side.coordinator.address:
                        party["senders"][leg].send(
                            token.approve_tx(side.coordinator.address, 2**255)
                        )
            self.history.write(
                "party",
                name=name,
                address=party["address"],
                asset=account.asset,
                payment=account.payment,
                bank=account.bank_balance,
            )

    def _deployer_sender(self, leg: str) -> TransactionSender:
        if leg not in self._deployer_senders:
            side = self.chains[leg]
            self._deployer_senders[leg] = TransactionSender(
                side.rpc, DEV_PRIVATE_KEYS[0], revert_decoder=side.coordinator.decode_error
            )
        return self._deployer_senders[leg]

    def _configure_committee(self, members: list[MemberKeys]) -> dict[str, CommitteeConfig]:
        c = self.scenario.committee
        keys = [m.bls_public_key for m in members]
        pops = [m.pop() for m in members]
        configs = {}
        for leg, side in self.chains.items():
            configs[leg] = configure_bls_verifier(
                side.coordinator.contract,
                keys,
                pops,
                c.f,
                c.t,
                unsafe_low_threshold=c.unsafe_allow_low_threshold,
                sender=side.rpc.web3.eth.accounts[0],
            )
            self.history.write(
                "committee", leg=leg, n=c.n, f=c.f, t=c.t, config_count=configs[leg].config_count
            )
        return configs

    def _start_bank(self, members: list[MemberKeys]) -> None:
        c = self.scenario.committee
        bank = self.scenario.bank
        assert bank is not None
        config = CommitteeConfig(
            BANK_CHAIN_ID, BANK_VERIFIER_ID, 1, tuple(m.bls_public_key for m in members), c.f, c.t
        )
        # Secrets as ASCII hex: the node config carries them as text.
        clients = {
            f"node-{m.index}": hashlib.sha256(
                f"dvpsim/bank-client/{m.index}/{self._rng_seed}".encode()
            )
            .hexdigest()
            .encode()
            for m in members
        }
        clients["runner"] = (
            hashlib.sha256(f"dvpsim/bank-client/runner/{self._rng_seed}".encode())
            .hexdigest()
            .encode()
        )
        accounts = [
            (bank_account(p["address"]), bank.currency, p["account"].bank_balance)
            for p in self.parties.values()
        ]
        self.bank_admin_token = hashlib.sha256(
            f"dvpsim/bank-admin/{self._rng_seed}".encode()
        ).hexdigest()[:32]
        self.webhook_ports = {m.index: free_port() for m in members}
        self.bank = BankProcess(
            self.out / "bank",
            DevCommittee(config, tuple(m.bls_secret for m in members)),
            clients=clients,
            accounts=accounts,
            admin_token=self.bank_admin_token,
            webhooks=[
                f"http://127.0.0.1:{port}/bank-callback" for port in self.webhook_ports.values()
            ],
            extra_args=["--webhook-poll-ms", "20"],
        )
        url = self.bank.start()
        self.bank_clients = clients
        # Scenarios slow the bank down on purpose: the runner waits for its answers.
        self.bank_client = SyncBankClient(url, "runner", clients["runner"], timeout_s=30.0)
        self.history.write("bank", url=url, pid=self.bank.pid, accounts=len(accounts))

    def _bank_admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self.bank is not None
        request = urllib.request.Request(
            self.bank.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Authorization": f"Bearer {self.bank_admin_token}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def _write_committee(
        self, members: list[MemberKeys], configs: dict[str, CommitteeConfig]
    ) -> None:
        s = self.scenario

        def targets_for(i: int) -> list[dict[str, Any]]:
            targets = []
            for leg, side in self.chains.items():
                key = self._key(f"transmitter/{leg}/{i}")
                targets.append(
                    {
                        "name": f"chain-{leg}",
                        "leg": leg,
                        "kind": "evm",
                        "chain_id": side.chain_id,
                        "verifier": side.coordinator.address,
                        "config_count": configs[leg].config_count,
                        "t": s.committee.t,
                        "url": side.rpc.url,
                        "transmitter_key": key,
                        "confirmations": s.chains[0].confirmations if s.chains else 0,
                    }
                )
            if "bank" in MODE_TARGET_LEGS[s.mode]:
                assert self.bank is not None and s.bank is not None
                targets.append(
                    {
                        "name": "bank",
                        "leg": "bank",
                        "kind": "bank",
                        "chain_id": BANK_CHAIN_ID,
                        "verifier": "0x" + BANK_VERIFIER_ID.hex(),
                        "config_count": 1,
                        "t": s.committee.t,
                        "url": self.bank.url,
                        "client_id": f"node-{i}",
                        "client_secret": self.bank_clients[f"node-{i}"].decode(),
                        "currency": s.bank.currency,
                        "webhook_listen": f"127.0.0.1:{self.webhook_ports[i]}",
                    }
                )
            return targets

        # Transmitters pay gas: fund each from the deployer's balance (dev chains only).
        for leg, side in self.chains.items():
            for m in members:
                address = Account.from_key(self._key(f"transmitter/{leg}/{m.index}")).address
                side.rpc.raw("anvil_setBalance", [address, hex(10**21)])
        timing = dataclasses.asdict(s.timing)
        self.node_paths = write_committee(
            self.out / "committee",
            members,
            f=s.committee.f,
            mode=s.mode,
            targets_for=targets_for,
            timing=timing,
            allow_unsafe_threshold=s.committee.unsafe_allow_low_threshold,
        )

    def _start_node(self, index: int) -> ManagedProcess:
        proc = start_node(index, self.node_paths[index])
        self.nodes[index] = proc
        self.history.write("node-start", node=index, pid=proc.pid)
        return proc

    def _wait_ready(self, index: int) -> dict[str, Any]:
        try:
            return wait_node_ready(index, self.nodes[index], self.node_paths[index])
        except NodeStartError as exc:
            raise RunError(str(exc)) from None

    def _wait_live(self, timeout: float = 60.0) -> None:
        """Wait until every node has accepted a certificate: the committee is connected and
        running rounds. Settlements driven before that would count the committee's start-up
        (dialling n-1 peers, the first epoch) as settlement latency."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, proc in self.nodes.items():
                if not proc.running():
                    raise RunError(f"node {index} exited during start-up: {proc.log_tail(3)}")
            metrics = self._scrape_nodes()
            live = sum(1 for m in metrics.values() if m.get("dvpsim_certificates_total", 0) >= 1)
            self.progress("committee live", live, len(self.nodes))
            if live == len(self.nodes):
                return
            time.sleep(0.1)
        raise RunError(
            f"the committee did not certify a round within {timeout:.0f} s of starting "
            f"(see the node logs under {self.out / 'committee'})"
        )

    # ------------------------------------------------------------------ settlements

    def _plan(self) -> list[Tracked]:
        s = self.scenario.settlements
        reasons: list[str] = []
        for failure in s.fail:
            reasons += [failure.reason] * failure.count
        # Spread the failing settlements evenly through the run.
        plan = [""] * s.count
        if reasons:
            step = s.count / len(reasons)
            for k, reason in enumerate(reasons):
                plan[min(s.count - 1, int(k * step + step / 2))] = reason
        tracked = []
        for i, reason in enumerate(plan):
            sid = hashlib.sha256(
                f"dvpsim/settlement/{self.scenario.name}/{self._rng_seed}/{i}".encode()
            ).digest()
            buyer = (
                "poor-buyer"
                if reason == "insufficient-funds" and "poor-buyer" in self.parties
                else s.buyer
            )
            tracked.append(Tracked(i, sid, buyer, reason))
        return tracked

    def _terms_for(self, item: Tracked, deadline: int) -> dict[str, Terms]:
        s = self.scenario.settlements
        seller = self.parties[s.seller]["address"]
        buyer = self.parties[item.buyer]["address"]

        def leg(mode: Mode, asset_token: str, payment_token: str) -> Terms:
            return Terms(
                item.settlement_id,
                mode,
                seller,
                buyer,
                asset_token,
                s.asset_amount,
                payment_token,
                s.payment_amount,
                deadline,
            )

        a = self.chains["A"]
        assert a.asset is not None
        mode = self.scenario.mode
        if mode == "single-chain-onchain":
            assert a.payment is not None
            return {"A": leg(Mode.SWAP, a.asset.address, a.payment.address)}
        if mode in ("single-chain-bank", "multi-chain-messaging"):
            # The payment leg is at the bank: no token here, but its amount is part of the
            # terms, so the committee asks the bank for exactly what the escrow promised.
            return {"A": leg(Mode.ASSET_ESCROW, a.asset.address, ZERO_ADDRESS)}
        b = self.chains["B"]
        assert a.payment is not None and b.asset is not None and b.payment is not None
        return {
            "A": leg(Mode.BRIDGE_SELLER_SIDE, a.asset.address, a.payment.address),
            "B": leg(Mode.BRIDGE_BUYER_SIDE, b.asset.address, b.payment.address),
        }

    def _drive_one(self, item: Tracked) -> None:
        s = self.scenario.settlements
        a = self.chains["A"]
        # Deadlines count from now by the wall clock: the latest block's timestamp is only
        # as recent as the last transaction (anvil stamps new blocks with the wall clock).
        now = int(time.time())
        waits_for_deadline = item.fail in ("deadline", "insufficient-funds")
        deadline = now + max(1, int(round(s.missed_deadline if waits_for_deadline else s.deadline)))
        item.terms = self._terms_for(item, deadline)
        seller = self.parties[s.seller]["senders"]
        buyer = self.parties[item.buyer]["senders"]
        try:
            if item.fail == "deadline" and self.scenario.mode not in (
                "single-chain-onchain",
                "multi-chain-token",
            ):
                seller["A"].send(
                    a.coordinator.create_tx(item.terms["A"])
                )  # the seller never delivers
            else:
                request = a.coordinator.create_and_lock_tx(item.terms["A"])
                if self.fire_and_forget:
                    # Every lock of the load costs the same: estimate the first, reuse it.
                    if self._lock_gas is None:
                        self._lock_gas = seller["A"].estimate(request)
                    request = dataclasses.replace(request, gas=self._lock_gas)
                result = seller["A"].send(request, wait=not self.fire_and_forget)
                item.locked_at = time.time()
                self.gas_used += result.gas_used
            if self.scenario.mode == "single-chain-onchain" and item.fail not in (
                "deadline",
                "insufficient-funds",
            ):
                self.gas_used += (
                    buyer["A"].send(a.coordinator.lock_payment_tx(item.terms["A"])).gas_used
                )
            if self.scenario.mode == "multi-chain-token" and item.fail not in (
                "deadline",
                "insufficient-funds",
            ):
                b = self.chains["B"]
                self.gas_used += (
                    buyer["B"].send(b.coordinator.create_and_lock_tx(item.terms["B"])).gas_used
                )
        except TransactionReverted as exc:
            self.history.write("drive-reverted", settlement=item.settlement_id, error=str(exc))
        self.history.write(
            "settlement",
            index=item.index,
            settlement=item.settlement_id,
            fail=item.fail,
            buyer=item.buyer,
            deadline=deadline,
            locked=item.locked_at is not None,
        )

    def _drive(self) -> None:
        s = self.scenario.settlements
        began = time.monotonic()
        for item in self.tracked:
            if self._stop.is_set():
                return
            due = began + item.index / s.arrival_rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._drive_one(item)

    # ------------------------------------------------------------------ faults and time

    def _sample_rss(self) -> None:
        import psutil

        while not self._stop.wait(0.5):
            for index, proc in list(self.nodes.items()):
                try:
                    rss = psutil.Process(proc.pid).memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.rss_peak_mb[index] = max(self.rss_peak_mb.get(index, 0.0), rss)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            for side in self.chains.values():
                if side.local is not None and side.local.block_time is None:
                    # A chain being stopped at the end of the run may refuse.
                    with contextlib.suppress(Exception):
                        side.rpc.raw("evm_mine", [])

    def _unsafe_reclaimer(self) -> None:
        """In the unsafe variant, parties take their locked legs back once the deadline passed."""
        s = self.scenario.settlements
        while not self._stop.wait(0.25):
            for item in self.tracked:
                for leg, terms in item.terms.items():
                    side = self.chains[leg]
                    if side.coordinator.state_of(item.settlement_id) not in (
                        State.ASSET_LOCKED,
                        State.PAYMENT_LOCKED,
                        State.PREPARED,
                    ):
                        continue
                    now = int(side.rpc.eth.get_block("latest")["timestamp"])
                    if now <= terms.deadline:
                        continue
                    party = (
                        s.seller
                        if terms.mode in (Mode.ASSET_ESCROW, Mode.SWAP, Mode.BRIDGE_SELLER_SIDE)
                        else item.buyer
                    )
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
        pending = sorted(self.scenario.faults, key=lambda f: f.at)
        restarts: list[tuple[float, int]] = []
        while not self._stop.wait(0.05):
            now = time.monotonic() - began
            while pending and pending[0].at <= now:
                fault = pending.pop(0)
                self._apply_fault(fault, restarts, now)
            for due, index in list(restarts):
                if due <= now:
                    restarts.remove((due, index))
                    self._start_node(index)
                    self.history.write("fault", kind="restart-node", node=index)
            if not pending and not restarts:
                # Stay alive: the kernel's parent-death signal follows the *thread* that
                # started a process, so nodes restarted here would die with this thread.
                self._stop.wait()
                return

    def _apply_fault(self, fault: Any, restarts: list[tuple[float, int]], now: float) -> None:
        self.history.write(
            "fault", kind=fault.kind, node=fault.node, duration=fault.duration, value=fault.value
        )
        if fault.kind == "kill-node":
            self.nodes[fault.node].kill()
            if fault.duration > 0:
                restarts.append((now + fault.duration, fault.node))
        elif fault.kind == "stop-node":
            self.nodes[fault.node].stop()
        elif self.bank is not None:
            settings: dict[str, Any] = {"seed": self.scenario.seed}
            if fault.kind == "bank-latency":
                settings["latency_ms"] = int(fault.value)
            elif fault.kind == "bank-error-rate":
                settings["error_rate"] = float(fault.value)
            elif fault.kind == "bank-duplicate-callbacks":
                settings["duplicate_callback_rate"] = float(fault.value or 1.0)
            elif fault.kind == "bank-outage":
                settings["outage_start_s"] = time.time()
                settings["outage_end_s"] = time.time() + fault.duration
            self._bank_admin("PUT", "/admin/faults", settings)

    # ------------------------------------------------------------------ observation

    def _leg_states(self, items: list[Tracked] | None = None) -> dict[str, dict[bytes, LegState]]:
        """Every leg's state of ``items`` (default: every settlement driven so far)."""
        states: dict[str, dict[bytes, LegState]] = {}
        ids = [t.settlement_id for t in (self.tracked if items is None else items) if t.terms]
        for leg, side in self.chains.items():
            raw = side.coordinator.states_of(ids)
            states[leg] = {
                sid: _chain_leg_state(state) for sid, state in zip(ids, raw, strict=True)
            }
        if self.bank is not None:
            # One admin read for every instruction (a status request each took seconds
            # for thousands of settlements).
            try:
                known = self._bank_admin("GET", "/admin/instructions")["instructions"]
            except OSError as exc:  # urllib's errors: a bank outage or a slow bank
                raise BankApiError(503, "unavailable", str(exc)) from None
            states["bank"] = {sid: _bank_leg_state(known.get("0x" + sid.hex())) for sid in ids}
        return states

    def _ended(
        self, item: Tracked, states: dict[str, dict[bytes, LegState]], chain_time: int
    ) -> bool:
        if not item.terms:
            return False
        deadline = next(iter(item.terms.values())).deadline
        legs = MODE_TARGET_LEGS[self.scenario.mode]
        finals = {leg: states[leg].get(item.settlement_id, LegState.NONE) for leg in legs}
        item.final = finals
        if any(state is LegState.PREPARED for state in finals.values()):
            return False
        if any(state in (LegState.COMMITTED, LegState.ABORTED) for state in finals.values()):
            # Legs that never existed are ended once the deadline passed (nothing can come).
            return (
                all(state is not LegState.NONE for state in finals.values())
                or chain_time > deadline
            )
        return chain_time > deadline + 2

    def _watch_releases(self) -> None:
        """Record when each asset leg ends (the latency figure), from the first lock on:
        a thread of its own, so the driver's pace never delays a reading. It reads the
        chain through its own connection (web3 providers are not shared across threads)."""
        asset_leg = "B" if self.scenario.mode == "multi-chain-token" else "A"
        side = self.chains[asset_leg]
        rpc = connect(side.rpc.url, side.chain_id)
        binding = CoordinatorBinding(rpc.web3, side.coordinator.address, self.artifacts)
        while True:
            last = self._releases_seen.wait(POLL_S)  # one more look after the run ended
            open_items = [t for t in self.tracked if t.released_at is None and t.terms]
            if not open_items:
                if last:
                    return
                continue
            try:
                states = binding.states_of([t.settlement_id for t in open_items])
            except Exception as exc:  # a chain that stopped answering: try again
                self.history.write("release-watch-failed", error=str(exc))
                if last:
                    return
                continue
            now = time.time()
            for item, state in zip(open_items, states, strict=True):
                if _chain_leg_state(state) in (LegState.COMMITTED, LegState.ABORTED):
                    item.released_at = now
                    self.history.write(
                        "leg-final",
                        settlement=item.settlement_id,
                        leg=asset_leg,
                        state=_chain_leg_state(state).value,
                    )
            if last:
                return

    def _wait_for_end(self, deadline: float) -> None:
        """Wait until every settlement ended on every leg, or the time limit."""
        total = len(self.tracked)
        done: set[int] = set()  # an ended settlement stays ended: only the others are read
        while time.monotonic() < deadline:
            open_items = [t for t in self.tracked if t.index not in done]
            try:
                states = self._leg_states(open_items)
            except BankApiError as exc:  # a bank outage: look again later
                self.history.write("bank-unavailable", error=str(exc))
                time.sleep(END_POLL_S)
                continue
            chain_time = int(self.chains["A"].rpc.eth.get_block("latest")["timestamp"])
            done |= {t.index for t in open_items if self._ended(t, states, chain_time)}
            self.progress("settlements ended", len(done), total)
            if len(done) == total and all(t.terms for t in self.tracked):
                return
            time.sleep(END_POLL_S)

    # ------------------------------------------------------------------ the run

    def run(self) -> RunReport:
        s = self.scenario
        began_wall = time.time()
        with ExitStack() as stack:
            stack.callback(self.history.close)
            self.progress("starting chains", 0, 1)
            self._start_chains(stack)
            stack.callback(self._stop_everything)  # nodes and bank stop before the chains
            members = make_keys(s.committee.n, s.seed, [free_port() for _ in range(s.committee.n)])
            self._deploy_tokens()
            self._fund_parties()
            configs = self._configure_committee(members)
            if "bank" in MODE_TARGET_LEGS[s.mode]:
                if s.bank is None:
                    raise RunError(f"{s.path}: mode {s.mode} needs a [bank] table")
                self._start_bank(members)
            self._write_committee(members, configs)
            supply_before = self._supplies()
            for i in range(s.committee.n):
                self._start_node(i)
            for i in range(s.committee.n):
                self.progress("nodes ready", i, s.committee.n)
                self._wait_ready(i)
            self._wait_live()
            self.tracked = self._plan()
            began = time.monotonic()
            watcher = threading.Thread(target=self._watch_releases, daemon=True)
            watcher.start()
            threads = [
                threading.Thread(target=self._heartbeat, daemon=True),
                threading.Thread(target=self._sample_rss, daemon=True),
                threading.Thread(target=self._faults, args=(began,), daemon=True),
            ]
            if s.unsafe_self_refund:
                threads.append(threading.Thread(target=self._unsafe_reclaimer, daemon=True))
            for thread in threads:
                thread.start()
            self._drive()
            self._wait_for_end(began + s.time_limit)
            self._releases_seen.set()
            watcher.join(timeout=10)
            if self.bank is not None and s.faults:
                self._bank_admin("PUT", "/admin/faults", {})  # read the final state at full speed
            node_metrics = self._scrape_nodes()
            states = self._leg_states()
            state = self._run_state(states, supply_before)
            verdicts = check_all(state)
            summary = self._summary(state, verdicts, node_metrics, time.time() - began_wall)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2, default=_plain))
        return RunReport(s.name, s.mode, self.out, verdicts, summary)

    def _stop_everything(self) -> None:
        self._stop.set()
        self._releases_seen.set()
        for proc in list(self.nodes.values()):
            proc.stop(timeout=3)
        if self.bank_client is not None:
            self.bank_client.close()
        if self.bank is not None:
            self.bank.stop()

    def _scrape_nodes(self) -> dict[int, dict[str, float]]:
        metrics: dict[int, dict[str, float]] = {}
        for index, path in enumerate(self.node_paths):
            ready = path.parent / "ready.json"
            proc = self.nodes.get(index)
            if proc is None or not proc.running() or not ready.exists():
                continue
            port = json.loads(ready.read_text())["metrics_port"]
            try:
                body = (
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
                    .read()
                    .decode()
                )
            except OSError:
                continue
            metrics[index] = {
                line.split()[0]: float(line.split()[-1])
                for line in body.splitlines()
                if line.startswith("dvpsim_") and "{" not in line
            }
        return metrics

    # ------------------------------------------------------------------ final state

    def _holders(self, leg: str) -> list[str]:
        """Everyone who can hold tokens on a chain: the parties and that chain's coordinator
        (coordinators on different chains may share an address)."""
        return [p["address"] for p in self.parties.values()] + [
            self.chains[leg].coordinator.address
        ]

    def _supplies(self) -> dict[str, int]:
        """Every token's total over all holders, and the bank's total over all accounts.

        In the token-transfer mode an asset lives on both chains: native where it was
        issued, bridged where COMMIT minted it. Its supply is then what circulates natively
        plus what is bridged, where the native units locked as backing of committed
        settlements no longer count: bridged value without backing (or the reverse) shows.
        """
        totals: dict[str, int] = {}
        if self.scenario.mode == "multi-chain-token":
            a, b = self.chains["A"], self.chains["B"]
            assert a.asset and a.payment and b.asset and b.payment
            committed = {
                leg: sum(
                    1
                    for t in self.tracked
                    if t.terms and side.coordinator.state_of(t.settlement_id) == State.COMMITTED
                )
                for leg, side in self.chains.items()
            }
            s = self.scenario.settlements
            parties = [p["address"] for p in self.parties.values()]
            totals["asset (A+B)"] = (
                sum(a.asset.balance_of(h) for h in self._holders("A"))
                - s.asset_amount * committed["A"]
                + sum(b.asset.balance_of(h) for h in parties)
            )
            totals["payment (A+B)"] = (
                sum(b.payment.balance_of(h) for h in self._holders("B"))
                - s.payment_amount * committed["B"]
                + sum(a.payment.balance_of(h) for h in parties)
            )
            return totals
        for leg, side in self.chains.items():
            for kind, token in (("asset", side.asset), ("payment", side.payment)):
                if token is None:
                    continue
                totals[f"{kind}@{leg}"] = sum(token.balance_of(h) for h in self._holders(leg))
        if self.bank_client is not None and self.scenario.bank is not None:
            totals["bank"] = sum(
                self.bank_client.account(bank_account(p["address"])).balance
                for p in self.parties.values()
            )
        return totals

    def _run_state(
        self, states: dict[str, dict[bytes, LegState]], supply_before: dict[str, int]
    ) -> RunState:
        s = self.scenario
        outcomes = []
        events = self._coordinator_events()
        for item in self.tracked:
            legs = {
                leg: states[leg].get(item.settlement_id, LegState.NONE)
                for leg in MODE_TARGET_LEGS[s.mode]
            }
            movements: list[tuple[str, Movement]] = []
            for leg in self.chains:
                for name in events.get((leg, item.settlement_id), []):
                    movements.append(
                        (
                            leg,
                            {
                                "SettlementCommitted": Movement.RELEASE,
                                "SettlementAborted": Movement.REFUND,
                                "SettlementExpired": Movement.REFUND,
                            }[name],
                        )
                    )
            if "bank" in legs and legs["bank"] is LegState.COMMITTED:
                movements.append(("bank", Movement.PAYMENT))
            asset_leg = "B" if s.mode == "multi-chain-token" else "A"
            pay_leg = "bank" if "bank" in legs else "A"
            asset_to_buyer = (
                s.settlements.asset_amount
                if legs.get(asset_leg) is LegState.COMMITTED
                and (asset_leg, Movement.REFUND) not in movements
                else 0
            )
            paid = s.settlements.payment_amount if legs.get(pay_leg) is LegState.COMMITTED else 0
            outcomes.append(
                SettlementOutcome(
                    "0x" + item.settlement_id.hex()[:16],
                    legs,
                    asset_to_buyer,
                    paid,
                    s.settlements.asset_amount,
                    s.settlements.payment_amount,
                    tuple(movements),
                )
            )
        supply_after = self._supplies()
        before, after = dict(supply_before), dict(supply_after)
        self._expected_balances(outcomes, before, after)
        return RunState(tuple(outcomes), before, after)

    def _expected_balances(
        self, outcomes: list[SettlementOutcome], expected: dict[str, int], actual: dict[str, int]
    ) -> None:
        """Each party's final balances must be its opening balances moved by exactly the
        committed settlements (a double payment or release shows here)."""
        s = self.scenario
        seller = self.parties[s.settlements.seller]
        mode = s.mode
        for name, party in self.parties.items():
            account = party["account"]
            asset_delta = pay_delta = 0
            for item, outcome in zip(self.tracked, outcomes, strict=True):
                committed = outcome.asset_to_buyer > 0 or outcome.paid_to_seller > 0
                if not committed:
                    continue
                if party is seller:
                    asset_delta -= outcome.asset_to_buyer
                    pay_delta += outcome.paid_to_seller
                elif name == item.buyer:
                    asset_delta += outcome.asset_to_buyer
                    pay_delta -= outcome.paid_to_seller
            if mode == "multi-chain-token":
                # The asset and the payment each exist on both chains (locked there, minted here).
                a, b = self.chains["A"], self.chains["B"]
                assert a.asset and a.payment and b.asset and b.payment
                address = party["address"]
                pairs = [
                    (
                        f"{name}: asset@A+B",
                        account.asset + asset_delta,
                        a.asset.balance_of(address) + b.asset.balance_of(address),
                    ),
                    (
                        f"{name}: payment@A+B",
                        account.payment + pay_delta,
                        a.payment.balance_of(address) + b.payment.balance_of(address),
                    ),
                ]
            else:
                a = self.chains["A"]
                assert a.asset is not None
                pairs = [
                    (
                        f"{name}: asset@A",
                        account.asset + asset_delta,
                        a.asset.balance_of(party["address"]),
                    )
                ]
                if a.payment is not None:
                    pairs.append(
                        (
                            f"{name}: payment@A",
                            account.payment + pay_delta,
                            a.payment.balance_of(party["address"]),
                        )
                    )
                if self.bank_client is not None:
                    pairs.append(
                        (
                            f"{name}: bank",
                            account.bank_balance + pay_delta,
                            self.bank_client.account(bank_account(party["address"])).balance,
                        )
                    )
            for key, want, have in pairs:
                expected[key], actual[key] = want, have

    def _coordinator_events(self) -> dict[tuple[str, bytes], list[str]]:
        found: dict[tuple[str, bytes], list[str]] = {}
        for leg, side in self.chains.items():
            contract = side.coordinator.contract
            for name in ("SettlementCommitted", "SettlementAborted", "SettlementExpired"):
                for log in getattr(contract.events, name)().get_logs(from_block=0):
                    found.setdefault((leg, bytes(log["args"]["settlementId"])), []).append(name)
            for log in contract.events.ReportApplied().get_logs(from_block=0):
                receipt = side.rpc.eth.get_transaction_receipt(log["transactionHash"])
                self._report_gas[log["transactionHash"]] = receipt["gasUsed"]
        return found

    def _summary(
        self,
        state: RunState,
        verdicts: tuple[Verdict, ...],
        node_metrics: dict[int, dict[str, float]],
        wall: float,
    ) -> dict[str, Any]:
        committed = sum(
            1 for o in state.settlements if set(o.legs.values()) == {LegState.COMMITTED}
        )
        aborted = sum(
            1
            for o in state.settlements
            if LegState.COMMITTED not in o.legs.values()
            and LegState.PREPARED not in o.legs.values()
        )
        ended = sum(
            1 for t in self.tracked if t.final and LegState.PREPARED not in t.final.values()
        )
        latencies = sorted(
            t.released_at - t.locked_at
            for t in self.tracked
            if t.locked_at is not None
            and t.released_at is not None
            and t.final.get("B" if self.scenario.mode == "multi-chain-token" else "A")
            is LegState.COMMITTED
        )
        report_gas = sum(self._report_gas.values())
        count = max(1, len(self.tracked))
        messages = sum(m.get("dvpsim_messages_out_total", 0) for m in node_metrics.values())
        expected_failures = sum(1 for t in self.tracked if t.fail)
        throughput, window = _throughput(self.tracked)
        return {
            "scenario": self.scenario.name,
            "mode": self.scenario.mode,
            "n": self.scenario.committee.n,
            "f": self.scenario.committee.f,
            "t": self.scenario.committee.t,
            "settlements": len(self.tracked),
            "ended": ended,
            "committed": committed,
            "aborted": aborted,
            "expected_to_fail": expected_failures,
            "latency_p50_s": _percentile(latencies, 0.5),
            "latency_p99_s": _percentile(latencies, 0.99),
            "gas_per_settlement_reports": report_gas // count,
            "gas_per_settlement_parties": self.gas_used // count,
            "messages_per_settlement": round(messages / count, 1),
            # Headroom of the observation limit, and settlements that had to wait for room.
            "observation_largest_bytes": int(
                max(
                    (m.get("dvpsim_observation_largest_bytes", 0) for m in node_metrics.values()),
                    default=0,
                )
            ),
            "observation_left_out": int(
                sum(
                    m.get("dvpsim_observation_settlements_left_out_total", 0)
                    for m in node_metrics.values()
                )
            ),
            "wall_s": round(wall, 1),
            "throughput_per_s": throughput,
            "throughput_window_s": window,
            "node_rss_peak_mb": round(max(self.rss_peak_mb.values(), default=0.0), 1),
            "checks": {v.invariant: {"status": v.status, "witness": v.witness} for v in verdicts},
            "balances": {
                key: {"expected": state.supply_before[key], "actual": state.supply_after.get(key)}
                for key in sorted(state.supply_before)
                if ": " in key
            },
            "passed": passed(verdicts) and ended == len(self.tracked),
            "out_dir": str(self.out),
        }


def _throughput(tracked: list[Tracked]) -> tuple[float | None, float | None]:
    """Ended settlements per second from the first lock to the last release, and that
    window in seconds."""
    done = [t for t in tracked if t.locked_at is not None and t.released_at is not None]
    if len(done) < 2:
        return None, None
    span = max(t.released_at for t in done) - min(t.locked_at for t in done)  # type: ignore[type-var]
    if span <= 0:
        return None, None
    return round(len(done) / span, 1), round(span, 1)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


def _chain_leg_state(state: State) -> LegState:
    if state == State.COMMITTED:
        return LegState.COMMITTED
    if state in (State.ABORTED, State.EXPIRED):
        return LegState.ABORTED
    if state in (State.ASSET_LOCKED, State.PAYMENT_LOCKED, State.PREPARED):
        return LegState.PREPARED
    return LegState.NONE


def _bank_leg_state(state: str | None) -> LegState:
    return {
        "PREVALIDATED": LegState.PREPARED,
        "EXECUTED": LegState.COMMITTED,
        "CANCELLED": LegState.ABORTED,
    }.get(state or "", LegState.NONE)
