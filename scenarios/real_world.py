"""The real world of a run: chains, the bank service and a committee of node processes.

``RealWorld`` starts (or reaches) the parts a scenario names and stops what it started by
PID: anvil chains on 127.0.0.1 (or the given RPC URLs) with the tokens and one DvP
coordinator each, configured with the committee's keys and proofs of possession; the bank
service with the parties' accounts and one API client per node; n node processes with
their keys, keystores and configs, and a second process for each member that runs as
twins (``node.twins``: the member's keys, a transport identity, port, safety store,
transmitter accounts and bank callback URL of its own; the member's bank API client).
Processes are kept by *endpoint*: member i's first copy is endpoint i, the twin copy of
the j-th twinned member endpoint n + j (``Scenario.endpoint``). It reaches them for the
runner (the parties' transaction senders, the bank's admin API, the nodes' metrics) and
reads their final state for the shared accounting (:class:`RealLedgers`).

It decides nothing about a run: what to drive, when a settlement has ended and what the
verdicts are belong to ``scenarios.real`` and the modules both worlds share.
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

from bank_adapter.client import SyncBankClient
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
from chain_adapters.sender import TransactionSender
from chain_adapters.verifier import configure_bls_verifier, revert_reason
from consensus.devkeys import rogue_public_key
from consensus.report import CommitteeConfig
from node.legs import bank_account
from node.modes import BANK, MODES
from node.netfaults import plan_json
from node.provision import (
    MemberKeys,
    NodeStartError,
    make_keys,
    start_node,
    twin_keys,
    wait_node_ready,
    write_committee,
)
from processes import ManagedProcess
from scenarios.accounting import HEARTBEAT_S
from scenarios.faults import (
    ENDPOINT_FAULTS,
    NETWORK_FAULTS,
    clock_windows,
    network_faults,
    rogue_key_refused,
    rpc_windows,
)
from scenarios.history import CHAIN_STEPS, History
from scenarios.hosts import LOCAL, Hosts
from scenarios.schema import Scenario, twin_member
from scenarios.workload import (
    ChainTokens,
)

# Node transactions run between a party's gas estimate and its lock: a release that empties
# the escrow's balance makes the next lock's token transfer write a zero slot again (+20k).
PARTY_GAS_MARGIN = 1.6
FAULT_PLAN = "data/faults.json"  # a node's network-fault plan, beside its config


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


class RealWorld:
    """The real parts of one run (module docstring)."""

    def __init__(
        self,
        scenario: Scenario,
        out_dir: Path,
        history: History,
        progress: Callable[[str, int, int], None],
        *,
        fire_and_forget: bool = False,
        hosts: Hosts = LOCAL,
    ) -> None:
        self.scenario = scenario
        self.hosts = hosts  # where each part listens (scenarios.hosts; 127.0.0.1 by default)
        self.out = out_dir
        self.history = history
        self.progress = progress
        # The load generator sends dozens of locks a second: its senders reuse fee quotes.
        self.fire_and_forget = fire_and_forget
        self.artifacts = compile_contracts()
        self.chains: dict[str, ChainSide] = {}
        self.nodes: dict[int, ManagedProcess] = {}  # by endpoint (module docstring)
        self.node_paths: list[Path] = []  # by endpoint
        self.bank: BankProcess | None = None
        self.bank_client: SyncBankClient | None = None
        self.bank_admin_token = ""
        # What ``bank_instructions`` has read so far, and the bank's event seq it is as of.
        self._bank_seen: dict[str, str] = {}
        self._bank_seq = 0
        self._bank_seen_lock = threading.Lock()
        self.parties: dict[str, Any] = {}
        self.rss_peak_mb: dict[int, float] = {}
        self._deployer_senders: dict[str, TransactionSender] = {}
        self._stop = threading.Event()
        self._releases_seen = threading.Event()  # the run ended: the release watcher stops
        self._rng_seed = scenario.seed

    @property
    def addresses(self) -> dict[str, str]:
        """Each party's address, by account name."""
        return {name: party["address"] for name, party in self.parties.items()}

    def start(self, stack: ExitStack) -> None:
        """Start the chains and the bank, deploy and fund, provision the committee; the
        node processes start with :meth:`start_nodes`. Everything is stopped when
        ``stack`` closes."""
        s = self.scenario
        self.progress("starting chains", 0, 1)
        self._start_chains(stack)
        stack.callback(self._stop_everything)  # nodes and bank stop before the chains
        members = [
            dataclasses.replace(m, host=self.hosts.node(m.index).host)
            for m in make_keys(s.committee.n, s.seed, [free_port() for _ in range(s.committee.n)])
        ]
        twins = [
            dataclasses.replace(
                twin_keys(members[i], free_port()), host=self.hosts.node(s.committee.n + j).host
            )
            for j, i in enumerate(s.twins())
        ]
        self._deploy_tokens()
        self._fund_parties()
        configs = self._configure_committee(members)
        if MODES[s.mode].uses_bank:
            if s.bank is None:
                raise RunError(f"{s.path}: mode {s.mode} needs a [bank] table")
            self._start_bank(members, twins)
        self._write_committee(members, configs, twins)

    def start_nodes(self) -> None:
        """Launch every node (and twin copy) and wait until the committee certifies rounds."""
        endpoints = self.scenario.endpoints
        for i in range(endpoints):
            self._start_node(i)
        for i in range(endpoints):
            self.progress("nodes ready", i, endpoints)
            self._wait_ready(i)
        self._wait_live()

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
                        host=self.hosts.services,
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
                admission_floor=chain.admission_floor,
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
        rogue = self.scenario.rogue_member()
        if rogue is not None:
            # It publishes g*x less the others' keys, and the proof it can make: x's.
            i = rogue[0]
            others = [k for j, k in enumerate(keys) if j != i]
            keys[i] = rogue_public_key(members[i].bls_secret, others)
        configs = {}
        for leg, side in self.chains.items():
            try:
                configs[leg] = configure_bls_verifier(
                    side.coordinator.contract,
                    keys,
                    pops,
                    c.f,
                    c.t,
                    unsafe_low_threshold=c.unsafe_allow_low_threshold,
                    sender=side.rpc.web3.eth.accounts[0],
                )
            except Exception as exc:
                if rogue is None:
                    raise
                reason = revert_reason(side.coordinator.contract.abi, exc) or exc
                raise RunError(
                    rogue_key_refused(self.scenario, f"chain {leg}'s admitKeys ({reason})")
                ) from None
            self.history.write(
                "committee",
                leg=leg,
                n=c.n,
                f=c.f,
                threshold=c.t,
                config_count=configs[leg].config_count,
            )
        return configs

    def _start_bank(self, members: list[MemberKeys], twins: Sequence[MemberKeys]) -> None:
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
        # A callback URL per endpoint: each copy of a twinned member takes callbacks.
        self.webhook_ports = {e: free_port() for e in range(len(members) + len(twins))}
        self.bank = BankProcess(
            self.out / "bank",
            DevCommittee(config, tuple(m.bls_secret for m in members)),
            clients=clients,
            accounts=accounts,
            admin_token=self.bank_admin_token,
            webhooks=[
                f"http://{self.hosts.node(e).host}:{port}/bank-callback"
                for e, port in self.webhook_ports.items()
            ],
            extra_args=["--webhook-poll-ms", "20"],
            host=self.hosts.services,
        )
        url = self.bank.start()
        self.bank_clients = clients
        # Scenarios slow the bank down on purpose: the runner waits for its answers.
        self.bank_client = SyncBankClient(url, "runner", clients["runner"], timeout_s=30.0)
        self.history.write("bank", url=url, pid=self.bank.pid, accounts=len(accounts))

    def bank_instructions(self) -> Mapping[str, str]:
        """Every bank instruction's state by settlement id ("0x..."), as of now: one admin
        read of what changed since the last call (``?since=``; a status request each took
        seconds for thousands of settlements, and reading every instruction each time
        cost the bank ~35 ms at 10,000 of them, twice a second while a run waits)."""
        with self._bank_seen_lock:
            answer = self._bank_admin("GET", f"/admin/instructions?since={self._bank_seq}")
            self._bank_seen.update(answer["instructions"])
            self._bank_seq = max(self._bank_seq, int(answer["seq"]))
            return self._bank_seen  # the caller reads it, never changes it

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
        self,
        members: list[MemberKeys],
        configs: dict[str, CommitteeConfig],
        twins: Sequence[MemberKeys] = (),
    ) -> None:
        s = self.scenario

        def targets_for(endpoint: int) -> list[dict[str, Any]]:
            label = s.endpoint_label(endpoint)  # 2, or "2b" for a twin copy
            i = label if isinstance(label, int) else twin_member(label)
            targets = []
            for leg, side in self.chains.items():
                key = self._key(f"transmitter/{leg}/{label}")
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
                        "webhook_listen": (
                            f"{self.hosts.node(endpoint).host}:{self.webhook_ports[endpoint]}"
                        ),
                    }
                )
            return targets

        # Transmitters pay gas: fund each from the deployer's balance (dev chains only).
        for leg, side in self.chains.items():
            for endpoint in range(s.endpoints):
                label = s.endpoint_label(endpoint)
                address = Account.from_key(self._key(f"transmitter/{leg}/{label}")).address
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
            # Network faults act on the frames nodes send, Byzantine members on what they
            # say: their messages show it.
            trace_messages=self.has_plan_faults or bool(s.byzantine),
            fault_plan=FAULT_PLAN if self.has_plan_faults else None,
            byzantine_for=self._byzantine_config,
            twins=twins,
        )

    def _byzantine_config(self, index: int) -> dict[str, Any] | None:
        """A Byzantine member's node-config entry (``node.config``), or None."""
        spec = self.scenario.byzantine_spec(index)
        if spec is None:
            return None
        return {
            "behaviours": list(spec.behaviours),
            "coalition": sorted(spec.coalition),
            "lie": spec.lie,
            "seed": spec.seed,
        }

    @property
    def has_network_faults(self) -> bool:
        return any(f.kind in NETWORK_FAULTS for f in self.scenario.faults)

    @property
    def has_plan_faults(self) -> bool:
        """Faults a node applies itself: network faults and its chain endpoint's."""
        own = (*ENDPOINT_FAULTS, "clock")
        return self.has_network_faults or any(f.kind in own for f in self.scenario.faults)

    def write_fault_plans(self, drive_start_unix: float) -> None:
        """Every node's fault windows, in unix seconds from the drive's start
        (``node.netfaults``), written whole (a node never reads half a plan)."""
        if not self.has_plan_faults:
            return
        partitions, links = network_faults(
            self.scenario.faults, drive_start_unix, self.scenario.endpoint
        )
        # Endpoint and clock faults name members: their first copies (index < n).
        endpoints = rpc_windows(self.scenario.faults, drive_start_unix)
        clocks = clock_windows(self.scenario.faults, drive_start_unix)
        for index, path in enumerate(self.node_paths):  # by endpoint: a twin's own faults
            plan = path.parent / FAULT_PLAN
            plan.parent.mkdir(parents=True, exist_ok=True)
            staged = plan.with_suffix(".staged")
            text = plan_json(partitions, links, endpoints.get(index, ()), clocks.get(index, ()))
            staged.write_text(text)
            staged.replace(plan)

    def _start_node(self, index: int) -> ManagedProcess:
        """Start endpoint ``index``'s process (a member's index for its first copy)."""
        label = self.scenario.endpoint_label(index)
        proc = start_node(label, self.node_paths[index], self.hosts.node(index).exec)
        self.nodes[index] = proc
        if isinstance(label, int):
            self.history.write("node-start", node=index, pid=proc.pid)
        else:
            self.history.write("node-start", node=twin_member(label), twin=True, pid=proc.pid)
        return proc

    def _wait_ready(self, index: int) -> dict[str, Any]:
        label = self.scenario.endpoint_label(index)
        try:
            return wait_node_ready(label, self.nodes[index], self.node_paths[index])
        except NodeStartError as exc:
            raise RunError(str(exc)) from None

    def _wait_live(self, timeout: float = 60.0) -> None:
        """Wait until every honest node has accepted a certificate: the committee is
        connected and running rounds (a Byzantine member may never). Settlements driven
        before that would count the committee's start-up (dialling n-1 peers, the first
        epoch) as settlement latency."""
        honest = self.scenario.honest_members()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, proc in self.nodes.items():
                if not proc.running():
                    raise RunError(f"node {index} exited during start-up: {proc.log_tail(3)}")
            metrics = self._scrape_nodes()
            live = {i for i, m in metrics.items() if m.get("dvpsim_certificates_total", 0) >= 1}
            self.progress("committee live", len(live & honest), len(honest))
            if honest <= live:
                return
            time.sleep(0.1)
        if self.scenario.byzantine:
            return  # Byzantine members may keep the committee from certifying: drive anyway
        raise RunError(
            f"the committee did not certify a round within {timeout:.0f} s of starting "
            f"(see the node logs under {self.out / 'committee'})"
        )

    def _tokens(self) -> dict[str, ChainTokens]:
        return {
            leg: ChainTokens(
                side.asset.address if side.asset is not None else None,
                side.payment.address if side.payment is not None else None,
            )
            for leg, side in self.chains.items()
        }

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
            url = f"http://{self.hosts.node(index).host}:{port}/metrics"
            try:
                body = urllib.request.urlopen(url, timeout=5).read().decode()
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

    def __init__(self, run: RealWorld) -> None:
        self.run = run
        self._final_logs: list[tuple[str, str, bytes, bytes, int]] | None = None

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

    def final_logs(self) -> list[tuple[str, str, bytes, bytes, int]]:
        """Every SettlementCommitted, SettlementAborted and SettlementExpired log of every
        coordinator, as (leg, event name, settlement id, tx hash, block number); read once
        per view (the audit and the history both use them)."""
        if self._final_logs is None:
            logs = []
            for leg, side in self.run.chains.items():
                for log in side.coordinator.event_logs(*CHAIN_STEPS):
                    sid = bytes(log.arg("settlementId"))
                    logs.append((leg, log.event, sid, log.transaction_hash, log.block_number))
            self._final_logs = logs
        return self._final_logs

    def coordinator_events(self) -> Mapping[tuple[str, bytes], Sequence[str]]:
        found: dict[tuple[str, bytes], list[str]] = {}
        for leg, name, sid, _tx, _block in self.final_logs():
            found.setdefault((leg, sid), []).append(name)
        return found

    def report_gas(self) -> Sequence[int]:
        """Gas of every transaction a transmitter sent to a coordinator: the reports that
        applied and the copies refused (``ReportAlreadyApplied``) or reverted, which cost
        gas too. (The simulated chains refuse a reverting transmission before mining it,
        as a sender's gas estimate does: there such a copy costs nothing.)"""
        run = self.run
        gas = []
        for leg, side in run.chains.items():
            transmitters = {
                Account.from_key(
                    run._key(f"transmitter/{leg}/{run.scenario.endpoint_label(e)}")
                ).address.lower()
                for e in range(run.scenario.endpoints)
            }
            coordinator = side.coordinator.address.lower()
            head = int(side.rpc.raw("eth_blockNumber", []), 16)
            for number in range(head + 1):
                for receipt in side.rpc.raw("eth_getBlockReceipts", [hex(number)]) or ():
                    if (
                        str(receipt.get("from", "")).lower() in transmitters
                        and str(receipt.get("to") or "").lower() == coordinator
                    ):
                        gas.append(int(receipt["gasUsed"], 16))
        return gas

    def bank_states(self, ids: Sequence[bytes]) -> Mapping[bytes, str | None]:
        if self.run.bank is None:
            return {sid: None for sid in ids}
        known = self.run.bank_instructions()
        return {sid: known.get("0x" + sid.hex()) for sid in ids}

    def prepared_legs(self) -> set[tuple[str, bytes]]:
        prepared = set()
        for leg, side in self.run.chains.items():
            for log in side.coordinator.event_logs("LegLocked"):
                if int(log.arg("state")) == State.PREPARED:
                    prepared.add((leg, bytes(log.arg("settlementId"))))
        if self.run.bank is not None:
            held = self.run._bank_admin("GET", "/admin/instructions")["held"]
            prepared |= {(BANK, bytes.fromhex(sid[2:])) for sid in held}
        return prepared

    def bank_balance(self, account_id: str) -> int:
        assert self.run.bank_client is not None
        return int(self.run.bank_client.account(account_id).balance)
