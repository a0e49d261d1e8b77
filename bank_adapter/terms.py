"""The terms of a bank payment leg, their hash, and the bank's certificate domain.

The oracle network certifies a payment leg by the keccak256 hash of its terms; the bank
recomputes the hash from the instruction it receives and accepts the instruction only if
the certified ``Decision.terms_hash`` equals it. The encoding is Solidity's ``abi.encode``
so that nodes, contracts and the bank hash the same bytes:

    keccak256(abi.encode(bytes32 settlementId, string payerAccount, string payeeAccount,
                         uint256 amount, string currency, uint64 deadline))

This module also fixes the values that make a certificate addressed to "the bank" rather
than to a chain: ``BANK_CHAIN_ID`` (ASCII 'bank') and ``BANK_VERIFIER_ID`` (20 bytes), used
as ``CommitteeConfig.chain_id`` and ``CommitteeConfig.verifier`` of the bank's trusted
committee, so a report certified for an escrow contract can never be replayed at the bank.

It must never read the clock, the disk or the network; validation here is about the shape
of values only (the ledger decides what they mean).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

__all__ = [
    "BANK_CHAIN_ID",
    "BANK_VERIFIER_ID",
    "MAX_AMOUNT",
    "MAX_DEADLINE",
    "PaymentTerms",
    "TermsError",
    "check_account_id",
    "check_currency",
    "payment_terms_hash",
]

#: The bank's certificate domain id, ASCII "bank" (0x62616e6b), in place of an EVM chain id.
BANK_CHAIN_ID: Final = 0x62616E6B
#: The bank's 20-byte verifier id, ASCII "dvpsim-bank-ledger-1", in place of a contract address.
BANK_VERIFIER_ID: Final = b"dvpsim-bank-ledger-1"
assert len(BANK_VERIFIER_ID) == 20

#: Amounts are integers in minor units (cents); SQLite stores signed 64-bit integers.
MAX_AMOUNT: Final = 2**63 - 1
#: The hash encodes the deadline as uint64, but the ledger stores it as a signed 64-bit
#: integer, so the bank accepts deadlines up to 2**63 - 1 (far beyond any real date).
MAX_DEADLINE: Final = 2**63 - 1

_ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_CURRENCY = re.compile(r"[A-Z]{3}")


class TermsError(ValueError):
    """A payment term has the wrong type or is out of range. ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_account_id(value: object, field: str) -> str:
    """An account id as customers may use it: 1-64 of [A-Za-z0-9._:-], starting with a
    letter or digit (ids starting with '@' are the bank's internal accounts)."""
    if not isinstance(value, str) or _ACCOUNT_ID.fullmatch(value) is None:
        raise TermsError(field, f"{field} must be an account id of 1-64 characters [A-Za-z0-9._:-]")
    return value


def check_currency(value: object, field: str = "currency") -> str:
    """An ISO 4217-style currency code: three upper-case letters."""
    if not isinstance(value, str) or _CURRENCY.fullmatch(value) is None:
        raise TermsError(field, f"{field} must be three upper-case letters, e.g. EUR")
    return value


def check_amount(value: object, field: str = "amount") -> int:
    """A positive integer number of minor units, at most 2**63 - 1."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TermsError(field, f"{field} must be an integer number of minor units")
    if not 1 <= value <= MAX_AMOUNT:
        raise TermsError(field, f"{field} must be between 1 and {MAX_AMOUNT} minor units")
    return value


@dataclass(frozen=True, slots=True)
class PaymentTerms:
    """What the payer's bank is asked to pay, exactly as the oracle network certified it."""

    settlement_id: bytes  # 32 B
    payer_account: str
    payee_account: str
    amount: int  # minor units
    currency: str
    deadline: int  # unix seconds; prevalidation after it is rejected as expired

    def __post_init__(self) -> None:
        if not isinstance(self.settlement_id, bytes) or len(self.settlement_id) != 32:
            raise TermsError("settlement_id", "settlement_id must be 32 bytes")
        check_account_id(self.payer_account, "payer_account")
        check_account_id(self.payee_account, "payee_account")
        if self.payer_account == self.payee_account:
            raise TermsError("payee_account", "payee_account must differ from payer_account")
        check_amount(self.amount)
        check_currency(self.currency)
        if (
            not isinstance(self.deadline, int)
            or isinstance(self.deadline, bool)
            or not 0 <= self.deadline <= MAX_DEADLINE
        ):
            raise TermsError(
                "deadline", f"deadline must be unix seconds between 0 and {MAX_DEADLINE}"
            )

    def terms_hash(self) -> bytes:
        return payment_terms_hash(
            self.settlement_id,
            self.payer_account,
            self.payee_account,
            self.amount,
            self.currency,
            self.deadline,
        )


@lru_cache(maxsize=65536)
def payment_terms_hash(
    settlement_id: bytes,
    payer_account: str,
    payee_account: str,
    amount: int,
    currency: str,
    deadline: int,
) -> bytes:
    """keccak256(abi.encode(bytes32, string, string, uint256, string, uint64)) of the terms:
    the value the oracle network certifies as ``Decision.terms_hash`` for a bank leg."""
    return bytes(
        keccak(
            encode_payment_terms(
                settlement_id, payer_account, payee_account, amount, currency, deadline
            )
        )
    )


_PAYMENT_TERMS_TYPES: Final = ["bytes32", "string", "string", "uint256", "string", "uint64"]
_HEAD_WORDS: Final = len(_PAYMENT_TERMS_TYPES)


def encode_payment_terms(
    settlement_id: bytes,
    payer_account: str,
    payee_account: str,
    amount: int,
    currency: str,
    deadline: int,
) -> bytes:
    """``abi.encode(bytes32, string, string, uint256, string, uint64)``, by hand: six head
    words (the strings as offsets into the tail), then each string as its length and its
    UTF-8 bytes padded to whole words. eth_abi gives the same bytes, many times slower; a
    test holds the two together (``encode_payment_terms_reference``)."""
    if len(settlement_id) != 32:
        raise TermsError("settlement_id", "settlement_id must be 32 bytes")
    tails: list[bytes] = []
    offsets: list[int] = []
    offset = 32 * _HEAD_WORDS
    for text in (payer_account, payee_account, currency):
        data = text.encode()
        padded = data + bytes(-len(data) % 32)
        offsets.append(offset)
        tails.append(len(data).to_bytes(32, "big") + padded)
        offset += 32 + len(padded)
    head = b"".join(
        (
            settlement_id,
            offsets[0].to_bytes(32, "big"),
            offsets[1].to_bytes(32, "big"),
            amount.to_bytes(32, "big"),
            offsets[2].to_bytes(32, "big"),
            deadline.to_bytes(32, "big"),
        )
    )
    return head + b"".join(tails)


def encode_payment_terms_reference(
    settlement_id: bytes,
    payer_account: str,
    payee_account: str,
    amount: int,
    currency: str,
    deadline: int,
) -> bytes:
    """The same encoding by eth_abi: the reference ``encode_payment_terms`` is held to."""
    return bytes(
        abi_encode(
            _PAYMENT_TERMS_TYPES,
            [settlement_id, payer_account, payee_account, amount, currency, deadline],
        )
    )
