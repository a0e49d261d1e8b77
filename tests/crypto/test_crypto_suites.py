"""Crypto suites held to each other: the simulation's FAST stand-in and the MEMOIZED suite
give REAL's verdicts on the same inputs (certificates, shares, proofs of possession,
observations, whole consensus runs), and FAST exposes no secret.

The timing test prints figures (run with -s to see them) and asserts none."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import bls
from consensus.crypto import (
    MEMOIZED_CRYPTO,
    REAL_CRYPTO,
    CryptoSuite,
    KeyRegistry,
    MemoizedCrypto,
)
from consensus.harness import (
    NetworkProfile,
    Schedule,
    Simulation,
    SimulationResult,
    simulated_committee,
)
from consensus.identity import identity_key_from_seed, observation_message, public_key_bytes
from consensus.outcome import MedianOutcome
from consensus.pacemaker import leader
from consensus.report import (
    Action,
    Certificate,
    CertificateError,
    CommitteeConfig,
    CommitteeConfigError,
    Decision,
    Report,
    check_proofs_of_possession,
    config_digest,
    default_threshold,
    make_certificate,
    report_hash,
    verify_certificate,
)
from dvpsim.benchmarks.consensus import BACK_TO_BACK, LINK_DELAY, observe
from scenarios.sim import fastcrypto
from scenarios.sim.fastcrypto import FastCrypto
from tests.consensus.worlds import (
    Adversary,
    Fact,
    FactWorld,
    adversaries,
    committee,
    fact_worlds,
    schedules,
    simulate,
)
from tests.crypto.crypto_helpers import committee_secret_keys

SECRET_KEYS = committee_secret_keys(7, "suites")
OUTSIDER = committee_secret_keys(1, "suites-outsider")[0]  # registered, in no committee
UNREGISTERED = committee_secret_keys(1, "suites-unregistered")[0]
PUBLIC_KEYS = tuple(bls.sk_to_pk(sk) for sk in SECRET_KEYS)
IDENTITIES = [identity_key_from_seed(bytes([i]) * 32) for i in range(4)]

FAST = FastCrypto()
for _sk in (*SECRET_KEYS, OUTSIDER):
    FAST.register_bls(_sk)
for _identity in IDENTITIES:
    FAST.register_identity(_identity)

SUITES: dict[str, CryptoSuite] = {"real": REAL_CRYPTO, "memoized": MEMOIZED_CRYPTO, "fast": FAST}
NOISE = random.Random(0).randbytes(96)  # what a Byzantine member sends as a "share"


def _config(n: int = 4, f: int = 1, **changes: Any) -> CommitteeConfig:
    fields: dict[str, Any] = dict(
        chain_id=31337,
        verifier=b"\xaa" * 20,
        config_count=1,
        public_keys=PUBLIC_KEYS[:n],
        f=f,
        t=default_threshold(n, f),
    )
    fields.update(changes)
    return CommitteeConfig(**fields)


def _report(cfg: CommitteeConfig, action: Action = Action.COMMIT) -> Report:
    return Report(config_digest(cfg), 1, 1, (Decision(b"\x5e" * 32, action, b"\x7e" * 32),))


# --------------------------------------------------------------------------- case matrix

#: A case builds, with one suite, the certificate and the committee it is checked against.
Case = Callable[[CryptoSuite], tuple[Certificate, CommitteeConfig]]


def _certify(suite: CryptoSuite, report: Report, shares: dict[int, int]) -> Certificate:
    """Member index -> the secret key that signs in its place."""
    message = report_hash(report)
    return make_certificate(
        report, {i: suite.bls_sign(sk, message) for i, sk in shares.items()}, crypto=suite
    )


def _honest(members: list[int]) -> dict[int, int]:
    return {i: SECRET_KEYS[i] for i in members}


def _valid(suite: CryptoSuite) -> tuple[Certificate, CommitteeConfig]:
    cfg = _config()
    return _certify(suite, _report(cfg), _honest([0, 1, 2])), cfg


def _invalid_share(suite: CryptoSuite) -> tuple[Certificate, CommitteeConfig]:
    cfg = _config()
    report = _report(cfg)
    shares = {i: suite.bls_sign(SECRET_KEYS[i], report_hash(report)) for i in (0, 1)}
    shares[2] = suite.bls_sign(SECRET_KEYS[2], report_hash(_report(cfg, Action.ABORT)))
    return make_certificate(report, shares, crypto=suite), cfg


def _malformed_share(suite: CryptoSuite) -> tuple[Certificate, CommitteeConfig]:
    cfg = _config()
    report = _report(cfg)
    shares = {i: suite.bls_sign(SECRET_KEYS[i], report_hash(report)) for i in (0, 1)}
    shares[2] = NOISE
    return make_certificate(report, shares, crypto=suite), cfg  # BlsError


def _malformed_aggregate(suite: CryptoSuite) -> tuple[Certificate, CommitteeConfig]:
    cert, cfg = _valid(suite)
    return dataclasses.replace(cert, signature=NOISE), cfg


def _wrong_signer_set(suite: CryptoSuite) -> tuple[Certificate, CommitteeConfig]:
    cert, cfg = _valid(suite)
    return dataclasses.replace(cert, signers=0b1011), cfg  # names 3, aggregate holds 2


def _extra_signer(suite: CryptoSuite) -> tuple[Certificate, CommitteeConfig]:
    cert, cfg = _valid(suite)
    return dataclasses.replace(cert, signers=0b1111), cfg


def _shuffled_within_the_set(suite: CryptoSuite) -> tuple[Certificate, CommitteeConfig]:
    """The same three shares filed under each other's indices: the same sum, so BLS (and
    FAST, whose aggregation is a sum too) accepts it."""
    cfg = _config()
    shares = {0: SECRET_KEYS[1], 1: SECRET_KEYS[2], 2: SECRET_KEYS[0]}
    return _certify(suite, _report(cfg), shares), cfg


def _swapped_members(suite: CryptoSuite) -> tuple[Certificate, CommitteeConfig]:
    cfg = _config()
    shares = {0: SECRET_KEYS[1], 1: SECRET_KEYS[0], 3: SECRET_KEYS[2]}  # 2 signed, not 3
    return _certify(suite, _report(cfg), shares), cfg


def _too_few_signers(suite: CryptoSuite) -> tuple[Certificate, CommitteeConfig]:
    cfg = _config()
    return _certify(suite, _report(cfg), _honest([0, 1])), cfg


def _signer_out_of_range(suite: CryptoSuite) -> tuple[Certificate, CommitteeConfig]:
    cert, cfg = _valid(suite)
    return dataclasses.replace(cert, signers=cert.signers | 1 << 4), cfg


def _outsider_signs(suite: CryptoSuite) -> tuple[Certificate, CommitteeConfig]:
    """A key outside the committee signs in member 2's place."""
    cfg = _config()
    return _certify(suite, _report(cfg), {0: SECRET_KEYS[0], 1: SECRET_KEYS[1], 2: OUTSIDER}), cfg


