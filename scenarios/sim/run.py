"""Simulated runs: a scenario file run in the simulated world, checked like a real run.

``SimRun(scenario, out_dir).run()`` does what ``dvpsim sim`` promises, mirroring
``scenarios.real``'s steps with simulated parts:

1. builds the committee from the scenario's seed (the same keys a real run provisions),
   the chains (escrow models with the scenario's block time, tokens, funded and approved
   parties) and the bank (its service core on memory storage, the parties' accounts);
2. starts n node drivers on the simulated network and waits until every member has
   certified a round (as the real runner waits for a live committee);
3. drives the scenario's workload (``scenarios.workload``), injects its faults at their
   times, and lets the parties of the unsafe variant reclaim after the deadline;
4. stops when every settlement ended (``scenarios.accounting.ended``) or the time limit
   passed, in virtual seconds;
5. judges the final state with ``scenarios.checks`` and writes ``history.jsonl`` and
   ``summary.json`` with the same schema as a real run.

The same scenario and seed give the same history, byte for byte. The world's own choices
(network delays, the chains' and the bank's latencies) come from the queue's generator,
seeded with the scenario's seed.
"""

from __future__ import annotations

import gc
import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from eth_account import Account
from eth_utils.address import to_checksum_address

from bank_adapter.terms import BANK_CHAIN_ID, BANK_VERIFIER_ID
from chain_adapters.localchain import DEV_PRIVATE_KEYS
from chain_adapters.model import (
    MAX_UINT256,
    RECLAIMABLE,
    EscrowModel,
    LegLocked,
    SettlementAborted,
    SettlementCommitted,
    SettlementExpired,
    SettlementRefused,
    State,
)
from consensus.config import ConsensusConfig, Target
from consensus.crypto import MEMOIZED_CRYPTO, REAL_CRYPTO, CryptoSuite
from consensus.devkeys import dev_leader_selection_key, dev_member_secrets, rogue_public_key
from consensus.harness import register_keys
from consensus.identity import identity_key_from_seed, public_key_bytes
from consensus.network import NetworkProfile, SimulatedNetwork
from consensus.protocol import NodeKeys
from consensus.report import CommitteeConfig, CommitteeConfigError, check_proofs_of_possession
from consensus.safety import DurableStore
from node.config import consensus_parameters
from node.driver import DriverConfig, TargetSpec
from node.legs import bank_account
from node.modes import BANK, MODES
from scenarios import accounting, provenance
from scenarios.accounting import END_POLL_S, HEARTBEAT_S, RunReport, Tracked
from scenarios.checks import SeenCertificate, check_all
from scenarios.faults import (
    BANK_FAULTS,
    NODE_FAULTS,
    FaultRecords,
    bank_fault_cleared,
    bank_fault_settings,
    clock_windows,
    fault_ends,
    network_faults,
    rogue_key_refused,
    rpc_windows,
    write_byzantine,
)
from scenarios.history import BANK_STEPS, CHAIN_STEPS, REFUSED_STEP, History
from scenarios.schema import Scenario, ScenarioError
from scenarios.sim.bank import SimBank
from scenarios.sim.chain import Block, Call, Receipt, SimChain
from scenarios.sim.clock import EventQueue
from scenarios.sim.world import SimMember, SimWorld
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

__all__ = ["SimReport", "SimRun", "check_simulable"]

#: Virtual unix time of the simulated chains' and bank's first second.
GENESIS_TIME: Final = 1_800_000_000
#: The committee's links in sim: loopback-like delays (the next issue adds scenario keys).
DEFAULT_NETWORK: Final = NetworkProfile(delay=0.0015, jitter=0.001)
RECLAIM_POLL_S: Final = 0.25
LIVE_TIMEOUT_S: Final = 60.0
CRYPTO_SUITES: Final = ("real", "fast")


@dataclass
class SimReport(RunReport):
    """A run's report, with its history's digest (the same for the same inputs)."""

    digest: str


