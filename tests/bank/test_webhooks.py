"""Signed callbacks from the real bank to a real local receiver: retries with backoff when
the receiver fails, deduplication of duplicate deliveries, out-of-order delivery that
never moves a settlement backwards, and at-least-once delivery across a bank crash."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bank_adapter.client import (
    CallbackEvent,
    SyncBankClient,
    WebhookReceiver,
    WebhookSignatureError,
)
from bank_adapter.devcommittee import DevCommittee
from bank_adapter.ledger import (
    Event,
    Instruction,
    InstructionState,
    canonical_json,
    instruction_to_json,
)
from bank_adapter.process import BankProcess
from bank_adapter.signing import WEBHOOK_EVENT_HEADER, WEBHOOK_SIGNATURE_HEADER, sign_webhook
from bank_adapter.storage import Delivery
from bank_adapter.webhooks import batch_body, by_url
from consensus.report import Action

from .conftest import terms


class Receiver:
    """A real HTTP endpoint on 127.0.0.1 that answers 500 to the first ``fail_first``
    deliveries, then checks each callback with WebhookReceiver."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.attempts = 0
        self.accepted: list[str] = []  # event ids, in arrival order, including duplicates
        self.events: list[CallbackEvent] = []  # the new events, in arrival order
        self.lock = threading.Lock()
        self.checker: WebhookReceiver | None = None
        self.rejected = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.attempts += 1
                    if receiver.attempts <= receiver.fail_first:
                        status = 500
                    else:
                        assert receiver.checker is not None
                        try:
                            new = receiver.checker.receive_all(
                                dict(self.headers), body, time.time()
                            )
                            status = 200
                            # One callback or a batch of them: each event id counts.
                            value = json.loads(body)
                            ids = {e.event_id for e in new}
                            for item in value if isinstance(value, list) else [value]:
                                event_id = item["event_id"]
                                receiver.accepted.append(
                                    event_id if event_id in ids else "duplicate"
                                )
                            receiver.events.extend(new)
                        except WebhookSignatureError:
                            receiver.rejected += 1
                            status = 401
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callbacks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Bounded wait for something the bank does in the background (no time asserted)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def start_bank(
    committee: DevCommittee, tmp_path: Path, receiver: Receiver, secret: bytes
) -> BankProcess:
    bank = BankProcess(
        tmp_path,
        committee,
        clients={"node-0": secret},
        accounts=[("alice", "EUR", 1000), ("bob", "EUR", 0)],
        webhooks=[receiver.url],
        extra_args=[
            "--webhook-retry-base-ms",
            "30",
            "--webhook-retry-cap-ms",
            "200",
            "--webhook-poll-ms",
            "20",
        ],
    )
    bank.start()
    pub = httpx.get(bank.url + "/v1/webhook-key").json()["ed25519_public_key"]
    receiver.checker = WebhookReceiver(bytes.fromhex(pub[2:]))
    return bank


def pay(client: SyncBankClient, committee: DevCommittee, commit: bool = True) -> bytes:
    t = terms(amount=10)
    client.prevalidate(t, committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash()))
    action = Action.COMMIT if commit else Action.ABORT
    op = client.execute if commit else client.cancel
    op(t.settlement_id, committee.certificate(t.settlement_id, action, t.terms_hash()))
    return t.settlement_id


