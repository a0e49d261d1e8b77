"""Threshold certificates: making and verifying them, every rejection reason, replay
across targets and committees, and why the threshold must be floor((n+f)/2)+1."""

from __future__ import annotations

import dataclasses
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import bls, bls_reference
from consensus.report import (
    Action,
    Certificate,
    CertificateError,
    CommitteeConfig,
    CommitteeConfigError,
    Decision,
    Report,
    ReportError,
    check_proofs_of_possession,
    config_digest,
    conflicts,
    default_threshold,
    make_certificate,
    report_hash,
    signer_indices,
    verify_certificate,
)
from tests.crypto.crypto_helpers import committee_secret_keys

SECRET_KEYS = committee_secret_keys(7, "certificates")
PUBLIC_KEYS = tuple(bls.sk_to_pk(sk) for sk in SECRET_KEYS)
SETTLEMENT = b"\x5e" * 32


def _config(n: int = 4, f: int = 1, t: int | None = None, **changes: object) -> CommitteeConfig:
    fields: dict[str, object] = dict(
        chain_id=31337,
        verifier=b"\xaa" * 20,
        config_count=1,
        public_keys=PUBLIC_KEYS[:n],
        f=f,
        t=default_threshold(n, f) if t is None else t,
    )
    fields.update(changes)
    return CommitteeConfig(**fields)  # type: ignore[arg-type]


def _report(cfg: CommitteeConfig, action: Action = Action.COMMIT, round_: int = 1) -> Report:
    return Report(config_digest(cfg), 1, round_, (Decision(SETTLEMENT, action, b"\x7e" * 32),))


def _certify(report: Report, members: list[int]) -> Certificate:
    message = report_hash(report)
    return make_certificate(report, {i: bls.sign(SECRET_KEYS[i], message) for i in members})


def _reason(cert: Certificate, cfg: CommitteeConfig) -> str:
    with pytest.raises(CertificateError) as caught:
        verify_certificate(cert, cfg)
    assert "\n" not in str(caught.value)
    return caught.value.reason


def test_signer_bitmap_and_reference_check() -> None:
    cfg = _config()
    cert = _certify(_report(cfg), [3, 0, 2])
    assert cert.signers == 0b1101
    assert signer_indices(cert.signers) == (0, 2, 3)
    verify_certificate(cert, cfg)
    # The aggregate is the plain BLS aggregate: the reference backend agrees.
    keys = [PUBLIC_KEYS[i] for i in (0, 2, 3)]
    assert bls_reference.fast_aggregate_verify(keys, report_hash(cert.report), cert.signature)


@settings(max_examples=20, deadline=None)
@given(data=st.data(), n=st.integers(4, 7))
def test_every_quorum_verifies_and_every_smaller_set_is_refused(
    n: int, data: st.DataObject
) -> None:
    f = (n - 1) // 3
    cfg = _config(n=n, f=f)
    members = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    cert = _certify(_report(cfg), members)
    if len(members) >= cfg.t:
        verify_certificate(cert, cfg)
    else:
        assert _reason(cert, cfg) == "too few signers"


def test_config_digest_mismatch_blocks_replay() -> None:
    cfg = _config()
    cert = _certify(_report(cfg), [0, 1, 2])
    for other in (
        _config(chain_id=1),  # another chain
        _config(verifier=b"\xbb" * 20),  # another contract, or the bank's domain
        _config(config_count=2),  # the next committee
        _config(t=4),  # another threshold
    ):
        assert _reason(cert, other) == "config digest mismatch"


def test_signer_bit_out_of_range() -> None:
    cfg = _config()
    cert = _certify(_report(cfg), [0, 1, 2])
    outside = dataclasses.replace(cert, signers=cert.signers | 1 << 4)
    assert _reason(outside, cfg) == "signer bit out of range"
    far = dataclasses.replace(cert, signers=cert.signers | 1 << 255)
    assert _reason(far, cfg) == "signer bit out of range"


def test_too_few_signers() -> None:
    cfg = _config()
    assert _reason(_certify(_report(cfg), [0, 1]), cfg) == "too few signers"
    empty = Certificate(_report(cfg), 0, _certify(_report(cfg), [0]).signature)
    assert _reason(empty, cfg) == "too few signers"


