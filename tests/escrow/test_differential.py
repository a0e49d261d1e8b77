"""Differential test: DvPCoordinator on anvil against chain_adapters.model.EscrowModel.

Hypothesis drives random operation sequences (creates with valid and broken terms, locks by
the right and the wrong party, approvals, time passing, certified and uncertified reports
with batches of good and bad decisions, strict and lenient application, replays of earlier
certificates, duplicate transmissions of one report (now and then a faulty transmitter's
copy with wrong terms first), a second report certified for a round already used (beyond
f), unsafe self-refunds) against both the contract and the model. After every
operation the two must agree on the outcome (the same custom error with the same
arguments, or the same events in the same order, token transfers included) and on every
settlement's state; at the end of each sequence, on every balance, allowance and total
supply.

Default run: 20 sequences of up to 20 steps, derandomized (the same sequences every run;
the test also checks they reached the outcomes listed in EXPECTED_OUTCOMES), reported
unshrunk. ``-m slow``: 300 random sequences of up to 40 steps, shrunk on failure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from chain_adapters.build import Artifact
from chain_adapters.deploy import deploy
from chain_adapters.devstack import EscrowStack, deploy_escrow_stack
from chain_adapters.localchain import LocalChain
from chain_adapters.model import (
    MAX_UINT256,
    ZERO_ADDRESS,
    DecisionSkipped,
    EscrowModel,
    EscrowRevert,
    Mode,
    State,
    Terms,
)
from chain_adapters.verifier import certificate_calldata
from consensus.report import Action, Certificate, Decision

GAS = 3_000_000
# Outcomes the default run must reach (it is derandomized, so this is stable for a given
# code version); if a change to the strategies loses one, the test says which.
EXPECTED_OUTCOMES = {
    "SettlementCommitted",
    "SettlementAborted",
    "createAndLock: ok",
    "lockPayment: ok",
    "lockAsset: ok",
    "applyReportStrict: ok",
    "revert InvalidTerms",
    "revert TooFewSigners",
    "revert InvalidSignature",
    "revert ConfigDigestMismatch",
    "revert DecisionRejected",
    "revert ConflictingDecision",
    "revert ReportAlreadyApplied",
    "skipped: UNKNOWN_SETTLEMENT",
    "skipped: ALREADY_APPLIED",
    "skipped: CONFLICT",
    "skipped: TERMS_MISMATCH",
    "skipped: EXECUTION_FAILED",
    "SettlementExpired",
}
PARTY_FUNDS = 10**6


@dataclass
class World:
    """Everything the state machine needs from the chain, set up once per test."""

    chain: LocalChain
    stacks: dict[bool, EscrowStack]  # unsafe flag -> stack
    stranger_token: str  # a BridgedToken minted by the deployer: coordinators cannot mint it
    no_code: str  # an address without code
    parties: list[str]
    initial: dict[bool, dict[str, Any]]  # per stack: balances, allowances, supplies
    outcomes: Counter[str] = field(default_factory=Counter)  # what the sequences reached


def _tokens(world: World, stack: EscrowStack) -> list[str]:
    return [
        stack.asset.address,
        stack.payment.address,
        stack.bridged_asset.address,
        stack.bridged_payment.address,
        world.stranger_token,
    ]


def _view(chain: LocalChain, to: str, signature: str, types: list[str], args: list[Any]) -> Any:
    """One eth_call with hand-encoded calldata (web3's contract layer costs ~10 ms a call,
    which would dominate this test), returning the single decoded result."""
    selector = bytes(keccak(text=signature))[:4]
    data = "0x" + (selector + abi_encode(types, args)).hex()
    out = chain.rpc("eth_call", [{"to": to, "data": data}, "latest"])
    return bytes.fromhex(out[2:])


def _uint(chain: LocalChain, to: str, signature: str, types: list[str], args: list[Any]) -> int:
    return int.from_bytes(_view(chain, to, signature, types, args), "big")


def _read_ledgers(world: World, stack: EscrowStack) -> dict[str, Any]:
    chain, co = world.chain, stack.coordinator.address
    holders = [*world.parties, co]
    state: dict[str, Any] = {"balances": {}, "allowances": {}, "supply": {}}
    for token in _tokens(world, stack):
        state["supply"][token] = _uint(chain, token, "totalSupply()", [], [])
        for holder in holders:
            state["balances"][(token, holder)] = _uint(
                chain, token, "balanceOf(address)", ["address"], [holder]
            )
        for party in world.parties:
            state["allowances"][(token, party)] = _uint(
                chain, token, "allowance(address,address)", ["address", "address"], [party, co]
            )
    return state


def _states(chain: LocalChain, coordinator: str, ids: list[bytes]) -> list[State]:
    raw = _view(chain, coordinator, "statesOf(bytes32[])", ["bytes32[]"], [ids])
    return [State(s) for s in abi_decode(["uint8[]"], raw)[0]]


@pytest.fixture(scope="module")
def world(chain: LocalChain, contracts: dict[str, Artifact]) -> World:
    w3 = chain.web3()
    deployer = w3.eth.accounts[0]
    parties = list(w3.eth.accounts[5:8])
    stacks = {
        unsafe: deploy_escrow_stack(
            w3, contracts, n=4, f=1, unsafe_self_refund_after_deadline=unsafe
        )
        for unsafe in (False, True)
    }
    stranger = deploy(
        w3, contracts["BridgedToken"], "Stranger", "STR", 0, deployer, sender=deployer
    )
    for stack in stacks.values():
        for party in parties:
            for token in (stack.asset, stack.payment):
                w3.eth.wait_for_transaction_receipt(
                    token.contract.functions.mint(party, PARTY_FUNDS).transact({"from": deployer})
                )
                w3.eth.wait_for_transaction_receipt(
                    token.contract.functions.approve(
                        stack.coordinator.address, MAX_UINT256
                    ).transact({"from": party})
                )
            w3.eth.wait_for_transaction_receipt(
                stranger.functions.mint(party, PARTY_FUNDS).transact({"from": deployer})
            )
            w3.eth.wait_for_transaction_receipt(
                stranger.functions.approve(stack.coordinator.address, 500).transact({"from": party})
            )
    result = World(
        chain=chain,
        stacks=stacks,
        stranger_token=stranger.address,
        no_code=to_checksum_address("0x" + "ab" * 20),
        parties=parties,
        initial={},
    )
    result.initial = {unsafe: _read_ledgers(result, stack) for unsafe, stack in stacks.items()}
    return result


def _normalize(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return to_checksum_address(value)
    if isinstance(value, tuple | list):
        return tuple(_normalize(v) for v in value)
    return int(value) if isinstance(value, int) else value


def make_machine(world: World) -> type[RuleBasedStateMachine]:
    class EscrowDifferential(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.snapshot = world.chain.snapshot()
            self.ids: list[bytes] = []
            self.terms: list[Terms] = []
            self.certs: list[tuple[Certificate, list[Terms]]] = []
            self.round = 0

        # ---------------------------------------------------------------- set-up

        @initialize(unsafe=st.booleans(), data=st.data(), prepared=st.integers(1, 3))
        def choose_coordinator(self, unsafe: bool, data: st.DataObject, prepared: int) -> None:
            stack = world.stacks[unsafe]
            self.stack = stack
            self.co = stack.coordinator
            self.w3 = stack.w3
            self.tokens = _tokens(world, stack)
            self.model = EscrowModel(self.co.address, unsafe_self_refund_after_deadline=unsafe)
            minters = {
                stack.asset.address: stack.deployer,
                stack.payment.address: stack.deployer,
                stack.bridged_asset.address: self.co.address,
                stack.bridged_payment.address: self.co.address,
                world.stranger_token: stack.deployer,
            }
            initial = world.initial[unsafe]
            for token, minter in minters.items():
                ledger = self.model.add_token(token, minter)
                ledger.total_supply_box["supply"] = initial["supply"][token]
                for (t, holder), amount in initial["balances"].items():
                    if t == token and amount:
                        ledger.balances[holder] = amount
                for (t, party), amount in initial["allowances"].items():
                    if t == token and amount:
                        ledger.allowances[(party, self.co.address)] = amount
            self.now = int(self.w3.eth.get_block("latest")["timestamp"])
            self.rnd = data.draw(st.randoms(use_true_random=True))
            for _ in range(prepared):  # start every sequence with settlements to decide on
                self.prepare(data)

        def teardown(self) -> None:
            try:
                if hasattr(self, "model"):
                    chain_state = _read_ledgers(world, self.stack)
                    for (token, holder), amount in chain_state["balances"].items():
                        assert self.model.token(token).balance_of(holder) == amount, (token, holder)
                    for token, supply in chain_state["supply"].items():
                        assert self.model.token(token).total_supply == supply, token
                    for (token, party), amount in chain_state["allowances"].items():
                        ledger = self.model.token(token)
                        assert ledger.allowance(party, self.co.address) == amount, (token, party)
            finally:
                world.chain.revert(self.snapshot)

        # ---------------------------------------------------------------- both sides

        def both(
            self, fn_name: str, args: list[Any], sender: str, model_op: Callable[[int], Any]
        ) -> None:
            """Run one call on chain (next block at a known timestamp) and on the model with
            the same timestamp; they must agree on the outcome."""
            self.now += 1
            world.chain.rpc("evm_setNextBlockTimestamp", [self.now])
            data = self.co.contract.encode_abi(fn_name, args=args)
            tx = {"from": sender, "to": self.co.address, "data": data, "gas": hex(GAS)}
            chain_events, chain_error = self._send(tx)
            try:
                model_events = model_op(self.now)
                model_error = None
            except EscrowRevert as exc:
                model_events, model_error = None, (exc.error, _normalize(exc.args_))
            assert chain_error == model_error, (fn_name, chain_error, model_error)
            world.outcomes[f"revert {model_error[0]}" if model_error else f"{fn_name}: ok"] += 1
            for e in model_events or []:
                if isinstance(e, DecisionSkipped):
                    world.outcomes[f"skipped: {e.reason.name}"] += 1
                elif e.NAME.startswith("Settlement"):
                    world.outcomes[e.NAME] += 1
            if model_events is not None:
                assert chain_events == [e.normalized() for e in model_events], fn_name

        def _send(self, tx: dict[str, Any]) -> tuple[Any, Any]:
            tx_hash = world.chain.rpc("eth_sendTransaction", [tx])
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
            if receipt["status"] == 1:
                events = [e.normalized() for e in self.co.receipt_events(receipt)]
                return [(e[0], e[1], _normalize(e[2])) for e in events], None
            call = {k: v for k, v in tx.items() if k != "gas"}
            raw = self.w3.provider.make_request("eth_call", [call, hex(receipt["blockNumber"])])
            data = raw.get("error", {}).get("data", "0x")
            parts = self.co.decode_error_parts(bytes.fromhex(data[2:]))
            assert parts is not None, f"undecodable revert {data}"
            return None, (parts[0], _normalize(parts[1]))

        # ---------------------------------------------------------------- strategies

        # Hypothesis chooses the structure (rules, modes, parties, settlements, actions);
        # how often something is broken is weighted with a seeded Random, because
        # Hypothesis' own draws lean towards edge cases and would break almost everything.
        def chance(self, p: float) -> bool:
            return self.rnd.random() < p

        def amount(self) -> int:
            return self.rnd.choices([1, 7, 1000, 2 * PARTY_FUNDS], weights=[1, 1, 10, 1])[0]

        def pick_terms(self, data: st.DataObject) -> Terms:
            if self.terms and self.chance(0.95):
                t = data.draw(st.sampled_from(self.terms))
                if self.chance(0.05):  # tampered copy
                    t = replace(t, asset_amount=t.asset_amount + 1)
                return t
            return self.new_terms(data)

        def new_terms(self, data: st.DataObject) -> Terms:
            mode = data.draw(st.sampled_from(list(Mode)))
            seller, buyer = data.draw(st.permutations(world.parties))[:2]
            stack = self.stack
            asset, payment = stack.asset.address, stack.payment.address
            # Bridge modes mint the credited token: usually one the coordinator may mint.
            if mode == Mode.BRIDGE_SELLER_SIDE:
                payment = stack.bridged_payment.address if self.chance(0.5) else asset
            if mode == Mode.BRIDGE_BUYER_SIDE:
                asset = stack.bridged_asset.address if self.chance(0.5) else payment
            t = Terms(
                settlement_id=self.rnd.randbytes(32),
                mode=int(mode),
                seller=seller,
                buyer=buyer,
                asset_token=asset,
                asset_amount=self.amount(),
                payment_token=payment,
                payment_amount=self.amount(),
                deadline=self.now
                + self.rnd.choices([-1, 0, 1, 2, 30, 300, 3600], weights=[1, 1, 2, 3, 2, 8, 8])[0],
            )
            if mode == Mode.ASSET_ESCROW:
                t = replace(t, payment_token=ZERO_ADDRESS, payment_amount=0)
            if mode == Mode.PAYMENT_ESCROW:
                t = replace(t, asset_token=ZERO_ADDRESS, asset_amount=0)
            if not self.chance(0.15):
                return t
            broken = self.rnd.choice(
                ["same-party", "mode", "zero-id", "zero-amount", "stranger", "no-code"]
            )
            if broken == "same-party":
                return replace(t, buyer=t.seller)
            if broken == "mode":
                return replace(t, mode=self.rnd.choice([0, 6, 255]))
            if broken == "zero-id":
                return replace(t, settlement_id=bytes(32))
            if broken == "zero-amount":
                return replace(t, asset_amount=0, payment_amount=0)
            token = world.stranger_token if broken == "stranger" else world.no_code
            if t.asset_token != ZERO_ADDRESS:
                return replace(t, asset_token=token)
            return replace(t, payment_token=token)

        def sender_for(self, data: st.DataObject, t: Terms, preferred: str) -> str:
            if self.chance(0.85):
                return preferred
            choice = self.rnd.choice(["seller", "buyer", "other"])
            if choice == "other":
                return next(p for p in world.parties if p not in (t.seller, t.buyer))
            return t.seller if choice == "seller" else t.buyer

        def remember(self, t: Terms) -> None:
            """Track settlements that exist (on both sides: the states are compared)."""
            if self.model.state_of(t.settlement_id) != State.NONE and t not in self.terms:
                self.terms.append(t)
            if t.settlement_id not in self.ids:
                self.ids.append(t.settlement_id)

        # ---------------------------------------------------------------- rules

        @rule(data=st.data())
        def create(self, data: st.DataObject) -> None:
            t = self.new_terms(data)
            and_lock = data.draw(st.booleans())
            sender = self.sender_for(data, t, t.seller if and_lock else t.buyer)
            if and_lock:
                self.both("createAndLock", [t.as_abi()], sender,
                          lambda now: self.model.create_and_lock(sender, t, now))  # fmt: skip
            else:
                self.both("create", [t.as_abi()], sender,
                          lambda now: self.model.create(sender, t, now))  # fmt: skip
            self.remember(t)

        @rule(data=st.data())
        def prepare(self, data: st.DataObject) -> None:
            """Create and lock every local leg, by the right parties (reaches PREPARED)."""
            t = self.new_terms(data)
            buyer_first = t.mode in (Mode.PAYMENT_ESCROW, Mode.BRIDGE_BUYER_SIDE) or (
                t.mode == Mode.SWAP and self.chance(0.5)
            )
            first = t.buyer if buyer_first else t.seller
            self.both("createAndLock", [t.as_abi()], first,
                      lambda now: self.model.create_and_lock(first, t, now))  # fmt: skip
            self.remember(t)
            state = self.model.state_of(t.settlement_id)
            if state == State.ASSET_LOCKED:
                self.both("lockPayment", [t.as_abi()], t.buyer,
                          lambda now: self.model.lock_payment(t.buyer, t, now))  # fmt: skip
            elif state == State.PAYMENT_LOCKED:
                self.both("lockAsset", [t.as_abi()], t.seller,
                          lambda now: self.model.lock_asset(t.seller, t, now))  # fmt: skip

        @precondition(lambda self: bool(self.terms))
        @rule(data=st.data(), asset=st.booleans())
        def lock(self, data: st.DataObject, asset: bool) -> None:
            t = self.pick_terms(data)
            sender = self.sender_for(data, t, t.seller if asset else t.buyer)
            if asset:
                self.both("lockAsset", [t.as_abi()], sender,
                          lambda now: self.model.lock_asset(sender, t, now))  # fmt: skip
            else:
                self.both("lockPayment", [t.as_abi()], sender,
                          lambda now: self.model.lock_payment(sender, t, now))  # fmt: skip

        @precondition(lambda self: bool(self.terms))
        @rule(data=st.data())
        def reclaim(self, data: st.DataObject) -> None:
            locked = [
                t
                for t in self.terms
                if self.model.state_of(t.settlement_id)
                in (State.ASSET_LOCKED, State.PAYMENT_LOCKED, State.PREPARED)
            ]
            t = (
                data.draw(st.sampled_from(locked))
                if locked and self.chance(0.8)
                else self.pick_terms(data)
            )
            if self.chance(0.7):  # let the deadline pass first
                self.now = max(self.now, t.deadline)
            sender = self.sender_for(data, t, t.seller)
            self.both("reclaimAfterDeadline", [t.as_abi()], sender,
                      lambda now: self.model.reclaim_after_deadline(sender, t, now))  # fmt: skip

        @rule(seconds=st.sampled_from([1, 20, 100, 400, 4000]))
        def time_passes(self, seconds: int) -> None:
            self.now += seconds

        @rule(data=st.data())
        def approve(self, data: st.DataObject) -> None:
            party = data.draw(st.sampled_from(world.parties))
            token = data.draw(st.sampled_from(self.tokens[:2]))
            amount = data.draw(st.sampled_from([0, 5, 1000, MAX_UINT256]))
            self.now += 1
            world.chain.rpc("evm_setNextBlockTimestamp", [self.now])
            contract = self.w3.eth.contract(address=token, abi=self.stack.artifacts["DvPToken"].abi)
            receipt = self.w3.eth.wait_for_transaction_receipt(
                contract.functions.approve(self.co.address, amount).transact({"from": party})
            )
            assert receipt["status"] == 1
            self.model.approve(token, party, self.co.address, amount)

        def honest_action(self, t: Terms) -> Action:
            state = self.model.state_of(t.settlement_id)
            if state == State.PREPARED:
                return Action.COMMIT if self.chance(0.6) else Action.ABORT
            if state == State.EXPIRED:  # the other leg may have committed: that is the point
                return Action.COMMIT if self.chance(0.5) else Action.ABORT
            return Action.ABORT

        @precondition(lambda self: bool(self.terms))
        @rule(data=st.data())
        def settle(self, data: st.DataObject) -> None:
            """A well-formed certified report, as honest nodes would send it: COMMIT or
            ABORT for prepared (or, in the unsafe variant, expired) settlements, ABORT for
            the others. Now and then late members transmit it again, a faulty transmitter's
            copy with wrong terms comes first (it must not block the honest ones), or the
            committee certified a second report for a round already used (beyond f)."""
            chosen = data.draw(st.lists(st.sampled_from(self.terms), min_size=1, max_size=4,
                                        unique_by=lambda t: t.settlement_id))  # fmt: skip
            decisions = [
                Decision(t.settlement_id, self.honest_action(t), t.terms_hash()) for t in chosen
            ]
            if self.round == 0 or not self.chance(0.15):
                self.round += 1
            committee = self.stack.committee
            cert = committee.certify(committee.report(decisions, epoch=1, round=self.round))
            self.certs.append((cert, chosen))
            strict = data.draw(st.booleans())
            if self.chance(0.2):
                self.submit(cert, [replace(t, buyer=t.seller) for t in chosen], strict=False)
            self.submit(cert, chosen, strict)
            if self.chance(0.4):
                self.submit(cert, chosen, strict)

        @rule(data=st.data())
        def apply_report(self, data: st.DataObject) -> None:
            """Anything a faulty committee or transmitter might send: unknown settlements,
            other terms, PREPARE actions, wrong calldata, bad certificates."""
            count = data.draw(st.integers(1, 4))
            decisions, terms, seen = [], [], set()
            for _ in range(count):
                if self.terms and self.chance(0.9):
                    t = data.draw(st.sampled_from(self.terms))
                else:
                    t = self.new_terms(data)
                if t.settlement_id in seen:
                    continue  # a report names a settlement once
                seen.add(t.settlement_id)
                action = data.draw(
                    st.sampled_from([Action.COMMIT] * 3 + [Action.ABORT] * 2 + [Action.PREPARE])
                )
                certified_hash = t.terms_hash() if self.chance(0.9) else self.rnd.randbytes(32)
                decisions.append(Decision(t.settlement_id, action, certified_hash))
                supplied = t if self.chance(0.9) else replace(t, buyer=t.seller)
                terms.append(supplied)
            committee = self.stack.committee
            self.round += 1
            kind = "valid"
            if self.chance(0.3):
                kind = self.rnd.choice(["too-few", "forged", "digest", "short"])
            digest = self.rnd.randbytes(32) if kind == "digest" else None
            report = committee.report(decisions, epoch=1, round=self.round, digest=digest)
            if kind == "too-few":
                cert = committee.certify(report, signers=[1, 2])
            elif kind == "forged":
                real = committee.certify(report, signers=[0, 1, 3])
                cert = Certificate(report, 0b0111, real.signature)
            else:
                cert = committee.certify(report)
            if kind == "short" and len(terms) > 0:
                terms = terms[:-1]
            if kind == "valid":
                self.certs.append((cert, terms))
            self.submit(cert, terms, data.draw(st.booleans()))

        @precondition(lambda self: bool(self.certs))
        @rule(data=st.data(), strict=st.booleans())
        def replay(self, data: st.DataObject, strict: bool) -> None:
            cert, terms = data.draw(st.sampled_from(self.certs))
            self.submit(cert, terms, strict)

        def submit(self, cert: Certificate, terms: list[Terms], strict: bool) -> None:
            for t in terms:
                if t.settlement_id not in self.ids:
                    self.ids.append(t.settlement_id)
            c = certificate_calldata(cert)
            self.both(
                "applyReportStrict" if strict else "applyReport",
                [c.report, c.signers, c.signature, [t.as_abi() for t in terms]],
                world.parties[0],
                lambda now: self.model.apply_certificate(
                    cert, self.stack.committee.config, terms, strict=strict
                ),
            )

        # ---------------------------------------------------------------- invariants

        @invariant()
        def same_states(self) -> None:
            if not hasattr(self, "model") or not self.ids:
                return
            on_chain = _states(world.chain, self.co.address, self.ids)
            assert on_chain == [self.model.state_of(i) for i in self.ids]

    return EscrowDifferential


def _run(world: World, examples: int, steps: int, *, derandomize: bool, shrink: bool) -> None:
    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if shrink else [])
    run_state_machine_as_test(
        make_machine(world),
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            derandomize=derandomize,
            # The default run is one fixed set of sequences: no replay of saved failures.
            database=None if derandomize else settings.default.database,
            phases=phases,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


def test_contract_and_model_agree(world: World) -> None:
    world.outcomes.clear()
    # Shrinking replays sequences on anvil for minutes; the default run reports the
    # failing sequence as found, the slow run shrinks it.
    _run(world, examples=20, steps=20, derandomize=True, shrink=False)
    # The sequences must have reached the interesting outcomes, or the test proves little.
    missing = EXPECTED_OUTCOMES - set(world.outcomes)
    assert not missing, f"never reached: {sorted(missing)}; reached: {dict(world.outcomes)}"


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_contract_and_model_agree_long(world: World) -> None:
    _run(world, examples=300, steps=40, derandomize=False, shrink=True)