def _wrong_config_digest(suite: CryptoSuite) -> tuple[Certificate, CommitteeConfig]:
    cert, cfg = _valid(suite)
    return cert, _config(config_count=2)


def _another_report(suite: CryptoSuite) -> tuple[Certificate, CommitteeConfig]:
    cert, cfg = _valid(suite)
    other = _certify(suite, _report(cfg, Action.ABORT), _honest([0, 1, 2]))
    return dataclasses.replace(cert, signature=other.signature), cfg


def _one_share_as_aggregate(suite: CryptoSuite) -> tuple[Certificate, CommitteeConfig]:
    cert, cfg = _valid(suite)
    share = suite.bls_sign(SECRET_KEYS[0], report_hash(cert.report))
    return dataclasses.replace(cert, signature=share), cfg


def _all_members(suite: CryptoSuite) -> tuple[Certificate, CommitteeConfig]:
    cfg = _config(n=7, f=2)
    return _certify(suite, _report(cfg), _honest(list(range(7)))), cfg


CASES: dict[str, tuple[Case, str]] = {
    "valid": (_valid, "valid"),
    "all members of 7": (_all_members, "valid"),
    "invalid share (another message)": (_invalid_share, CertificateError.INVALID_SIGNATURE),
    "malformed share (random bytes)": (_malformed_share, "BlsError"),
    "malformed aggregate": (_malformed_aggregate, CertificateError.MALFORMED_SIGNATURE),
    "wrong signer set": (_wrong_signer_set, CertificateError.INVALID_SIGNATURE),
    "signer named without share": (_extra_signer, CertificateError.INVALID_SIGNATURE),
    "shares shuffled within the signers": (_shuffled_within_the_set, "valid"),
    "shares under swapped members": (_swapped_members, CertificateError.INVALID_SIGNATURE),
    "too few signers": (_too_few_signers, CertificateError.TOO_FEW_SIGNERS),
    "signer bit out of range": (_signer_out_of_range, CertificateError.SIGNER_BIT_OUT_OF_RANGE),
    "key outside the committee": (_outsider_signs, CertificateError.INVALID_SIGNATURE),
    "wrong config digest": (_wrong_config_digest, CertificateError.CONFIG_DIGEST_MISMATCH),
    "signature of another report": (_another_report, CertificateError.INVALID_SIGNATURE),
    "one share as the aggregate": (_one_share_as_aggregate, CertificateError.INVALID_SIGNATURE),
}


