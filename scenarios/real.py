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

What both worlds share lives elsewhere and is used here: the workload
(``scenarios.workload``), when a settlement has ended and the final-state audit and
summary (``scenarios.accounting``), the history writer (``scenarios.history``). This
module is the real world's side: starting and reaching the parts, sending the parties'
transactions, injecting faults, reading the final state over JSON-RPC and the bank's API
(:class:`RealLedgers`). At the end it merges every node's trace (``node/trace.py``
records, written by the node processes) into the run's history, in time order.

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
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
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
from chain_adapters.model import State
from chain_adapters.sender import TransactionReverted, TransactionSender
from chain_adapters.verifier import configure_bls_verifier
from consensus.report import CommitteeConfig
from node.legs import bank_account
from node.modes import MODES
from node.provision import (
    MemberKeys,
    NodeStartError,
    make_keys,
    start_node,
    wait_node_ready,
    write_committee,
)
from processes import ManagedProcess
from scenarios import accounting
from scenarios.accounting import Tracked
from scenarios.checks import LegState, Verdict, check_all, passed
from scenarios.faults import BANK_FAULTS, bank_fault_cleared, bank_fault_settings
from scenarios.history import History, plain
from scenarios.schema import Scenario, ScenarioError
from scenarios.workload import (
    ChainTokens,
    Planned,
    check_fits,
    deadline_after,
    party_steps,
    plan,
    reclaimer,
    terms_for,
)

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
        self._began_wall = time.time()
        self.history = History(self.out / "history.jsonl", lambda: time.time() - self._began_wall)
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
        self._bank_faults: dict[str, Any] = {}  # the bank's fault settings now

    # ------------------------------------------------------------------ set-up

    def _key(self, label: str) -> str:
        return (
            "0x"
            + hashlib.sha256(
                f"dvpsim/{self.scenario.name}/{self._rng_seed}/{label}".encode()
            ).hexdigest()
        )

    def _start_chains(self, stack: ExitStack) -> None:
        legs = MODES[self.scenario.mode].chains
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
                "committee",
                leg=leg,
                n=c.n,
                f=c.f,
                threshold=c.t,
                config_count=configs[leg].config_count,
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
            if MODES[s.mode].uses_bank:
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
        return [Tracked(p.index, p.settlement_id, p.buyer, p.fail) for p in plan(self.scenario)]

    def _tokens(self) -> dict[str, ChainTokens]:
        return {
            leg: ChainTokens(
                side.asset.address if side.asset is not None else None,
                side.payment.address if side.payment is not None else None,
            )
            for leg, side in self.chains.items()
        }

    def _drive_one(self, item: Tracked) -> None:
        planned = Planned(item.index, item.settlement_id, item.buyer, item.fail, 0.0)
        # Deadlines count from now by the wall clock: the latest block's timestamp is only
        # as recent as the last transaction (anvil stamps new blocks with the wall clock).
        deadline = int(time.time()) + deadline_after(self.scenario, planned)
        addresses = {name: party["address"] for name, party in self.parties.items()}
        item.terms = terms_for(self.scenario, planned, addresses, self._tokens(), deadline)
        self.history.write(
            "settlement",
            index=item.index,
            settlement=item.settlement_id,
            fail=item.fail,
            buyer=item.buyer,
            deadline=deadline,
        )
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
            wait = True
            if step.label == "lock" and self.fire_and_forget:
                # Every lock of the load costs the same: estimate the first, reuse it.
                if self._lock_gas is None:
                    self._lock_gas = sender.estimate(request)
                request = dataclasses.replace(request, gas=self._lock_gas)
                wait = False
            try:
                result = sender.send(request, wait=wait)
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
            if fault.duration > 0 and fault.kind != "stop-node":
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
        self.history.write(
            "fault",
            phase="begin",
            kind=fault.kind,
            node=fault.node,
            duration=fault.duration,
            value=fault.value,
        )
        if fault.kind == "kill-node":
            self.nodes[fault.node].kill()
            self.history.write("node-stop", node=fault.node, how="kill")
        elif fault.kind == "stop-node":
            self.nodes[fault.node].stop()
            self.history.write("node-stop", node=fault.node, how="stop")
        elif self.bank is not None:
            self._bank_faults = bank_fault_settings(
                self._bank_faults, fault, time.time(), self.scenario.seed
            )
            self._bank_admin("PUT", "/admin/faults", self._bank_faults)

    def _end_fault(self, fault: Any) -> None:
        self.history.write("fault", phase="end", kind=fault.kind, node=fault.node)
        if fault.kind == "kill-node":
            self._start_node(fault.node)
        elif fault.kind in BANK_FAULTS and self.bank is not None:
            self._bank_faults = bank_fault_cleared(self._bank_faults, fault)
            self._bank_admin("PUT", "/admin/faults", self._bank_faults)

    # ------------------------------------------------------------------ observation

    def _read_legs(self, items: list[Tracked]) -> accounting.RawLegs:
        ledgers = RealLedgers(self)
        try:
            return accounting.read_legs(self.scenario, ledgers, [t.settlement_id for t in items])
        except OSError as exc:  # urllib's errors: a bank outage or a slow bank
            raise BankApiError(503, "unavailable", str(exc)) from None

    def _watch_releases(self) -> None:
        """Record when each asset leg ends (the latency figure), from the first lock on:
        a thread of its own, so the driver's pace never delays a reading. It reads the
        chain through its own connection (web3 providers are not shared across threads)."""
        asset_leg = MODES[self.scenario.mode].asset_leg
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
            now = time.time() - self._began_wall
            for item, state in zip(open_items, states, strict=True):
                leg_state = accounting.chain_leg_state(state)
                if leg_state in (LegState.COMMITTED, LegState.ABORTED):
                    item.released_at = now
                    self.history.write(
                        "leg",
                        phase="ok",
                        step="release" if leg_state is LegState.COMMITTED else "refund",
                        settlement=item.settlement_id,
                        leg=asset_leg,
                    )
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
            done |= {
                t.index for t in open_items if accounting.ended(self.scenario, t, raw, chain_time)
            }
            self.progress("settlements ended", len(done), total)
            if len(done) == total and all(t.terms for t in self.tracked):
                return "ended"
            time.sleep(END_POLL_S)
        return "time limit"

    # ------------------------------------------------------------------ the run

    def run(self) -> RunReport:
        s = self.scenario
        try:
            check_fits(s)
        except ScenarioError as exc:
            raise RunError(str(exc)) from None
        mode = MODES[s.mode]
        with ExitStack() as stack:
            stack.callback(self.history.close)
            self.history.write(
                "run", world="real", scenario=s.name, mode=s.mode, seed=s.seed, crypto="real"
            )
            self.history.write("run-start", wall_clock=True, started_at=round(self._began_wall, 3))
            self.progress("starting chains", 0, 1)
            self._start_chains(stack)
            stack.callback(self._stop_everything)  # nodes and bank stop before the chains
            members = make_keys(s.committee.n, s.seed, [free_port() for _ in range(s.committee.n)])
            self._deploy_tokens()
            self._fund_parties()
            configs = self._configure_committee(members)
            if mode.uses_bank:
                if s.bank is None:
                    raise RunError(f"{s.path}: mode {s.mode} needs a [bank] table")
                self._start_bank(members)
            self._write_committee(members, configs)
            addresses = {name: party["address"] for name, party in self.parties.items()}
            supply_before = accounting.supplies(s, RealLedgers(self), addresses, ())
            for i in range(s.committee.n):
                self._start_node(i)
            for i in range(s.committee.n):
                self.progress("nodes ready", i, s.committee.n)
                self._wait_ready(i)
            self._wait_live()
            self.tracked = self._plan()
            self.history.write("drive-start")
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
            reason = self._wait_for_end(began + s.time_limit)
            self._releases_seen.set()
            watcher.join(timeout=10)
            self.history.write("run-end", reason=reason)
            if self.bank is not None and s.faults:
                self._bank_admin("PUT", "/admin/faults", {})  # read the final state at full speed
            node_metrics = self._scrape_nodes()
            ledgers = RealLedgers(self)
            state = accounting.run_state(s, ledgers, addresses, self.tracked, supply_before)
            accounting.mark_final(s, ledgers, self.tracked)
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
                extra={
                    "crypto": "real",
                    "gas_source": "anvil receipts",
                    "sim_duration_s": None,
                    "wall_s": round(time.time() - self._began_wall, 1),
                    "node_rss_peak_mb": round(max(self.rss_peak_mb.values(), default=0.0), 1),
                    "out_dir": str(self.out),
                },
            )
        self._merge_node_traces()
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2, default=plain))
        return RunReport(s.name, s.mode, self.out, verdicts, summary)

    def _merge_node_traces(self) -> None:
        """One time-ordered history: the runner's own records and every node's trace
        (``node/trace.py`` records the node processes wrote with their wall clock)."""
        path = self.out / "history.jsonl"
        lines: list[tuple[float, int, str]] = []
        for order, line in enumerate(path.read_text().splitlines()):
            lines.append((json.loads(line)["t"], order, line))
        order = len(lines)
        for node_path in self.node_paths:
            trace = node_path.parent / "data" / "trace.jsonl"
            if not trace.exists():
                continue
            for raw in trace.read_text().splitlines():
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                at = round(float(record.pop("t")) - self._began_wall, 6)
                event = record.pop("event")
                order += 1
                line = json.dumps({"t": at, "event": event, **record}, separators=(",", ":"))
                lines.append((at, order, line))
        lines.sort(key=lambda entry: entry[:2])
        merged = path.with_suffix(".merging")
        merged.write_text("".join(line + "\n" for _, _, line in lines))
        merged.replace(path)

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


