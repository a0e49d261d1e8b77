"""BankService with real BLS certificates: idempotency, bad input, forged and replayed
certificates. Every refused request must leave the ledger exactly as it was."""

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
from bank_adapter.authorization import (
    CertificateRejected,
    CommitteeFileError,
    VerificationCache,
    certificate_from_json,
    certificate_to_json,
    load_committee,
)
from bank_adapter.devcommittee import DevCommittee
from bank_adapter.server import request_hash
from bank_adapter.service import BankService
from bank_adapter.sqlite_storage import SqliteStorage
from bank_adapter.storage import MemoryStorage
from bank_adapter.terms import BANK_CHAIN_ID, MAX_AMOUNT, PaymentTerms
from consensus.report import Action, Certificate

from .conftest import NOW_MS, terms


@pytest.fixture(params=["memory", "sqlite"])
def service(
    request: pytest.FixtureRequest, committee: DevCommittee, tmp_path: Path
) -> Iterator[BankService]:
    storage: Any = (
        MemoryStorage() if request.param == "memory" else SqliteStorage(tmp_path / "l.db")
    )
    for account_id, currency, balance in (
        ("alice", "EUR", 1000),
        ("bob", "EUR", 0),
        ("usd", "USD", 50),
    ):
        with storage.transaction() as txn:
            txn.apply(ledger.open_account(txn, account_id, currency, balance, NOW_MS))
    yield BankService(storage, committee.config)
    storage.close()


def body_of(t: PaymentTerms, cert: Certificate | dict[str, Any] | None, **override: Any) -> bytes:
    value: dict[str, Any] = {
        "settlement_id": "0x" + t.settlement_id.hex(),
        "payer_account": t.payer_account,
        "payee_account": t.payee_account,
        "amount": t.amount,
        "currency": t.currency,
        "deadline": t.deadline,
        "certificate": certificate_to_json(cert) if isinstance(cert, Certificate) else cert,
    }
    value.update(override)
    return json.dumps(value).encode()


def post_prevalidate(svc: BankService, body: bytes, key: str = "k1", client: str = "node-0") -> Any:
    return svc.prevalidate(
        client, key, request_hash("POST", "/v1/instructions", body), body, NOW_MS
    )


def post_finish(
    svc: BankService,
    op: str,
    sid: bytes,
    cert: Certificate | dict[str, Any],
    key: str = "k2",
    client: str = "node-0",
) -> Any:
    path = f"/v1/instructions/0x{sid.hex()}/{op}"
    payload = certificate_to_json(cert) if isinstance(cert, Certificate) else cert
    body = json.dumps({"certificate": payload}).encode()
    rule = svc.execute if op == "execute" else svc.cancel
    return rule(client, key, request_hash("POST", path, body), "0x" + sid.hex(), body, NOW_MS)


def prepared(svc: BankService, committee: DevCommittee, amount: int = 100) -> PaymentTerms:
    t = terms(amount=amount)
    reply = post_prevalidate(
        svc,
        body_of(t, committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())),
        key=secrets.token_hex(8),
    )
    assert reply.status == 201, reply.body
    return t


def test_happy_path_and_idempotent_retry_returns_the_first_answer(
    service: BankService, committee: DevCommittee
) -> None:
    t = prepared(service, committee)
    commit = committee.certificate(t.settlement_id, Action.COMMIT, t.terms_hash())
    first = post_finish(service, "execute", t.settlement_id, commit, key="exec-1")
    assert first.status == 200 and first.json()["instruction"]["state"] == "EXECUTED"
    snap = service.storage.snapshot()
    again = post_finish(service, "execute", t.settlement_id, commit, key="exec-1")
    assert again.replayed and again.body == first.body
    # Another transmitter (another client, key) with the same certificate: a duplicate.
    other = post_finish(service, "execute", t.settlement_id, commit, key="exec-9", client="node-1")
    assert other.status == 200 and other.json()["duplicate"] is True
    money = lambda s: [(a.account_id, a.balance, a.held) for a in s.accounts]  # noqa: E731
    assert money(service.storage.snapshot()) == money(snap)
    assert [a for a in service.storage.snapshot().accounts if a.account_id == "bob"][
        0
    ].balance == 100
    assert ledger.reconcile(service.storage.snapshot()) == []


