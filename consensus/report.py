"""Reports, committee configurations, config digests and threshold certificates.

A round of the oracle committee ends in a *report*: the decisions (PREPARE, COMMIT or
ABORT) for a batch of settlements, addressed to exactly one target (a verifier contract on
one chain, or the bank). The report is ABI-encoded exactly as the Solidity verifier decodes
it::

    abi.encode(bytes32 configDigest, uint64 epoch, uint64 round,
               (bytes32 settlementId, uint8 action, bytes32 termsHash)[] decisions)

and its keccak256 hash is the message every member signs with BLS. A *certificate* is the
report plus an aggregate signature of at least ``t`` members and the bitmap of who signed.

The *config digest* binds a report to one target and one committee (OCR style): the keccak256
of ``abi.encode(uint256 chainId, address verifier, uint64 configCount,
bytes32 keccak256(abi.encodePacked(publicKeys)), uint8 f, uint8 t)`` with its first two
bytes replaced by the prefix 0x0d01. A certificate for one chain, contract, committee or
threshold therefore fails on every other.

Safety: two decisions *conflict* when they name the same settlement and one is COMMIT and
the other ABORT. With ``t >= floor((n+f)/2)+1`` two certificates for conflicting decisions
share an honest signer, which honest nodes never allow; ``t`` stays configurable down to
``f+1`` so reviewers can watch that unsafe setting break atomicity.

Signing, aggregation and verification go through a crypto suite (``consensus.crypto``),
the real one unless the caller passes another; committee public keys are always real
BLS12-381 keys, checked with ``bls.key_validate``, so config digests and report hashes do
not depend on the suite.

This module must never accept a report, config or certificate that does not re-encode to
exactly the bytes it was given, nor verify a certificate without checking its config digest,
and it does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import Any, Final

from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from mypy_extensions import mypyc_attr

from consensus import bls
from consensus.crypto import REAL_CRYPTO, CryptoSuite

__all__ = [
    "CONFIG_DIGEST_PREFIX",
    "MAX_COMMITTEE_SIZE",
    "Action",
    "Certificate",
    "CertificateError",
    "CommitteeConfig",
    "CommitteeConfigError",
    "Decision",
    "Report",
    "ReportError",
    "check_proofs_of_possession",
    "config_digest",
    "conflicts",
    "decode_report",
    "default_threshold",
    "encode_report",
    "make_certificate",
    "report_hash",
    "signer_indices",
    "verify_certificate",
]

CONFIG_DIGEST_PREFIX: Final = b"\x0d\x01"
#: The signer bitmap is a uint256 on chain, so a committee has at most 256 members.
MAX_COMMITTEE_SIZE: Final = 256

_UINT32_MAX: Final = 2**32 - 1
_UINT64_MAX: Final = 2**64 - 1
_UINT256_MAX: Final = 2**256 - 1
_REPORT_TYPES: Final = ["bytes32", "uint64", "uint64", "(bytes32,uint8,bytes32)[]"]
_WORD: Final = 32
# Head of an encoded report: digest, epoch, round, offset of the array, array length.
_HEAD_WORDS: Final = 5
_DECISION_WORDS: Final = 3


class ReportError(ValueError):
    """A report or decision is malformed (wrong field size, value out of range, bad bytes)."""


class CommitteeConfigError(ValueError):
    """A committee configuration breaks a rule (sizes, n >= 3f+1, f+1 <= t <= n, keys)."""


class CertificateError(ValueError):
    """A certificate does not verify. ``reason`` is one of the fixed strings below, so
    callers and tests can tell the cases apart; ``str(error)`` adds the detail."""

    CONFIG_DIGEST_MISMATCH: Final = "config digest mismatch"
    TOO_FEW_SIGNERS: Final = "too few signers"
    SIGNER_BIT_OUT_OF_RANGE: Final = "signer bit out of range"
    INVALID_SIGNATURE: Final = "invalid signature"
    MALFORMED_SIGNATURE: Final = "malformed signature"

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        message = f"certificate rejected: {reason}"
        super().__init__(f"{message} ({detail})" if detail else message)


# --------------------------------------------------------------------------- reports


class Action(IntEnum):
    """What a target must do for one settlement."""

    COMMIT = 1  # execute: release the asset / pay the seller
    ABORT = 2  # roll back: refund the seller / cancel the hold
    PREPARE = 3  # ask the bank to place a hold on the buyer's account


_ACTION_WORDS: Final = {action: int(action).to_bytes(_WORD, "big") for action in Action}
_DECISIONS_OFFSET_WORD: Final = (4 * _WORD).to_bytes(_WORD, "big")  # the array follows the head


def _require_bytes(value: object, length: int, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        raise ReportError(f"{what} must be {length} bytes")


def _require_uint(value: object, maximum: int, what: str, error: type[ValueError]) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise error(f"{what} must be an integer in [0, {maximum}]")


@mypyc_attr(native_class=False)  # it judges its own fields (see native)
@dataclass(frozen=True, slots=True)
class Decision:
    """The committee's decision for one settlement."""

    settlement_id: bytes  # 32 B
    action: Action
    terms_hash: bytes  # 32 B: keccak256 of the settlement's terms, checked by the target

    def __post_init__(self: Any) -> None:
        _require_bytes(self.settlement_id, 32, "Decision.settlement_id")
        _require_bytes(self.terms_hash, 32, "Decision.terms_hash")
        if not isinstance(self.action, Action):
            raise ReportError("Decision.action must be an Action")


