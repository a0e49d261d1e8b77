"""Typed Python bindings for dvpsim's escrow contracts (DvPCoordinator and the test tokens).

The node runtime, the runners, the benchmarks and the tests talk to the contracts through
these classes instead of raw web3 calls:

* views return model types (``chain_adapters.model.State``, ``Terms``);
* state-changing calls are built as :class:`chain_adapters.sender.TxRequest` for the
  :class:`chain_adapters.sender.TransactionSender` (nonce, gas, fees, retries);
* logs decode into the model's typed events (``SettlementCreated``, ``LegLocked``, ...), the
  same classes ``chain_adapters.model.EscrowModel`` emits, so observers and the differential
  test compare like with like;
* :meth:`CoordinatorBinding.pending_decisions` is the transmitter's idempotency check: the
  decisions of a report that would still change something on chain.

The terms hash of an on-chain leg is ``chain_adapters.model.terms_hash`` (keccak256 of the
ABI-encoded ``Terms``); the contract's ``hashTerms`` computes the same, and a test holds the
two together.

This module never signs or sends transactions by itself (deploy helpers use the node's
unlocked dev accounts, for local chains only) and decides nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from chain_adapters.build import Artifact, compile_contracts
from chain_adapters.deploy import deploy
from chain_adapters.model import (
    Approval,
    DecisionSkipped,
    EscrowEvent,
    Leg,
    LegLocked,
    ReportApplied,
    SettlementAborted,
    SettlementCommitted,
    SettlementCreated,
    SettlementExpired,
    SettlementRefused,
    SkipReason,
    State,
    Terms,
    Transfer,
    decision_pending,
    encode_terms,
)
from chain_adapters.sender import TxRequest
from chain_adapters.verifier import abi_type, certificate_calldata, decode_revert
from chain_adapters.watcher import ChainLog, EventDecoder, chain_log
from consensus.report import Certificate, Decision, Report

#: The ABI type of the coordinator's ``Terms`` struct (``chain_adapters.model.Terms``).
TERMS_ABI_TYPE = "(bytes32,uint8,address,address,address,uint256,address,uint256,uint64)"

__all__ = [
    "COORDINATOR",
    "CoordinatorBinding",
    "TokenBinding",
    "chain_log_event",
    "decode_escrow_event",
    "deploy_bridged_token",
    "deploy_coordinator",
    "deploy_token",
    "escrow_abis",
]

COORDINATOR = "DvPCoordinator"
# Settlements per statesOf call (CoordinatorBinding.states_of).
STATES_PER_CALL = 2000
_TOKEN_ABI_NAME = "DvPToken"


def escrow_abis(artifacts: Mapping[str, Artifact]) -> list[list[dict[str, Any]]]:
    """The ABIs whose events and errors the escrow emits: the coordinator and the tokens."""
    return [artifacts[COORDINATOR].abi, artifacts[_TOKEN_ABI_NAME].abi]


def _to_bytes(value: Any) -> bytes:
    return bytes(value)


class CallEncoder:
    """Calldata for a contract's functions: the 4-byte selector and ``eth_abi.encode`` of
    the arguments. web3's ``contract.encode_abi`` does the same through its normalizers,
    which cost ~9 ms for an ``applyReport`` of 128 decisions; tests hold the two
    byte-identical."""

    def __init__(self, abi: Sequence[Mapping[str, Any]]) -> None:
        self._functions: dict[str, tuple[bytes, list[str]]] = {}
        overloaded: set[str] = set()
        for entry in abi:
            if entry.get("type") != "function":
                continue
            name = str(entry["name"])
            types = [abi_type(i) for i in entry["inputs"]]
            selector = bytes(keccak(text=f"{name}({','.join(types)})"))[:4]
            if name in self._functions:
                overloaded.add(name)
            self._functions[name] = (selector, types)
        for name in overloaded:  # ambiguous by name: web3 is the way for those
            del self._functions[name]

    def encode(self, fn: str, args: Sequence[Any]) -> bytes:
        selector, types = self._function(fn)
        return selector + abi_encode(types, list(args))

    def encode_terms_call(self, fn: str, terms: Terms) -> bytes:
        """Calldata of ``fn(Terms)``, a function whose one argument is the static ``Terms``
        struct: the selector and ``encode_terms`` (the same bytes as ``encode``; eth_abi
        checks every address's checksum, which cost the load generator ~50 us a lock)."""
        selector, types = self._function(fn)
        if types != [TERMS_ABI_TYPE]:
            raise ValueError(f"{fn!r} does not take one Terms struct")
        return selector + encode_terms(terms)

    def _function(self, fn: str) -> tuple[bytes, list[str]]:
        try:
            return self._functions[fn]
        except KeyError:
            raise ValueError(f"no function {fn!r} (or it is overloaded) in this ABI") from None


class TokenBinding:
    """A dvpsim ERC-20 (AssetToken, PaymentToken, BridgedToken)."""

    def __init__(self, w3: Any, address: str, abi: Sequence[Mapping[str, Any]]) -> None:
        self.contract = w3.eth.contract(address=address, abi=list(abi))
        self.address: str = self.contract.address
        self.calls = CallEncoder(abi)

    def balance_of(self, holder: str) -> int:
        return int(self.contract.functions.balanceOf(holder).call())

    def allowance(self, owner: str, spender: str) -> int:
        return int(self.contract.functions.allowance(owner, spender).call())

    def minter(self) -> str:
        return str(self.contract.functions.minter().call())

    def _tx(self, fn: str, *args: Any) -> TxRequest:
        return TxRequest(to=self.address, data=self.calls.encode(fn, args), label=fn)

    def mint_tx(self, to: str, amount: int) -> TxRequest:
        return self._tx("mint", to, amount)

    def approve_tx(self, spender: str, amount: int) -> TxRequest:
        return self._tx("approve", spender, amount)

    def transfer_tx(self, to: str, amount: int) -> TxRequest:
        return self._tx("transfer", to, amount)


class CoordinatorBinding:
    """A deployed DvPCoordinator."""

    def __init__(self, w3: Any, address: str, artifacts: Mapping[str, Artifact]) -> None:
        self.w3 = w3
        self.contract = w3.eth.contract(address=address, abi=artifacts[COORDINATOR].abi)
        self.address: str = self.contract.address
        self._abis = escrow_abis(artifacts)
        self._error_abi = [e for abi in self._abis for e in abi if e.get("type") == "error"]
        self.decoder = EventDecoder(self._abis)
        self.calls = CallEncoder(artifacts[COORDINATOR].abi)
        # The views read per poll, decoded with eth_abi (web3's normalizers walked every
        # id of a 2,000-id statesOf, in and out).
        self._outputs = {
            str(entry["name"]): [abi_type(o) for o in entry["outputs"]]
            for entry in artifacts[COORDINATOR].abi
            if entry.get("type") == "function" and entry["name"] in ("statesOf", "settlementsOf")
        }

    def _view(self, fn: str, *args: Any) -> tuple[Any, ...]:
        """``fn(*args)`` of a view in ``_outputs``, by one eth_call, decoded."""
        data = self.calls.encode(fn, args)
        raw = self.w3.eth.call({"to": self.address, "data": "0x" + data.hex()})
        return tuple(abi_decode(self._outputs[fn], bytes(raw)))

    # ------------------------------------------------------------------ views

    def settlement(self, settlement_id: bytes) -> tuple[bytes, State]:
        terms_hash, state = self.contract.functions.settlementOf(settlement_id).call()
        return bytes(terms_hash), State(state)

    def state_of(self, settlement_id: bytes) -> State:
        return self.settlement(settlement_id)[1]

    def states_of(self, settlement_ids: Sequence[bytes]) -> list[State]:
        """The states of ``settlement_ids``, in order: ``STATES_PER_CALL`` per ``statesOf``
        call (a cold storage read each costs 2,100 gas, and a node's call gas limit, 30M
        on anvil, ran out at about 13,000 in one call)."""
        ids = list(settlement_ids)
        states: list[State] = []
        for start in range(0, len(ids), STATES_PER_CALL):
            chunk = ids[start : start + STATES_PER_CALL]
            states.extend(State(s) for s in self._view("statesOf", chunk)[0])
        return states

    def hash_terms(self, terms: Terms) -> bytes:
        return bytes(self.contract.functions.hashTerms(terms.as_abi()).call())

    def unsafe_self_refund_after_deadline(self) -> bool:
        return bool(self.contract.functions.unsafeSelfRefundAfterDeadline().call())

    def config_digest(self) -> bytes:
        return bytes(self.contract.functions.latestConfigDetails().call()[1])

    def settlements_of(self, settlement_ids: Sequence[bytes]) -> list[tuple[bytes, State]]:
        """(terms hash, state) of each settlement, in one call."""
        if not settlement_ids:
            return []
        hashes, states = self._view("settlementsOf", list(settlement_ids))
        return [(bytes(h), State(s)) for h, s in zip(hashes, states, strict=True)]

    def pending_decisions(self, report: Report) -> tuple[Decision, ...]:
        """The decisions of ``report`` that would still change state here, by the decision
        table (the transmitter's idempotency check: send only if this is not empty).
        Decisions that can never apply (unknown settlement, other terms, PREPARE) are not
        pending either."""
        ids = [d.settlement_id for d in report.decisions]
        return tuple(
            decision
            for decision, (stored, state) in zip(
                report.decisions, self.settlements_of(ids), strict=True
            )
            if decision_pending(decision, stored, state)
        )

    def event_logs(
        self, *events: str, from_block: int = 0, to_block: int | None = None
    ) -> list[ChainLog]:
        """Every log of this coordinator's ``events`` (names) from ``from_block`` to
        ``to_block`` (the newest block when None), in chain order, decoded. One raw
        ``eth_getLogs`` read as the watcher reads it (``chain_log``): web3's ``get_logs``
        formats every log through its normalizers, which cost the runner ~1 ms a log (it
        reads one per settlement, and one per refused one, while the load runs)."""
        request = {
            "address": self.address,
            "topics": [["0x" + self.decoder.topic(event).hex() for event in events]],
            "fromBlock": hex(from_block),
            "toBlock": "latest" if to_block is None else hex(to_block),
        }
        response = self.w3.provider.make_request("eth_getLogs", [request])
        if "error" in response:
            raise ValueError(f"eth_getLogs for {', '.join(events)}: {response['error']}")
        logs = [
            chain_log(raw, self.chain_id, self.decoder)
            for raw in response["result"]
            if not raw.get("removed")
        ]
        return [log for log in logs if log.event in events]

    @cached_property
    def chain_id(self) -> int:
        """The chain's id (read once)."""
        return int(self.w3.eth.chain_id)

    # ------------------------------------------------------------------ transactions

    def _tx(self, fn: str, *args: Any) -> TxRequest:
        return TxRequest(to=self.address, data=self.calls.encode(fn, args), label=fn)

    def _terms_tx(self, fn: str, terms: Terms) -> TxRequest:
        return TxRequest(to=self.address, data=self.calls.encode_terms_call(fn, terms), label=fn)

    def create_tx(self, terms: Terms) -> TxRequest:
        return self._terms_tx("create", terms)

    def create_and_lock_tx(self, terms: Terms) -> TxRequest:
        return self._terms_tx("createAndLock", terms)

    def lock_asset_tx(self, terms: Terms) -> TxRequest:
        return self._terms_tx("lockAsset", terms)

    def lock_payment_tx(self, terms: Terms) -> TxRequest:
        return self._terms_tx("lockPayment", terms)

    def reclaim_after_deadline_tx(self, terms: Terms) -> TxRequest:
        return self._terms_tx("reclaimAfterDeadline", terms)

    def apply_report_tx(
        self, certificate: Certificate, terms: Sequence[Terms], *, strict: bool = False
    ) -> TxRequest:
        """applyReport (or applyReportStrict) with ``terms[i]`` for decision i."""
        calldata = certificate_calldata(certificate)
        return self._tx(
            "applyReportStrict" if strict else "applyReport",
            calldata.report,
            calldata.signers,
            calldata.signature,
            [t.as_abi() for t in terms],
        )

    # ------------------------------------------------------------------ errors and events

    def decode_error(self, data: bytes) -> str:
        """``Name(args)`` of a custom error of the coordinator, its verifier or a token."""
        reason = decode_revert(self._error_abi, data) if len(data) >= 4 else None
        return str(reason) if reason else ("0x" + data.hex() if data else "no revert data")

    def decode_error_parts(self, data: bytes) -> tuple[str, tuple[Any, ...]] | None:
        reason = decode_revert(self._error_abi, data) if len(data) >= 4 else None
        return (reason.name, reason.args) if reason else None

    def receipt_events(self, receipt: Mapping[str, Any]) -> list[EscrowEvent]:
        """The typed events of a receipt, in log order (coordinator and tokens)."""
        events = []
        for raw in receipt["logs"]:
            name, args = self.decoder.decode(raw)
            event = decode_escrow_event(str(raw["address"]), name, args)
            if event is not None:
                events.append(event)
        return events


def decode_escrow_event(
    emitter: str, name: str, args: Iterable[tuple[str, Any]]
) -> EscrowEvent | None:
    """A decoded log (as :class:`chain_adapters.watcher.ChainLog` holds it) as the model's
    typed event, or None for events that are not the escrow's."""
    values = dict(args)
    if name == "Transfer":
        return Transfer(emitter, values["from"], values["to"], values["value"])
    if name == "Approval":
        return Approval(emitter, values["owner"], values["spender"], values["value"])
    if name == "SettlementCreated":
        return SettlementCreated(
            emitter,
            _to_bytes(values["settlementId"]),
            _to_bytes(values["termsHash"]),
            values["creator"],
            Terms.from_abi(
                (_to_bytes(values["terms"][0]), *values["terms"][1:])  # settlementId as bytes
            ),
        )
    if name == "LegLocked":
        return LegLocked(
            emitter,
            _to_bytes(values["settlementId"]),
            Leg(values["leg"]),
            values["party"],
            values["token"],
            values["amount"],
            State(values["state"]),
        )
    if name == "SettlementCommitted":
        return SettlementCommitted(
            emitter,
            _to_bytes(values["settlementId"]),
            _to_bytes(values["reportHash"]),
            _to_bytes(values["termsHash"]),
        )
    if name == "SettlementAborted":
        return SettlementAborted(
            emitter,
            _to_bytes(values["settlementId"]),
            _to_bytes(values["reportHash"]),
            _to_bytes(values["termsHash"]),
            State(values["previousState"]),
        )
    if name == "SettlementExpired":
        return SettlementExpired(
            emitter,
            _to_bytes(values["settlementId"]),
            values["caller"],
            State(values["previousState"]),
        )
    if name == "SettlementRefused":
        return SettlementRefused(
            emitter,
            _to_bytes(values["settlementId"]),
            values["creator"],
            values["open"],
            values["endedLastWindow"],
        )
    if name == "DecisionSkipped":
        return DecisionSkipped(
            emitter,
            _to_bytes(values["settlementId"]),
            _to_bytes(values["reportHash"]),
            values["action"],
            SkipReason(values["reason"]),
        )
    if name == "ReportApplied":
        return ReportApplied(
            emitter,
            _to_bytes(values["reportHash"]),
            values["epoch"],
            values["round"],
            values["applied"],
            values["skipped"],
        )
    return None


def chain_log_event(log: ChainLog) -> EscrowEvent | None:
    """A watcher's :class:`ChainLog` as the model's typed event (None if not an escrow one)."""
    return decode_escrow_event(log.address, log.event, log.args)


# --------------------------------------------------------------------------- deployment


def _sender(w3: Any, sender: str | None) -> str:
    return sender or w3.eth.accounts[0]


def deploy_coordinator(
    w3: Any,
    artifacts: Mapping[str, Artifact] | None = None,
    *,
    unsafe_self_refund_after_deadline: bool = False,
    admission_floor: int = 0,
    sender: str | None = None,
) -> CoordinatorBinding:
    """Deploy a DvPCoordinator (its committee is set afterwards with
    ``chain_adapters.verifier.configure_bls_verifier(binding.contract, ...)``). The unsafe
    research variant must be asked for by name; ``admission_floor`` > 0 turns admission on
    (``chain_adapters.model``)."""
    artifacts = artifacts or compile_contracts()
    contract = deploy(
        w3,
        artifacts[COORDINATOR],
        unsafe_self_refund_after_deadline,
        admission_floor,
        sender=_sender(w3, sender),
    )
    return CoordinatorBinding(w3, contract.address, artifacts)


def deploy_token(
    w3: Any,
    kind: str,
    artifacts: Mapping[str, Artifact] | None = None,
    *,
    sender: str | None = None,
) -> TokenBinding:
    """Deploy ``AssetToken`` or ``PaymentToken``; the deployer is the only minter."""
    if kind not in ("AssetToken", "PaymentToken"):
        raise ValueError(f"unknown token kind {kind!r}: use AssetToken or PaymentToken")
    artifacts = artifacts or compile_contracts()
    contract = deploy(w3, artifacts[kind], sender=_sender(w3, sender))
    return TokenBinding(w3, contract.address, artifacts[kind].abi)


def deploy_bridged_token(
    w3: Any,
    name: str,
    symbol: str,
    decimals: int,
    minter: str,
    artifacts: Mapping[str, Artifact] | None = None,
    *,
    sender: str | None = None,
) -> TokenBinding:
    """Deploy a BridgedToken whose only minter is ``minter`` (the destination chain's
    coordinator in the token-transfer mode)."""
    artifacts = artifacts or compile_contracts()
    contract = deploy(
        w3, artifacts["BridgedToken"], name, symbol, decimals, minter, sender=_sender(w3, sender)
    )
    return TokenBinding(w3, contract.address, artifacts["BridgedToken"].abi)
