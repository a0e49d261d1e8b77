"""The bank states its own clock (``as_of_ms``, unix ms) in status answers, report answers
and callbacks: nodes judge a bank leg EXPIRED by it, not by their own wall clock.

The service is given ``now_ms`` and must state exactly that; a retried report states the
time of the retry while its inner answers stay the stored first ones; each callback
delivery states the time it was sent, inside the signed body. Over HTTP the real bank runs
as a subprocess on the same machine, so its time falls between two readings of ours."""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bank_adapter import ledger
from bank_adapter.authorization import certificate_to_json
from bank_adapter.client import (
    CallbackEvent,
    SyncBankClient,
    WebhookReceiver,
    WebhookSignatureError,
)
from bank_adapter.devcommittee import DevCommittee
from bank_adapter.ledger import InstructionState, canonical_json
from bank_adapter.process import BankProcess
from bank_adapter.service import BankService
from bank_adapter.signing import (
    WEBHOOK_EVENT_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
    new_nonce,
    sign_request,
    sign_webhook,
)
from bank_adapter.storage import MemoryStorage
from bank_adapter.webhooks import callback_body
from consensus.report import Action

from .conftest import NOW_MS, terms
from .test_reports import post_report
from .test_service import prepared
from .test_webhooks import Receiver, start_bank, wait_for


@pytest.fixture
def service(committee: DevCommittee) -> Iterator[BankService]:
    storage = MemoryStorage()
    for account_id, balance in (("alice", 1000), ("bob", 0)):
        with storage.transaction() as txn:
            txn.apply(ledger.open_account(txn, account_id, "EUR", balance, NOW_MS))
    yield BankService(storage, committee.config)
    storage.close()


# ------------------------------------------------------------------ the service


def test_status_states_the_bank_clock_for_known_and_unknown_settlements(
    service: BankService, committee: DevCommittee
) -> None:
    t = prepared(service, committee)
    known = service.status("0x" + t.settlement_id.hex(), NOW_MS + 5)
    assert known.status == 200
    assert known.json()["as_of_ms"] == NOW_MS + 5
    assert known.json()["instruction"]["state"] == "PREVALIDATED"
    unknown_sid = "0x" + "11" * 32
    unknown = service.status(unknown_sid, NOW_MS + 6)
    assert unknown.status == 404
    assert unknown.json() == {
        "error": {
            "code": "unknown_instruction",
            "message": f"no instruction for settlement {unknown_sid}",
        },
        "as_of_ms": NOW_MS + 6,
    }
    bad = service.status("0xzz", NOW_MS + 7)
    assert bad.status == 400 and bad.json()["as_of_ms"] == NOW_MS + 7


def test_a_report_states_the_bank_clock_and_a_retry_states_the_time_of_the_retry(
    service: BankService, committee: DevCommittee
) -> None:
    t = terms()
    cert = committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
    first = post_report(service, cert, [t], key="same", now_ms=NOW_MS)
    assert first.status == 200 and first.committed
    assert first.json()["as_of_ms"] == NOW_MS
    before = service.storage.snapshot()
    again = post_report(service, cert, [t], key="same", now_ms=NOW_MS + 60_000)
    assert again.status == 200 and not again.committed
    assert again.json()["as_of_ms"] == NOW_MS + 60_000
    # The inner answers are the stored first answers, exactly as first given.
    assert again.json()["results"] == first.json()["results"]
    assert "as_of_ms" not in again.json()["results"][0]["answer"]
    assert service.storage.snapshot() == before


def test_a_refused_report_states_the_bank_clock(
    service: BankService, committee: DevCommittee
) -> None:
    t = terms()
    cert = certificate_to_json(
        committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
    )
    forged = {**cert, "signature": "0x" + "00" * 96}
    reply = post_report(service, forged, [t], now_ms=NOW_MS + 9)
    assert 400 <= reply.status < 500
    assert set(reply.json()) == {"error", "as_of_ms"} and reply.json()["as_of_ms"] == NOW_MS + 9