def test_failed_deliveries_are_retried_until_the_receiver_accepts(
    committee: DevCommittee, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.fail_first = 4
    secret = secrets.token_bytes(32)
    bank = start_bank(committee, tmp_path, receiver, secret)
    try:
        with SyncBankClient(bank.url, "node-0", secret) as client:
            sid = pay(client, committee)
        wait_for(lambda: len(receiver.accepted) >= 2)
        assert receiver.attempts >= 4 + 1  # the two may share a POST after the failures
        assert sorted(receiver.accepted) == sorted(
            [f"evt_{sid.hex()}_prevalidated", f"evt_{sid.hex()}_executed"]
        )
        assert (
            receiver.checker is not None
            and receiver.checker.states[sid] is InstructionState.EXECUTED
        )
        assert receiver.rejected == 0
    finally:
        bank.stop()


def test_duplicate_and_out_of_order_callbacks_are_absorbed(
    committee: DevCommittee, tmp_path: Path, receiver: Receiver
) -> None:
    secret = secrets.token_bytes(32)
    bank = start_bank(committee, tmp_path, receiver, secret)
    try:
        faults = {"duplicate_callback_rate": 1.0, "reorder_callback_window_ms": 150, "seed": 3}
        response = httpx.put(
            bank.url + "/admin/faults",
            json=faults,
            headers={"Authorization": f"Bearer {bank.admin_token}"},
        )
        assert response.status_code == 200
        with SyncBankClient(bank.url, "node-0", secret) as client:
            sids = [pay(client, committee, commit=i % 2 == 0) for i in range(12)]
        wait_for(lambda: len([e for e in receiver.accepted if e != "duplicate"]) >= 24)
        wait_for(lambda: receiver.accepted.count("duplicate") >= 24)
        checker = receiver.checker
        assert checker is not None and checker.duplicates >= 24
        for i, sid in enumerate(sids):
            final = InstructionState.EXECUTED if i % 2 == 0 else InstructionState.CANCELLED
            assert checker.states[sid] is final
        firsts = [e for e in receiver.accepted if e != "duplicate"]
        assert len(firsts) == len(set(firsts)) == 24
        # The reordering fault did deliver some outcome before its prevalidation (with 12
        # settlements and independent hold-backs, all in order has probability 2**-12).
        assert any(
            firsts.index(f"evt_{sid.hex()}_prevalidated")
            > max(
                firsts.index(f"evt_{sid.hex()}_{s}")
                for s in ("executed", "cancelled")
                if f"evt_{sid.hex()}_{s}" in firsts
            )
            for sid in sids
        )
    finally:
        bank.stop()


def test_callbacks_survive_a_bank_crash(
    committee: DevCommittee, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.fail_first = 10**9  # the receiver is down
    secret = secrets.token_bytes(32)
    bank = start_bank(committee, tmp_path, receiver, secret)
    try:
        with SyncBankClient(bank.url, "node-0", secret) as client:
            sid = pay(client, committee)
        wait_for(lambda: receiver.attempts >= 2)
        bank.kill()
        receiver.fail_first = 0  # the receiver comes back while the bank is down
        bank.start()
        wait_for(lambda: len(receiver.accepted) >= 2)
        assert (
            receiver.checker is not None
            and receiver.checker.states[sid] is InstructionState.EXECUTED
        )
    finally:
        bank.stop()


def test_receiver_refuses_forged_callbacks(
    committee: DevCommittee, tmp_path: Path, receiver: Receiver
) -> None:
    checker = WebhookReceiver(secrets.token_bytes(32))
    with pytest.raises(WebhookSignatureError):
        checker.receive(
            {"Dvpsim-Bank-Signature": f"t={int(time.time())},ed25519={'00' * 64}"},
            b"{}",
            time.time(),
        )
    with pytest.raises(WebhookSignatureError):
        checker.receive({}, b"{}", time.time())


def _delivery(seq: int, url: str, state: InstructionState) -> Delivery:
    sid = seq.to_bytes(32, "big")
    instruction = Instruction(sid, None, b"\x01" * 32, state, None, 1, 2, None, None)
    event_id = f"evt_{sid.hex()}_{state.lower()}"
    payload = canonical_json(
        {
            "event_id": event_id,
            "type": "instruction." + state.lower(),
            "created_ms": 2,
            "instruction": instruction_to_json(instruction),
        }
    )
    return Delivery(seq, url, Event(event_id, "x", sid, payload, 2), 0, 0, None, None)


def test_callbacks_due_together_for_one_node_go_in_one_signed_batch() -> None:
    """Deliveries due at one dispatch are grouped per URL; a group of several is one JSON
    array, signed once; the receiver takes each event once and refuses what a batch must
    not be (empty, or named by a single event id header)."""
    ready = [
        _delivery(1, "http://a", InstructionState.PREVALIDATED),
        _delivery(2, "http://b", InstructionState.PREVALIDATED),
        _delivery(3, "http://a", InstructionState.EXECUTED),
    ]
    groups = by_url(ready)
    assert [[d.seq for d in g] for g in groups] == [[1, 3], [2]]
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    now_ms = int(time.time() * 1000)
    body = batch_body(groups[0], now_ms)
    assert isinstance(json.loads(body), list)
    assert isinstance(json.loads(batch_body(groups[1], now_ms)), dict)  # one stays an object
    headers = {WEBHOOK_SIGNATURE_HEADER: sign_webhook(key, body, now_ms // 1000)}
    receiver = WebhookReceiver(public)
    taken = receiver.receive_all(headers, body, time.time())
    assert [e.event_id for e in taken] == [d.event.event_id for d in groups[0]]
    assert all(e.as_of_ms == now_ms for e in taken)
    assert receiver.receive_all(headers, body, time.time()) == []  # again: duplicates
    assert receiver.duplicates == 2
    empty = b"[]"
    for bad_headers, bad_body in (
        ({WEBHOOK_SIGNATURE_HEADER: sign_webhook(key, empty, now_ms // 1000)}, empty),
        ({**headers, WEBHOOK_EVENT_HEADER: groups[0][0].event.event_id}, body),
        ({WEBHOOK_SIGNATURE_HEADER: sign_webhook(key, body, now_ms // 1000)}, body[:-1] + b",1]"),
    ):
        with pytest.raises(WebhookSignatureError):
            receiver.receive_all(bad_headers, bad_body, time.time())
