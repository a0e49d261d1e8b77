"""The hand-written ABI encodings of escrow and bank terms are byte for byte eth_abi's.

Both hashes are what the committee certifies and what the contract and the bank recompute,
so the fast encodings (word by word; the simulation hashes thousands of terms) are held
to eth_abi's reference encoding on random values at the edges of every field's range.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bank_adapter.terms import (
    MAX_AMOUNT,
    MAX_DEADLINE,
    encode_payment_terms,
    encode_payment_terms_reference,
    payment_terms_hash,
)
from chain_adapters.model import Terms, encode_terms, encode_terms_reference, terms_hash

addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
uint256 = st.one_of(st.integers(0, 2**256 - 1), st.sampled_from([0, 1, 2**255, 2**256 - 1]))


@settings(max_examples=300, deadline=None)
@given(
    sid=st.binary(min_size=32, max_size=32),
    mode=st.integers(0, 255),
    seller=addresses,
    buyer=addresses,
    asset=addresses,
    asset_amount=uint256,
    payment=addresses,
    payment_amount=uint256,
    deadline=st.integers(0, 2**64 - 1),
)
def test_escrow_terms_encode_as_eth_abi_does(  # type: ignore[no-untyped-def]
    sid, mode, seller, buyer, asset, asset_amount, payment, payment_amount, deadline
) -> None:
    terms = Terms(sid, mode, seller, buyer, asset, asset_amount, payment, payment_amount, deadline)
    assert encode_terms(terms) == encode_terms_reference(terms)
    assert len(terms_hash(terms)) == 32


accounts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=80
)


@settings(max_examples=300, deadline=None)
@given(
    sid=st.binary(min_size=32, max_size=32),
    payer=accounts,
    payee=accounts,
    amount=st.one_of(st.integers(0, MAX_AMOUNT), st.sampled_from([0, 1, MAX_AMOUNT])),
    currency=accounts,
    deadline=st.integers(0, MAX_DEADLINE),
)
def test_bank_terms_encode_as_eth_abi_does(  # type: ignore[no-untyped-def]
    sid, payer, payee, amount, currency, deadline
) -> None:
    fast = encode_payment_terms(sid, payer, payee, amount, currency, deadline)
    assert fast == encode_payment_terms_reference(sid, payer, payee, amount, currency, deadline)
    assert len(payment_terms_hash(sid, payer, payee, amount, currency, deadline)) == 32