@mypyc_attr(native_class=False)  # it judges its own fields (see native)
@dataclass(frozen=True, slots=True)
class Report:
    """The output of one round for one target. A settlement appears at most once, so a
    target never has to choose between two decisions of the same certificate."""

    config_digest: bytes  # 32 B
    epoch: int  # uint32
    round: int  # encoded as uint64
    decisions: tuple[Decision, ...]

    def __post_init__(self: Any) -> None:
        _require_bytes(self.config_digest, 32, "Report.config_digest")
        _require_uint(self.epoch, _UINT32_MAX, "Report.epoch", ReportError)
        _require_uint(self.round, _UINT64_MAX, "Report.round", ReportError)
        if not isinstance(self.decisions, tuple) or not all(
            isinstance(d, Decision) for d in self.decisions
        ):
            raise ReportError("Report.decisions must be a tuple of Decision")
        seen: set[bytes] = set()
        for decision in self.decisions:
            if decision.settlement_id in seen:
                raise ReportError(
                    f"Report names settlement 0x{decision.settlement_id.hex()} more than once"
                )
            seen.add(decision.settlement_id)


def encode_report(report: Report) -> bytes:
    """The ABI encoding the verifier decodes (see the module docstring), written word by
    word: the layout is fixed and every field was checked when the report was built, and
    eth_abi's generic encoder took about 1.5 ms for 128 decisions, on every report hash.
    Tests hold it byte-identical to ``eth_abi.encode(_REPORT_TYPES, ...)``."""
    words = [
        report.config_digest,
        report.epoch.to_bytes(_WORD, "big"),
        report.round.to_bytes(_WORD, "big"),
        _DECISIONS_OFFSET_WORD,
        len(report.decisions).to_bytes(_WORD, "big"),
    ]
    for d in report.decisions:
        words += (d.settlement_id, _ACTION_WORDS[d.action], d.terms_hash)
    return b"".join(words)


@lru_cache(maxsize=4096)
def report_hash(report: Report) -> bytes:
    """keccak256(encode_report(report)): the 32-byte message committee members sign.
    (Kept for recent reports: every member, the leader and the targets hash the same one.)"""
    return bytes(keccak(encode_report(report)))


def _word_uint(data: bytes, index: int, maximum: int, what: str) -> int:
    value = int.from_bytes(data[index * _WORD : (index + 1) * _WORD], "big")
    if value > maximum:
        raise ReportError(f"encoded report: {what} out of range")
    return value


