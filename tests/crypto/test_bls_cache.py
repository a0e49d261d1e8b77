"""What a party remembers between BLS calls (``bls.BlsCache``) and what the certificate
check decodes: a member hashes each report to G2 once, members with their own caches each
hash it, and a valid certificate's signature is decoded once."""

from __future__ import annotations

import dataclasses

import pytest

from consensus import bls
from consensus.crypto import REAL_CRYPTO, RealCrypto
from consensus.harness import NetworkProfile, Schedule, Simulation, simulated_committee
from consensus.outcome import MedianOutcome
from consensus.report import CertificateError, verify_certificate
from dvpsim.benchmarks.consensus import BACK_TO_BACK, CountingCrypto, observe
from tests.crypto.crypto_helpers import committee_secret_keys

SECRET_KEYS = committee_secret_keys(4, "bls-cache")
PUBLIC_KEYS = [bls.sk_to_pk(sk) for sk in SECRET_KEYS]


def test_a_member_hashes_a_report_once_for_its_share_and_the_certificate() -> None:
    member = RealCrypto(bls.BlsCache())
    message = b"\x42" * 32
    shares = [member.bls_sign(sk, message) for sk in SECRET_KEYS]
    aggregate = member.bls_aggregate(shares)
    assert member.bls_fast_aggregate_verify(PUBLIC_KEYS, message, aggregate)
    assert member.bls_verify(PUBLIC_KEYS[0], message, shares[0])
    assert member.cache.hashes == 1


def test_members_with_their_own_caches_each_hash_and_agree_with_the_process_suite() -> None:
    message = b"\x43" * 32
    process_hashes = bls.PROCESS_CACHE.hashes
    members = [RealCrypto(bls.BlsCache()) for _ in SECRET_KEYS]
    shares = [suite.bls_sign(sk, message) for suite, sk in zip(members, SECRET_KEYS, strict=True)]
    assert shares == [REAL_CRYPTO.bls_sign(sk, message) for sk in SECRET_KEYS]
    assert [suite.cache.hashes for suite in members] == [1, 1, 1, 1]
    # The process's cache hashed it once for all four signatures above.
    assert bls.PROCESS_CACHE.hashes == process_hashes + 1
    aggregate = bls.aggregate(shares)
    assert all(s.bls_fast_aggregate_verify(PUBLIC_KEYS, message, aggregate) for s in members)
    assert not members[0].bls_fast_aggregate_verify(PUBLIC_KEYS, b"\x44" * 32, aggregate)


def test_a_simulation_charges_each_member_its_own_hash_of_each_report() -> None:
    config, keys = simulated_committee(4, 1, seed=7, **BACK_TO_BACK)
    members = [RealCrypto(bls.BlsCache()) for _ in range(4)]
    schedule = Schedule(seed=1, network=NetworkProfile(delay=0.05, jitter=0.002), duration=1.0)
    result = Simulation(
        config, keys, MedianOutcome(), observe, schedule, member_crypto=members
    ).run()
    rounds = {(c.certificate.report.epoch, c.certificate.report.round) for c in result.certified}
    assert len(rounds) >= 3
    # Every member signed and checked each certified round's report: one hash each.
    assert all(suite.cache.hashes >= len(rounds) for suite in members)
    with pytest.raises(ValueError, match="3 suites for 4 members"):
        Simulation(config, keys, MedianOutcome(), observe, schedule, member_crypto=members[:3])


def test_a_valid_certificate_decodes_its_signature_once_a_refused_one_twice() -> None:
    from tests.crypto.test_certificates import _certify, _config, _report

    cfg = _config()
    cert = _certify(_report(cfg), [0, 1, 2])
    counting = CountingCrypto(REAL_CRYPTO)
    verify_certificate(cert, cfg, crypto=counting)
    assert counting.calls == {"bls_fast_aggregate_verify": 1}
    for signature, reason in (
        (bytes(96), "malformed signature"),
        (_certify(_report(cfg, round_=2), [0, 1, 2]).signature, "invalid signature"),
    ):
        counting.calls.clear()
        with pytest.raises(CertificateError) as caught:
            verify_certificate(dataclasses.replace(cert, signature=signature), cfg, crypto=counting)
        assert caught.value.reason == reason
        assert counting.calls == {"bls_fast_aggregate_verify": 1, "bls_signature_validate": 1}
