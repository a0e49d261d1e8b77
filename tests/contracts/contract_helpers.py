"""Helpers for the contract tests: deterministic committees, reports, certificates, points
that are off the curve or outside the subgroup, and custom-error assertions.

Imported by the test modules of tests/contracts as tests.contracts.contract_helpers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pytest
from py_ecc.bls.point_compression import modular_squareroot_in_FQ2
from py_ecc.fields import optimized_bls12_381_FQ2 as FQ2
from web3.exceptions import ContractCustomError, ContractLogicError

from chain_adapters.verifier import RevertReason, revert_reason
from consensus import bls
from consensus.eip2537 import FIELD_MODULUS, encode_fp
from consensus.report import (
    Action,
    Certificate,
    Decision,
    Report,
    default_threshold,
    make_certificate,
    report_hash,
)

P = FIELD_MODULUS


@dataclass(frozen=True)
class BlsCommittee:
    """n members with deterministic keys and proofs of possession."""

    secret_keys: tuple[int, ...]
    public_keys: tuple[bytes, ...]
    proofs: tuple[bytes, ...]
    f: int
    t: int

    @property
    def n(self) -> int:
        return len(self.public_keys)


def secret_key(label: str, index: int) -> int:
    return bls.keygen(hashlib.sha256(f"contracts/{label}/{index}".encode()).digest())


@lru_cache(maxsize=16)
def make_committee(n: int, label: str = "committee") -> BlsCommittee:
    f = (n - 1) // 3
    sks = tuple(secret_key(label, i) for i in range(n))
    return BlsCommittee(
        secret_keys=sks,
        public_keys=tuple(bls.sk_to_pk(sk) for sk in sks),
        proofs=tuple(bls.pop_prove(sk) for sk in sks),
        f=f,
        t=default_threshold(n, f),
    )


def make_report(digest: bytes, *, decisions: int = 1, epoch: int = 1, round_: int = 1) -> Report:
    return Report(
        config_digest=digest,
        epoch=epoch,
        round=round_,
        decisions=tuple(
            Decision(
                settlement_id=hashlib.sha256(b"settlement %d" % i).digest(),
                action=Action.COMMIT if i % 2 == 0 else Action.ABORT,
                terms_hash=hashlib.sha256(b"terms %d" % i).digest(),
            )
            for i in range(decisions)
        ),
    )


def certify(committee: BlsCommittee, report: Report, signers: Iterable[int]) -> Certificate:
    message = report_hash(report)
    return make_certificate(
        report, {i: bls.sign(committee.secret_keys[i], message) for i in signers}
    )


def expect_error(abi: list[dict[str, Any]], call: Callable[[], Any], name: str) -> RevertReason:
    """Run ``call`` (an eth_call or gas estimate), expect it to revert with custom error
    ``name``, and return the decoded error."""
    with pytest.raises((ContractCustomError, ContractLogicError)) as info:
        call()
    reason = revert_reason(abi, info.value)
    assert reason is not None, f"reverted without a known custom error: {info.value!r}"
    assert reason.name == name, f"expected {name}, got {reason}"
    return reason


# ------------------------------------------------------------------ raw points


def g1_encoding(x: int, y: int) -> bytes:
    return encode_fp(x) + encode_fp(y)


def g1_point_off_subgroup(seed: int = 1) -> tuple[int, int]:
    """A point of E(Fp): y^2 = x^3 + 4 that is not in G1 (the cofactor is large, so a point
    with a small x is in the subgroup with negligible probability; checked by blst)."""
    x = seed
    while True:
        rhs = (pow(x, 3, P) + 4) % P
        y = pow(rhs, (P + 1) // 4, P)
        if y * y % P == rhs and not bls.key_validate(compress_g1(x, y)):
            return x, y
        x += 1


def compress_g1(x: int, y: int) -> bytes:
    flags = 0x80 | (0x20 if y > (P - 1) // 2 else 0)
    raw = bytearray(x.to_bytes(48, "big"))
    raw[0] |= flags
    return bytes(raw)


def g2_point_off_subgroup(seed: int = 1) -> bytes:
    """EIP-2537 encoding of a point on the twist y^2 = x^3 + 4(1+i) outside G2."""
    c0 = seed
    while True:
        x = FQ2([c0, 1])
        y = modular_squareroot_in_FQ2(x**3 + FQ2([4, 4]))
        if y is not None:
            x0, x1 = (int(c) for c in x.coeffs)
            y0, y1 = (int(c) for c in y.coeffs)
            return encode_fp(x0) + encode_fp(x1) + encode_fp(y0) + encode_fp(y1)
        c0 += 1