def test_reused_idempotency_key_with_another_request_is_refused(
    service: BankService, committee: DevCommittee
) -> None:
    t = terms()
    cert = committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
    assert post_prevalidate(service, body_of(t, cert), key="same").status == 201
    before = service.storage.snapshot()
    t2 = terms()
    reply = post_prevalidate(
        service,
        body_of(t2, committee.certificate(t2.settlement_id, Action.PREPARE, t2.terms_hash())),
        key="same",
    )
    assert reply.status == 422 and reply.json()["error"]["code"] == "idempotency_key_reused"
    assert service.storage.snapshot() == before


def test_business_rejection_is_422_recorded_and_moves_no_money(
    service: BankService, committee: DevCommittee
) -> None:
    t = terms(amount=5000)
    cert = committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
    reply = post_prevalidate(service, body_of(t, cert))
    assert reply.status == 422
    answer = reply.json()
    assert answer["instruction"]["state"] == "REJECTED"
    assert answer["instruction"]["reject_reason"] == "insufficient_funds"
    assert answer["error"]["code"] == "instruction_rejected"
    alice = [a for a in service.storage.snapshot().accounts if a.account_id == "alice"][0]
    assert (alice.balance, alice.held) == (1000, 0)
    assert post_prevalidate(service, body_of(t, cert)).body == reply.body  # idempotent


def _bad_prevalidations(committee: DevCommittee) -> list[tuple[str, bytes, int, str]]:
    t = terms()
    good = committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
    gj = certificate_to_json(good)
    other_committee = DevCommittee.create(seed=b"some other committee")
    escrow_target = DevCommittee.create(chain_id=31337, verifier=b"\x11" * 20)
    # A certificate for the escrow contract: same keys, other config digest.
    escrow_cert = dataclasses.replace(
        escrow_target.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
    )
    flipped_sig = bytes.fromhex(gj["signature"][2:])
    flipped_sig = flipped_sig[:-1] + bytes([flipped_sig[-1] ^ 1])
    other_sig = committee.certificate(t.settlement_id, Action.PREPARE, bytes(32)).signature
    return [
        ("malformed json", b"{not json", 400, "invalid_json"),
        ("json array", b"[]", 400, "invalid_json"),
        (
            "NaN amount",
            body_of(t, good).replace(b'"amount": 100', b'"amount": NaN'),
            400,
            "invalid_json",
        ),
        ("duplicate key", body_of(t, good)[:-1] + b', "amount": 1}', 400, "invalid_json"),
        ("amount as string", body_of(t, good, amount="100"), 400, "invalid_amount"),
        ("amount as float", body_of(t, good, amount=100.0), 400, "invalid_amount"),
        ("amount bool", body_of(t, good, amount=True), 400, "invalid_amount"),
        ("zero amount", body_of(t, good, amount=0), 400, "invalid_amount"),
        ("negative amount", body_of(t, good, amount=-100), 400, "invalid_amount"),
        ("huge amount", body_of(t, good, amount=MAX_AMOUNT + 1), 400, "invalid_amount"),
        ("giant amount", body_of(t, good, amount=10**400), 400, "invalid_amount"),
        ("lowercase currency", body_of(t, good, currency="eur"), 400, "invalid_field"),
        ("bad settlement id", body_of(t, good, settlement_id="0x1234"), 400, "invalid_field"),
        ("deadline string", body_of(t, good, deadline="tomorrow"), 400, "invalid_field"),
        ("internal account", body_of(t, good, payer_account="@funding:EUR"), 400, "invalid_field"),
        ("same payer and payee", body_of(t, good, payee_account="alice"), 400, "invalid_field"),
        ("unknown field", body_of(t, good, memo="hi"), 400, "unknown_field"),
        (
            "missing certificate",
            json.dumps(
                {k: v for k, v in json.loads(body_of(t, good)).items() if k != "certificate"}
            ).encode(),
            400,
            "missing_field",
        ),
        ("null certificate", body_of(t, None), 400, "certificate_malformed"),
        (
            "certificate missing signature",
            body_of(t, {"report": gj["report"], "signers": gj["signers"]}),
            400,
            "certificate_malformed",
        ),
        ("certificate bad hex", body_of(t, {**gj, "report": "0xzz"}), 400, "certificate_malformed"),
        # One spelling only: what bytes.fromhex and int(x, 16) would quietly skip or take.
        *(
            (f"certificate {field} {how}", body_of(t, {**gj, field: spelled}), 400, code)
            for field, spelled, how in (
                ("report", gj["report"][:10] + " " + gj["report"][10:], "with a space"),
                ("report", gj["report"][:10] + "\n" + gj["report"][10:], "with a newline"),
                ("report", gj["report"] + "  ", "with trailing spaces"),
                ("signature", gj["signature"][:4] + " " + gj["signature"][4:], "with a space"),
                ("signers", "0x_" + gj["signers"][2:], "with an underscore"),
                ("signers", gj["signers"][:3] + "_" + gj["signers"][3:], "with an inner _"),
                ("signers", "0x+" + gj["signers"][2:], "with a plus sign"),
                ("signers", "0x-" + gj["signers"][2:], "with a minus sign"),
                ("signers", "0x " + gj["signers"][2:], "with a space"),
                ("signers", "0x0x" + gj["signers"][2:], "with a second 0x"),
                ("signers", "0x", "empty"),
            )
            for code in ("certificate_malformed",)
        ),
        (
            "certificate truncated report",
            body_of(t, {**gj, "report": gj["report"][:-2]}),
            400,
            "certificate_malformed",
        ),
        (
            "certificate short signature",
            body_of(t, {**gj, "signature": gj["signature"][:-2]}),
            400,
            "certificate_malformed",
        ),
        (
            "forged signature",
            body_of(t, {**gj, "signature": "0x" + flipped_sig.hex()}),
            403,
            "certificate_invalid",
        ),
        (
            "signature of another report",
            body_of(t, {**gj, "signature": "0x" + other_sig.hex()}),
            403,
            "certificate_invalid",
        ),
        (
            "too few signers",
            body_of(t, committee.certify(good.report, signers=[0, 1])),
            403,
            "certificate_invalid",
        ),
        ("signers bitmap lies", body_of(t, {**gj, "signers": "0xe"}), 403, "certificate_invalid"),
        (
            "signer bit out of range",
            body_of(t, {**gj, "signers": "0x17"}),
            403,
            "certificate_invalid",
        ),
        (
            "other committee",
            body_of(
                t, other_committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
            ),
            403,
            "certificate_invalid",
        ),
        ("certificate for the escrow chain", body_of(t, escrow_cert), 403, "certificate_invalid"),
        (
            "certificate for other terms",
            body_of(t, committee.certificate(t.settlement_id, Action.PREPARE, bytes(32))),
            403,
            "certificate_terms_mismatch",
        ),
        (
            "certificate for other settlement",
            body_of(
                t, committee.certificate(secrets.token_bytes(32), Action.PREPARE, t.terms_hash())
            ),
            403,
            "certificate_wrong_settlement",
        ),
        (
            "COMMIT certificate to prevalidate",
            body_of(t, committee.certificate(t.settlement_id, Action.COMMIT, t.terms_hash())),
            403,
            "certificate_wrong_action",
        ),
    ]


