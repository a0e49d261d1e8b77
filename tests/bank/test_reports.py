"""``POST /v1/reports``: all decisions of one certificate in one request.

The batch must be the same operations as the single endpoints, only cheaper: a property
test applies random reports through both on two banks and compares the ledgers; the rest
covers replay, partial refusal, forged certificates and the HTTP path."""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bank_adapter import ledger
from bank_adapter.authorization import certificate_to_json
from bank_adapter.client import SyncBankClient
from bank_adapter.devcommittee import DevCommittee
from bank_adapter.server import request_hash
from bank_adapter.service import BankService
from bank_adapter.sqlite_storage import SqliteStorage
from bank_adapter.storage import MemoryStorage
from bank_adapter.terms import PaymentTerms
from consensus.report import Action, Certificate

from .conftest import NOW_MS, terms
from .test_service import body_of, post_finish, post_prevalidate


def _bank(storage: Any, committee: DevCommittee) -> BankService:
    for account_id, balance in (("alice", 1000), ("bob", 0), ("carol", 300)):
        with storage.transaction() as txn:
            txn.apply(ledger.open_account(txn, account_id, "EUR", balance, NOW_MS))
    return BankService(storage, committee.config)


@pytest.fixture(params=["memory", "sqlite"])
def service(
    request: pytest.FixtureRequest, committee: DevCommittee, tmp_path: Path
) -> Iterator[BankService]:
    storage: Any = (
        MemoryStorage() if request.param == "memory" else SqliteStorage(tmp_path / "r.db")
    )
    yield _bank(storage, committee)
    storage.close()


def _terms_json(t: PaymentTerms) -> dict[str, Any]:
    value = json.loads(body_of(t, None))
    del value["certificate"]
    return value


def post_report(
    svc: BankService,
    cert: Certificate | dict[str, Any],
    prepare_terms: list[PaymentTerms],
    key: str = "r1",
    client: str = "node-0",
    now_ms: int = NOW_MS,
) -> Any:
    payload = certificate_to_json(cert) if isinstance(cert, Certificate) else cert
    body = json.dumps(
        {"certificate": payload, "terms": [_terms_json(t) for t in prepare_terms]}
    ).encode()
    return svc.apply_report(client, key, request_hash("POST", "/v1/reports", body), body, now_ms)


def _state(svc: BankService) -> tuple[Any, ...]:
    return _state_of(svc.storage.snapshot())


def _state_of(snap: Any) -> tuple[Any, ...]:
    """What the money and the instructions look like (idempotency records differ by key)."""
    return (
        sorted((a.account_id, a.balance, a.held) for a in snap.accounts),
        sorted((i.settlement_id, i.state.value, i.terms_hash) for i in snap.instructions),
    )


def test_a_report_prepares_commits_and_aborts_in_one_request(
    service: BankService, committee: DevCommittee
) -> None:
    a, b, c = terms(amount=100), terms(amount=50), terms(amount=5000)  # c: no funds
    prepare = committee.certify(
        committee.report([(t.settlement_id, Action.PREPARE, t.terms_hash()) for t in (a, b, c)])
    )
    reply = post_report(service, prepare, [a, b, c])
    assert reply.status == 200 and reply.committed
    results = reply.json()["results"]
    assert [r["status"] for r in results] == [201, 201, 422]
    assert results[2]["answer"]["error"]["code"] == "instruction_rejected"
    assert [r["settlement_id"] for r in results] == [
        "0x" + t.settlement_id.hex() for t in (a, b, c)
    ]
    decide = committee.certify(
        committee.report(
            [
                (a.settlement_id, Action.COMMIT, a.terms_hash()),
                (b.settlement_id, Action.ABORT, b.terms_hash()),
            ],
            round=2,
        )
    )
    results = post_report(service, decide, [], key="r2").json()["results"]
    assert [r["answer"]["instruction"]["state"] for r in results] == ["EXECUTED", "CANCELLED"]
    money = {acc: (bal, held) for acc, bal, held in _state(service)[0]}
    assert money["alice"] == (900, 0) and money["bob"] == (100, 0)
    assert ledger.reconcile(service.storage.snapshot()) == []