def _verdict(case: Case, suite: CryptoSuite) -> str:
    try:
        cert, cfg = case(suite)
    except bls.BlsError:
        return "BlsError"
    try:
        verify_certificate(cert, cfg, crypto=suite)
    except CertificateError as error:
        return error.reason
    return "valid"


@pytest.mark.parametrize("name", list(CASES))
def test_every_suite_gives_real_verdict(name: str) -> None:
    case, expected = CASES[name]
    assert {suite: _verdict(case, SUITES[suite]) for suite in SUITES} == dict.fromkeys(
        SUITES, expected
    )


def test_suites_do_not_mix() -> None:
    """A certificate of one suite is malformed for the other: mixing fails closed."""
    fast_cert, cfg = _valid(FAST)
    real_cert, _ = _valid(REAL_CRYPTO)
    for cert, suite in ((fast_cert, REAL_CRYPTO), (real_cert, FAST)):
        with pytest.raises(CertificateError) as caught:
            verify_certificate(cert, cfg, crypto=suite)
        assert caught.value.reason == CertificateError.MALFORMED_SIGNATURE


@pytest.mark.parametrize("suite", list(SUITES))
def test_proofs_of_possession_gate_the_committee(suite: str) -> None:
    crypto = SUITES[suite]
    cfg = _config()
    proofs = [crypto.pop_prove(sk) for sk in SECRET_KEYS[:4]]
    check_proofs_of_possession(cfg, proofs, crypto=crypto)
    with pytest.raises(CommitteeConfigError, match="member 2"):
        check_proofs_of_possession(cfg, [*proofs[:2], proofs[3], proofs[3]], crypto=crypto)
    with pytest.raises(CommitteeConfigError, match="member 1"):
        check_proofs_of_possession(cfg, [proofs[0], NOISE, *proofs[2:]], crypto=crypto)
    # A committee with a key whose owner gives no proof (the rogue-key set-up) is refused.
    rogue_cfg = _config(public_keys=(*PUBLIC_KEYS[:3], bls.sk_to_pk(UNREGISTERED)))
    with pytest.raises(CommitteeConfigError, match="member 3"):
        check_proofs_of_possession(rogue_cfg, [*proofs[:3], proofs[0]], crypto=crypto)
    # A share signed as a proof, or a proof as a share, proves nothing.
    share = crypto.bls_sign(SECRET_KEYS[0], PUBLIC_KEYS[0])
    assert not crypto.pop_verify(PUBLIC_KEYS[0], share)
    assert not crypto.bls_verify(PUBLIC_KEYS[0], PUBLIC_KEYS[0], proofs[0])


def test_fast_suite_trusts_only_registered_keys() -> None:
    """A key never registered verifies nothing, even with its owner's own signature; a
    secret out of range fails to sign as in BLS."""
    pk = bls.sk_to_pk(UNREGISTERED)
    message = b"\x11" * 32
    assert not FAST.bls_verify(pk, message, FAST.bls_sign(UNREGISTERED, message))
    assert not FAST.pop_verify(pk, FAST.pop_prove(UNREGISTERED))
    assert not FAST.bls_fast_aggregate_verify(
        [PUBLIC_KEYS[0], pk],
        message,
        FAST.bls_aggregate([FAST.bls_sign(sk, message) for sk in (SECRET_KEYS[0], UNREGISTERED)]),
    )
    assert not FAST.bls_fast_aggregate_verify([], message, FAST.bls_sign(SECRET_KEYS[0], message))
    for suite in (REAL_CRYPTO, FAST):
        for bad in (0, bls.CURVE_ORDER, -1):
            with pytest.raises(bls.BlsError):
                suite.bls_sign(bad, message)
        with pytest.raises(bls.BlsError, match="empty"):
            suite.bls_aggregate([])