def test_bad_input_gets_a_clear_4xx_and_changes_nothing(
    service: BankService, committee: DevCommittee
) -> None:
    before = service.storage.snapshot()
    for name, body, status, code in _bad_prevalidations(committee):
        reply = post_prevalidate(service, body, key="k-" + name.replace(" ", "-"))
        answer = reply.json()
        assert (reply.status, answer["error"]["code"]) == (status, code), name
        assert answer["error"]["message"] and "\n" not in answer["error"]["message"], name
        assert service.storage.snapshot() == before, name


def test_replayed_certificate_on_execute_and_cancel(
    service: BankService, committee: DevCommittee
) -> None:
    """Replayed certificate: a decision (report hash, settlement id) already used by a
    request with another idempotency key, presented for a different operation."""
    t = terms()
    prepare = committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
    assert post_prevalidate(service, body_of(t, prepare), key="p").status == 201
    before = service.storage.snapshot()
    for op in ("execute", "cancel"):
        reply = post_finish(service, op, t.settlement_id, prepare, key=f"replay-{op}")
        assert reply.status == 409 and reply.json()["error"]["code"] == "certificate_replayed"
    assert service.storage.snapshot() == before
    # The ABORT of the same settlement from another round is fine; then the COMMIT is refused.
    abort = committee.certificate(t.settlement_id, Action.ABORT, t.terms_hash(), round=2)
    assert post_finish(service, "cancel", t.settlement_id, abort, key="c").status == 200
    commit = committee.certificate(t.settlement_id, Action.COMMIT, t.terms_hash(), round=3)
    reply = post_finish(service, "execute", t.settlement_id, commit, key="e")
    assert reply.status == 409 and reply.json()["error"]["code"] == "invalid_state"
    # The used ABORT presented to execute is a replay.
    reply = post_finish(service, "execute", t.settlement_id, abort, key="e2")
    assert reply.json()["error"]["code"] == "certificate_replayed"


