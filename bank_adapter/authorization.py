"""Oracle-network certificates at the bank: the trusted committee, JSON form, verification.

The bank trusts exactly one committee configuration (``CommitteeConfig`` with the bank's
``chain_id``/``verifier`` domain from ``terms.py``), loaded from a committee file whose
proofs of possession are checked at load. A certificate arrives in a request body as JSON::

    {"report": "0x<abi-encoded report>", "signers": "0x<bitmap>", "signature": "0x<96 B>"}

and is decoded strictly (``consensus.report.decode_report``), verified with
``verify_certificate`` against the trusted config, and reduced to the ``Authorization``
the ledger core needs: the decision the report holds for the request's settlement.

Verification results are cached (bounded LRU) by (crypto suite, trusted config digest,
report hash, signer bitmap, signature). That is safe because ``verify_certificate`` is a
pure function of exactly those inputs: the report hash commits to every report byte
including its config digest, the trusted config never changes while the process runs (and
is in the key anyway), the suite's name keeps a simulation's stand-in signatures from ever
vouching for a certificate under real crypto, and only successes are cached, so an
attacker cannot poison the cache with a failure or grow it with garbage. The cache skips
only the pairing check; the replay, action, terms and state rules run on every request.
It pays off when one report batches decisions for many settlements and when several
nodes transmit the same certificate.

Signatures are checked with a crypto suite (``consensus.crypto``): the real one, unless a
simulated bank is given its world's suite (``authorize(..., crypto=...)``).

This module must never accept a certificate without checking it against the trusted
config, cache a failed verification, or read the clock.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from bank_adapter.ledger import Authorization, LedgerError, Operation
from consensus.crypto import REAL_CRYPTO, CryptoSuite
from consensus.report import (
    Action,
    Certificate,
    CertificateError,
    CommitteeConfig,
    CommitteeConfigError,
    Report,
    ReportError,
    check_proofs_of_possession,
    config_digest,
    decode_report,
    encode_report,
    report_hash,
    verify_certificate,
)

__all__ = [
    "OPERATION_OF_ACTION",
    "CertificateRejected",
    "CommitteeFileError",
    "VerificationCache",
    "authorize",
    "certificate_from_json",
    "certificate_to_json",
    "committee_to_json",
    "load_committee",
]

OPERATION_OF_ACTION: Final = {
    Action.PREPARE: Operation.PREVALIDATE,
    Action.COMMIT: Operation.EXECUTE,
    Action.ABORT: Operation.CANCEL,
}

_MAX_SIGNER_HEX: Final = 64  # a uint256 bitmap
#: Hex digits and nothing else. ``bytes.fromhex`` alone skips whitespace and ``int(x, 16)``
#: takes signs, underscores, spaces and a second "0x": a certificate has one spelling.
_HEX_DIGITS: Final = re.compile(r"[0-9a-fA-F]+")


def is_hex_digits(text: str) -> bool:
    """Whether ``text`` is one or more hex digits, nothing else (no sign, space, "_", "0x")."""
    return _HEX_DIGITS.fullmatch(text) is not None


class CertificateRejected(LedgerError):
    """A certificate is malformed (``certificate_malformed``) or does not verify against the
    trusted committee (``certificate_invalid``); nothing changed."""


class CommitteeFileError(ValueError):
    """The committee file cannot be used; the message names the file and the fix."""


def _hex_bytes(value: object, what: str, length: int | None = None) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"{what} must be a 0x-prefixed hex string")
    if not is_hex_digits(value[2:]) or len(value) % 2:
        raise ValueError(f"{what} is not valid hex: 0x and an even number of hex digits only")
    data = bytes.fromhex(value[2:])
    if length is not None and len(data) != length:
        raise ValueError(f"{what} must be {length} bytes")
    return data


# --------------------------------------------------------------------------- certificates


def certificate_to_json(cert: Certificate) -> dict[str, str]:
    """The JSON form the bank's API takes (module docstring)."""
    return {
        "report": "0x" + encode_report(cert.report).hex(),
        "signers": hex(cert.signers),
        "signature": "0x" + cert.signature.hex(),
    }


def certificate_from_json(value: object) -> Certificate:
    """Decode a certificate from its JSON form; CertificateRejected (malformed) on any
    deviation: missing or extra fields, bad hex, non-canonical report encoding."""
    if not isinstance(value, dict):
        raise CertificateRejected(
            "certificate_malformed",
            "certificate must be an object with report, signers, signature",
            "certificate",
        )
    if set(value) != {"report", "signers", "signature"}:
        raise CertificateRejected(
            "certificate_malformed",
            "certificate must have exactly the fields report, signers, signature",
            "certificate",
        )
    try:
        report = _decode_report(_hex_bytes(value["report"], "certificate.report"))
        signers_hex = value["signers"]
        if (
            not isinstance(signers_hex, str)
            or not signers_hex.startswith("0x")
            or not 1 <= len(signers_hex) - 2 <= _MAX_SIGNER_HEX
            or not is_hex_digits(signers_hex[2:])
        ):
            raise ValueError(
                "certificate.signers must be a 0x-prefixed hex bitmap of at most 256 bits"
            )
        signers = int(signers_hex[2:], 16)
        signature = _hex_bytes(value["signature"], "certificate.signature", 96)
        return Certificate(report=report, signers=signers, signature=signature)
    except (ValueError, ReportError) as exc:
        raise CertificateRejected("certificate_malformed", f"{exc}", "certificate") from None


