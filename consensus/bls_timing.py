"""Timing of the BLS operations a committee performs, for benchmarks (``dvpsim bench``).

Measures the median wall time of sign, verify and fast_aggregate_verify (the certificate
check: k member keys, one message) for the fast backend (``consensus.bls``, blst) or the
reference (``consensus.bls_reference``, py_ecc). Keys come from IETF KeyGen over a
deterministic seed, so two runs measure the same work.

This is the only module in ``consensus`` that reads a clock, and it does so only to time
the operations; nothing in the protocol may import it.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Literal

from consensus import bls, bls_reference

__all__ = ["BlsTiming", "measure"]

Backend = Literal["fast", "reference"]


@dataclass(frozen=True, slots=True)
class BlsTiming:
    """Median milliseconds per operation for one backend."""

    backend: str
    committee_size: int
    repeats: int
    sign_ms: float
    verify_ms: float
    fast_aggregate_verify_ms: float  # keys already decoded (cached) for the fast backend

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _median_ms(operation: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        operation()
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def measure(
    backend: Backend = "fast", committee_size: int = 21, repeats: int = 50, seed: bytes = b"dvpsim"
) -> BlsTiming:
    """Median ms of sign, verify and fast_aggregate_verify over ``committee_size`` keys.

    py_ecc takes ~0.1-0.3 s per operation (more for the aggregate check), so keep
    ``repeats`` small (3-5) for ``backend="reference"``.
    """
    if committee_size < 1 or repeats < 1:
        raise ValueError("committee_size and repeats must be at least 1")
    impl: ModuleType = bls if backend == "fast" else bls_reference
    secret_keys = [
        bls.keygen(hashlib.sha256(seed + i.to_bytes(4, "big")).digest())
        for i in range(committee_size)
    ]
    public_keys = [bls.sk_to_pk(sk) for sk in secret_keys]
    message = hashlib.sha256(seed + b"report").digest()
    shares = [bls.sign(sk, message) for sk in secret_keys]
    aggregate = bls.aggregate(shares)
    # Warm the decoded-key cache, as a node does when it loads its committee.
    if not impl.fast_aggregate_verify(public_keys, message, aggregate):
        raise RuntimeError(f"{backend} backend rejected a valid aggregate signature")
    return BlsTiming(
        backend=backend,
        committee_size=committee_size,
        repeats=repeats,
        sign_ms=_median_ms(lambda: impl.sign(secret_keys[0], message), repeats),
        verify_ms=_median_ms(lambda: impl.verify(public_keys[0], message, shares[0]), repeats),
        fast_aggregate_verify_ms=_median_ms(
            lambda: impl.fast_aggregate_verify(public_keys, message, aggregate), repeats
        ),
    )


if __name__ == "__main__":  # pragma: no cover - manual measurement
    runs: tuple[tuple[Backend, int], ...] = (("fast", 200), ("reference", 3))
    for name, count in runs:
        print(measure(name, repeats=count).as_dict())
