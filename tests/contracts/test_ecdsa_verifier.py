"""EcdsaVerifier (OCR2-style comparison verifier) on anvil: exactly the required number of
ecrecover signatures by distinct members of the current committee."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account
from eth_utils.crypto import keccak

from chain_adapters.verifier import (
    EcdsaCommittee,
    configure_ecdsa_verifier,
    deploy_ecdsa_verifier,
    ecdsa_sign_report,
    ecdsa_signatures,
    submit_ecdsa_report,
)
from consensus.report import encode_report
from tests.contracts.contract_helpers import expect_error, make_report


@dataclass(frozen=True)
class EcdsaSetup:
    contract: Any
    keys: tuple[str, ...]
    committee: EcdsaCommittee


def _keys(n: int, label: str = "ecdsa") -> tuple[str, ...]:
    return tuple(
        "0x" + hashlib.sha256(f"contracts/{label}/{i}".encode()).hexdigest() for i in range(n)
    )


def _setup(w3: Any, contracts: dict[str, Any], n: int, required: int | None = None) -> EcdsaSetup:
    keys = _keys(n)
    contract = deploy_ecdsa_verifier(w3, contracts)
    f = (n - 1) // 3
    committee = configure_ecdsa_verifier(
        contract, [Account.from_key(k).address for k in keys], f, required
    )
    return EcdsaSetup(contract, keys, committee)


def _verify(setup: EcdsaSetup, report: bytes, signatures: list[bytes]) -> Any:
    return setup.contract.functions.verify(report, *ecdsa_signatures(signatures).as_args()).call()


@pytest.mark.parametrize("n", [4, 31])
def test_f_plus_one_signatures_verify(n: int, w3: Any, contracts: dict[str, Any]) -> None:
    setup = _setup(w3, contracts, n)
    report = encode_report(make_report(setup.committee.config_digest, decisions=2))
    f = setup.committee.f
    signatures = [ecdsa_sign_report(k, report) for k in setup.keys[n - f - 1 :]]
    assert _verify(setup, report, signatures) == keccak(report)
    # Any f+1 distinct members, in any order.
    mixed = [ecdsa_sign_report(setup.keys[i], report) for i in range(f, -1, -1)]
    assert _verify(setup, report, mixed) == keccak(report)


def test_wrong_number_of_signatures(w3: Any, contracts: dict[str, Any]) -> None:
    setup = _setup(w3, contracts, 7)  # f = 2: exactly 3 signatures
    report = encode_report(make_report(setup.committee.config_digest))
    signatures = [ecdsa_sign_report(k, report) for k in setup.keys]
    for count in (2, 4, 7):
        reason = expect_error(
            setup.contract.abi,
            lambda count=count: _verify(setup, report, signatures[:count]),
            "WrongNumberOfSignatures",
        )
        assert reason.args == (3, count)


def test_duplicate_signer(w3: Any, contracts: dict[str, Any]) -> None:
    setup = _setup(w3, contracts, 4)
    report = encode_report(make_report(setup.committee.config_digest))
    sig = ecdsa_sign_report(setup.keys[1], report)
    reason = expect_error(
        setup.contract.abi, lambda: _verify(setup, report, [sig, sig]), "DuplicateSigner"
    )
    assert reason.args == (Account.from_key(setup.keys[1]).address.lower(),)


def test_non_member_and_garbage(w3: Any, contracts: dict[str, Any]) -> None:
    setup = _setup(w3, contracts, 4)
    report = encode_report(make_report(setup.committee.config_digest))
    outsider = _keys(1, "outsider")[0]
    good = ecdsa_sign_report(setup.keys[0], report)
    reason = expect_error(
        setup.contract.abi,
        lambda: _verify(setup, report, [good, ecdsa_sign_report(outsider, report)]),
        "UnauthorizedSigner",
    )
    assert reason.args == (Account.from_key(outsider).address.lower(),)
    # A signature of another report recovers some other address.
    other = encode_report(make_report(setup.committee.config_digest, epoch=9))
    expect_error(
        setup.contract.abi,
        lambda: _verify(setup, report, [good, ecdsa_sign_report(setup.keys[1], other)]),
        "UnauthorizedSigner",
    )
    # r = 0 makes ecrecover answer address(0), never a member.
    zero_r = bytes(32) + good[32:]
    reason = expect_error(
        setup.contract.abi, lambda: _verify(setup, report, [zero_r, good]), "UnauthorizedSigner"
    )
    assert reason.args == ("0x" + "00" * 20,)


def test_other_digest_and_replaced_config(w3: Any, contracts: dict[str, Any]) -> None:
    setup = _setup(w3, contracts, 4)
    report = encode_report(make_report(setup.committee.config_digest))
    signatures = [ecdsa_sign_report(k, report) for k in setup.keys[:2]]
    assert _verify(setup, report, signatures)
    configure_ecdsa_verifier(setup.contract, [Account.from_key(k).address for k in setup.keys], 1)
    expect_error(
        setup.contract.abi, lambda: _verify(setup, report, signatures), "ConfigDigestMismatch"
    )


def test_committee_rules(w3: Any, contracts: dict[str, Any]) -> None:
    contract = deploy_ecdsa_verifier(w3, contracts)
    addresses = [Account.from_key(k).address for k in _keys(4)]
    sender = {"from": w3.eth.accounts[0]}
    cases = [
        ((addresses, 2, 3), "TooManyFaults"),
        ((addresses, 1, 1), "ThresholdOutOfRange"),
        ((addresses, 1, 5), "ThresholdOutOfRange"),
        (([], 0, 1), "CommitteeSizeOutOfRange"),
        (
            ([addresses[0], addresses[1], addresses[0], addresses[3]], 1, 2),
            "DuplicateSignerAddress",
        ),
        (
            ([addresses[0], "0x" + "00" * 20, addresses[2], addresses[3]], 1, 2),
            "InvalidSignerAddress",
        ),
    ]
    for args, name in cases:
        expect_error(
            contract.abi, lambda args=args: contract.functions.setConfig(*args).call(sender), name
        )
    expect_error(
        contract.abi,
        lambda: contract.functions.setConfig(addresses, 1, 2).call({"from": w3.eth.accounts[1]}),
        "NotOwner",
    )
    report = encode_report(make_report(bytes(32)))
    expect_error(
        contract.abi, lambda: contract.functions.verify(report, [], [], b"").call(), "NotConfigured"
    )


def test_gas_from_a_real_transaction(w3: Any, contracts: dict[str, Any]) -> None:
    setup = _setup(w3, contracts, 4)
    report = encode_report(make_report(setup.committee.config_digest))
    receipt = submit_ecdsa_report(
        setup.contract, report, [ecdsa_sign_report(k, report) for k in setup.keys[:2]]
    )
    assert receipt["status"] == 1 and receipt["gasUsed"] > 21_000
    (event,) = setup.contract.events.ReportVerified().process_receipt(receipt)
    assert event["args"]["configDigest"] == setup.committee.config_digest