# --------------------------------------------------------------------------- properties

_SHARE_KINDS = ["valid", "valid", "valid", "absent", "other message", "random bytes", "outsider"]


@settings(max_examples=25, deadline=None)
@given(data=st.data(), n=st.integers(4, 7))
def test_fast_and_memoized_agree_with_real_on_random_certificates(
    n: int, data: st.DataObject
) -> None:
    """Any mix of valid, missing, invalid, malformed and outsiders' shares, a toggled
    bitmap bit, a replaced aggregate and a foreign config digest: the same verdict."""
    f = (n - 1) // 3
    cfg = _config(n=n, f=f)
    kinds = data.draw(st.lists(st.sampled_from(_SHARE_KINDS), min_size=n, max_size=n))
    noise = data.draw(st.binary(min_size=96, max_size=96))
    toggle = data.draw(st.one_of(st.none(), st.integers(0, n)))
    replace_aggregate = data.draw(st.booleans())
    other_committee = data.draw(st.booleans())
    action = data.draw(st.sampled_from([Action.COMMIT, Action.ABORT]))

    def case(suite: CryptoSuite) -> tuple[Certificate, CommitteeConfig]:
        report = _report(cfg, action)
        message = report_hash(report)
        shares: dict[int, bytes] = {}
        for i, kind in enumerate(kinds):
            if kind == "valid":
                shares[i] = suite.bls_sign(SECRET_KEYS[i], message)
            elif kind == "other message":
                shares[i] = suite.bls_sign(SECRET_KEYS[i], message[::-1])
            elif kind == "random bytes":
                shares[i] = noise
            elif kind == "outsider":
                shares[i] = suite.bls_sign(OUTSIDER, message)
        if not shares:
            raise bls.BlsError("no shares")  # make_certificate refuses; same for every suite
        cert = make_certificate(report, shares, crypto=suite)
        if toggle is not None:
            cert = dataclasses.replace(cert, signers=cert.signers ^ 1 << toggle)
        if replace_aggregate:
            cert = dataclasses.replace(cert, signature=noise)
        return cert, _config(n=n, f=f, chain_id=1) if other_committee else cfg

    verdicts = {name: _verdict(case, suite) for name, suite in SUITES.items()}
    assert len(set(verdicts.values())) == 1, verdicts


@settings(max_examples=200, deadline=None)
@given(
    signature=st.one_of(
        st.binary(min_size=96, max_size=96),
        st.binary(min_size=95, max_size=95).flatmap(
            lambda rest: st.sampled_from([bytes([tag]) + rest for tag in (1, 2, 3, 0x80, 0xA0)])
        ),
        st.binary(max_size=200),
    ),
    message=st.binary(min_size=32, max_size=32),
)
def test_random_bytes_take_the_same_path_in_both_suites(signature: bytes, message: bytes) -> None:
    """What a Byzantine member sends as an invalid share: malformed for both suites (fast
    tags included, the check bytes catch them), and never a valid signature."""
    real_ok = REAL_CRYPTO.bls_signature_validate(signature)
    assert FAST.bls_signature_validate(signature) == real_ok
    assert not FAST.bls_verify(PUBLIC_KEYS[0], message, signature)
    assert not FAST.pop_verify(PUBLIC_KEYS[0], signature)
    assert not FAST.bls_fast_aggregate_verify(PUBLIC_KEYS[:3], message, signature)
    public_key = public_key_bytes(IDENTITIES[0])
    assert FAST.verify_observation(public_key, message, signature[:64]) is False
    assert REAL_CRYPTO.verify_observation(public_key, message, signature[:64]) is False


@pytest.mark.parametrize("suite", list(SUITES))
def test_observation_signatures(suite: str) -> None:
    crypto = SUITES[suite]
    message = observation_message(b"\x01" * 32, 1, 2, 0, b"facts")
    signature = crypto.sign_observation(IDENTITIES[0], message)
    assert len(signature) == 64
    own, other = public_key_bytes(IDENTITIES[0]), public_key_bytes(IDENTITIES[1])
    assert crypto.verify_observation(own, message, signature)
    assert not crypto.verify_observation(other, message, signature)  # the claimed signer
    replayed = observation_message(b"\x01" * 32, 1, 3, 0, b"facts")
    assert not crypto.verify_observation(own, replayed, signature)
    assert not crypto.verify_observation(own, message, signature[:-1])
    assert not crypto.verify_observation(b"\x00" * 31, message, signature)


