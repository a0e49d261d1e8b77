"""The real bank service (subprocess on 127.0.0.1) over HTTP: the client, the status
fallback, bad input and bad authentication, fault controls, and a crash after commit."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bank_adapter.authorization import certificate_to_json
from bank_adapter.client import BankApiError, BankUnavailableError, SyncBankClient
from bank_adapter.devcommittee import DevCommittee
from bank_adapter.ledger import InstructionState, reconcile
from bank_adapter.openapi import openapi_document
from bank_adapter.process import BankProcess
from bank_adapter.signing import new_nonce, sign_request
from bank_adapter.sqlite_storage import SqliteStorage
from consensus.report import Action

from .conftest import terms

SECRET = secrets.token_bytes(32)


@pytest.fixture(scope="module")
def bank(
    committee: DevCommittee, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BankProcess]:
    process = BankProcess(
        tmp_path_factory.mktemp("bank"),
        committee,
        clients={"node-0": SECRET, "node-1": secrets.token_bytes(32)},
        accounts=[("alice", "EUR", 1_000_000), ("bob", "EUR", 0), ("carol", "USD", 500)],
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def client(bank: BankProcess) -> Iterator[SyncBankClient]:
    with SyncBankClient(
        bank.url, "node-0", SECRET, backoff_base_s=0.02, backoff_cap_s=0.3, max_attempts=8
    ) as c:
        yield c


def admin(
    bank: BankProcess, method: str, path: str, body: Any = None, token: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bank.admin_token if token is None else token}"}
    return httpx.request(method, bank.url + path, json=body, headers=headers, timeout=10)


def signed_post(
    bank: BankProcess,
    path: str,
    body: bytes,
    *,
    key: str | None = "k",
    secret: bytes = SECRET,
    nonce: str | None = None,
    client_id: str = "node-0",
) -> httpx.Response:
    headers = sign_request(
        client_id,
        secret,
        "POST",
        path,
        body,
        timestamp=int(time.time()),
        nonce=nonce or new_nonce(),
        idempotency_key=key,
    )
    headers["Content-Type"] = "application/json"
    return httpx.post(bank.url + path, content=body, headers=headers, timeout=10)


def snapshot(bank: BankProcess) -> Any:
    storage = SqliteStorage(bank.db)
    try:
        return storage.snapshot()
    finally:
        storage.close()


def test_prevalidate_execute_status_and_accounts(
    bank: BankProcess, client: SyncBankClient, committee: DevCommittee
) -> None:
    t = terms(amount=250)
    prep = committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
    assert client.status(t.settlement_id) is None
    assert client.prevalidate(t, prep).state is InstructionState.PREVALIDATED
    status = client.status(t.settlement_id)
    assert (
        status is not None
        and status.state is InstructionState.PREVALIDATED
        and status.amount == 250
    )
    bob_before = client.account("bob").balance
    commit = committee.certificate(t.settlement_id, Action.COMMIT, t.terms_hash())
    assert client.execute(t.settlement_id, commit).state is InstructionState.EXECUTED
    assert client.account("bob").balance == bob_before + 250
    # Another node transmits the same COMMIT: a duplicate, no second payment.
    with SyncBankClient(bank.url, "node-1", bank.clients["node-1"]) as other:
        again = other.execute(t.settlement_id, commit)
    assert again.duplicate and client.account("bob").balance == bob_before + 250
    with pytest.raises(BankApiError) as err:
        client.account("nobody")
    assert err.value.status == 404
    assert admin(bank, "GET", "/admin/reconcile").json()["ok"] is True


def test_admin_instructions_since_a_seq_gives_what_changed(
    bank: BankProcess, client: SyncBankClient, committee: DevCommittee
) -> None:
    def read(since: int | None = None) -> Any:
        answer = admin(
            bank, "GET", "/admin/instructions" + ("" if since is None else f"?since={since}")
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    start = read()["seq"]
    first, second = terms(amount=10), terms(amount=20)
    for t in (first, second):
        prep = committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
        client.prevalidate(t, prep)
    held = read(start)
    assert held["instructions"] == {
        "0x" + first.settlement_id.hex(): "PREVALIDATED",
        "0x" + second.settlement_id.hex(): "PREVALIDATED",
    }
    assert "held" not in held and held["seq"] == start + 2
    commit = committee.certificate(first.settlement_id, Action.COMMIT, first.terms_hash())
    client.execute(first.settlement_id, commit)
    after = read(held["seq"])  # only the one that changed since
    assert after["instructions"] == {"0x" + first.settlement_id.hex(): "EXECUTED"}
    assert read(after["seq"]) == {"instructions": {}, "seq": after["seq"]}
    full = read()
    assert full["seq"] == after["seq"] and "0x" + second.settlement_id.hex() in full["held"]
    for bad in ("-1", "x", "1.5", str(2**63)):
        answer = admin(bank, "GET", f"/admin/instructions?since={bad}")
        assert answer.status_code == 400 and "since" in answer.json()["error"]["message"], bad


def test_openapi_document_is_served_and_covers_every_route(bank: BankProcess) -> None:
    doc = httpx.get(bank.url + "/openapi.json").json()
    assert doc == json.loads(json.dumps(openapi_document()))
    from aiohttp import web
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from bank_adapter.server import BankServer, ServerConfig
    from bank_adapter.service import BankService
    from bank_adapter.storage import MemoryStorage

    app = BankServer(
        BankService(MemoryStorage(), bank.committee.config),
        ServerConfig(admin_token="x" * 16),
        Ed25519PrivateKey.generate(),
    ).app
    routes = {
        (r.method.lower(), r.resource.canonical.replace("{sid}", "{settlement_id}"))  # type: ignore[union-attr]
        for r in app.router.routes()
        if r.method != "HEAD"
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
    assert isinstance(app, web.Application)


def test_bad_requests_get_4xx_with_one_line_errors_and_change_nothing(
    bank: BankProcess, committee: DevCommittee
) -> None:
    t = terms(payer="alice", payee="carol")  # carol is a USD account
    prep = committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
    good = {
        "settlement_id": "0x" + t.settlement_id.hex(),
        "payer_account": t.payer_account,
        "payee_account": t.payee_account,
        "amount": t.amount,
        "currency": t.currency,
        "deadline": t.deadline,
        "certificate": certificate_to_json(prep),
    }
    before = snapshot(bank)
    cases: list[tuple[str, httpx.Response, int, str]] = [
        (
            "malformed json",
            signed_post(bank, "/v1/instructions", b'{"amount": 1', key="a"),
            400,
            "invalid_json",
        ),
        (
            "wrong type",
            signed_post(
                bank, "/v1/instructions", json.dumps({**good, "amount": "1"}).encode(), key="b"
            ),
            400,
            "invalid_amount",
        ),
        (
            "negative",
            signed_post(
                bank, "/v1/instructions", json.dumps({**good, "amount": -1}).encode(), key="c"
            ),
            400,
            "invalid_amount",
        ),
        (
            "zero",
            signed_post(
                bank, "/v1/instructions", json.dumps({**good, "amount": 0}).encode(), key="d"
            ),
            400,
            "invalid_amount",
        ),
        (
            "huge",
            signed_post(
                bank, "/v1/instructions", json.dumps({**good, "amount": 2**64}).encode(), key="e"
            ),
            400,
            "invalid_amount",
        ),
        (
            "missing certificate",
            signed_post(
                bank,
                "/v1/instructions",
                json.dumps({k: v for k, v in good.items() if k != "certificate"}).encode(),
                key="f",
            ),
            400,
            "missing_field",
        ),
        (
            "forged certificate",
            signed_post(
                bank,
                "/v1/instructions",
                json.dumps(
                    {**good, "certificate": {**good["certificate"], "signers": "0xb"}}
                ).encode(),
                key="g",
            ),
            403,
            "certificate_invalid",
        ),
        (
            "no idempotency key",
            signed_post(bank, "/v1/instructions", json.dumps(good).encode(), key=None),
            400,
            "missing_idempotency_key",
        ),
        (
            "bad client signature",
            signed_post(bank, "/v1/instructions", json.dumps(good).encode(), secret=b"x" * 32),
            401,
            "unauthenticated",
        ),
        (
            "unknown client",
            signed_post(bank, "/v1/instructions", json.dumps(good).encode(), client_id="mallory"),
            401,
            "unauthenticated",
        ),
        ("unsigned", httpx.post(bank.url + "/v1/instructions", json=good), 401, "unauthenticated"),
        (
            "too large",
            signed_post(bank, "/v1/instructions", b"{" + b" " * 70_000 + b"}", key="h"),
            413,
            "body_too_large",
        ),
        ("no route", signed_post(bank, "/v1/nothing", b"{}"), 404, "not_found"),
        (
            "execute unknown",
            signed_post(
                bank,
                f"/v1/instructions/0x{t.settlement_id.hex()}/execute",
                json.dumps(
                    {
                        "certificate": certificate_to_json(
                            committee.certificate(t.settlement_id, Action.COMMIT, t.terms_hash())
                        )
                    }
                ).encode(),
                key="i",
            ),
            404,
            "unknown_instruction",
        ),
        (
            "bad settlement in path",
            signed_post(
                bank,
                "/v1/instructions/0xzz/execute",
                json.dumps({"certificate": good["certificate"]}).encode(),
                key="j",
            ),
            400,
            "invalid_field",
        ),
    ]
    nonce = new_nonce()
    first = signed_post(bank, "/v1/instructions", b"[]", key="n1", nonce=nonce)
    cases.append(
        (
            "replayed nonce",
            signed_post(bank, "/v1/instructions", b"[]", key="n1", nonce=nonce),
            401,
            "unauthenticated",
        )
    )
    assert first.status_code == 400
    for name, response, status, code in cases:
        assert response.status_code == status, (name, response.text)
        error = response.json()["error"]
        assert error["code"] == code, name
        assert error["message"] and "\n" not in error["message"], name
    assert snapshot(bank) == before
    # The wrong currency is a business rejection: 422, recorded as REJECTED, no money moved.
    rejected = signed_post(bank, "/v1/instructions", json.dumps(good).encode(), key="cur")
    assert rejected.status_code == 422
    assert rejected.json()["instruction"]["reject_reason"] == "currency_mismatch"
    after = snapshot(bank)
    assert (
        after.accounts == before.accounts
        and after.journal == before.journal
        and after.holds == before.holds
    )


def test_admin_api_needs_the_token(bank: BankProcess) -> None:
    assert admin(bank, "GET", "/admin/faults", token="wrong-token-123456").status_code == 401
    assert admin(bank, "PUT", "/admin/faults", {"error_rate": 2}).status_code == 400
    assert admin(bank, "PUT", "/admin/faults", {"no_such_fault": 1}).status_code == 400


def test_admin_api_is_off_without_a_token(committee: DevCommittee, tmp_path: Path) -> None:
    with BankProcess(tmp_path, committee, admin_token="") as quiet:
        response = httpx.get(
            quiet.url + "/admin/faults", headers={"Authorization": "Bearer guess-the-token-000"}
        )
        assert response.status_code == 404


def test_injected_errors_after_commit_never_duplicate_a_payment(
    bank: BankProcess, client: SyncBankClient, committee: DevCommittee
) -> None:
    assert (
        admin(
            bank, "PUT", "/admin/faults", {"error_rate": 0.4, "error_phase": "after", "seed": 7}
        ).status_code
        == 200
    )
    try:
        bob_before = client.account("bob").balance
        paid = 0
        for _ in range(6):
            t = terms(amount=10)
            client.prevalidate(
                t, committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
            )
            client.execute(
                t.settlement_id,
                committee.certificate(t.settlement_id, Action.COMMIT, t.terms_hash()),
            )
            paid += 10
        assert client.client.retries > 0  # the fault did fire
    finally:
        admin(bank, "PUT", "/admin/faults", {})
    assert client.account("bob").balance == bob_before + paid
    assert reconcile(snapshot(bank)) == []


def test_outage_window_and_latency_then_recovery(
    bank: BankProcess, client: SyncBankClient, committee: DevCommittee
) -> None:
    now = time.time()
    admin(
        bank,
        "PUT",
        "/admin/faults",
        {
            "outage_start_s": now - 1,
            "outage_end_s": now + 0.6,
            "latency_ms": 20,
            "latency_jitter_ms": 10,
        },
    )
    try:
        t = terms(amount=5)
        response = signed_post(bank, "/v1/instructions", b"{}", key="outage")
        assert response.status_code == 503 and response.json()["error"]["code"] == "bank_outage"
        # The client backs off through the outage and gets through afterwards.
        assert (
            client.prevalidate(
                t, committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
            ).state
            is InstructionState.PREVALIDATED
        )
    finally:
        admin(bank, "PUT", "/admin/faults", {})
    with SyncBankClient(
        bank.url, "node-0", SECRET, max_attempts=2, backoff_base_s=0.01
    ) as impatient:
        admin(bank, "PUT", "/admin/faults", {"error_rate": 1.0})
        try:
            with pytest.raises(BankUnavailableError):
                impatient.status(t.settlement_id)
        finally:
            admin(bank, "PUT", "/admin/faults", {})


def test_crash_right_after_commit_then_retry_gets_the_first_answer(
    committee: DevCommittee, tmp_path: Path
) -> None:
    secret = secrets.token_bytes(32)
    process = BankProcess(
        tmp_path,
        committee,
        clients={"node-0": secret},
        accounts=[("alice", "EUR", 100), ("bob", "EUR", 0)],
    )
    process.start()
    try:
        t = terms(amount=60)
        with SyncBankClient(
            process.url, "node-0", secret, max_attempts=2, backoff_base_s=0.01
        ) as c:
            c.prevalidate(t, committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash()))
            admin(process, "PUT", "/admin/faults", {"crash_after_commits": 1})
            commit = committee.certificate(t.settlement_id, Action.COMMIT, t.terms_hash())
            with pytest.raises(BankUnavailableError):
                c.execute(t.settlement_id, commit)
            process.kill()  # reap it; it already killed itself
            process.start()
            result = c.execute(t.settlement_id, commit)
        assert result.state is InstructionState.EXECUTED and not result.duplicate
        snap = snapshot(process)
        assert reconcile(snap) == []
        assert {a.account_id: a.balance for a in snap.accounts if not a.internal} == {
            "alice": 40,
            "bob": 60,
        }
    finally:
        process.stop()