def check_simulable(scenario: Scenario) -> None:
    """Refuse, in one line, the keys only a real run can honour."""
    for i, chain in enumerate(scenario.chains):
        if chain.rpc_url:
            raise ScenarioError(
                f"{scenario.path}: chains[{i}].rpc_url: the simulation cannot reach an external "
                f"chain ({chain.rpc_url}): leave rpc_url out, or use `dvpsim run`"
            )
    bank = scenario.bank
    if bank is not None and (bank.url or not bank.start):
        raise ScenarioError(
            f"{scenario.path}: bank.url: the simulation cannot reach an external bank: "
            "set start = true and leave url out, or use `dvpsim run`"
        )
    check_fits(scenario)


def _address(label: str) -> str:
    return to_checksum_address(hashlib.sha256(b"dvpsim/sim/" + label.encode()).digest()[:20])


def make_crypto(name: str, keys: Sequence[NodeKeys]) -> CryptoSuite:
    """The crypto suite of a simulated run: real (memoized, the default), real without
    memoization, or the fast stand-in, which is given the members' keys to check with."""
    if name == "real":
        return MEMOIZED_CRYPTO
    if name == "real-plain":  # every signature computed and checked by every member
        return REAL_CRYPTO
    if name == "fast":
        from scenarios.sim.fastcrypto import FastCrypto

        fast = FastCrypto()
        register_keys(fast, keys)
        return fast
    raise ValueError(f"unknown crypto suite {name!r}: use one of {', '.join(CRYPTO_SUITES)}")