def test_batched_report_authorizes_each_settlement_once(
    service: BankService, committee: DevCommittee
) -> None:
    batch = [terms(amount=10) for _ in range(5)]
    cert = committee.certify(
        committee.report([(t.settlement_id, Action.PREPARE, t.terms_hash()) for t in batch])
    )
    cache = service.cache
    misses_before = cache.misses
    for i, t in enumerate(batch):
        assert post_prevalidate(service, body_of(t, cert), key=f"b{i}").status == 201
    assert cache.misses == misses_before + 1  # one pairing check for the whole batch


def test_cache_never_admits_a_forged_signature_for_a_verified_report(
    committee: DevCommittee,
) -> None:
    storage = MemoryStorage()
    svc = BankService(storage, committee.config, VerificationCache(capacity=2))
    t = terms()
    good = committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
    assert (
        post_prevalidate(svc, body_of(t, good), key="a").status == 422
    )  # no accounts: rejected, verified
    forged = dataclasses.replace(
        good, signature=committee.certificate(t.settlement_id, Action.PREPARE, bytes(32)).signature
    )
    reply = post_prevalidate(svc, body_of(t, forged), key="b")
    assert reply.json()["error"]["code"] == "certificate_invalid"
    fewer = dataclasses.replace(good, signers=good.signers & ~1)
    assert (
        post_prevalidate(svc, body_of(t, fewer), key="c").json()["error"]["code"]
        == "certificate_invalid"
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_mutated_certificate_is_refused_without_change(
    committee: DevCommittee, data: st.DataObject
) -> None:
    storage = MemoryStorage()
    with storage.transaction() as txn:
        txn.apply(ledger.open_account(txn, "alice", "EUR", 1000, NOW_MS))
    with storage.transaction() as txn:
        txn.apply(ledger.open_account(txn, "bob", "EUR", 0, NOW_MS))
    svc = BankService(storage, committee.config)
    t = terms(sid=b"\x07" * 32)
    cert = certificate_to_json(
        committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
    )
    field = data.draw(st.sampled_from(["report", "signature"]))
    raw = bytearray(bytes.fromhex(cert[field][2:]))
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    mutated = {**cert, field: "0x" + raw.hex()}
    before = storage.snapshot()
    reply = post_prevalidate(svc, body_of(t, mutated))
    assert 400 <= reply.status < 500
    assert storage.snapshot() == before


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(junk=st.text(min_size=1, max_size=3), data=st.data())
def test_certificate_hex_with_anything_but_hex_digits_inside_is_malformed(
    committee: DevCommittee, junk: str, data: st.DataObject
) -> None:
    t = terms(sid=b"\x08" * 32)
    cert = certificate_to_json(
        committee.certificate(t.settlement_id, Action.PREPARE, t.terms_hash())
    )
    field = data.draw(st.sampled_from(["report", "signers", "signature"]))
    digits = cert[field][2:]
    at = data.draw(st.integers(0, len(digits)))
    spelled = "0x" + digits[:at] + junk + digits[at:]
    if all(c in "0123456789abcdefABCDEF" for c in junk):
        return  # still hex digits: another certificate, judged by its signature
    with pytest.raises(CertificateRejected) as info:
        certificate_from_json({**cert, field: spelled})
    assert info.value.code == "certificate_malformed"


def test_committee_file_round_trip_and_refusals(committee: DevCommittee, tmp_path: Path) -> None:
    path = committee.write_committee_file(tmp_path / "committee.json")
    cfg = load_committee(path)
    assert cfg == committee.config and cfg.chain_id == BANK_CHAIN_ID
    raw = json.loads(path.read_text())
    # A rogue key: proofs of possession that do not match are refused.
    raw["proofs_of_possession"] = list(reversed(raw["proofs_of_possession"]))
    path.write_text(json.dumps(raw))
    with pytest.raises(CommitteeFileError, match="proof of possession"):
        load_committee(path)
    path.write_text("{")
    with pytest.raises(CommitteeFileError, match="not valid JSON"):
        load_committee(path)
    with pytest.raises(CommitteeFileError, match="cannot read"):
        load_committee(tmp_path / "missing.json")
