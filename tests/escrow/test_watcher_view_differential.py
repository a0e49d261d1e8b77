"""Differential test: the simulated chain's ChainView against the real EventWatcher, on anvil,
with reorgs.

``scenarios.sim.chain.ChainView`` claims the rules of ``chain_adapters.watcher.EventWatcher``:
an event is delivered once its block has ``confirmations`` confirmations (1 = in a block),
each exactly once; when a reorg replaces blocks, the events delivered from them are
retracted, newest first, and the new branch's events are delivered. This test runs both on
the same inputs. One escrow stack on anvil and a ``SimChain`` whose model starts in the
same state (the same contract addresses, balances, allowances and committee, so nothing
needs renaming) get the same coordinator calls (createAndLock, lockAsset / lockPayment,
applyReport with real certificates) in the same blocks, and the same reorgs of depth 1..3.
After every step an EventWatcher on anvil and a ChainView on the SimChain with the same
confirmations (1, 2 and 3) are polled; they must report the same records (delivered or
retracted, event name, settlement id, every argument) in the same order. Transaction
and block hashes are not compared (they differ by construction). At the end, what each
side holds as delivered must be the coordinator events of its canonical chain's confirmed
blocks, so the two cannot agree on being wrong.

What anvil 1.7.1 does on a reorg (measured; the test relies on the first three points):

- ``anvil_reorg(depth, txs)`` replaces the newest ``depth`` blocks by ``depth`` new blocks
  with the same numbers and new hashes, holding only ``txs``. The replaced blocks'
  transactions are dropped: no receipt, not back in the pool. ``anvil_rollback(depth)``
  drops blocks the same way but shortens the chain; ``evm_revert`` to a snapshot does too.
- ``SimChain.reorg(depth)`` replaces ``depth`` blocks by ``depth + 1`` empty ones (the
  longer branch wins), so the anvil side mines one more block after ``anvil_reorg(depth,
  [])``: then both chains have the same height and the same transactions.
- A block of several transactions: with automine off and the pool ordered first in, first
  out (``--order fifo``), ``evm_mine`` puts the step's transactions in the order sent, as
  ``SimChain.mine`` does. Calls that would revert are never sent (a dry run on a copy of
  the model drops them): anvil mines a reverting transaction that has a gas limit, while
  SimChain refuses it (no block), a difference of the chains, not of the watchers.
- Timestamps: the new blocks of ``anvil_reorg`` carry the timestamp of the newest kept
  block, whatever the wall clock or a pending ``evm_setNextBlockTimestamp`` say (that one is
  dropped) and anvil's clock restarts from there; SimChain gives them
  ``max(kept timestamp, genesis + now)``. Timestamps are not compared: no call here is near
  a deadline.
- ``anvil_reorg`` with depth 0 or deeper than the chain is an RPC error; a reverting
  transaction in ``txs`` is mined with status 0.

Not covered: a new branch that holds transactions (on a real chain the dropped ones often
come back in it). ``SimChain.reorg`` cannot make one, so the view only ever rescans empty
replacement blocks; ``anvil_reorg`` could, if SimChain learns to.

Default run: one seeded sequence of ``STEPS`` steps (the same every run), which must reach
reorgs of every depth, retractions at every confirmation depth and re-delivery of resent
calls. ``-m slow``: more seeds, longer sequences.
"""

from __future__ import annotations

import copy
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from chain_adapters.bindings import chain_log_event, decode_escrow_event
from chain_adapters.build import Artifact
from chain_adapters.devstack import deploy_escrow_stack
from chain_adapters.evm import connect
from chain_adapters.localchain import LocalChain, start_chain
from chain_adapters.model import (
    ZERO_ADDRESS,
    EscrowEvent,
    EscrowModel,
    EscrowRevert,
    Mode,
    State,
    Terms,
)
from chain_adapters.sender import TxRequest
from chain_adapters.watcher import EventWatcher, Retracted, WatchRecord
from consensus.report import Action, Decision
from scenarios.sim.chain import Call, ChainView, SimChain
from tests.escrow.escrow_helpers import Escrow

CHAIN_ID = 41_020
CONFIRMATIONS = (1, 2, 3)
MAX_REORG_DEPTH = 3
GAS = 3_000_000
STEPS = 60
SEED = 20_261_201
EXPECTED_EVENTS = {
    "SettlementCreated",
    "LegLocked",
    "SettlementCommitted",
    "SettlementAborted",
    "DecisionSkipped",
    "ReportApplied",
}