class SimRun:
    def __init__(
        self,
        scenario: Scenario,
        out_dir: Path,
        *,
        crypto: str = "real",
        network: NetworkProfile = DEFAULT_NETWORK,
        progress: Callable[[str, int, int], None] | None = None,
        overrides: Sequence[str] = (),
    ) -> None:
        """``overrides``: the ``--set`` texts the scenario was made with (the run-start
        record names them)."""
        check_simulable(scenario)
        self.scenario = scenario
        self.out = out_dir
        self.out.mkdir(parents=True, exist_ok=True)
        self.crypto_name = crypto
        self.progress = progress or (lambda _what, _done, _total: None)
        self.queue = EventQueue(scenario.seed)
        self.history = History(
            self.out / "history.jsonl", lambda: self.queue.now, line_buffered=False
        )
        # The first record. Wall-clock facts (and where the scenario came from) stay out
        # of the digest.
        self.origin = provenance.run_start(scenario, overrides, time.time())
        self.history.write("run-start", wall_clock=True, **self.origin)
        self.fault_records = FaultRecords(self.history)
        self.mode = MODES[scenario.mode]
        self.parties: dict[str, str] = {
            account.name: Account.from_key(DEV_PRIVATE_KEYS[1 + i]).address
            for i, account in enumerate(scenario.accounts)
        }
        self.tokens: dict[str, ChainTokens] = {}
        self.tracked: list[Tracked] = []
        self.party_gas = 0
        self.drive_start = 0.0
        self._by_id: dict[bytes, Tracked] = {}
        self._certified: set[int] = set()
        self._seen: list[SeenCertificate] = []  # every certificate a member accepted
        self._driven = 0
        self._done: set[int] = set()
        self._finished = False
        self._last_final_at = 0.0  # when a leg last became final (the span's end)
        self._bank_faults: dict[str, Any] = {}  # the bank's fault settings now
        self._build(network)

    # ------------------------------------------------------------------ set-up

    def _build(self, network_profile: NetworkProfile) -> None:
        s = self.scenario
        c = s.committee
        secrets = dev_member_secrets(c.n, s.seed)
        keys = [NodeKeys(identity_key_from_seed(m.identity_seed), m.bls_secret) for m in secrets]
        self.crypto = make_crypto(self.crypto_name, keys)
        bls_keys = tuple(self.crypto.sk_to_pk(m.bls_secret) for m in secrets)
        proofs = [self.crypto.pop_prove(m.bls_secret) for m in secrets]
        rogue = s.rogue_member()
        if rogue is not None:
            # It publishes g*x less the others' keys, and the proof it can make: x's.
            i = rogue[0]
            others = [k for j, k in enumerate(bls_keys) if j != i]
            bls_keys = (
                *bls_keys[:i],
                rogue_public_key(secrets[i].bls_secret, others),
                *bls_keys[i + 1 :],
            )

        def committee(chain_id: int, verifier: bytes) -> CommitteeConfig:
            config = CommitteeConfig(chain_id, verifier, 1, bls_keys, c.f, c.t)
            try:
                check_proofs_of_possession(config, proofs, crypto=self.crypto)
            except CommitteeConfigError as exc:
                if rogue is None:
                    raise
                raise ScenarioError(
                    rogue_key_refused(
                        s,
                        "the committee's proof-of-possession check, the rule of the chain's "
                        f"admitKeys, the bank and every node config ({exc})",
                    )
                ) from None
            return config

        targets: list[Target] = []
        specs: list[TargetSpec] = []
        where: dict[str, str] = {}
        self.chains: dict[str, SimChain] = {}
        for leg, chain in zip(self.mode.chains, s.chains, strict=False):
            coordinator = _address(f"coordinator/{leg}")
            config = committee(chain.chain_id, bytes.fromhex(coordinator[2:]))
            name = f"chain-{leg}"
            targets.append(Target(name, config))
            specs.append(TargetSpec(name, leg, "evm"))
            where[name] = f"chain:{leg}"
            self.tokens[leg] = self._tokens(leg, coordinator)
            self.chains[leg] = SimChain(
                leg,
                chain.chain_id,
                coordinator=coordinator,
                committee=config,
                block_time=chain.block_time,
                genesis_time=GENESIS_TIME,
                setup=self._chain_setup(leg, coordinator),
                unsafe_self_refund=s.unsafe_self_refund,
                admission_floor=chain.admission_floor,
                crypto=self.crypto,
            )
            self.history.write(
                "chain", leg=leg, chain_id=chain.chain_id, block_time=chain.block_time
            )
            self.history.write("committee", leg=leg, n=c.n, f=c.f, threshold=c.t, config_count=1)
        self.bank: SimBank | None = None
        if self.mode.uses_bank:
            assert s.bank is not None
            config = committee(BANK_CHAIN_ID, BANK_VERIFIER_ID)
            targets.append(Target(BANK, config))
            specs.append(TargetSpec(BANK, BANK, "bank", s.bank.currency))
            where[BANK] = "bank"
            accounts = [
                (bank_account(self.parties[a.name]), s.bank.currency, a.bank_balance)
                for a in s.accounts
            ]
            self.bank = SimBank(
                self.queue,
                config,
                nodes=s.endpoints,  # a callback URL per copy: twins each have one
                accounts=accounts,
                genesis_ms=GENESIS_TIME * 1000,
                seed=s.seed,
                deliver=self._deliver_callback,
                crypto=self.crypto,
            )
            self.bank.on_event = self._bank_event
            self.history.write("bank", accounts=len(accounts), currency=s.bank.currency)
        for name, address in self.parties.items():
            account = next(a for a in s.accounts if a.name == name)
            self.history.write(
                "party",
                name=name,
                address=address,
                asset=account.asset,
                payment=account.payment,
                bank=account.bank_balance,
            )
        consensus = ConsensusConfig(
            f=c.f,
            identity_keys=tuple(public_key_bytes(k.identity) for k in keys),
            targets=tuple(targets),
            leader_selection_key=dev_leader_selection_key([m.identity_seed for m in secrets]),
            allow_unsafe_threshold=c.unsafe_allow_low_threshold,
            **consensus_parameters(s.timing),
        )
        # Every member, then the twin copy of each member that runs as twins: the member's
        # index, config and keys, a durable store (SimMember's own) and transmitters of its own.
        copies = [(i, "") for i in range(c.n)] + [(i, "b") for i in s.twins()]
        members = [
            SimMember(
                index=i,
                config=DriverConfig(consensus, i, s.mode, tuple(specs)),
                keys=keys[i],
                targets=dict(where),
                transmitters={leg: _address(f"transmitter/{leg}/{i}{copy}") for leg in self.chains},
                byzantine=s.byzantine_spec(i),
                twin=bool(copy),
            )
            for i, copy in copies
        ]
        network = SimulatedNetwork(s.endpoints, network_profile, self.queue.rng)
        self.world = SimWorld(
            self.queue,
            network,
            members,
            self.chains,
            self.bank,
            self.history,
            crypto=self.crypto,
            confirmations=s.chains[0].confirmations if s.chains else 0,
            on_certified=self._on_certified,
        )
        self.world.on_block = self._on_block

    def _tokens(self, leg: str, coordinator: str) -> ChainTokens:
        mode = self.scenario.mode
        if mode == "multi-chain-token":
            # What COMMIT mints: the payment to the seller on A, the asset to the buyer on B.
            if leg == "A":
                return ChainTokens(_address("token/A/asset"), _address("token/A/bridged-payment"))
            return ChainTokens(_address("token/B/bridged-asset"), _address("token/B/payment"))
        payment = _address(f"token/{leg}/payment") if mode == "single-chain-onchain" else None
        return ChainTokens(_address(f"token/{leg}/asset"), payment)

    def _chain_setup(self, leg: str, coordinator: str) -> Callable[[EscrowModel], None]:
        """Deploy the tokens, fund the parties and approve the coordinator (replayable)."""
        s = self.scenario
        deployer = Account.from_key(DEV_PRIVATE_KEYS[0]).address
        tokens = self.tokens[leg]
        mode = s.mode
        bridged = set()
        if mode == "multi-chain-token":
            bridged = {tokens.payment} if leg == "A" else {tokens.asset}

        def setup(model: EscrowModel) -> None:
            for token in (tokens.asset, tokens.payment):
                if token is None:
                    continue
                model.add_token(token, coordinator if token in bridged else deployer)
            for account in s.accounts:
                address = self.parties[account.name]
                if tokens.asset is not None and tokens.asset not in bridged and account.asset:
                    model.mint(tokens.asset, deployer, address, account.asset)
                if tokens.payment is not None and tokens.payment not in bridged and account.payment:
                    model.mint(tokens.payment, deployer, address, account.payment)
                for token in (tokens.asset, tokens.payment):
                    if token is not None and token not in bridged:
                        model.approve(token, address, coordinator, MAX_UINT256)

        return setup

    # ------------------------------------------------------------------ events of the world

    def _on_certified(self, node: int, record: dict[str, Any]) -> None:
        """A member accepted a certificate (``record``: its "certified" history record)."""
        self._certified.add(node)
        self._seen.append(accounting.sighting(record, self.queue.now))

    def _deliver_callback(self, node: int, events: Any, as_of_ms: int) -> bool:
        return self.world.deliver_callback(node, events, as_of_ms)

    def _on_block(self, leg: str, block: Block) -> None:
        """The coordinators' releases, refunds and refusals, as "leg" lines."""
        asset_leg = self.mode.asset_leg
        now = self.queue.now
        for receipt in block.receipts:
            for event in receipt.events:
                extra: dict[str, Any] = {}
                if isinstance(event, SettlementRefused):  # admission: it has ended
                    step = REFUSED_STEP
                    extra = {"open": event.open, "ended_last_window": event.ended_last_window}
                elif isinstance(event, SettlementCommitted | SettlementAborted | SettlementExpired):
                    step = CHAIN_STEPS[event.NAME]
                    self._last_final_at = now
                else:
                    continue
                self.history.write("leg", phase="ok", step=step, settlement=event.settlement_id,
                                   leg=leg, tx=receipt.tx_hash, block=block.number, **extra)  # fmt: skip
                item = self._by_id.get(event.settlement_id)
                if item is None:
                    continue
                if step == REFUSED_STEP:
                    item.refused_at = item.refused_at if item.refused_at is not None else now
                elif leg == asset_leg and item.released_at is None:
                    item.released_at = now

    def _bank_event(self, event: Any) -> None:
        step = BANK_STEPS.get(event.kind, event.kind)
        if step in ("pay", "cancel", "reject"):
            self._last_final_at = self.queue.now
        self.history.write(
            "leg",
            phase="ok",
            step=step,
            settlement=event.settlement_id,
            leg=BANK,
            bank_id=event.event_id,
        )

    # ------------------------------------------------------------------ driving

    def _drive_one(self, planned: Planned) -> None:
        s = self.scenario
        item = Tracked(planned.index, planned.settlement_id, planned.buyer, planned.fail)
        self.tracked.append(item)
        self._by_id[item.settlement_id] = item
        chain_a = self.chains["A"]
        deadline = chain_a.timestamp_at(self.queue.now) + deadline_after(s, planned)
        # In run seconds: the first whole chain second past the deadline.
        item.deadline_at = self.queue.now + deadline_after(s, planned) + 1.0
        item.terms = terms_for(s, planned, self.parties, self.tokens, deadline)
        steps = party_steps(s, planned)
        self.history.write("settlement", **item.record(deadline))

        def run_step(k: int) -> None:
            if k >= len(steps):
                self._driven += 1
                return
            step = steps[k]
            terms = item.terms[step.chain]
            call = Call(self.parties[step.party], step.call, (terms,), label=step.label)
            self.history.write(
                "leg",
                phase="invoke",
                step=step.label,
                settlement=item.settlement_id,
                leg=step.chain,
            )

            def receipt(r: Receipt) -> None:
                self.history.write(
                    "leg",
                    phase="ok" if r.ok else "fail",
                    step=step.label,
                    settlement=item.settlement_id,
                    leg=step.chain,
                    tx=r.tx_hash,
                    **({"error": r.error} if not r.ok else {"gas": r.gas_used}),
                )
                if not r.ok:
                    self._driven += 1  # the real runner stops at the first refused call
                    return
                self.party_gas += r.gas_used
                if step.label == "lock" and item.locked_at is None:
                    item.locked_at = self.queue.now
                self.queue.after(0.0, run_step, k + 1)

            self.world.submit(step.chain, call, receipt)

        run_step(0)

    def _begin_fault(self, fault: Any) -> None:
        if fault.kind == "reorg":
            depth = int(fault.value)
            dropped = self.world.reorg(fault.leg or "A", depth, record=False)
            self.fault_records.begin(fault, dropped=dropped, replaced=depth)
            return
        self.fault_records.begin(fault)
        if fault.kind in NODE_FAULTS:
            self.world.crash(fault.node, "kill" if fault.kind == "kill-node" else "stop")
        elif fault.kind == "pause-node":
            self.world.pause(fault.node)
        elif fault.kind == "unsafe-wipe-restart":
            self.world.crash(fault.node, "kill")
            self.world.members[fault.node].durable = DurableStore()  # it forgets what it signed
        elif fault.kind in BANK_FAULTS and self.bank is not None:
            self._bank_faults = bank_fault_settings(
                self._bank_faults, fault, self.bank.now_ms() / 1000, self.scenario.seed
            )
            self.bank.set_faults(**self._bank_faults)
        if fault_ends(fault):
            self.queue.after(fault.duration, self._end_fault, fault)

    def _end_fault(self, fault: Any) -> None:
        self.fault_records.end(fault)
        if fault.kind in ("kill-node", "unsafe-wipe-restart"):
            self.world.start(fault.node)
        elif fault.kind == "pause-node":
            self.world.resume(fault.node)
        elif fault.kind in BANK_FAULTS and self.bank is not None:
            self._bank_faults = bank_fault_cleared(self._bank_faults, fault)
            self.bank.set_faults(**self._bank_faults)

    def _reclaim(self) -> None:
        """In the unsafe variant, parties take their locked legs back after the deadline."""
        s = self.scenario
        for item in self.tracked:
            for leg, terms in item.terms.items():
                chain = self.chains[leg]
                if chain.state_of(item.settlement_id) not in RECLAIMABLE:
                    continue
                if chain.head.timestamp <= terms.deadline:
                    continue
                party = reclaimer(s, item.buyer, terms)
                call = Call(self.parties[party], "reclaim_after_deadline", (terms,), "reclaim")

                def reclaimed(r: Receipt, sid: bytes = item.settlement_id, p: str = party) -> None:
                    if r.ok:
                        self.history.write("unsafe-reclaim", settlement=sid, party=p)

                self.world.submit(leg, call, reclaimed)
        if not self._finished:
            self.queue.after(RECLAIM_POLL_S, self._reclaim)

    def _tick(self, leg: str, period: float) -> None:
        if self._finished:
            return
        self.world.mine(leg)
        self.queue.after(period, self._tick, leg, period)

    # ------------------------------------------------------------------ the end

    def _check_end(self) -> None:
        if self._finished:
            return
        total = len(self.tracked)
        if (
            self._driven >= self.scenario.settlements.count
            and total == self.scenario.settlements.count
        ):
            open_items = [t for t in self.tracked if t.index not in self._done]
            raw = accounting.read_legs(
                self.scenario, self.ledgers(), [t.settlement_id for t in open_items]
            )
            chain_time = self.chains["A"].head.timestamp
            for t in open_items:
                if accounting.ended(self.scenario, t, raw, chain_time):
                    self._done.add(t.index)
                    t.ended_at = self.queue.now
            self.progress("settlements ended", len(self._done), total)
            if len(self._done) == total:
                self._finished = True
                return
        self.queue.after(END_POLL_S, self._check_end)

    def ledgers(self) -> SimLedgers:
        return SimLedgers(self)

    # ------------------------------------------------------------------ the run

    def run(self) -> SimReport:
        """Run the scenario to its end (module docstring). The history is closed whatever
        happens, so a run that fails part-way keeps what it wrote.

        Python's cyclic garbage collector is paused while the run lasts: a run allocates
        many short-lived objects, and the collector's passes over everything alive (the
        process-wide caches included) took a fifth of a run's time. Reference counting
        still frees almost everything at once; the few cycles a run leaves are collected
        after it (a 1,000-settlement run ends with about 100,000 such objects)."""
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            self.history.close()
            if collecting:
                gc.enable()

    def _run(self) -> SimReport:
        s = self.scenario
        began_wall = time.time()
        self.history.write(
            "run",
            world="sim",
            scenario=s.name,
            mode=s.mode,
            seed=s.seed,
            crypto=self.crypto_name,
        )
        write_byzantine(self.history, s)
        for leg, chain in self.chains.items():
            period = chain.block_time if chain.block_time > 0 else HEARTBEAT_S
            self.queue.after(period, self._tick, leg, period)
        for endpoint in range(s.endpoints):  # every member's copies
            self.world.start(endpoint)
        # Every honest member certified a round (a Byzantine one may never).
        honest = s.honest_members()
        self.queue.run(LIVE_TIMEOUT_S, lambda: honest <= self._certified)
        if not honest <= self._certified and not s.byzantine:
            raise ScenarioError(
                f"{s.path}: the simulated committee did not certify a round within "
                f"{LIVE_TIMEOUT_S:.0f} s: check committee and timing"
            )
        self.drive_start = self.queue.now
        # Nothing has moved yet: the supplies the final-state audit compares against.
        supply_before = accounting.supplies(s, self.ledgers(), self.parties, ())
        self.history.write("drive-start")
        for planned in plan(s):
            self.queue.after(planned.at, self._drive_one, planned)
        for node, windows in rpc_windows(s.faults, self.drive_start).items():
            self.world.members[node].rpc = windows
        for node, clock in clock_windows(s.faults, self.drive_start).items():
            self.world.members[node].clock = clock
        partitions, link_faults = network_faults(s.faults, self.drive_start, s.endpoint)
        if partitions or link_faults:
            network = self.world.network
            network.partitions, network.link_faults = partitions, link_faults
            network.heal_at = math.inf  # each partition has its own window
        for fault in s.faults:
            self.queue.after(fault.at, self._begin_fault, fault)
        if s.unsafe_self_refund:
            self.queue.after(RECLAIM_POLL_S, self._reclaim)
        self.queue.after(END_POLL_S, self._check_end)
        self.queue.run(self.drive_start + s.time_limit, lambda: self._finished)
        self._finished = True
        reason = (
            "ended" if len(self._done) == len(self.tracked) == s.settlements.count else "time limit"
        )
        self.fault_records.close()
        self.history.write("run-end", reason=reason)
        ledgers = self.ledgers()
        state = accounting.run_state(
            s,
            ledgers,
            self.parties,
            self.tracked,
            supply_before,
            self._seen,
            (self.drive_start, self.queue.now),
        )
        verdicts = check_all(state)
        stats = [m.driver.stats for m in self.world.members if m.driver is not None]
        summary = accounting.summary(
            s,
            "sim",
            state,
            verdicts,
            self.tracked,
            ledgers,
            messages=self.world.messages_sent,
            party_gas=self.party_gas,
            observation_largest_bytes=max(
                (st.observation_largest_bytes for st in stats), default=0
            ),
            observation_left_out=sum(st.observation_left_out for st in stats),
            queue=(
                max((st.queued_peak for st in stats), default=0),
                max((st.oldest_queued_peak_s for st in stats), default=0.0),
            ),
            extra={
                **self.origin,
                "crypto": self.crypto_name,
                "gas_source": self.chains["A"].gas.label,
                "sim_duration_s": round(self.queue.now - self.drive_start, 3),
                "simulated_span_s": self._span(),
                "wall_s": round(time.time() - began_wall, 3),
                "node_rss_peak_mb": None,
                "history_digest": self.history.digest(),
                "out_dir": str(self.out),
            },
        )
        accounting.write_summary(self.out, summary)
        return SimReport(s.name, s.mode, self.out, verdicts, summary, summary["history_digest"])

    def _span(self) -> float | None:
        """Virtual seconds from the first lock to the last leg that became final."""
        locks = [t.locked_at for t in self.tracked if t.locked_at is not None]
        if not locks or self._last_final_at <= min(locks):
            return None
        return round(self._last_final_at - min(locks), 3)


