"""A leg held elsewhere is described in the escrow's terms: no token here, its amount kept.

The bank payment of an ASSET_ESCROW settlement (the reference case) lives at the bank, but
the committee must ask the bank for exactly the amount the escrow's terms promise, so the
on-chain terms carry it: payment token zero, payment amount the bank amount. The contract
and the model accept that, and still refuse a token for a leg that is not held here.
"""

from __future__ import annotations

from dataclasses import replace

from chain_adapters.model import ZERO_ADDRESS, EscrowModel, EscrowRevert, Mode, TermsProblem
from tests.escrow.escrow_helpers import Escrow


def test_asset_escrow_carries_the_bank_amount(escrow: Escrow, w3: object) -> None:
    t = replace(escrow.terms(Mode.ASSET_ESCROW), payment_token=ZERO_ADDRESS, payment_amount=25_000)
    model = EscrowModel(escrow.co.address)
    model.create(t.seller, t, now=t.deadline - 100)  # no revert
    assert escrow.create(t).error is None
    assert escrow.co.settlement(t.settlement_id)[0] == t.terms_hash()


def test_a_token_for_a_leg_held_elsewhere_is_still_refused(escrow: Escrow, w3: object) -> None:
    t = replace(
        escrow.terms(Mode.ASSET_ESCROW),
        payment_token=escrow.stack.payment.address,
        payment_amount=25_000,
    )
    model = EscrowModel(escrow.co.address)
    try:
        model.create(t.seller, t, now=t.deadline - 100)
    except EscrowRevert as exc:
        assert (exc.error, exc.args_) == (
            "InvalidTerms",
            (t.settlement_id, int(TermsProblem.PAYMENT_LEG)),
        )
    else:
        raise AssertionError("the model accepted a payment token in ASSET_ESCROW")
    out = escrow.create(t)
    assert (out.error, out.error_args) == (
        "InvalidTerms",
        (t.settlement_id, int(TermsProblem.PAYMENT_LEG)),
    )
