"""A local committee with real BLS keys, for tests, benchmarks and scenario set-up.

``DevCommittee`` derives n BLS12-381 keys from a seed (IETF KeyGen), writes the committee
file the bank loads (with proofs of possession), and makes certificates for reports
addressed to the bank exactly as the oracle network does after a round: each of ``t``
members signs ``report_hash(report)`` and the shares are aggregated. It skips consensus,
not cryptography: the bank verifies these certificates like any other.

It must never be used as a node's key store (keys derived from a public seed are not
secret) and does no I/O except ``write_committee_file``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bank_adapter.authorization import certificate_to_json, committee_to_json
from bank_adapter.terms import BANK_CHAIN_ID, BANK_VERIFIER_ID
from consensus import bls
from consensus.report import (
    Action,
    Certificate,
    CommitteeConfig,
    Decision,
    Report,
    config_digest,
    default_threshold,
    make_certificate,
    report_hash,
)

__all__ = ["DevCommittee"]


@dataclass(frozen=True)
class DevCommittee:
    config: CommitteeConfig
    secret_keys: tuple[int, ...]

    @classmethod
    def create(
        cls,
        n: int = 4,
        f: int = 1,
        t: int | None = None,
        seed: bytes = b"dvpsim dev committee",
        config_count: int = 1,
        chain_id: int = BANK_CHAIN_ID,
        verifier: bytes = BANK_VERIFIER_ID,
    ) -> DevCommittee:
        sks = tuple(
            bls.keygen(hashlib.sha256(seed + i.to_bytes(4, "big")).digest()) for i in range(n)
        )
        cfg = CommitteeConfig(
            chain_id=chain_id,
            verifier=verifier,
            config_count=config_count,
            public_keys=tuple(bls.sk_to_pk(sk) for sk in sks),
            f=f,
            t=default_threshold(n, f) if t is None else t,
        )
        return cls(cfg, sks)

    @property
    def digest(self) -> bytes:
        return config_digest(self.config)

    def committee_json(self) -> dict[str, object]:
        return committee_to_json(self.config, [bls.pop_prove(sk) for sk in self.secret_keys])

    def write_committee_file(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.committee_json(), indent=2))
        return path

    def report(
        self, decisions: Sequence[tuple[bytes, Action, bytes]], epoch: int = 1, round: int = 1
    ) -> Report:
        return Report(
            config_digest=self.digest,
            epoch=epoch,
            round=round,
            decisions=tuple(Decision(sid, action, th) for sid, action, th in decisions),
        )

    def certify(self, report: Report, signers: Sequence[int] | None = None) -> Certificate:
        """A certificate signed by ``signers`` (member indices; default the first t)."""
        members = range(self.config.t) if signers is None else signers
        message = report_hash(report)
        return make_certificate(
            report, {i: bls.sign(self.secret_keys[i], message) for i in members}
        )

    def certificate(
        self,
        settlement_id: bytes,
        action: Action,
        terms_hash: bytes,
        epoch: int = 1,
        round: int = 1,
    ) -> Certificate:
        return self.certify(self.report([(settlement_id, action, terms_hash)], epoch, round))

    @staticmethod
    def to_json(cert: Certificate) -> dict[str, str]:
        return certificate_to_json(cert)
