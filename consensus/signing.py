"""A committee whose secret keys are at hand, for local runs, tests and benchmarks.

``dev_secret_keys`` derives n BLS12-381 keys from a public seed (IETF KeyGen), and
``SigningCommittee`` makes certificates exactly as the oracle network does after a round:
each of ``t`` members signs ``report_hash(report)`` and the shares are aggregated. It skips
consensus, not cryptography: verifiers (the contract, the bank) check these certificates
like any other. The chains' and the bank's development committees build on it
(``chain_adapters.devstack``, ``bank_adapter.devcommittee``).

Keys derived from a public seed are not secret: never use them for anything real.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from consensus import bls
from consensus.report import (
    Action,
    Certificate,
    CommitteeConfig,
    Decision,
    Report,
    config_digest,
    make_certificate,
    report_hash,
)

__all__ = ["SigningCommittee", "dev_secret_keys"]


def dev_secret_keys(n: int, seed: bytes) -> tuple[int, ...]:
    """n BLS secret keys from a public seed (IETF KeyGen): for local runs only."""
    return tuple(bls.keygen(hashlib.sha256(seed + i.to_bytes(4, "big")).digest()) for i in range(n))


@dataclass(frozen=True)
class SigningCommittee:
    """A committee configuration with its members' secret keys."""

    config: CommitteeConfig
    secret_keys: tuple[int, ...]

    @property
    def digest(self) -> bytes:
        return config_digest(self.config)

    def report(
        self,
        decisions: Sequence[Decision | tuple[bytes, Action, bytes]],
        epoch: int = 1,
        round: int = 1,
        digest: bytes | None = None,
    ) -> Report:
        """A report of ``decisions`` under this committee's config digest (or ``digest``)."""
        return Report(
            config_digest=self.digest if digest is None else digest,
            epoch=epoch,
            round=round,
            decisions=tuple(d if isinstance(d, Decision) else Decision(*d) for d in decisions),
        )

    def certify(self, report: Report, signers: Sequence[int] | None = None) -> Certificate:
        """A certificate signed by ``signers`` (member indices; default the first t)."""
        members = range(self.config.t) if signers is None else signers
        message = report_hash(report)
        return make_certificate(
            report, {i: bls.sign(self.secret_keys[i], message) for i in members}
        )