# --------------------------------------------------------------------------- memoized


def test_memoized_gives_real_answers_and_counts_hits() -> None:
    memo = MemoizedCrypto(REAL_CRYPTO)
    assert memo.name == "memoized" and MEMOIZED_CRYPTO.name == "memoized"
    cfg = _config()
    message = report_hash(_report(cfg))
    observation = observation_message(b"\x02" * 32, 1, 1, 0, b"x")
    shares = [REAL_CRYPTO.bls_sign(sk, message) for sk in SECRET_KEYS[:3]]
    aggregate = REAL_CRYPTO.bls_aggregate(shares)
    operations: list[Callable[[CryptoSuite], object]] = [
        lambda c: c.sk_to_pk(SECRET_KEYS[0]),
        lambda c: c.bls_sign(SECRET_KEYS[0], message),
        lambda c: c.bls_verify(PUBLIC_KEYS[0], message, shares[0]),
        lambda c: c.bls_verify(PUBLIC_KEYS[1], message, shares[0]),
        lambda c: c.bls_aggregate(shares),
        lambda c: c.bls_signature_validate(aggregate),
        lambda c: c.bls_signature_validate(NOISE),
        lambda c: c.bls_fast_aggregate_verify(PUBLIC_KEYS[:3], message, aggregate),
        lambda c: c.bls_fast_aggregate_verify(PUBLIC_KEYS[1:4], message, aggregate),
        lambda c: c.pop_prove(SECRET_KEYS[1]),
        lambda c: c.pop_verify(PUBLIC_KEYS[1], REAL_CRYPTO.pop_prove(SECRET_KEYS[1])),
        lambda c: c.sign_observation(IDENTITIES[0], observation),
        lambda c: c.verify_observation(
            public_key_bytes(IDENTITIES[0]),
            observation,
            REAL_CRYPTO.sign_observation(IDENTITIES[0], observation),
        ),
        lambda c: c.verify_observation(public_key_bytes(IDENTITIES[1]), observation, NOISE[:64]),
    ]
    expected = [op(REAL_CRYPTO) for op in operations]
    assert [op(memo) for op in operations] == expected
    assert (memo.hits, memo.misses) == (0, len(operations))
    assert [op(memo) for op in operations] == expected
    assert (memo.hits, memo.misses) == (len(operations), len(operations))
    assert memo.stats()["bls_fast_aggregate_verify"].hits == 2
    # Failures are not remembered: a malformed share raises every time.
    for _ in range(2):
        with pytest.raises(bls.BlsError, match="position 1"):
            memo.bls_aggregate([shares[0], NOISE])
    assert memo.stats()["bls_aggregate"].misses == 3
    # Bounded: the least recently used answer goes first.
    small = MemoizedCrypto(REAL_CRYPTO, capacity=2)
    for sk in SECRET_KEYS[:3]:
        small.sk_to_pk(sk)
    assert len(small) == 2
    small.sk_to_pk(SECRET_KEYS[2])
    small.sk_to_pk(SECRET_KEYS[0])
    assert (small.hits, small.misses) == (1, 4)
    small.clear()
    assert (len(small), small.hits, small.misses) == (0, 0, 0)


def test_suite_names_and_registries() -> None:
    assert [s.name for s in SUITES.values()] == ["real", "memoized", "fast"]
    assert MemoizedCrypto(FastCrypto()).name == "memoized-fast"
    assert isinstance(FAST, KeyRegistry)
    assert not isinstance(REAL_CRYPTO, KeyRegistry)
    assert not isinstance(MEMOIZED_CRYPTO, KeyRegistry)


# --------------------------------------------------------------------------- secrets