class RealLedgers:
    """``scenarios.accounting.Ledgers`` over the run's chains (JSON-RPC) and bank (API)."""

    def __init__(self, run: RealRun) -> None:
        self.run = run

    def chain_states(self, leg: str, ids: Sequence[bytes]) -> list[State]:
        return self.run.chains[leg].coordinator.states_of(list(ids))

    def coordinator(self, leg: str) -> str:
        return self.run.chains[leg].coordinator.address

    def token(self, leg: str, kind: str) -> str | None:
        side = self.run.chains[leg]
        binding = side.asset if kind == "asset" else side.payment
        return None if binding is None else binding.address

    def balance(self, leg: str, token: str, holder: str) -> int:
        side = self.run.chains[leg]
        for binding in (side.asset, side.payment):
            if binding is not None and binding.address == token:
                return int(binding.balance_of(holder))
        raise KeyError(token)

    def coordinator_events(self) -> Mapping[tuple[str, bytes], Sequence[str]]:
        found: dict[tuple[str, bytes], list[str]] = {}
        for leg, side in self.run.chains.items():
            contract = side.coordinator.contract
            for name in ("SettlementCommitted", "SettlementAborted", "SettlementExpired"):
                for log in getattr(contract.events, name)().get_logs(from_block=0):
                    found.setdefault((leg, bytes(log["args"]["settlementId"])), []).append(name)
        return found

    def report_gas(self) -> Sequence[int]:
        gas = []
        for side in self.run.chains.values():
            for log in side.coordinator.contract.events.ReportApplied().get_logs(from_block=0):
                receipt = side.rpc.eth.get_transaction_receipt(log["transactionHash"])
                gas.append(int(receipt["gasUsed"]))
        return gas

    def bank_states(self, ids: Sequence[bytes]) -> Mapping[bytes, str | None]:
        if self.run.bank is None:
            return {sid: None for sid in ids}
        # One admin read for every instruction (a status request each took seconds for
        # thousands of settlements).
        known = self.run._bank_admin("GET", "/admin/instructions")["instructions"]
        return {sid: known.get("0x" + sid.hex()) for sid in ids}

    def bank_balance(self, account_id: str) -> int:
        assert self.run.bank_client is not None
        return int(self.run.bank_client.account(account_id).balance)