# (delivered | retracted, event name, settlement id, every argument of the event)
Record = tuple[str, str, str, tuple[Any, ...]]


@pytest.fixture(scope="module")
def fifo_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalChain]:
    """An anvil of its own: its pool is first in, first out, and the test reorganises it."""
    with start_chain(
        CHAIN_ID,
        log_dir=tmp_path_factory.mktemp("anvil-watcher-view"),
        extra_args=("--order", "fifo"),
    ) as chain:
        yield chain


@pytest.fixture(scope="module")
def funded(fifo_chain: LocalChain, contracts: dict[str, Artifact]) -> Escrow:
    escrow = Escrow(deploy_escrow_stack(fifo_chain.web3(), contracts, n=4, f=1))
    escrow.fund()
    return escrow


@pytest.fixture
def clean(fifo_chain: LocalChain, funded: Escrow) -> Iterator[Escrow]:
    """The funded stack, with automine off for the test and the chain reverted after it."""
    snapshot = fifo_chain.snapshot()
    fifo_chain.rpc("evm_setAutomine", [False])
    try:
        yield funded
    finally:
        fifo_chain.rpc("evm_setAutomine", [True])  # not part of a snapshot
        fifo_chain.revert(snapshot)


# ----------------------------------------------------------------------------- records


def _plain(value: Any) -> Any:
    """Tuples for sequences, bytes for byte strings, ints for enums: one form for both sides."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, tuple | list):
        return tuple(_plain(v) for v in value)
    if isinstance(value, int):
        return int(value)
    return value


def _record(kind: str, event: EscrowEvent) -> Record:
    settlement_id = getattr(event, "settlement_id", b"")
    return (kind, event.NAME, settlement_id.hex(), _plain(event.normalized()[2]))


def watcher_records(records: Sequence[WatchRecord]) -> list[Record]:
    out = []
    for record in records:
        event = chain_log_event(record.log)
        assert event is not None, f"not an escrow event: {record.log}"
        out.append(_record("retracted" if isinstance(record, Retracted) else "delivered", event))
    return out


def view_records(polled: Sequence[tuple[EscrowEvent, bool, tuple[int, int]]]) -> list[Record]:
    return [_record("retracted" if retracted else "delivered", e) for e, retracted, _ in polled]


def short(records: Sequence[Record]) -> list[tuple[str, str, str]]:
    """What a failure message shows: (delivered/retracted, event, settlement id prefix)."""
    return [(kind, name, sid[:8]) for kind, name, sid, _ in records]


# ----------------------------------------------------------------------------- the twin


def ledger_setup(escrow: Escrow) -> Callable[[EscrowModel], None]:
    """A SimChain ``setup`` that gives the model the stack's tokens and the ledgers of its
    parties and coordinator as they are on anvil now."""
    stack = escrow.stack
    co = stack.coordinator.address
    holders = [escrow.seller, escrow.buyer, escrow.other, co]
    ledgers = [
        (
            token.address,
            minter,
            int(token.contract.functions.totalSupply().call()),
            {h: token.balance_of(h) for h in holders},
            {h: token.allowance(h, co) for h in holders},
        )
        for token, minter in (
            (stack.asset, stack.deployer),
            (stack.payment, stack.deployer),
            (stack.bridged_asset, co),
            (stack.bridged_payment, co),
        )
    ]

    def setup(model: EscrowModel) -> None:
        for address, minter, supply, balances, allowances in ledgers:
            ledger = model.add_token(address, minter)
            ledger.total_supply_box["supply"] = supply
            ledger.balances.update({h: v for h, v in balances.items() if v})
            ledger.allowances.update({(h, co): v for h, v in allowances.items() if v})

    return setup


@dataclass
class Coverage:
    """What a sequence reached: the test proves little if it reached too little."""

    reorgs: Counter[int] = field(default_factory=Counter)  # depth -> count
    retracted: Counter[int] = field(default_factory=Counter)  # confirmations -> records
    delivered: Counter[str] = field(default_factory=Counter)  # event name -> records
    redelivered: int = 0  # events delivered again after their retraction (resent calls)
    stacked_reorgs: int = 0  # polls that found two reorgs or more at once


class WatcherTwin:
    """One escrow stack on anvil and a SimChain of it, mined and reorganised in lockstep,
    with an EventWatcher and a ChainView per confirmation depth.

    SimChain block ``n`` is anvil block ``base + n``; the chain time advances one second per
    mined block on both. ``coordinator`` is the coordinator's address as both are given it
    (default: checksummed)."""

    def __init__(
        self,
        chain: LocalChain,
        escrow: Escrow,
        rng: random.Random,
        *,
        coordinator: str | None = None,
    ) -> None:
        self.chain = chain
        self.escrow = escrow
        self.co = escrow.stack.coordinator
        self.rng = rng
        latest = escrow.w3.eth.get_block("latest")
        self.base = int(latest["number"])
        self.genesis_time = int(latest["timestamp"])
        self.now = self.genesis_time
        coordinator = coordinator or self.co.address
        self.sim = SimChain(
            "A",
            CHAIN_ID,
            coordinator=coordinator,
            committee=escrow.stack.committee.config,
            block_time=1.0,
            genesis_time=self.genesis_time,
            setup=ledger_setup(escrow),
        )
        rpc = connect(chain.rpc_url, CHAIN_ID)
        self.watchers = {
            c: EventWatcher(
                rpc,
                [coordinator],
                confirmations=c,
                from_block=self.base + 1,
                decoder=self.co.decoder,
            )
            for c in CONFIRMATIONS
        }
        self.views: dict[int, ChainView] = {c: self.sim.view(c) for c in CONFIRMATIONS}
        self.held: dict[int, list[Record]] = {c: [] for c in CONFIRMATIONS}  # delivered, net
        self.ever_retracted: dict[int, set[Record]] = {c: set() for c in CONFIRMATIONS}
        self.coverage = Coverage()
        self.terms: list[Terms] = []  # every settlement ever proposed, dropped ones too
        self.dropped: list[Call] = []  # calls of replaced blocks, to send again
        self.round = 0

    # -------------------------------------------------------------- the chains

    def mine(self, calls: Sequence[Call]) -> None:
        """One block with ``calls`` (none: an empty block) on both chains."""
        self.now += 1
        sent = []
        for call in calls:
            self.sim.submit(call)
            request = self.tx_request(call)
            tx = {
                "from": call.sender,
                "to": request.to,
                "data": "0x" + request.data.hex(),
                "gas": hex(GAS),
            }
            sent.append(self.chain.rpc("eth_sendTransaction", [tx]))
        self.chain.rpc("evm_setNextBlockTimestamp", [self.now])
        self.chain.rpc("evm_mine")
        block = self.sim.mine(self.now - self.genesis_time)
        assert block is not None and all(r.ok for r in block.receipts), "a call was refused"
        mined = self.chain.rpc("eth_getBlockByNumber", [hex(self.base + block.number), False])
        assert mined["transactions"] == sent, "anvil did not mine the calls in the order sent"
        for tx_hash in sent:
            receipt = self.chain.rpc("eth_getTransactionReceipt", [tx_hash])
            assert int(receipt["status"], 16) == 1, f"{tx_hash} reverted on anvil"

    def reorg(self, depth: int) -> None:
        """Replace the newest ``depth`` blocks on both chains by ``depth + 1`` empty ones;
        the replaced blocks' calls are remembered, to be sent again later."""
        self.dropped += [call for block in self.sim.blocks[-depth:] for _, call in block.calls]
        self.chain.rpc("anvil_reorg", [depth, []])
        self.now += 1
        self.chain.rpc("evm_setNextBlockTimestamp", [self.now])
        self.chain.rpc("evm_mine")
        self.sim.reorg(depth, self.now - self.genesis_time)
        assert self.escrow.w3.eth.block_number == self.base + self.sim.head.number
        self.coverage.reorgs[depth] += 1

    def tx_request(self, call: Call) -> TxRequest:
        if call.function == "apply_certificate":
            certificate, terms = call.args
            return self.co.apply_report_tx(certificate, terms)
        (terms,) = call.args
        build = {
            "create_and_lock": self.co.create_and_lock_tx,
            "lock_asset": self.co.lock_asset_tx,
            "lock_payment": self.co.lock_payment_tx,
        }[call.function]
        return build(terms)

    # -------------------------------------------------------------- the watchers

    def poll(self, step: str) -> None:
        """Poll every watcher and view; they must report the same records."""
        for c in CONFIRMATIONS:
            real = watcher_records(self.watchers[c].poll())
            polled, _head_time = self.views[c].poll()
            simulated = view_records(polled)
            assert short(simulated) == short(real), (
                f"{step}, confirmations={c}: ChainView {short(simulated)} != "
                f"EventWatcher {short(real)}"
            )
            assert simulated == real, f"{step}, confirmations={c}: event arguments differ"
            self.account(c, real)

    def account(self, c: int, records: Sequence[Record]) -> None:
        """Keep what is delivered now, checking on the way that a retraction takes back the
        newest delivered record (newest first); exactly-once is checked at the end."""
        held = self.held[c]
        for record in records:
            kind, name, settlement_id, args = record
            if kind == "retracted":
                assert held and held[-1][1:] == record[1:], f"retraction out of order: {record}"
                held.pop()
                self.ever_retracted[c].add(("delivered", name, settlement_id, args))
                self.coverage.retracted[c] += 1
            else:
                if record in self.ever_retracted[c]:
                    self.coverage.redelivered += 1
                held.append(record)
                self.coverage.delivered[name] += 1

    def check_against_the_chains(self) -> None:
        """What each side holds as delivered is its canonical chain's confirmed events."""
        head = self.sim.head.number
        for c in CONFIRMATIONS:
            confirmed = head - c + 1
            simulated = [
                _record("delivered", event)
                for block, _receipt, event in self.sim.events()
                if 0 < block.number <= confirmed and event.emitter == self.co.address
            ]
            query = {
                "address": self.co.address,
                "fromBlock": hex(self.base + 1),
                "toBlock": hex(self.base + confirmed),
            }
            logs = self.chain.rpc("eth_getLogs", [query])
            on_chain = []
            for raw in logs:
                name, args = self.co.decoder.decode(raw)
                event = decode_escrow_event(self.co.address, name, args)
                assert event is not None
                on_chain.append(_record("delivered", event))
            assert simulated == on_chain, f"confirmations={c}: the chains differ"
            assert self.held[c] == on_chain, f"confirmations={c}: the watchers hold other events"

    # -------------------------------------------------------------- the workload

    def next_calls(self) -> list[Call]:
        """Up to three calls for the next block, each valid after the ones before it (a dry
        run on a copy of the canonical model keeps only those)."""
        scratch = copy.deepcopy(self.sim.model)
        calls: list[Call] = []
        for _ in range(self.rng.choice([1, 1, 2, 3])):
            call = self.propose(scratch)
            if call is not None and self.dry_run(scratch, call):
                calls.append(call)
        return calls

    def dry_run(self, model: EscrowModel, call: Call) -> bool:
        at = self.now + 1
        try:
            if call.function == "apply_certificate":
                certificate, terms = call.args
                model.apply_certificate(certificate, self.sim.committee, terms)
            else:
                (terms,) = call.args
                getattr(model, call.function)(call.sender, terms, at)
        except EscrowRevert:
            return False
        return True

    def propose(self, model: EscrowModel) -> Call | None:
        choice = self.rng.random()
        if self.dropped and choice < 0.25:  # a party or transmitter sends a dropped call again
            return self.dropped.pop(self.rng.randrange(len(self.dropped)))
        if choice < 0.55:
            return self.create_and_lock()
        if choice < 0.7:
            return self.lock(model)
        return self.report(model)

    def create_and_lock(self) -> Call:
        e = self.escrow
        mode = self.rng.choice([Mode.SWAP, Mode.ASSET_ESCROW, Mode.PAYMENT_ESCROW])
        seller, buyer = self.rng.sample([e.seller, e.buyer, e.other], 2)
        stack = e.stack
        terms = Terms(
            settlement_id=self.rng.randbytes(32),
            mode=int(mode),
            seller=seller,
            buyer=buyer,
            asset_token=stack.asset.address if mode != Mode.PAYMENT_ESCROW else ZERO_ADDRESS,
            asset_amount=5 * 10**18 if mode != Mode.PAYMENT_ESCROW else 0,
            payment_token=stack.payment.address if mode != Mode.ASSET_ESCROW else ZERO_ADDRESS,
            payment_amount=1_000_00 if mode != Mode.ASSET_ESCROW else 0,
            deadline=self.now + 86_400,
        )
        self.terms.append(terms)
        buyer_first = mode == Mode.PAYMENT_ESCROW or (mode == Mode.SWAP and self.rng.random() < 0.5)
        sender = buyer if buyer_first else seller
        return Call(sender, "create_and_lock", (terms,), "createAndLock")

    def lock(self, model: EscrowModel) -> Call | None:
        """The missing leg of a half-locked swap."""
        half = [
            t
            for t in self.terms
            if model.state_of(t.settlement_id) in (State.ASSET_LOCKED, State.PAYMENT_LOCKED)
        ]
        if not half:
            return None
        terms = self.rng.choice(half)
        if model.state_of(terms.settlement_id) == State.ASSET_LOCKED:
            return Call(terms.buyer, "lock_payment", (terms,), "lockPayment")
        return Call(terms.seller, "lock_asset", (terms,), "lockAsset")

    def report(self, model: EscrowModel) -> Call | None:
        """A certified report on up to three settlements: COMMIT or ABORT for prepared ones,
        ABORT for the others; decided or unknown ones give DecisionSkipped."""
        if not self.terms:
            return None
        chosen = self.rng.sample(self.terms, min(len(self.terms), self.rng.randint(1, 3)))
        decisions = []
        for t in chosen:
            prepared = model.state_of(t.settlement_id) == State.PREPARED
            commit = prepared and self.rng.random() < 0.7
            action = Action.COMMIT if commit else Action.ABORT
            decisions.append(Decision(t.settlement_id, action, t.terms_hash()))
        self.round += 1
        committee = self.escrow.stack.committee
        certificate = committee.certify(committee.report(decisions, epoch=1, round=self.round))
        return Call(self.escrow.transmitter, "apply_certificate", (certificate, chosen), "report")

    # -------------------------------------------------------------- the sequence

    def step(self, index: int) -> str:
        """One step: one to three chain operations (a reorg, an empty block, a block of
        calls), so that a poll sometimes finds several blocks or reorgs at once. Returns
        what it did."""
        done = [self.operation() for _ in range(self.rng.choice([1, 1, 1, 2, 3]))]
        if sum(d.startswith("reorg") for d in done) >= 2:
            self.coverage.stacked_reorgs += 1
        return f"step {index}: {', '.join(done)}"

    def operation(self) -> str:
        choice = self.rng.random()
        height = self.sim.head.number
        if choice < 0.25 and height >= 1:
            depth = self.rng.randint(1, min(MAX_REORG_DEPTH, height))
            self.reorg(depth)
            return f"reorg depth {depth}"
        if choice < 0.4:
            self.mine([])
            return "empty block"
        calls = self.next_calls()
        self.mine(calls)
        return f"block {[c.label for c in calls]}"