def test_fast_suite_exposes_no_secret() -> None:
    """No public attribute, method result or repr of a FastCrypto holds a member's secret
    key, identity seed, or the MAC keys derived from them; there is no instance dict to
    browse and no public accessor beyond the suite's interface."""
    fast = FastCrypto()
    for sk in SECRET_KEYS[:4]:
        fast.register_bls(sk)
    for identity in IDENTITIES:
        fast.register_identity(identity)
    secrets: list[bytes] = []
    for sk in SECRET_KEYS[:4]:
        secrets += [sk.to_bytes(32, "big"), fastcrypto._bls_mac_key(sk)]
    for identity in IDENTITIES:
        secrets += [bytes(identity), fastcrypto._identity_mac_key(identity)]

    def holds_secret(value: object) -> bool:
        text = repr(value)
        if isinstance(value, bytes | bytearray):
            return any(s in value for s in secrets)
        if isinstance(value, int) and not isinstance(value, bool):
            return value in SECRET_KEYS
        return any(s.hex() in text or repr(s) in text for s in secrets) or any(
            str(sk) in text for sk in SECRET_KEYS
        )

    assert not hasattr(fast, "__dict__")
    public = {name for name in dir(fast) if not name.startswith("_")}
    assert public == {
        "name",
        "register_bls",
        "register_identity",
        "sk_to_pk",
        "bls_sign",
        "bls_verify",
        "bls_aggregate",
        "bls_signature_validate",
        "bls_fast_aggregate_verify",
        "pop_prove",
        "pop_verify",
        "sign_observation",
        "verify_observation",
    }
    for name in public:
        assert not holds_secret(getattr(fast, name)), name
    assert not holds_secret(fast)
    message = b"\x42" * 32
    results: list[object] = [
        fast.register_bls(SECRET_KEYS[0]),
        fast.register_identity(IDENTITIES[0]),
        fast.sk_to_pk(SECRET_KEYS[0]),
        fast.bls_sign(SECRET_KEYS[0], message),
        fast.bls_aggregate([fast.bls_sign(sk, message) for sk in SECRET_KEYS[:3]]),
        fast.pop_prove(SECRET_KEYS[0]),
        fast.sign_observation(IDENTITIES[0], message),
    ]
    assert not any(holds_secret(r) for r in results)


# --------------------------------------------------------------------------- harness

CONFIG, KEYS = committee(4, 1)
WORLD = FactWorld((Fact(0, (1, 1, 1, 1), (0.0, 0.0, 0.2, 0.4)), Fact(1, (2, 2, 2, 2), (1.0,) * 4)))
DIVERGENT = FactWorld((Fact(0, (1, 1, 2, 2), (0.0,) * 4), Fact(1, (2, 2, 2, 2), (0.5,) * 4)))
FIRST_LEADER = leader(1, CONFIG.n, CONFIG.leader_selection_key)


def _without_bytes(value: Any) -> Any:
    if isinstance(value, bytes):
        return b""
    if isinstance(value, list):
        return [_without_bytes(v) for v in value]
    return value


def _what_happened(result: SimulationResult) -> dict[str, Any]:
    """Everything a run did, with signature bytes (and the message digests that carry
    them) left out."""

    def certified(items: Any) -> list[Any]:
        return [
            (
                c.time,
                c.node,
                c.target,
                c.certificate.report,
                c.certificate.signers,
                len(c.certificate.signature),
            )
            for c in items
        ]

    return {
        "certified": certified(result.certified),
        "transmissions": certified(result.transmissions),
        "sightings": [
            (s.time, s.node, s.target, s.certificate.report, s.certificate.signers)
            for s in result.sightings
        ],
        "history": [_without_bytes(msgpack.unpackb(r)) for r in result.history],
        "counts": (result.steps, result.messages_sent, result.messages_delivered, result.rejected),
    }


def _verifies(cert: Certificate, cfg: CommitteeConfig, suite: CryptoSuite) -> bool:
    try:
        verify_certificate(cert, cfg, crypto=suite)
    except CertificateError:
        return False
    return True


def _run_all(
    world: FactWorld, schedule: Schedule, adversary: Adversary
) -> dict[str, tuple[Simulation, SimulationResult]]:
    runs = {}
    for name, suite in (
        ("real", REAL_CRYPTO),
        ("memoized", MemoizedCrypto(REAL_CRYPTO)),
        ("fast", FastCrypto()),
    ):
        runs[name] = simulate(CONFIG, KEYS, world, schedule, adversary, crypto=suite)
    return runs


