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

import json
from pathlib import Path

from bank_adapter.authorization import certificate_to_json, committee_to_json
from bank_adapter.terms import BANK_CHAIN_ID, BANK_VERIFIER_ID
from consensus import bls
from consensus.report import (
    Action,
    Certificate,
    CommitteeConfig,
    default_threshold,
)
from consensus.signing import SigningCommittee, dev_secret_keys

__all__ = ["DevCommittee"]


class DevCommittee(SigningCommittee):
    """A committee for the bank's domain; adds its committee file and one-decision
    certificates to :class:`consensus.signing.SigningCommittee`."""

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
        sks = dev_secret_keys(n, seed)
        cfg = CommitteeConfig(
            chain_id=chain_id,
            verifier=verifier,
            config_count=config_count,
            public_keys=tuple(bls.sk_to_pk(sk) for sk in sks),
            f=f,
            t=default_threshold(n, f) if t is None else t,
        )
        return cls(cfg, sks)

    def committee_json(self) -> dict[str, object]:
        return committee_to_json(self.config, [bls.pop_prove(sk) for sk in self.secret_keys])

    def write_committee_file(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.committee_json(), indent=2))
        return path

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