def decode_report(data: bytes) -> Report:
    """Strict inverse of ``encode_report``: rejects any bytes that ``encode_report`` would not
    produce (wrong length, trailing bytes, non-canonical offset or padding, unknown action,
    epoch beyond uint32, repeated settlement)."""
    if not isinstance(data, bytes):
        raise ReportError("encoded report must be bytes")
    if len(data) < _HEAD_WORDS * _WORD or len(data) % _WORD != 0:
        raise ReportError(f"encoded report has invalid length {len(data)}")
    if _word_uint(data, 3, _UINT256_MAX, "array offset") != 4 * _WORD:
        raise ReportError("encoded report: decisions offset is not 0x80")
    count = _word_uint(data, 4, _UINT256_MAX, "decision count")
    expected_words = _HEAD_WORDS + count * _DECISION_WORDS
    if len(data) != expected_words * _WORD:
        raise ReportError(
            f"encoded report: {count} decisions need {expected_words * _WORD} bytes, got {len(data)}"
        )
    decisions = []
    for i in range(count):
        base = _HEAD_WORDS + i * _DECISION_WORDS
        action_value = _word_uint(data, base + 1, 255, f"decision {i} action")
        try:
            action = Action(action_value)
        except ValueError:
            raise ReportError(
                f"encoded report: decision {i} has unknown action {action_value}"
            ) from None
        decisions.append(
            Decision(
                settlement_id=data[base * _WORD : (base + 1) * _WORD],
                action=action,
                terms_hash=data[(base + 2) * _WORD : (base + 3) * _WORD],
            )
        )
    report = Report(
        config_digest=data[:_WORD],
        epoch=_word_uint(data, 1, _UINT32_MAX, "epoch"),
        round=_word_uint(data, 2, _UINT64_MAX, "round"),
        decisions=tuple(decisions),
    )
    # Belt and braces: the decoded report must re-encode to exactly the input.
    if encode_report(report) != data:
        raise ReportError("encoded report is not in canonical form")
    return report


def conflicts(a: Decision, b: Decision) -> bool:
    """True iff the two decisions are for the same settlement and one commits while the
    other aborts (PREPARE conflicts with neither)."""
    return a.settlement_id == b.settlement_id and {a.action, b.action} == {
        Action.COMMIT,
        Action.ABORT,
    }


# --------------------------------------------------------------------------- committees


def default_threshold(n: int, f: int) -> int:
    """floor((n+f)/2)+1: the smallest t for which two quorums always share an honest member."""
    return (n + f) // 2 + 1


@mypyc_attr(native_class=False)  # it judges its own fields (see native)
@dataclass(frozen=True, slots=True)
class CommitteeConfig:
    """A committee as one target sees it. Member i holds public_keys[i] and bit i of the
    signer bitmap."""

    chain_id: int  # EVM chain id, or the bank's own domain id
    verifier: bytes  # 20 B: verifier contract address, or the bank's 20-byte domain id
    config_count: int  # uint64, increases with every committee change
    public_keys: tuple[bytes, ...]  # 48 B compressed G1 each
    f: int  # faults tolerated
    t: int  # signature threshold, normally default_threshold(n, f)

    def __post_init__(self: Any) -> None:
        err = CommitteeConfigError
        _require_uint(self.chain_id, _UINT256_MAX, "CommitteeConfig.chain_id", err)
        if not isinstance(self.verifier, bytes) or len(self.verifier) != 20:
            raise err("CommitteeConfig.verifier must be 20 bytes")
        _require_uint(self.config_count, _UINT64_MAX, "CommitteeConfig.config_count", err)
        _require_uint(self.f, 255, "CommitteeConfig.f", err)
        _require_uint(self.t, 255, "CommitteeConfig.t", err)
        if not isinstance(self.public_keys, tuple):
            raise err("CommitteeConfig.public_keys must be a tuple")
        n = len(self.public_keys)
        if n > MAX_COMMITTEE_SIZE:
            raise err(f"committee has {n} members; at most {MAX_COMMITTEE_SIZE} are supported")
        if n < 3 * self.f + 1:
            raise err(f"committee of n={n} cannot tolerate f={self.f}: need n >= 3f+1")
        if not self.f + 1 <= self.t <= n:
            raise err(f"threshold t={self.t} must satisfy f+1 <= t <= n (f={self.f}, n={n})")
        seen: set[bytes] = set()
        for i, pk in enumerate(self.public_keys):
            if not bls.key_validate(pk):
                raise err(f"public key of member {i} is not a valid BLS12-381 G1 key")
            if pk in seen:
                raise err(f"public key of member {i} repeats an earlier member's key")
            seen.add(pk)

    @property
    def n(self) -> int:
        return len(self.public_keys)


def check_proofs_of_possession(
    cfg: CommitteeConfig, proofs: Sequence[bytes], *, crypto: CryptoSuite = REAL_CRYPTO
) -> None:
    """Raise CommitteeConfigError unless proofs[i] proves possession of member i's key.
    Must pass before a committee is used: without it one member could pick a rogue key
    that cancels the others in ``fast_aggregate_verify``."""
    if len(proofs) != cfg.n:
        raise CommitteeConfigError(f"{len(proofs)} proofs of possession for {cfg.n} members")
    for i, (pk, proof) in enumerate(zip(cfg.public_keys, proofs, strict=True)):
        if not crypto.pop_verify(pk, proof):
            raise CommitteeConfigError(f"proof of possession of member {i} does not verify")