def test_the_stated_clock_is_the_one_the_bank_expires_by(
    service: BankService, committee: DevCommittee
) -> None:
    """A PREPARE after the deadline by the bank's clock is REJECTED as expired, and the
    answer states a time past the deadline: what the bank does and what it says agree."""
    late = terms(deadline=NOW_MS // 1000 - 1)
    cert = committee.certificate(late.settlement_id, Action.PREPARE, late.terms_hash())
    answer = post_report(service, cert, [late]).json()
    assert answer["results"][0]["answer"]["instruction"]["reject_reason"] == "expired"
    assert answer["as_of_ms"] > late.deadline * 1000


# ------------------------------------------------------------------ callbacks, no network


def test_a_callback_body_is_the_stored_event_with_the_send_time() -> None:
    payload = canonical_json({"event_id": "evt_x", "type": "t", "created_ms": 1, "instruction": {}})
    body = callback_body(payload, NOW_MS)
    assert json.loads(body) == {**json.loads(payload), "as_of_ms": NOW_MS}
    assert body.decode() == canonical_json(json.loads(body))  # the one JSON form


def _signed(
    key: Ed25519PrivateKey, value: dict[str, Any], now_s: int
) -> tuple[dict[str, str], bytes]:
    body = canonical_json(value).encode()
    headers = {
        WEBHOOK_EVENT_HEADER: value["event_id"],
        WEBHOOK_SIGNATURE_HEADER: sign_webhook(key, body, now_s),
    }
    return headers, body


def test_the_receiver_reads_the_stated_time_and_keeps_the_latest(
    service: BankService, committee: DevCommittee
) -> None:
    prepared(service, committee)
    (stored,) = service.storage.snapshot().events
    key = Ed25519PrivateKey.generate()
    receiver = WebhookReceiver(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    now_s = NOW_MS // 1000

    first = json.loads(callback_body(stored.event.payload, NOW_MS + 40))
    event = receiver.receive(*_signed(key, first, now_s), now_s)
    assert isinstance(event, CallbackEvent)
    assert event.as_of_ms == NOW_MS + 40 and event.instruction.as_of_ms == NOW_MS + 40
    assert event.created_ms == NOW_MS and event.instruction.state is InstructionState.PREVALIDATED
    # A duplicate sent later is dropped, but the later time it states is kept.
    again = json.loads(callback_body(stored.event.payload, NOW_MS + 900))
    assert receiver.receive(*_signed(key, again, now_s), now_s) is None
    assert receiver.latest_as_of_ms == NOW_MS + 900
    # An older duplicate does not move the bank's time back.
    older = json.loads(callback_body(stored.event.payload, NOW_MS + 1))
    assert receiver.receive(*_signed(key, older, now_s), now_s) is None
    assert receiver.latest_as_of_ms == NOW_MS + 900
    # A body without the field (an older bank) reads as "not stated".
    bare = {**json.loads(stored.event.payload), "event_id": "evt_other"}
    plain = receiver.receive(*_signed(key, bare, now_s), now_s)
    assert plain is not None and plain.as_of_ms is None and plain.instruction.as_of_ms is None
    # A stated time that is not an integer of ms is not a bank event.
    for wrong in ("12", 1.5, True, -1):
        odd = {**bare, "event_id": f"evt_{wrong!r}", "as_of_ms": wrong}
        with pytest.raises(WebhookSignatureError):
            receiver.receive(*_signed(key, odd, now_s), now_s)


# ------------------------------------------------------------------ the real bank over HTTP

SECRET = secrets.token_bytes(32)


def wall_ms() -> int:
    return int(time.time() * 1000)


def signed_get(bank: BankProcess, path: str) -> httpx.Response:
    headers = sign_request(
        "node-0", SECRET, "GET", path, b"", timestamp=int(time.time()), nonce=new_nonce()
    )
    return httpx.get(bank.url + path, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def bank(
    committee: DevCommittee, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BankProcess]:
    process = BankProcess(
        tmp_path_factory.mktemp("bank"),
        committee,
        clients={"node-0": SECRET},
        accounts=[("alice", "EUR", 1000), ("bob", "EUR", 0)],
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def client(bank: BankProcess) -> Iterator[SyncBankClient]:
    with SyncBankClient(bank.url, "node-0", SECRET) as c:
        yield c


def test_status_over_http_states_the_bank_clock(
    bank: BankProcess, client: SyncBankClient, committee: DevCommittee
) -> None:
    t = terms(amount=10)
    before = wall_ms()
    unknown = client.status_reply(t.settlement_id)
    after = wall_ms()
    assert unknown.instruction is None
    assert unknown.as_of_ms is not None and before <= unknown.as_of_ms <= after
    assert client.status(t.settlement_id) is None  # status() is what it was
    raw = signed_get(bank, f"/v1/instructions/0x{t.settlement_id.hex()}")
    assert raw.status_code == 404 and set(raw.json()) == {"error", "as_of_ms"}

    client.prevalidate(t, committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash()))
    before = wall_ms()
    known = client.status_reply(t.settlement_id)
    after = wall_ms()
    assert known.instruction is not None
    assert known.instruction.state is InstructionState.PREVALIDATED
    assert known.as_of_ms is not None and before <= known.as_of_ms <= after
    assert known.instruction.as_of_ms == known.as_of_ms
    plain = client.status(t.settlement_id)
    assert plain is not None and plain.state is InstructionState.PREVALIDATED


def test_a_report_over_http_states_the_bank_clock_on_every_retry(
    client: SyncBankClient, committee: DevCommittee
) -> None:
    t = terms(amount=10)
    cert = committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
    before = wall_ms()
    first = client.apply_report_reply(cert, [t])
    between = wall_ms()
    again = client.apply_report_reply(cert, [t])  # the same key: the stored answers
    after = wall_ms()
    assert first.as_of_ms is not None and before <= first.as_of_ms <= between
    assert again.as_of_ms is not None and between <= again.as_of_ms <= after
    (done,), (replayed,) = first.results, again.results
    assert done.instruction is not None and done.instruction.as_of_ms == first.as_of_ms
    assert replayed.instruction is not None and replayed.instruction.as_of_ms == again.as_of_ms
    assert replayed == dataclasses.replace(
        done, instruction=dataclasses.replace(done.instruction, as_of_ms=again.as_of_ms)
    )
    # apply_report is what it was: the results, each status with the answer's time.
    (plain,) = client.apply_report(cert, [t])
    assert plain.instruction is not None and plain.instruction.as_of_ms is not None
    assert plain.instruction.as_of_ms >= after


def test_each_callback_delivery_states_when_it_was_sent(
    committee: DevCommittee, tmp_path: Path
) -> None:
    receiver = Receiver(fail_first=1)  # the first delivery attempt fails, then a retry
    try:
        bank = start_bank(committee, tmp_path, receiver, SECRET)
        try:
            t = terms(amount=10)
            before = wall_ms()
            with SyncBankClient(bank.url, "node-0", SECRET) as client:
                client.prevalidate(
                    t, committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
                )
            wait_for(lambda: len(receiver.events) >= 1)
            after = wall_ms()
        finally:
            bank.stop()
    finally:
        receiver.close()
    (event,) = receiver.events
    assert event.instruction.settlement_id == t.settlement_id and receiver.attempts >= 2
    # The signed body the receiver checked carries the bank's time at sending ...
    assert event.as_of_ms is not None and before <= event.as_of_ms <= after
    assert event.instruction.as_of_ms == event.as_of_ms
    # ... not the time of the change: the first attempt failed, and the retry waits at
    # least half the 30 ms retry base after it.
    assert event.as_of_ms >= event.created_ms + 15
    latest = receiver.checker.latest_as_of_ms if receiver.checker is not None else None
    assert latest is not None and latest >= event.as_of_ms
