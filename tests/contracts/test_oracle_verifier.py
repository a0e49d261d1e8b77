"""OracleVerifier on anvil: certificates made by the Python side verify, and every way a
certificate or a committee can be wrong is rejected with its own custom error."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from py_ecc.bls.g2_primitives import subgroup_check
from py_ecc.fields import optimized_bls12_381_FQ2 as FQ2
from pyblst import BlstP1Element
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError

from chain_adapters.localchain import LocalChain, start_chain
from chain_adapters.verifier import (
    admit_keys,
    bls_committee_args,
    certificate_calldata,
    configure_bls_verifier,
    deploy_oracle_verifier,
    revert_reason,
    set_bls_committee,
    submit_certificate,
    verify_certificate_on_chain,
)
from consensus import bls, eip2537
from consensus.report import (
    config_digest,
    encode_report,
    report_hash,
    verify_certificate,
)
from tests.contracts.conftest import ConfiguredVerifier
from tests.contracts.contract_helpers import (
    P,
    certify,
    compress_g1,
    expect_error,
    g1_encoding,
    g1_point_off_subgroup,
    g2_point_off_subgroup,
    make_committee,
    make_report,
    secret_key,
)

G1_GENERATOR = bytes.fromhex(
    "97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb"
)


def _verify_raw(v: ConfiguredVerifier, report: bytes, signers: int, signature: bytes) -> Any:
    return v.contract.functions.verify(report, signers, signature).call()


# ------------------------------------------------------------------ certificates that verify


@pytest.mark.parametrize("n", [4, 31])
def test_python_certificate_verifies_on_chain(
    n: int, w3: Any, verifier4: ConfiguredVerifier, verifier31: ConfiguredVerifier
) -> None:
    v = verifier4 if n == 4 else verifier31
    committee = v.committee
    report = make_report(config_digest(v.config), decisions=3)
    t = committee.t
    # Exactly t signers (first t, last t, spread from first to last), then everyone.
    spread = sorted({round(i * (n - 1) / (t - 1)) for i in range(t)})
    assert len(spread) == t
    for signers in (list(range(t)), list(range(n - t, n)), spread, list(range(n))):
        cert = certify(committee, report, signers)
        verify_certificate(cert, v.config)  # the Python verifier agrees
        assert verify_certificate_on_chain(v.contract, cert) == report_hash(report)
    receipt = submit_certificate(v.contract, cert)
    assert receipt["status"] == 1
    (event,) = v.contract.events.ReportVerified().process_receipt(receipt)
    assert event["args"]["reportHash"] == report_hash(report)
    assert event["args"]["signers"] == cert.signers


def test_config_matches_python_and_event(w3: Any, verifier31: ConfiguredVerifier) -> None:
    count, digest, n, f, t = verifier31.contract.functions.latestConfigDetails().call()
    cfg = verifier31.config
    assert (count, digest, n, f, t) == (1, config_digest(cfg), 31, 10, 21)
    assert cfg.chain_id == w3.eth.chain_id
    assert cfg.verifier == bytes.fromhex(verifier31.contract.address[2:])


# ------------------------------------------------------------------ rejected certificates


def test_wrong_signature(w3: Any, verifier4: ConfiguredVerifier) -> None:
    v, committee = verifier4, verifier4.committee
    report = make_report(config_digest(v.config))
    other = make_report(config_digest(v.config), epoch=2)
    cert = certify(committee, other, range(committee.t))  # signs another report
    args = certificate_calldata(replace(cert, report=report))
    expect_error(v.contract.abi, lambda: _verify_raw(v, *args.as_args()), "InvalidSignature")
    # The right report, but one decision changed after signing.
    tampered = replace(report, decisions=make_report(report.config_digest, decisions=2).decisions)
    cert = certify(committee, report, range(committee.t))
    args = certificate_calldata(replace(cert, report=tampered))
    expect_error(v.contract.abi, lambda: _verify_raw(v, *args.as_args()), "InvalidSignature")


def test_signature_by_a_non_member(w3: Any, verifier4: ConfiguredVerifier) -> None:
    v, committee = verifier4, verifier4.committee
    report = make_report(config_digest(v.config))
    message = report_hash(report)
    outsider = secret_key("outsider", 0)
    shares = {i: bls.sign(committee.secret_keys[i], message) for i in range(committee.t - 1)}
    # The outsider's share takes the place of member t-1, whose bit is set.
    shares[committee.t - 1] = bls.sign(outsider, message)
    signature = bls.aggregate(list(shares.values()))
    signers = (1 << committee.t) - 1
    args = (encode_report(report), signers, eip2537.encode_g2(signature))
    expect_error(v.contract.abi, lambda: _verify_raw(v, *args), "InvalidSignature")


def test_t_minus_one_signers(w3: Any, verifier31: ConfiguredVerifier) -> None:
    v, committee = verifier31, verifier31.committee
    report = make_report(config_digest(v.config))
    cert = certify(committee, report, range(committee.t - 1))
    reason = expect_error(
        v.contract.abi, lambda: verify_certificate_on_chain(v.contract, cert), "TooFewSigners"
    )
    assert reason.args == (committee.t - 1, committee.t)


@pytest.mark.parametrize("bit", [4, 5, 100, 255])
def test_signer_bit_out_of_range(bit: int, w3: Any, verifier4: ConfiguredVerifier) -> None:
    v, committee = verifier4, verifier4.committee
    report = make_report(config_digest(v.config))
    cert = certify(committee, report, range(committee.t))
    args = certificate_calldata(replace(cert, signers=cert.signers | 1 << bit))
    reason = expect_error(
        v.contract.abi, lambda: _verify_raw(v, *args.as_args()), "SignerOutOfRange"
    )
    assert reason.args == (bit, 4)


def test_duplicate_signers_cannot_be_counted_twice(w3: Any, verifier4: ConfiguredVerifier) -> None:
    """A bitmap cannot name a member twice; what a forger can repeat is a share. The bitmap
    counts distinct members only, and a repeated share does not match the key aggregate."""
    v, committee = verifier4, verifier4.committee
    report = make_report(config_digest(v.config))
    message = report_hash(report)
    share0 = bls.sign(committee.secret_keys[0], message)
    share1 = bls.sign(committee.secret_keys[1], message)
    # Member 0's share twice plus member 1's: t = 3 shares, but only two members' bits.
    doubled = eip2537.encode_g2(bls.aggregate([share0, share0, share1]))
    reason = expect_error(
        v.contract.abi,
        lambda: _verify_raw(v, encode_report(report), 0b11, doubled),
        "TooFewSigners",
    )
    assert reason.args == (2, 3)
    # Claiming member 2 as well, with member 0's share standing in for member 2's.
    expect_error(
        v.contract.abi,
        lambda: _verify_raw(v, encode_report(report), 0b111, doubled),
        "InvalidSignature",
    )


def test_report_for_another_config_digest(w3: Any, verifier4: ConfiguredVerifier) -> None:
    v, committee = verifier4, verifier4.committee
    wrong = hashlib.sha256(b"another digest").digest()
    cert = certify(committee, make_report(wrong), range(committee.t))
    reason = expect_error(
        v.contract.abi,
        lambda: verify_certificate_on_chain(v.contract, cert),
        "ConfigDigestMismatch",
    )
    assert reason.args == (config_digest(v.config), wrong)


def test_report_for_another_chain_id(w3: Any, verifier4: ConfiguredVerifier) -> None:
    v, committee = verifier4, verifier4.committee
    elsewhere = replace(v.config, chain_id=v.config.chain_id + 1)
    cert = certify(committee, make_report(config_digest(elsewhere)), range(committee.t))
    verify_certificate(cert, elsewhere)  # valid for that chain
    expect_error(
        v.contract.abi,
        lambda: verify_certificate_on_chain(v.contract, cert),
        "ConfigDigestMismatch",
    )


def test_report_for_another_verifier_address(
    w3: Any, contracts: dict[str, Any], verifier4: ConfiguredVerifier
) -> None:
    """Two verifiers with the same committee and config count: a certificate for one is
    rejected by the other, because the digest binds the contract address."""
    committee = verifier4.committee
    other = deploy_oracle_verifier(w3, contracts)
    other_cfg = configure_bls_verifier(other, committee.public_keys, committee.proofs, committee.f)
    assert other_cfg.config_count == verifier4.config.config_count
    for_first = certify(committee, make_report(config_digest(verifier4.config)), range(3))
    for_other = certify(committee, make_report(config_digest(other_cfg)), range(3))
    assert verify_certificate_on_chain(other, for_other) == report_hash(for_other.report)
    expect_error(
        other.abi, lambda: verify_certificate_on_chain(other, for_first), "ConfigDigestMismatch"
    )
    expect_error(
        verifier4.contract.abi,
        lambda: verify_certificate_on_chain(verifier4.contract, for_other),
        "ConfigDigestMismatch",
    )


def test_report_signed_under_a_replaced_config(w3: Any, verifier4: ConfiguredVerifier) -> None:
    v, committee = verifier4, verifier4.committee
    cert = certify(committee, make_report(config_digest(v.config)), range(committee.t))
    assert verify_certificate_on_chain(v.contract, cert) == report_hash(cert.report)
    # The owner replaces the committee (same members, new config count).
    new_cfg = set_bls_committee(v.contract, committee.public_keys, committee.f)
    assert new_cfg.config_count == v.config.config_count + 1
    reason = expect_error(
        v.contract.abi,
        lambda: verify_certificate_on_chain(v.contract, cert),
        "ConfigDigestMismatch",
    )
    assert reason.args == (config_digest(new_cfg), config_digest(v.config))
    # A certificate for the new configuration verifies.
    fresh = certify(committee, make_report(config_digest(new_cfg)), range(committee.t))
    assert verify_certificate_on_chain(v.contract, fresh) == report_hash(fresh.report)


# ------------------------------------------------------------------ malformed signatures


def _valid_args(v: ConfiguredVerifier) -> tuple[bytes, int, bytes]:
    cert = certify(v.committee, make_report(config_digest(v.config)), range(v.committee.t))
    return certificate_calldata(cert).as_args()


def test_signature_at_infinity(w3: Any, verifier4: ConfiguredVerifier) -> None:
    report, signers, _ = _valid_args(verifier4)
    expect_error(
        verifier4.contract.abi,
        lambda: _verify_raw(verifier4, report, signers, bytes(256)),
        "SignatureAtInfinity",
    )


def _with_word(data: bytes, offset: int, word: bytes) -> bytes:
    return data[:offset] + word + data[offset + len(word) :]


@pytest.mark.parametrize(
    "case", ["short", "long", "high-bytes", "coordinate-above-p", "off-curve", "off-subgroup"]
)
def test_malformed_signature(case: str, w3: Any, verifier4: ConfiguredVerifier) -> None:
    report, signers, signature = _valid_args(verifier4)
    if case == "short":
        bad = signature[:255]
    elif case == "long":
        bad = signature + b"\x00"
    elif case == "high-bytes":  # a non-zero byte in the 16-byte padding of y.c1
        bad = _with_word(signature, 192, b"\x01")
    elif case == "coordinate-above-p":  # x.c0 replaced by x.c0 + p (same value mod p)
        x0 = int.from_bytes(signature[:64], "big")
        bad = _with_word(signature, 0, (x0 + P).to_bytes(64, "big")) if x0 + P < 2**384 else b""
        assert bad, "pick another certificate: x0 + p does not fit 384 bits"
    elif case == "off-curve":
        y1 = int.from_bytes(signature[192:], "big")
        bad = _with_word(signature, 192, ((y1 + 1) % P).to_bytes(64, "big"))
    else:
        bad = g2_point_off_subgroup(7)
        x = FQ2([int.from_bytes(bad[i : i + 64], "big") for i in (0, 64)])
        y = FQ2([int.from_bytes(bad[i : i + 64], "big") for i in (128, 192)])
        assert not subgroup_check((x, y, FQ2.one()))
    expect_error(
        verifier4.contract.abi,
        lambda: _verify_raw(verifier4, report, signers, bad),
        "MalformedSignature",
    )


def test_malformed_report(w3: Any, verifier4: ConfiguredVerifier) -> None:
    report, signers, signature = _valid_args(verifier4)
    bad_reports = [
        report[:-1],  # truncated
        report + bytes(32),  # trailing word
        _with_word(report, 96, (0xA0).to_bytes(32, "big")),  # non-canonical offset
        _with_word(report, 32, (2**32).to_bytes(32, "big")),  # epoch beyond uint32
        _with_word(report, 5 * 32 + 32, (4).to_bytes(32, "big")),  # unknown action
        _with_word(report, 4 * 32, (2).to_bytes(32, "big")),  # count disagrees with length
    ]
    for bad in bad_reports:
        expect_error(
            verifier4.contract.abi,
            lambda bad=bad: _verify_raw(verifier4, bad, signers, signature),
            "MalformedReport",
        )


def test_not_configured(w3: Any, contracts: dict[str, Any], verifier4: ConfiguredVerifier) -> None:
    fresh = deploy_oracle_verifier(w3, contracts)
    report, signers, signature = _valid_args(verifier4)
    expect_error(
        fresh.abi,
        lambda: fresh.functions.verify(report, signers, signature).call(),
        "NotConfigured",
    )


# ------------------------------------------------------------------ key admission


def _admit_call(contract: Any, pk48: bytes, pk128: bytes, proof256: bytes) -> Any:
    return contract.functions.admitKeys(pk48, pk128, proof256).call()


def test_rogue_key_is_refused(w3: Any, contracts: dict[str, Any]) -> None:
    """The rogue-key attack: pick pk_r = x*G1 - (sum of the honest keys). Without proofs of
    possession, the committee's aggregate is x*G1 and the attacker alone forges a
    certificate "signed by everyone". The contract refuses to admit pk_r, and setConfig
    refuses a key that was not admitted."""
    honest = make_committee(4)
    x = secret_key("attacker", 0)
    attack_point = BlstP1Element.uncompress(bls.sk_to_pk(x))
    for pk in honest.public_keys:
        attack_point = attack_point + (-BlstP1Element.uncompress(pk))
    rogue = bytes(attack_point.compress())
    keys = (*honest.public_keys, rogue)
    message = b"\x42" * 32
    forged = bls.sign(x, message)
    assert bls.fast_aggregate_verify(list(keys), message, forged), "the attack works without PoP"

    verifier = deploy_oracle_verifier(w3, contracts)
    admit_keys(verifier, honest.public_keys, honest.proofs)
    rogue_g1 = eip2537.encode_g1(rogue)
    # Whatever the attacker offers as a proof: a PoP of x, a signature of pk_r by x.
    for proof in (bls.pop_prove(x), bls.sign(x, rogue), bls.sign(x, message)):
        reason = expect_error(
            verifier.abi,
            lambda proof=proof: _admit_call(verifier, rogue, rogue_g1, eip2537.encode_g2(proof)),
            "InvalidProofOfPossession",
        )
        assert reason.args == (0,)
    args = bls_committee_args(keys)
    reason = expect_error(
        verifier.abi,
        lambda: verifier.functions.setConfig(
            args.public_keys, args.public_keys_g1, 1, 4, False
        ).call({"from": w3.eth.accounts[0]}),
        "KeyNotAdmitted",
    )
    assert reason.args == (4,)


def test_proof_of_another_key_is_refused(w3: Any, contracts: dict[str, Any]) -> None:
    committee = make_committee(4)
    verifier = deploy_oracle_verifier(w3, contracts)
    args = bls_committee_args(committee.public_keys[:2], committee.proofs[::-1][:2])
    reason = expect_error(
        verifier.abi,
        lambda: _admit_call(verifier, args.public_keys, args.public_keys_g1, args.proofs_g2),
        "InvalidProofOfPossession",
    )
    assert reason.args == (0,)


def _key_cases() -> dict[str, tuple[bytes, bytes, str]]:
    committee = make_committee(4)
    pk = committee.public_keys[1]
    pk128 = eip2537.encode_g1(pk)
    flipped_sign = bytes([pk[0] ^ 0x20]) + pk[1:]
    uncompressed_flag_clear = bytes([pk[0] & 0x7F]) + pk[1:]
    other_x = committee.public_keys[2]
    x, y = g1_point_off_subgroup(5)
    off_curve = g1_encoding(
        int.from_bytes(pk128[:64], "big"), (int.from_bytes(pk128[64:], "big") + 1) % P
    )
    return {
        "sign-flag-mismatch": (flipped_sign, pk128, "MalformedPublicKey"),
        "compression-flag-missing": (uncompressed_flag_clear, pk128, "MalformedPublicKey"),
        "x-mismatch": (other_x, pk128, "MalformedPublicKey"),
        "padding-not-zero": (pk, b"\x01" + pk128[1:], "MalformedPublicKey"),
        "off-curve": (pk, off_curve, "MalformedPublicKey"),
        "off-subgroup": (compress_g1(x, y), g1_encoding(x, y), "MalformedPublicKey"),
        "infinity": (bytes([0xC0]) + bytes(47), bytes(128), "PublicKeyAtInfinity"),
        "infinity-flag-only": (bytes([pk[0] | 0x40]) + pk[1:], pk128, "PublicKeyAtInfinity"),
    }


@pytest.mark.parametrize("case", sorted(_key_cases()))
def test_malformed_key_is_refused(case: str, w3: Any, contracts: dict[str, Any]) -> None:
    pk48, pk128, error = _key_cases()[case]
    committee = make_committee(4)
    verifier = deploy_oracle_verifier(w3, contracts)
    proof = eip2537.encode_g2(committee.proofs[1])
    reason = expect_error(verifier.abi, lambda: _admit_call(verifier, pk48, pk128, proof), error)
    assert reason.args == (0,)


def test_malformed_proof_is_refused(w3: Any, contracts: dict[str, Any]) -> None:
    committee = make_committee(4)
    verifier = deploy_oracle_verifier(w3, contracts)
    args = bls_committee_args(committee.public_keys[:1], committee.proofs[:1])
    for bad in (g2_point_off_subgroup(3), bytes(256), _with_word(args.proofs_g2, 0, b"\x01")):
        expect_error(
            verifier.abi,
            lambda bad=bad: _admit_call(verifier, args.public_keys, args.public_keys_g1, bad),
            "InvalidProofOfPossession",
        )


def test_admission_is_idempotent_and_open(w3: Any, contracts: dict[str, Any]) -> None:
    committee = make_committee(4)
    verifier = deploy_oracle_verifier(w3, contracts)
    stranger = w3.eth.accounts[3]
    receipts = admit_keys(verifier, committee.public_keys, committee.proofs, sender=stranger)
    assert len(receipts) == 1
    assert admit_keys(verifier, committee.public_keys, committee.proofs) == []  # nothing left
    events = verifier.events.KeyAdmitted().process_receipt(receipts[0])
    assert [bytes(e["args"]["publicKey"]) for e in events] == list(committee.public_keys)


# ------------------------------------------------------------------ committee rules


def _set_config_call(
    w3: Any, verifier: Any, keys: tuple[bytes, ...], f: int, t: int, unsafe: bool = False
) -> Any:
    args = bls_committee_args(keys)
    return lambda: verifier.functions.setConfig(
        args.public_keys, args.public_keys_g1, f, t, unsafe
    ).call({"from": w3.eth.accounts[0]})


@pytest.fixture
def admitted7(w3: Any, contracts: dict[str, Any]) -> tuple[Any, tuple[bytes, ...]]:
    committee = make_committee(7)
    verifier = deploy_oracle_verifier(w3, contracts)
    admit_keys(verifier, committee.public_keys, committee.proofs)
    return verifier, committee.public_keys


def test_committee_rules(w3: Any, admitted7: tuple[Any, tuple[bytes, ...]]) -> None:
    verifier, keys = admitted7
    expect = [
        ((keys[:6], 2, 5), "TooManyFaults", (6, 2)),
        ((keys, 2, 4), "ThresholdOutOfRange", (4, 5, 7)),  # floor((7+2)/2)+1 = 5
        ((keys, 2, 8), "ThresholdOutOfRange", (8, 5, 7)),
        ((keys, 2, 2), "ThresholdOutOfRange", (2, 5, 7)),
        (((), 0, 1), "CommitteeSizeOutOfRange", (0,)),
        (((*keys[:3], keys[1], *keys[4:]), 2, 5), "DuplicatePublicKey", (3,)),
    ]
    for (ks, f, t), name, reason_args in expect:
        reason = expect_error(verifier.abi, _set_config_call(w3, verifier, ks, f, t), name)
        assert reason.args == reason_args, (name, reason)
    # Lengths that disagree.
    args = bls_committee_args(keys)
    expect_error(
        verifier.abi,
        lambda: verifier.functions.setConfig(
            args.public_keys, args.public_keys_g1[:-128], 2, 5, False
        ).call({"from": w3.eth.accounts[0]}),
        "KeyListLengthMismatch",
    )
    # Only the owner configures.
    reason = expect_error(
        verifier.abi,
        lambda: verifier.functions.setConfig(
            args.public_keys, args.public_keys_g1, 2, 5, False
        ).call({"from": w3.eth.accounts[1]}),
        "NotOwner",
    )
    assert reason.args == (w3.eth.accounts[1].lower(),)
    # The boundary values pass.
    _set_config_call(w3, verifier, keys, 2, 5)()
    _set_config_call(w3, verifier, keys, 2, 7)()


def test_unsafe_low_threshold_only_when_asked(
    w3: Any, admitted7: tuple[Any, tuple[bytes, ...]]
) -> None:
    verifier, keys = admitted7
    expect_error(verifier.abi, _set_config_call(w3, verifier, keys, 2, 3), "ThresholdOutOfRange")
    reason = expect_error(
        verifier.abi, _set_config_call(w3, verifier, keys, 2, 2, unsafe=True), "ThresholdOutOfRange"
    )
    assert reason.args == (2, 3, 7)  # even unsafe, t >= f+1
    cfg = set_bls_committee(verifier, keys, 2, 3, unsafe_low_threshold=True)
    committee = make_committee(7)
    cert = certify(committee, make_report(config_digest(cfg)), [1, 4, 6])
    assert verify_certificate_on_chain(verifier, cert) == report_hash(cert.report)


# ------------------------------------------------------------------ out of gas


def test_out_of_gas_in_the_pairing_reverts_never_answers(
    w3: Any, verifier4: ConfiguredVerifier
) -> None:
    """With too little gas, verification must revert, never return an answer: a failed
    precompile call that read as "invalid" would let anyone make a valid certificate look
    invalid. Below the gas it needs, every call fails; where the gas runs out inside the
    pairing precompile, the error is PrecompileFailed(0x0f)."""
    report, signers, signature = _valid_args(verifier4)
    call = verifier4.contract.functions.verify(report, signers, signature)
    needed = call.estimate_gas()
    assert call.call({"gas": needed}) == report_hash(make_report(config_digest(verifier4.config)))
    errors = set()
    # Down to well below the pairing's own price, above the intrinsic gas of the call.
    for gas in range(needed - 1, 80_000, -3_000):
        with pytest.raises((ContractCustomError, ContractLogicError, Web3RPCError)) as info:
            call.call({"gas": gas})
        reason = revert_reason(verifier4.contract.abi, info.value)
        if reason is None:  # the frame itself ran out of gas
            assert "OutOfGas" in str(info.value), info.value
        errors.add(str(reason) if reason else "out of gas")
        assert reason is None or reason.name == "PrecompileFailed", reason
    assert "PrecompileFailed(0x000000000000000000000000000000000000000f)" in errors, errors
    # As a transaction, too little gas reverts the transaction.
    tx = verifier4.contract.functions.verifyAndRecord(report, signers, signature).transact(
        {"from": w3.eth.accounts[0], "gas": needed - 40_000}
    )
    assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 0


def test_pairing_failure_is_labelled_only_with_enough_gas(w3: Any, bls_harness: Any) -> None:
    """The harness's pairing call: a bad point with plenty of gas is "rejected input"
    (accepted = False); the same call starved of gas reverts PrecompileFailed instead."""
    pk = eip2537.encode_g1(G1_GENERATOR)
    hashed = eip2537.hash_to_g2_affine(b"m", bls.DST_SIG)
    neg_g1 = g1_encoding(int.from_bytes(pk[:64], "big"), P - int.from_bytes(pk[64:], "big"))
    good = pk + hashed + neg_g1 + hashed  # e(G, H) * e(-G, H) = 1
    assert bls_harness.functions.pairingTwo(good).call() == [True, True]
    bad = pk + hashed + neg_g1 + g2_point_off_subgroup(11)
    assert bls_harness.functions.pairingTwo(bad).call() == [False, False]
    for gas in (150_000, 200_000):
        expect_error(
            bls_harness.abi,
            lambda gas=gas: bls_harness.functions.pairingTwo(bad).call({"gas": gas}),
            "PrecompileFailed",
        )


# ------------------------------------------------------------------ properties and sizes


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_quorum_verifies_and_a_moved_bit_does_not(
    data: st.DataObject, w3: Any, verifier31: ConfiguredVerifier
) -> None:
    """Any set of at least t members verifies; naming one non-signer in place of a signer
    (same aggregate signature) is InvalidSignature."""
    v, committee = verifier31, verifier31.committee
    n, t = committee.n, committee.t
    signers = data.draw(st.sets(st.integers(0, n - 1), min_size=t, max_size=n), label="signers")
    report = make_report(config_digest(v.config), epoch=data.draw(st.integers(0, 2**32 - 1)))
    cert = certify(committee, report, sorted(signers))
    assert verify_certificate_on_chain(v.contract, cert) == report_hash(report)
    outside = sorted(set(range(n)) - signers)
    if outside:
        moved_from = data.draw(st.sampled_from(sorted(signers)), label="moved from")
        moved_to = data.draw(st.sampled_from(outside), label="moved to")
        bitmap = cert.signers & ~(1 << moved_from) | (1 << moved_to)
        args = certificate_calldata(replace(cert, signers=bitmap))
        expect_error(v.contract.abi, lambda: _verify_raw(v, *args.as_args()), "InvalidSignature")


def test_committee_across_two_key_tables(w3: Any, contracts: dict[str, Any]) -> None:
    """n = 150 > 128 keys per table: non-signers in the second table, in the first, and in
    both are subtracted right, and the tables hold exactly the expected bytes."""
    committee = make_committee(150, "large")
    verifier = deploy_oracle_verifier(w3, contracts)
    cfg = configure_bls_verifier(verifier, committee.public_keys, committee.proofs, committee.f)
    assert (committee.f, cfg.t) == (49, 100)
    low, high = verifier.functions.keyTables().call()
    args = bls_committee_args(committee.public_keys)
    assert w3.eth.get_code(low)[129:] == args.public_keys_g1[: 128 * 128]
    assert w3.eth.get_code(high) == b"\x00" + args.public_keys_g1[128 * 128 :]
    report = make_report(config_digest(cfg))
    for signers in (range(100), range(50, 150), [*range(60), *range(110, 150)]):
        cert = certify(committee, report, signers)
        assert verify_certificate_on_chain(verifier, cert) == report_hash(report)
    # A wrong bit in the second table is caught.
    cert = certify(committee, report, range(100))
    args_bad = certificate_calldata(replace(cert, signers=cert.signers ^ (1 << 99) | (1 << 140)))
    expect_error(
        verifier.abi,
        lambda: verifier.functions.verify(*args_bad.as_args()).call(),
        "InvalidSignature",
    )


def test_same_verifier_address_on_another_chain(
    chain: LocalChain, w3: Any, contracts: dict[str, Any], tmp_path: Path
) -> None:
    """The same deployer and nonce give the same verifier address on two chains, with the
    same committee and config count: only the chain id tells the certificates apart."""
    deployer = Account.from_key(hashlib.sha256(b"contracts/cross-chain deployer").digest()).address
    committee = make_committee(4)
    with start_chain(4242, log_dir=tmp_path) as other_chain:
        setups = []
        for running in (chain, other_chain):
            running.rpc("anvil_setBalance", [deployer, hex(10**21)])
            running.rpc("anvil_impersonateAccount", [deployer])
            verifier = deploy_oracle_verifier(running.web3(), contracts, sender=deployer)
            cfg = configure_bls_verifier(
                verifier, committee.public_keys, committee.proofs, committee.f, sender=deployer
            )
            setups.append((verifier, cfg))
        (here, here_cfg), (there, there_cfg) = setups
        assert here.address == there.address and here_cfg.config_count == there_cfg.config_count
        assert (here_cfg.chain_id, there_cfg.chain_id) == (w3.eth.chain_id, 4242)
        cert_there = certify(committee, make_report(config_digest(there_cfg)), range(3))
        assert verify_certificate_on_chain(there, cert_there) == report_hash(cert_there.report)
        expect_error(
            here.abi, lambda: verify_certificate_on_chain(here, cert_there), "ConfigDigestMismatch"
        )
