"""Fixtures of the bank tests: a real BLS committee, terms and certificate helpers, and a
real bank service process (subprocess on 127.0.0.1, stopped by PID)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from bank_adapter.devcommittee import DevCommittee
from bank_adapter.process import BankProcess
from bank_adapter.terms import PaymentTerms

FAR_DEADLINE = 4_000_000_000  # unix seconds in 2096
NOW_MS = 1_700_000_000_000


@pytest.fixture(scope="session")
def committee() -> DevCommittee:
    return DevCommittee.create(n=4, f=1)


def terms(
    payer: str = "alice",
    payee: str = "bob",
    amount: int = 100,
    currency: str = "EUR",
    deadline: int = FAR_DEADLINE,
    sid: bytes | None = None,
) -> PaymentTerms:
    return PaymentTerms(sid or secrets.token_bytes(32), payer, payee, amount, currency, deadline)


@pytest.fixture
def bank_factory(tmp_path: Path) -> Iterator[type]:
    """Start BankProcess instances in tmp dirs; every one is stopped at teardown."""
    started: list[BankProcess] = []

    def make(committee: DevCommittee, **kw: object) -> BankProcess:
        bank = BankProcess(tmp_path / f"bank{len(started)}", committee, **kw)  # type: ignore[arg-type]
        started.append(bank)
        return bank

    yield make  # type: ignore[misc]
    for bank in started:
        bank.stop()