class SimLedgers:
    """``scenarios.accounting.Ledgers`` over the simulated chains and bank."""

    def __init__(self, run: SimRun) -> None:
        self.run = run

    def chain_states(self, leg: str, ids: Sequence[bytes]) -> list[State]:
        chain = self.run.chains[leg]
        return [chain.state_of(sid) for sid in ids]

    def coordinator(self, leg: str) -> str:
        return self.run.chains[leg].coordinator

    def token(self, leg: str, kind: str) -> str | None:
        tokens = self.run.tokens[leg]
        return tokens.asset if kind == "asset" else tokens.payment

    def balance(self, leg: str, token: str, holder: str) -> int:
        return self.run.chains[leg].model.token(token).balance_of(holder)

    def coordinator_events(self) -> Mapping[tuple[str, bytes], Sequence[str]]:
        found: dict[tuple[str, bytes], list[str]] = {}
        for leg, chain in self.run.chains.items():
            for _block, _receipt, event in chain.events():
                if isinstance(event, SettlementCommitted | SettlementAborted | SettlementExpired):
                    found.setdefault((leg, event.settlement_id), []).append(event.NAME)
        return found

    def report_gas(self) -> Sequence[int]:
        return [gas for chain in self.run.chains.values() for gas in chain.report_gas()]

    def bank_states(self, ids: Sequence[bytes]) -> Mapping[bytes, str | None]:
        if self.run.bank is None:
            return {sid: None for sid in ids}
        states = self.run.bank.states()
        return {sid: states.get(sid) for sid in ids}

    def bank_balance(self, account_id: str) -> int:
        return 0 if self.run.bank is None else self.run.bank.balance(account_id)

    def prepared_legs(self) -> set[tuple[str, bytes]]:
        prepared = {
            (leg, event.settlement_id)
            for leg, chain in self.run.chains.items()
            for _block, _receipt, event in chain.events()
            if isinstance(event, LegLocked) and event.state == State.PREPARED
        }
        if self.run.bank is not None:
            prepared |= {(BANK, sid) for sid in self.run.bank.storage.held_settlements()}
        return prepared