def test_replay_answers_the_same_and_changes_nothing(
    service: BankService, committee: DevCommittee
) -> None:
    t = terms()
    cert = committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
    first = post_report(service, cert, [t], key="same")
    before = service.storage.snapshot()
    again = post_report(service, cert, [t], key="same")
    assert again.body == first.body and not again.committed
    assert service.storage.snapshot() == before
    # Another node with the same certificate: each decision is a duplicate.
    other = post_report(service, cert, [t], key="other", client="node-1")
    assert other.json()["results"][0]["answer"]["duplicate"] is True
    assert _state(service) == _state_of(before)


def test_a_prepare_without_terms_is_refused_alone(
    service: BankService, committee: DevCommittee
) -> None:
    a, b = terms(amount=10), terms(amount=20)
    cert = committee.certify(
        committee.report([(t.settlement_id, Action.PREPARE, t.terms_hash()) for t in (a, b)])
    )
    results = post_report(service, cert, [b]).json()["results"]
    assert results[0]["status"] == 400 and results[0]["answer"]["error"]["field"] == "terms"
    assert results[1]["status"] == 201
    # Terms that do not hash to the certified terms hash are refused too.
    c = terms(amount=30)
    cert_c = committee.certificate(c.settlement_id, Action.PREPARE, c.terms_hash())
    forged = PaymentTerms(c.settlement_id, "alice", "carol", 30, "EUR", c.deadline)
    result = post_report(service, cert_c, [forged], key="r2").json()["results"][0]
    assert result["status"] >= 400 and "instruction" not in result["answer"]
    assert c.settlement_id not in [i for i, *_ in _state(service)[1]]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda j: {**j, "signature": "0x" + "00" * 96},
        lambda j: {**j, "signers": hex(int(j["signers"], 16) >> 1)},
        lambda j: {**j, "report": j["report"][:-2] + ("00" if j["report"][-2:] != "00" else "11")},
        lambda j: {k: v for k, v in j.items() if k != "signers"},
    ],
)
def test_a_certificate_that_does_not_verify_refuses_the_whole_request(
    service: BankService, committee: DevCommittee, mutate: Any
) -> None:
    t = terms()
    cert = committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
    before = service.storage.snapshot()
    reply = post_report(service, mutate(certificate_to_json(cert)), [t])
    assert 400 <= reply.status < 500 and "error" in reply.json()
    assert service.storage.snapshot() == before


def test_bad_bodies_are_one_clear_error(service: BankService, committee: DevCommittee) -> None:
    t = terms()
    cert = certificate_to_json(
        committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
    )
    for body, field in (
        ({"certificate": cert}, "terms"),
        ({"certificate": cert, "terms": {}}, "terms"),
        ({"certificate": cert, "terms": [1]}, "terms"),
        ({"certificate": cert, "terms": [{**_terms_json(t), "memo": "x"}]}, "terms"),
        (
            {
                "certificate": cert,
                "terms": [{k: v for k, v in _terms_json(t).items() if k != "amount"}],
            },
            "terms",
        ),
        ({"certificate": cert, "terms": [], "extra": 1}, "extra"),
    ):
        raw = json.dumps(body).encode()
        reply = service.apply_report(
            "node-0", "k", request_hash("POST", "/v1/reports", raw), raw, NOW_MS
        )
        assert reply.status == 400 and reply.json()["error"]["field"] == field


# ------------------------------------------------------------------ batch == one by one

ACCOUNTS = ("alice", "bob", "carol")