@pytest.mark.parametrize(
    ("world", "adversary", "seed"),
    [
        (WORLD, Adversary(), 1),
        (WORLD, Adversary(((1, ("invalid-shares",)),)), 6),
        (WORLD, Adversary(((FIRST_LEADER, ("equivocate",)),)), 2),
        (DIVERGENT, Adversary(((FIRST_LEADER, ("equivocate",)),)), 1),
        (WORLD, Adversary(((2, ("flood", "replay", "sign-anything")),)), 3),
    ],
    ids=[
        "honest",
        "invalid-shares",
        "equivocating-leader",
        "equivocating-leader-divergent-world",
        "flood-replay-sign-anything",
    ],
)
def test_every_suite_certifies_the_same_reports(
    world: FactWorld, adversary: Adversary, seed: int
) -> None:
    network = NetworkProfile(delay=0.03, jitter=0.02, drop=0.05, duplicate=0.05, reorder=0.1)
    schedule = Schedule(seed=seed, network=network, heal_at=1.0, duration=6.0)
    runs = _run_all(world, schedule, adversary)
    real = _what_happened(runs["real"][1])
    assert real["certified"], "the run must certify something to compare"
    for name in ("memoized", "fast"):
        assert _what_happened(runs[name][1]) == real, name

    # The same certificates verify, each under its own suite only: a checker must verify
    # a run's certificates with the run's suite.
    def verified(name: str, suite: CryptoSuite) -> list[int]:
        return [
            i
            for i, s in enumerate(runs[name][1].sightings)
            if _verifies(s.certificate, CONFIG.targets[s.target].committee, suite)
        ]

    assert verified("real", REAL_CRYPTO) == verified("fast", runs["fast"][0].crypto) != []
    assert verified("fast", REAL_CRYPTO) == []
    real_sigs = {c.certificate.signature for c in runs["real"][1].certified}
    fast_sigs = {c.certificate.signature for c in runs["fast"][1].certified}
    assert not real_sigs & fast_sigs
    memo = runs["memoized"][0].crypto
    assert isinstance(memo, MemoizedCrypto)
    # Every follower verifies the same certificate and the same observations: memoized once.
    assert memo.stats()["bls_fast_aggregate_verify"].hits > 0
    assert memo.stats()["verify_observation"].hits > 0


@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_fast_follows_real_under_random_faults_and_adversaries(data: st.DataObject) -> None:
    world = data.draw(fact_worlds(4, consistent=False, max_time=2.0))
    adversary = data.draw(adversaries(4, 1))
    schedule = data.draw(schedules(4, max_heal=1.5, after_heal=1.5))
    real = simulate(CONFIG, KEYS, world, schedule, adversary)[1]
    fast = simulate(CONFIG, KEYS, world, schedule, adversary, crypto=FastCrypto())[1]
    assert _what_happened(fast) == _what_happened(real)


def test_fast_suite_is_much_faster() -> None:
    """Certified rounds per CPU second, rounds back to back as in `dvpsim bench consensus`:
    printed for each suite at n=4 and n=16, never asserted (shared machines)."""
    print()
    for n, f, duration in ((4, 1, 4.0), (16, 5, 1.0)):
        config, keys = simulated_committee(n, f, seed=7, **BACK_TO_BACK)
        memo = MemoizedCrypto(REAL_CRYPTO)
        rounds_seen: set[int] = set()
        cpu_of: dict[str, float] = {}
        for name, suite in (
            ("real", REAL_CRYPTO),
            ("memoized", memo),
            ("memoized, rerun", memo),
            ("fast", FastCrypto()),
        ):
            schedule = Schedule(
                seed=1, network=NetworkProfile(delay=LINK_DELAY, jitter=0.002), duration=duration
            )
            simulation = Simulation(config, keys, MedianOutcome(), observe, schedule, crypto=suite)
            wall, cpu = time.perf_counter(), time.process_time()
            result = simulation.run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rounds = len(
                {(c.certificate.report.epoch, c.certificate.report.round) for c in result.certified}
            )
            rounds_seen.add(rounds)
            cpu_of[name] = cpu
            print(
                f"n={n:<3} {name:16} {rounds:4} rounds  cpu {cpu:6.3f} s "
                f"({rounds / max(cpu, 1e-9):8.1f} rounds/cpu-s)  wall {wall:6.3f} s"
            )
        print(f"n={n:<3} fast needs {cpu_of['fast'] / cpu_of['real']:.0%} of real's CPU time")
        assert len(rounds_seen) == 1  # the same work under every suite