@lru_cache(maxsize=64)
def _config_digest(cfg: CommitteeConfig) -> bytes:
    keys_hash = keccak(b"".join(cfg.public_keys))
    encoded = abi_encode(
        ["uint256", "address", "uint64", "bytes32", "uint8", "uint8"],
        [cfg.chain_id, cfg.verifier, cfg.config_count, keys_hash, cfg.f, cfg.t],
    )
    return CONFIG_DIGEST_PREFIX + bytes(keccak(encoded))[2:]


def config_digest(cfg: CommitteeConfig) -> bytes:
    """The 32-byte OCR-style digest naming this target and committee (module docstring)."""
    return _config_digest(cfg)


# --------------------------------------------------------------------------- certificates


@mypyc_attr(native_class=False)  # it judges its own fields (see native)
@dataclass(frozen=True, slots=True)
class Certificate:
    """A report with the aggregate BLS signature of the members named in ``signers``."""

    report: Report
    signers: int  # bitmap, bit i = committee member i
    signature: bytes  # 96 B aggregate; any other length is rejected by verify_certificate

    def __post_init__(self: Any) -> None:
        if not isinstance(self.report, Report):
            raise ReportError("Certificate.report must be a Report")
        _require_uint(self.signers, _UINT256_MAX, "Certificate.signers", ReportError)
        if not isinstance(self.signature, bytes):
            raise ReportError("Certificate.signature must be bytes")


def signer_indices(signers: int) -> tuple[int, ...]:
    """Member indices set in a signer bitmap, ascending."""
    return tuple(i for i in range(signers.bit_length()) if signers >> i & 1)


def make_certificate(
    report: Report, shares: Mapping[int, bytes], *, crypto: CryptoSuite = REAL_CRYPTO
) -> Certificate:
    """Aggregate signature shares (member index -> that member's signature of
    ``report_hash(report)``) into a certificate. Shares are not verified here (the leader
    checks each share against its member's key when it arrives); a malformed share raises
    BlsError."""
    if len(shares) == 0:
        raise ReportError("cannot make a certificate from no signature shares")
    signers = 0
    for index in shares:
        if not isinstance(index, int) or not 0 <= index < MAX_COMMITTEE_SIZE:
            raise ReportError(f"signature share index {index!r} is not a member index")
        signers |= 1 << index
    signature = crypto.bls_aggregate([shares[i] for i in sorted(shares)])
    return Certificate(report=report, signers=signers, signature=signature)


def verify_certificate(
    cert: Certificate, cfg: CommitteeConfig, *, crypto: CryptoSuite = REAL_CRYPTO
) -> None:
    """Return if ``cert`` is valid for ``cfg``; otherwise raise CertificateError whose
    ``reason`` is one of: config digest mismatch, signer bit out of range, too few signers,
    malformed signature, invalid signature (checked in that order)."""
    expected = config_digest(cfg)
    if cert.report.config_digest != expected:
        raise CertificateError(
            CertificateError.CONFIG_DIGEST_MISMATCH,
            f"report has 0x{cert.report.config_digest.hex()}, committee has 0x{expected.hex()}",
        )
    if cert.signers >> cfg.n:
        raise CertificateError(
            CertificateError.SIGNER_BIT_OUT_OF_RANGE,
            f"bitmap {cert.signers:#x} names a member >= n={cfg.n}",
        )
    indices = signer_indices(cert.signers)
    if len(indices) < cfg.t:
        raise CertificateError(
            CertificateError.TOO_FEW_SIGNERS, f"{len(indices)} signers, threshold is {cfg.t}"
        )
    keys = [cfg.public_keys[i] for i in indices]
    if crypto.bls_fast_aggregate_verify(keys, report_hash(cert.report), cert.signature):
        return
    # The check decodes the signature (G2 decompression with the subgroup check) and
    # refuses a malformed one; only a refused certificate pays a second decoding, to say
    # which reason applies.
    if not crypto.bls_signature_validate(cert.signature):
        raise CertificateError(CertificateError.MALFORMED_SIGNATURE)
    raise CertificateError(CertificateError.INVALID_SIGNATURE)