def run_sequence(
    chain: LocalChain, escrow: Escrow, seed: int, steps: int, *, coordinator: str | None = None
) -> Coverage:
    twin = WatcherTwin(chain, escrow, random.Random(seed), coordinator=coordinator)
    for index in range(steps):
        description = twin.step(index)
        twin.poll(f"seed {seed} {description}")
    twin.check_against_the_chains()
    return twin.coverage


def test_chain_view_follows_the_event_watcher_through_reorgs(
    fifo_chain: LocalChain, clean: Escrow
) -> None:
    coverage = run_sequence(fifo_chain, clean, SEED, STEPS)
    # The fixed sequence must reach what the comparison is about, or it proves little.
    assert set(coverage.reorgs) == {1, 2, 3}, coverage
    assert all(coverage.retracted[c] > 0 for c in CONFIRMATIONS), coverage
    assert set(coverage.delivered) >= EXPECTED_EVENTS, coverage
    assert coverage.redelivered > 0, coverage
    assert coverage.stacked_reorgs > 0, coverage


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_chain_view_follows_the_event_watcher_long(
    fifo_chain: LocalChain, clean: Escrow, seed: int
) -> None:
    run_sequence(fifo_chain, clean, seed, 250)


def test_chain_view_watches_the_coordinator_however_its_address_is_spelled(
    fifo_chain: LocalChain, clean: Escrow
) -> None:
    # Smallest reproduction: the first step of the default sequence is one createAndLock;
    # the watcher delivers SettlementCreated and LegLocked, the view nothing.
    run_sequence(fifo_chain, clean, SEED, 1, coordinator=clean.co.address.lower())