def test_invalid_signature_cases() -> None:
    cfg = _config()
    report = _report(cfg)
    cert = _certify(report, [0, 1, 2])
    # bitmap names a member who did not sign (3 instead of 2)
    assert _reason(dataclasses.replace(cert, signers=0b1011), cfg) == "invalid signature"
    # signature of another report (an ABORT for the same settlement)
    abort = _certify(_report(cfg, Action.ABORT), [0, 1, 2])
    assert _reason(dataclasses.replace(cert, signature=abort.signature), cfg) == "invalid signature"
    # shares filed under the wrong member index
    message = report_hash(report)
    swapped = make_certificate(
        report,
        {
            0: bls.sign(SECRET_KEYS[1], message),
            1: bls.sign(SECRET_KEYS[0], message),
            3: bls.sign(SECRET_KEYS[2], message),
        },
    )
    assert _reason(swapped, cfg) == "invalid signature"
    # a report changed after signing
    changed = dataclasses.replace(cert, report=dataclasses.replace(report, round=2))
    assert _reason(changed, cfg) == "invalid signature"
    # an outsider's signature in place of a member's
    outsider = committee_secret_keys(1, "outsider")[0]
    forged = make_certificate(
        report,
        {
            0: bls.sign(SECRET_KEYS[0], message),
            1: bls.sign(SECRET_KEYS[1], message),
            2: bls.sign(outsider, message),
        },
    )
    assert _reason(forged, cfg) == "invalid signature"


@pytest.mark.parametrize(
    "signature",
    [
        bytes(96),
        b"\xff" * 96,
        bytes([0xC0]) + bytes(95),  # infinity
        b"\x01" * 95,
        b"",
    ],
    ids=["zeros", "ones", "infinity", "short", "empty"],
)
def test_malformed_signature(signature: bytes) -> None:
    cfg = _config()
    cert = dataclasses.replace(_certify(_report(cfg), [0, 1, 2]), signature=signature)
    assert _reason(cert, cfg) == "malformed signature"


def test_make_certificate_input_errors() -> None:
    cfg = _config()
    report = _report(cfg)
    with pytest.raises(ReportError):
        make_certificate(report, {})
    with pytest.raises(ReportError):
        make_certificate(report, {-1: bls.sign(SECRET_KEYS[0], report_hash(report))})
    with pytest.raises(bls.BlsError):
        make_certificate(report, {0: b"\x00" * 96})


def test_proofs_of_possession_gate_the_committee() -> None:
    cfg = _config()
    proofs = [bls.pop_prove(sk) for sk in SECRET_KEYS[:4]]
    check_proofs_of_possession(cfg, proofs)
    with pytest.raises(CommitteeConfigError, match="member 2"):
        check_proofs_of_possession(cfg, proofs[:2] + [proofs[3], proofs[3]])
    with pytest.raises(CommitteeConfigError, match="3 proofs of possession for 4 members"):
        check_proofs_of_possession(cfg, proofs[:3])


def _conflicting_certificates(cfg: CommitteeConfig) -> tuple[set[int], set[int]] | None:
    """Two signer sets, one certifying COMMIT and one ABORT for the same settlement, that
    share no member (no one equivocated). None if no such pair exists."""
    commit, abort = _report(cfg, Action.COMMIT), _report(cfg, Action.ABORT)
    for first in combinations(range(cfg.n), cfg.t):
        rest = [i for i in range(cfg.n) if i not in first]
        if len(rest) >= cfg.t:
            second = rest[: cfg.t]
            a, b = _certify(commit, list(first)), _certify(abort, second)
            verify_certificate(a, cfg)
            verify_certificate(b, cfg)
            assert conflicts(a.report.decisions[0], b.report.decisions[0])
            return set(first), set(second)
    return None


def test_unsafe_threshold_allows_conflicting_certificates_without_equivocation() -> None:
    """t = f+1 (price-feed OCR): two disjoint honest-looking quorums certify COMMIT and ABORT."""
    assert _conflicting_certificates(_config(n=4, f=1, t=2)) is not None
    assert _conflicting_certificates(_config(n=7, f=2, t=3)) is not None


def test_default_threshold_forces_an_overlap_of_f_plus_one() -> None:
    """With t = floor((n+f)/2)+1 no disjoint pair exists, and every pair of quorums shares at
    least f+1 members, so some honest member would have to sign both."""
    for n, f in ((4, 1), (7, 2)):
        cfg = _config(n=n, f=f)
        assert _conflicting_certificates(cfg) is None
        quorums = list(combinations(range(n), cfg.t))
        assert min(len(set(a) & set(b)) for a in quorums for b in quorums) >= f + 1
