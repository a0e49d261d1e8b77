"""Adversarial inputs to the BLS layer: infinity, points off the curve or outside the
subgroup, non-canonical encodings, rogue keys, keys that cancel. Both backends must reject
them the same way, and the verification functions must answer False, never raise."""

from __future__ import annotations

from types import ModuleType

import pytest
from py_ecc.bls.g2_primitives import G1_to_pubkey, G2_to_signature, pubkey_to_G1, subgroup_check
from py_ecc.bls.point_compression import modular_squareroot_in_FQ2
from py_ecc.fields import optimized_bls12_381_FQ as FQ
from py_ecc.fields import optimized_bls12_381_FQ2 as FQ2
from py_ecc.optimized_bls12_381.optimized_curve import add, b2, field_modulus, is_on_curve, neg

from consensus import bls, bls_reference
from consensus.eip2537 import FIELD_MODULUS
from tests.crypto.crypto_helpers import committee_secret_keys, secret_key

BACKENDS = [bls, bls_reference]
G1_INFINITY = bytes([0xC0]) + bytes(47)
G2_INFINITY = bytes([0xC0]) + bytes(95)


def _g1_point_outside_subgroup() -> bytes:
    """A compressed point on E(Fp): y^2 = x^3 + 4 that is not in the order-r subgroup."""
    x = 0
    while True:
        x += 1
        rhs = (x**3 + 4) % field_modulus
        y = pow(rhs, (field_modulus + 1) // 4, field_modulus)
        if y * y % field_modulus == rhs:
            point = (FQ(x), FQ(y), FQ.one())
            if not subgroup_check(point):
                return bytes(G1_to_pubkey(point))


def _g2_point_outside_subgroup() -> bytes:
    """A compressed point on the twist E'(Fp2) that is not in the order-r subgroup."""
    x0 = 0
    while True:
        x0 += 1
        x = FQ2([x0, 1])
        y = modular_squareroot_in_FQ2(x**3 + b2)
        if y is not None:
            point = (x, y, FQ2.one())
            assert is_on_curve(point, b2)
            if not subgroup_check(point):
                return bytes(G2_to_signature(point))


def _g1_x_not_on_curve() -> bytes:
    """Compressed bytes whose x has no y on the curve."""
    x = 0
    while True:
        x += 1
        rhs = (x**3 + 4) % field_modulus
        if pow(rhs, (field_modulus - 1) // 2, field_modulus) != 1:
            out = bytearray(x.to_bytes(48, "big"))
            out[0] |= 0x80
            return bytes(out)


SK = secret_key("validation", 0)
PK = bls.sk_to_pk(SK)
MESSAGE = b"report hash"
SIG = bls.sign(SK, MESSAGE)


@pytest.mark.parametrize("backend", BACKENDS, ids=["fast", "reference"])
class TestRejectedPoints:
    def test_infinity_public_key(self, backend: ModuleType) -> None:
        assert not backend.key_validate(G1_INFINITY)
        assert not backend.verify(G1_INFINITY, MESSAGE, SIG)
        assert not backend.fast_aggregate_verify([G1_INFINITY], MESSAGE, SIG)

    def test_infinity_signature(self, backend: ModuleType) -> None:
        assert not backend.signature_validate(G2_INFINITY)
        assert not backend.verify(PK, MESSAGE, G2_INFINITY)
        with pytest.raises(bls.BlsError):
            backend.aggregate([SIG, G2_INFINITY])

    def test_public_key_outside_subgroup(self, backend: ModuleType) -> None:
        rogue = _g1_point_outside_subgroup()
        assert not backend.key_validate(rogue)
        assert not backend.verify(rogue, MESSAGE, SIG)

    def test_signature_outside_subgroup(self, backend: ModuleType) -> None:
        rogue = _g2_point_outside_subgroup()
        assert not backend.signature_validate(rogue)
        assert not backend.verify(PK, MESSAGE, rogue)
        with pytest.raises(bls.BlsError):
            backend.aggregate([rogue])

    def test_public_key_not_on_curve(self, backend: ModuleType) -> None:
        assert not backend.key_validate(_g1_x_not_on_curve())

    def test_non_canonical_x_at_least_p(self, backend: ModuleType) -> None:
        # x + p encodes the same residue; only the reduced form is canonical.
        x = int.from_bytes(PK, "big") & ((1 << 381) - 1)
        bumped = bytearray((x + FIELD_MODULUS).to_bytes(48, "big"))
        assert bumped[0] & 0xE0 == 0, "x + p must still fit under the flag bits"
        bumped[0] |= PK[0] & 0xE0
        assert not backend.key_validate(bytes(bumped))

    def test_infinity_with_stray_bits(self, backend: ModuleType) -> None:
        assert not backend.key_validate(bytes([0xC0]) + bytes(46) + b"\x01")
        assert not backend.key_validate(bytes([0xE0]) + bytes(47))
        assert not backend.signature_validate(bytes([0xC0]) + bytes(94) + b"\x01")

    @pytest.mark.parametrize("length", [0, 1, 47, 49, 95, 97, 192])
    def test_wrong_lengths(self, backend: ModuleType, length: int) -> None:
        data = (PK + SIG + PK + SIG)[:length]
        assert not backend.key_validate(data)
        assert not backend.signature_validate(data)
        assert not backend.verify(data, MESSAGE, SIG)
        assert not backend.verify(PK, MESSAGE, data)
        assert not backend.pop_verify(data, SIG)
        with pytest.raises(bls.BlsError):
            backend.aggregate([data])

    def test_empty_inputs(self, backend: ModuleType) -> None:
        assert not backend.fast_aggregate_verify([], MESSAGE, SIG)
        with pytest.raises(bls.BlsError):
            backend.aggregate([])

    @pytest.mark.parametrize("sk", [0, -1, bls.CURVE_ORDER, bls.CURVE_ORDER + 5, True])
    def test_secret_key_out_of_range(self, backend: ModuleType, sk: int) -> None:
        for operation in ("sk_to_pk", "pop_prove"):
            with pytest.raises(bls.BlsError):
                getattr(backend, operation)(sk)
        with pytest.raises(bls.BlsError):
            backend.sign(sk, MESSAGE)

    def test_short_keygen_material(self, backend: ModuleType) -> None:
        with pytest.raises(bls.BlsError):
            backend.keygen(b"\x01" * 31)


def test_rogue_key_attack_is_stopped_by_proof_of_possession() -> None:
    """Without proofs of possession an attacker who sees an honest key pk_h can publish
    pk_r = a*G - pk_h and alone forge an 'aggregate' of both. PoP makes that key unusable."""
    honest_sk, attacker_sk = committee_secret_keys(2, "rogue")
    honest_pk = bls.sk_to_pk(honest_sk)
    attacker_point = pubkey_to_G1(bls.sk_to_pk(attacker_sk))
    rogue_pk = bytes(G1_to_pubkey(add(attacker_point, neg(pubkey_to_G1(honest_pk)))))
    forged = bls.sign(attacker_sk, MESSAGE)
    # The attack works on the raw check: this is why the committee demands PoPs.
    assert bls.fast_aggregate_verify([honest_pk, rogue_pk], MESSAGE, forged)
    assert bls_reference.fast_aggregate_verify([honest_pk, rogue_pk], MESSAGE, forged)
    # ... and the attacker cannot prove possession of the rogue key.
    assert not bls.pop_verify(rogue_pk, bls.pop_prove(attacker_sk))
    assert not bls_reference.pop_verify(rogue_pk, bls.pop_prove(attacker_sk))


def test_keys_summing_to_infinity_never_verify() -> None:
    pk_point = pubkey_to_G1(PK)
    negated = bytes(G1_to_pubkey(neg(pk_point)))
    assert bls.key_validate(negated)
    for backend in BACKENDS:
        assert not backend.fast_aggregate_verify([PK, negated], MESSAGE, SIG)
        assert not backend.fast_aggregate_verify([PK, negated], MESSAGE, G2_INFINITY)


def test_pop_is_domain_separated_from_signatures() -> None:
    """A signature of the key bytes under the message DST is not a proof of possession."""
    assert not bls.pop_verify(PK, bls.sign(SK, PK))
    assert bls.pop_verify(PK, bls.pop_prove(SK))
    assert not bls.pop_verify(bls.sk_to_pk(secret_key("validation", 1)), bls.pop_prove(SK))


def test_invalid_key_stays_invalid_after_caching() -> None:
    """The decoded-key cache stores verdicts, so a bad key must stay rejected on reuse,
    and a good key must keep verifying."""
    rogue = _g1_point_outside_subgroup()
    for _ in range(3):
        assert not bls.key_validate(rogue)
        assert bls.verify(PK, MESSAGE, SIG)
    assert "hits=" in bls.decode_public_key_cache_info()


def test_duplicate_keys_in_fast_aggregate_verify() -> None:
    """The same signer counted twice needs its signature twice in the aggregate."""
    doubled = bls.aggregate([SIG, SIG])
    assert bls.fast_aggregate_verify([PK, PK], MESSAGE, doubled)
    assert not bls.fast_aggregate_verify([PK, PK], MESSAGE, SIG)
    assert not bls.fast_aggregate_verify([PK], MESSAGE, doubled)