@st.composite
def scripts(draw: st.DrawFn) -> list[list[tuple[int, Action]]]:
    """Rounds of decisions over a few settlements: (settlement index, action)."""
    rounds = draw(st.integers(1, 5))
    return [
        draw(
            st.lists(
                st.tuples(st.integers(0, 5), st.sampled_from(Action)),
                min_size=1,
                max_size=6,
                unique_by=lambda d: d[0],
            )
        )
        for _ in range(rounds)
    ]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    script=scripts(),
    amounts=st.lists(st.integers(1, 700), min_size=6, max_size=6),
    payers=st.lists(st.sampled_from(ACCOUNTS), min_size=6, max_size=6),
)
def test_a_batch_leaves_the_ledger_the_single_endpoints_leave(
    committee: DevCommittee,
    script: list[list[tuple[int, Action]]],
    amounts: list[int],
    payers: list[str],
) -> None:
    settlements = [
        PaymentTerms(
            secrets.token_bytes(32),
            payer,
            "bob" if payer != "bob" else "alice",
            amount,
            "EUR",
            2**40,
        )
        for payer, amount in zip(payers, amounts, strict=True)
    ]
    batched, single = _bank(MemoryStorage(), committee), _bank(MemoryStorage(), committee)
    for round_, decisions in enumerate(script, start=1):
        cert = committee.certify(
            committee.report(
                [
                    (settlements[i].settlement_id, action, settlements[i].terms_hash())
                    for i, action in decisions
                ],
                round=round_,
            )
        )
        prepares = [settlements[i] for i, action in decisions if action is Action.PREPARE]
        batch_results = post_report(batched, cert, prepares, key=f"r{round_}").json()["results"]
        single_statuses = []
        for i, action in decisions:
            t = settlements[i]
            key = f"s{round_}-{i}"
            if action is Action.PREPARE:
                reply = post_prevalidate(single, body_of(t, cert), key=key)
            else:
                op = "execute" if action is Action.COMMIT else "cancel"
                reply = post_finish(single, op, t.settlement_id, cert, key=key)
            single_statuses.append((reply.status, reply.json().get("error", {}).get("code")))
        assert [
            (r["status"], r["answer"].get("error", {}).get("code")) for r in batch_results
        ] == single_statuses
        assert _state(batched) == _state(single)
    assert ledger.reconcile(batched.storage.snapshot()) == []


# ------------------------------------------------------------------ over HTTP


def test_the_client_applies_a_report_over_http(bank_factory: Any, committee: DevCommittee) -> None:
    secret = secrets.token_bytes(32)
    bank = bank_factory(
        committee, clients={"node-0": secret}, accounts=[("payer", "EUR", 100), ("payee", "EUR", 0)]
    )
    bank.start()
    with SyncBankClient(bank.url, "node-0", secret) as client:
        a = terms(payer="payer", payee="payee", amount=10)
        b = terms(payer="payer", payee="payee", amount=1000)  # more than the payer has
        cert = committee.certify(
            committee.report([(t.settlement_id, Action.PREPARE, t.terms_hash()) for t in (a, b)])
        )
        results = client.apply_report(cert, [a, b])
        assert [r.settlement_id for r in results] == [a.settlement_id, b.settlement_id]
        assert results[0].instruction is not None
        assert results[0].instruction.state.value == "PREVALIDATED"
        assert results[1].error_code == "instruction_rejected"
        commit = committee.certify(
            committee.report([(a.settlement_id, Action.COMMIT, a.terms_hash())], round=2)
        )
        (done,) = client.apply_report(commit, [])
        assert done.instruction is not None and done.instruction.state.value == "EXECUTED"
        (again,) = client.apply_report(commit, [])  # the same key: the stored answer
        # ... stated at the time of the retry (as_of_ms), never earlier than the first.
        assert again.instruction is not None and again.instruction.as_of_ms is not None
        assert done.instruction.as_of_ms is not None
        assert again.instruction.as_of_ms >= done.instruction.as_of_ms
        assert again == dataclasses.replace(
            done,
            instruction=dataclasses.replace(done.instruction, as_of_ms=again.instruction.as_of_ms),
        )
        assert client.account("payee").balance == 10
