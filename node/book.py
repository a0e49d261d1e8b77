"""What a node knows about settlements, shared by its targets.

The asset chain's coordinator announces every settlement with its full terms
(``SettlementCreated``). The bank leg's terms are derived from them, identically on every
node, so the committee can ask the bank to hold exactly what the escrow promised:

    payer account = the buyer's address (lower-case hex), payee = the seller's address,
    amount = the on-chain paymentAmount, currency = the bank target's currency,
    deadline = the on-chain deadline.

This module only keeps and derives data; it does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bank_adapter.terms import PaymentTerms
from chain_adapters.model import Terms


@dataclass
class SettlementBook:
    terms: dict[bytes, Terms] = field(default_factory=dict)  # asset-chain terms by settlement id
    # Settlements every leg of which applied a decision, as this node's observer saw them:
    # nothing is left to decide, so the targets leave them out of their facts (a round's
    # cost then follows the open settlements, not every settlement ever seen). A chain
    # reorg that retracts one of their events takes it out of here again.
    settled: set[bytes] = field(default_factory=set)

    def bank_terms(self, settlement_id: bytes, currency: str) -> PaymentTerms | None:
        t = self.terms.get(settlement_id)
        if t is None:
            return None
        return PaymentTerms(
            settlement_id=settlement_id,
            payer_account=bank_account(t.buyer),
            payee_account=bank_account(t.seller),
            amount=t.payment_amount,
            currency=currency,
            deadline=t.deadline,
        )


def bank_account(address: str) -> str:
    """The bank account id of a party: its EVM address in lower-case hex."""
    return address.lower()