# Decoding and hashing a report are pure functions of its bytes, and one report carries the
# decisions for a whole batch of settlements, each arriving in its own request: cache both
# (bounded) so a batch pays for ABI decoding and keccak once. Failures are not cached.
@lru_cache(maxsize=1024)
def _decode_report(data: bytes) -> Report:
    return decode_report(data)


#: (crypto suite name, trusted config digest, report hash, signer bitmap, signature).
CacheKey = tuple[str, bytes, bytes, int, bytes]


class VerificationCache:
    """Bounded LRU of certificates that verified (see the module docstring for why this is
    safe). Only ``authorize`` writes it."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[CacheKey, None] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def contains(self, key: CacheKey) -> bool:
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return True
        self.misses += 1
        return False

    def add(self, key: CacheKey) -> None:
        self._entries[key] = None
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


def authorize(
    cert: Certificate,
    committee: CommitteeConfig,
    settlement_id: bytes,
    cache: VerificationCache | None = None,
    *,
    crypto: CryptoSuite = REAL_CRYPTO,
) -> Authorization:
    """Verify ``cert`` against the trusted committee (with ``crypto``) and return its
    decision for ``settlement_id``. Raises CertificateRejected (certificate_invalid) if it
    does not verify, LedgerError (certificate_wrong_settlement) if it holds no decision
    for it."""
    rhash = report_hash(cert.report)  # cached in consensus.report
    key = (crypto.name, config_digest(committee), rhash, cert.signers, cert.signature)
    if cache is None or not cache.contains(key):
        try:
            verify_certificate(cert, committee, crypto=crypto)
        except CertificateError as exc:
            raise CertificateRejected(
                "certificate_invalid",
                f"the certificate does not verify against the bank's trusted committee: {exc}",
                "certificate",
            ) from None
        if cache is not None:
            cache.add(key)
    for decision in cert.report.decisions:
        if decision.settlement_id == settlement_id:
            return Authorization(
                report_hash=rhash,
                settlement_id=settlement_id,
                operation=OPERATION_OF_ACTION[decision.action],
                terms_hash=decision.terms_hash,
            )
    raise LedgerError(
        "certificate_wrong_settlement",
        f"the certificate has no decision for settlement 0x{settlement_id.hex()}",
        "certificate",
    )


# --------------------------------------------------------------------------- committee file


def committee_to_json(cfg: CommitteeConfig, proofs_of_possession: list[bytes]) -> dict[str, Any]:
    """The committee file format the bank loads (see docs/INTERFACES.md)."""
    return {
        "chain_id": cfg.chain_id,
        "verifier": "0x" + cfg.verifier.hex(),
        "config_count": cfg.config_count,
        "f": cfg.f,
        "t": cfg.t,
        "public_keys": ["0x" + pk.hex() for pk in cfg.public_keys],
        "proofs_of_possession": ["0x" + p.hex() for p in proofs_of_possession],
    }


def load_committee(path: str | Path) -> CommitteeConfig:
    """Read and check a committee file (keys valid, n >= 3f+1, proofs of possession)."""
    where = f"committee file {path}"
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise CommitteeFileError(
            f"{where}: cannot read it ({exc.strerror}); pass an existing file with --committee"
        ) from None
    except ValueError as exc:
        raise CommitteeFileError(f"{where}: not valid JSON ({exc}); fix the file") from None
    fields = {
        "chain_id",
        "verifier",
        "config_count",
        "f",
        "t",
        "public_keys",
        "proofs_of_possession",
    }
    if not isinstance(raw, dict) or set(raw) != fields:
        raise CommitteeFileError(
            f"{where}: must be an object with exactly the fields {sorted(fields)}"
        )
    try:
        keys = raw["public_keys"]
        proofs = raw["proofs_of_possession"]
        if not isinstance(keys, list) or not isinstance(proofs, list):
            raise ValueError("public_keys and proofs_of_possession must be lists")
        cfg = CommitteeConfig(
            chain_id=raw["chain_id"],
            verifier=_hex_bytes(raw["verifier"], "verifier", 20),
            config_count=raw["config_count"],
            public_keys=tuple(_hex_bytes(k, f"public_keys[{i}]", 48) for i, k in enumerate(keys)),
            f=raw["f"],
            t=raw["t"],
        )
        check_proofs_of_possession(
            cfg, [_hex_bytes(p, f"proofs_of_possession[{i}]", 96) for i, p in enumerate(proofs)]
        )
    except (ValueError, CommitteeConfigError) as exc:
        raise CommitteeFileError(f"{where}: {exc}; fix the file") from None
    return cfg
