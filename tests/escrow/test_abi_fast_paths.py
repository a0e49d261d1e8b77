"""The adapter's own ABI fast paths against web3 (the reference), no chain needed:

- the bindings' calldata encoder against ``contract.encode_abi``, byte-identical for every
  transaction the bindings build, including an ``applyReport`` of 128 decisions;
- the watcher's event decoder against ``process_log`` for every escrow event, with random
  arguments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from hypothesis import given, settings
from hypothesis import strategies as st
from web3 import Web3

from chain_adapters.bindings import (
    COORDINATOR,
    CallEncoder,
    CoordinatorBinding,
    TokenBinding,
    escrow_abis,
)
from chain_adapters.build import compile_contracts
from chain_adapters.model import Mode, Terms
from chain_adapters.verifier import abi_type, certificate_calldata
from chain_adapters.watcher import EventDecoder
from consensus import bls
from consensus.report import Action, Certificate, Decision, Report, report_hash

ADDRESS = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ARTIFACTS = compile_contracts()
W3 = Web3()

bytes32 = st.binary(min_size=32, max_size=32)
addresses = st.binary(min_size=20, max_size=20).map(Web3.to_checksum_address)
terms_strategy = st.builds(
    Terms,
    settlement_id=bytes32,
    mode=st.sampled_from(Mode),
    seller=addresses,
    buyer=addresses,
    asset_token=addresses,
    asset_amount=st.integers(0, 2**256 - 1),
    payment_token=addresses,
    payment_amount=st.integers(0, 2**256 - 1),
    deadline=st.integers(0, 2**64 - 1),
)


def _reference(fn: str, args: list[object]) -> bytes:
    contract = W3.eth.contract(address=ADDRESS, abi=ARTIFACTS[COORDINATOR].abi)
    return bytes.fromhex(contract.encode_abi(fn, args=args)[2:])


@settings(max_examples=40, deadline=None)
@given(terms=terms_strategy)
def test_terms_transactions_match_web3(terms: Terms) -> None:
    binding = CoordinatorBinding(W3, ADDRESS, ARTIFACTS)
    for fn, build in (
        ("create", binding.create_tx),
        ("createAndLock", binding.create_and_lock_tx),
        ("lockAsset", binding.lock_asset_tx),
        ("lockPayment", binding.lock_payment_tx),
        ("reclaimAfterDeadline", binding.reclaim_after_deadline_tx),
    ):
        assert build(terms).data == _reference(fn, [terms.as_abi()])


@settings(max_examples=5, deadline=None)
@given(
    terms=st.lists(terms_strategy, min_size=1, max_size=128, unique_by=lambda t: t.settlement_id)
)
def test_apply_report_matches_web3(terms: list[Terms]) -> None:
    binding = CoordinatorBinding(W3, ADDRESS, ARTIFACTS)
    report = Report(
        bytes(32), 1, 2, tuple(Decision(t.settlement_id, Action.COMMIT, bytes(32)) for t in terms)
    )
    cert = Certificate(report, 1, bls.sign(12345, report_hash(report)))
    tx = binding.apply_report_tx(cert, terms)
    calldata = certificate_calldata(cert)
    expected = _reference(
        "applyReport",
        [calldata.report, calldata.signers, calldata.signature, [t.as_abi() for t in terms]],
    )
    assert tx.data == expected


def test_token_transactions_match_web3() -> None:
    abi = ARTIFACTS["AssetToken"].abi
    token = TokenBinding(W3, ADDRESS, abi)
    contract = W3.eth.contract(address=ADDRESS, abi=abi)
    holder = "0x" + "ab" * 20
    for fn, build in (
        ("mint", token.mint_tx),
        ("approve", token.approve_tx),
        ("transfer", token.transfer_tx),
    ):
        expected = bytes.fromhex(
            contract.encode_abi(fn, args=[Web3.to_checksum_address(holder), 7])[2:]
        )
        assert build(Web3.to_checksum_address(holder), 7).data == expected


def test_unknown_or_overloaded_function_is_refused() -> None:
    abi = [
        {"type": "function", "name": "f", "inputs": [{"type": "uint256", "name": "a"}]},
        {"type": "function", "name": "f", "inputs": [{"type": "bytes32", "name": "a"}]},
        {"type": "function", "name": "g", "inputs": []},
    ]
    encoder = CallEncoder(abi)
    assert encoder.encode("g", []) == bytes.fromhex("e2179b8e")  # keccak("g()")[:4]
    for name in ("f", "h"):
        with pytest.raises(ValueError, match=name):
            encoder.encode(name, [1])
    terms = Terms(bytes(32), 1, ADDRESS, ADDRESS, ADDRESS, 0, ADDRESS, 0, 0)
    with pytest.raises(ValueError, match="Terms"):  # a function of other arguments
        encoder.encode_terms_call("g", terms)


# --------------------------------------------------------------------------- events


def _values(kind: str) -> st.SearchStrategy[Any]:
    """Random values of an ABI type (the types escrow events use)."""
    if kind.startswith("("):
        inner = _split(kind[1:-1])
        return st.tuples(*(_values(k) for k in inner))
    if kind == "address":
        return addresses
    if kind == "bool":
        return st.booleans()
    if kind == "bytes":
        return st.binary(max_size=70)
    if kind.startswith("bytes"):
        size = int(kind[5:])
        return st.binary(min_size=size, max_size=size)
    if kind.startswith("uint"):
        return st.integers(0, 2 ** int(kind[4:]) - 1)
    raise AssertionError(f"no strategy for {kind}")


def _split(types: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(types):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(types[start:i])
            start = i + 1
    parts.append(types[start:])
    return parts


def _plain(value: Any) -> Any:
    """web3's AttributeDicts and lists as plain tuples, as the watcher hands values on."""
    if isinstance(value, Mapping):
        return tuple(_plain(v) for v in value.values())
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


EVENTS = [
    (abi, entry)
    for abi in escrow_abis(ARTIFACTS)
    for entry in abi
    if entry.get("type") == "event" and not entry.get("anonymous")
]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), which=st.integers(0, len(EVENTS) - 1))
def test_event_decoder_matches_web3(data: st.DataObject, which: int) -> None:
    abi, entry = EVENTS[which]
    types = [abi_type(i) for i in entry["inputs"]]
    values = [data.draw(_values(k)) for k in types]
    signature = keccak(text=f"{entry['name']}({','.join(types)})")
    topics = [signature] + [
        abi_encode([k], [v])
        for i, k, v in zip(entry["inputs"], types, values, strict=True)
        if i.get("indexed")
    ]
    body = abi_encode(
        [k for i, k in zip(entry["inputs"], types, strict=True) if not i.get("indexed")],
        [v for i, v in zip(entry["inputs"], values, strict=True) if not i.get("indexed")],
    )
    raw = {
        "address": ADDRESS,
        "topics": [HexBytes(t) for t in topics],
        "data": HexBytes(body),
        "blockNumber": 5,
        "blockHash": HexBytes(bytes(32)),
        "transactionHash": HexBytes(bytes(32)),
        "transactionIndex": 0,
        "logIndex": 0,
        "removed": False,
    }
    reference = W3.eth.contract(abi=abi).events[entry["name"]]().process_log(raw)
    name, args = EventDecoder(escrow_abis(ARTIFACTS)).decode(raw)
    assert name == reference["event"]
    assert args == tuple((k, _plain(v)) for k, v in reference["args"].items())
