"""The bank's API operations, independent of HTTP: parse, authorize, apply, answer.

``BankService`` turns an authenticated request (client id, idempotency key, request hash,
body bytes, ``now_ms``) into a ``Reply`` (status code and JSON body). For a mutating call it
runs one storage transaction that

1. looks up the idempotency key: the same key with the same request returns the stored
   first answer (never a second payment); with a different request it is refused (422);
2. verifies the certificate and runs the ledger rule (``ledger.py``);
3. writes the rule's changes, the certificate use, the outbox events and the answer itself
   together, so a crash leaves all of them or none.

Requests the bank refuses (malformed body, bad certificate, wrong state) change nothing and
are not remembered under their idempotency key: a corrected retry may reuse it. A business
rejection (insufficient funds, unknown account, currency mismatch, expired) is an answer:
the instruction is stored as REJECTED with its reason and the reply (422) is remembered.

This module must never read the clock or the network (``now_ms`` is a parameter), and must
never answer a mutating request from anything but the transaction that applied it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from bank_adapter import ledger
from bank_adapter.authorization import (
    CertificateRejected,
    VerificationCache,
    authorize,
    certificate_from_json,
    is_hex_digits,
)
from bank_adapter.ledger import (
    Changes,
    IdempotencyRecord,
    InstructionState,
    LedgerError,
    Outcome,
    canonical_json,
    instruction_to_json,
    reconcile,
    stamped_json,
)
from bank_adapter.storage import LedgerStorage, LedgerTransaction
from bank_adapter.terms import PaymentTerms, TermsError
from consensus.crypto import REAL_CRYPTO, CryptoSuite
from consensus.report import Action, Certificate, CommitteeConfig

__all__ = [
    "STATUS_OF_CODE",
    "BankService",
    "Reply",
    "error_body",
    "parse_settlement_id",
    "stated_at",
]

#: HTTP status of each error code the bank answers with.
STATUS_OF_CODE: Final = {
    "invalid_json": 400,
    "invalid_field": 400,
    "missing_field": 400,
    "unknown_field": 400,
    "missing_idempotency_key": 400,
    "certificate_malformed": 400,
    "invalid_amount": 400,
    "unauthenticated": 401,
    "certificate_invalid": 403,
    "certificate_wrong_settlement": 403,
    "certificate_wrong_action": 403,
    "certificate_terms_mismatch": 403,
    "unknown_instruction": 404,
    "unknown_account": 404,
    "not_found": 404,
    "settlement_conflict": 409,
    "invalid_state": 409,
    "certificate_replayed": 409,
    "account_exists": 409,
    "idempotency_key_reused": 422,
    "instruction_rejected": 422,
    "supply_limit": 422,
}

TERMS_FIELDS: Final = (
    "settlement_id",
    "payer_account",
    "payee_account",
    "amount",
    "currency",
    "deadline",
)
_PREVALIDATE_FIELDS: Final = (*TERMS_FIELDS, "certificate")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes  # JSON
    replayed: bool = False  # answered from the idempotency store
    committed: bool = False  # this request's transaction wrote its changes

    def json(self) -> Any:
        return json.loads(self.body)


class BadRequest(LedgerError):
    """The request body is malformed; nothing changed."""


def error_body(code: str, message: str, field: str | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return canonical_json({"error": error}).encode()


def _error_reply(exc: LedgerError) -> Reply:
    return Reply(STATUS_OF_CODE.get(exc.code, 400), error_body(exc.code, exc.message, exc.field))


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json_object(body: bytes, fields: tuple[str, ...]) -> dict[str, Any]:
    """A JSON object with exactly ``fields``; BadRequest otherwise. Duplicate keys, NaN and
    Infinity are refused because two parsers could read them differently."""
    try:
        value = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_reject_duplicate_keys,
            parse_constant=_no_constants,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("invalid_json", "request body must be a JSON object")
    for name in fields:
        if name not in value:
            raise BadRequest("missing_field", f"field {name} is required", name)
    for name in value:
        if name not in fields:
            raise BadRequest("unknown_field", f"field {name} is not part of this request", name)
    return value


def parse_settlement_id(value: object, field: str = "settlement_id") -> bytes:
    if (
        not isinstance(value, str)
        or len(value) != 66
        or not value.startswith("0x")
        or not is_hex_digits(value[2:])
    ):
        raise BadRequest("invalid_field", f"{field} must be 0x followed by 64 hex digits", field)
    return bytes.fromhex(value[2:])


def _parse_terms(body: dict[str, Any]) -> PaymentTerms:
    try:
        return PaymentTerms(
            settlement_id=parse_settlement_id(body["settlement_id"]),
            payer_account=body["payer_account"],
            payee_account=body["payee_account"],
            amount=body["amount"],
            currency=body["currency"],
            deadline=body["deadline"],
        )
    except TermsError as exc:
        code = "invalid_amount" if exc.field == "amount" else "invalid_field"
        raise BadRequest(code, str(exc), exc.field) from None


def stated_at(reply: Reply, now_ms: int) -> Reply:
    """``reply`` with the bank's clock in its body (top-level ``as_of_ms``, unix ms)."""
    return Reply(reply.status, stamped_json(reply.body, now_ms), reply.replayed, reply.committed)


def _outcome_body(outcome: Outcome) -> dict[str, Any]:
    return {"instruction": instruction_to_json(outcome.instruction), "duplicate": outcome.duplicate}


class BankService:
    """The bank's operations over one storage and one trusted committee."""

    def __init__(
        self,
        storage: LedgerStorage,
        committee: CommitteeConfig,
        cache: VerificationCache | None = None,
        crypto: CryptoSuite = REAL_CRYPTO,
    ) -> None:
        self.storage = storage
        self.committee = committee
        self.cache = cache if cache is not None else VerificationCache()
        #: Checks certificates' signatures: the real suite, unless a simulated bank is
        #: given its world's (``consensus.crypto``).
        self.crypto = crypto

    # mutating operations ---------------------------------------------------
    def prevalidate(
        self, client_id: str, idempotency_key: str, request_hash: bytes, body: bytes, now_ms: int
    ) -> Reply:
        def parse() -> tuple[PaymentTerms, Certificate]:
            fields = parse_json_object(body, _PREVALIDATE_FIELDS)
            return _parse_terms(fields), certificate_from_json(fields["certificate"])

        return self._mutate(
            client_id,
            idempotency_key,
            request_hash,
            now_ms,
            parse,
            self._prevalidate_run(client_id, idempotency_key, now_ms),
        )

    def _prevalidate_run(
        self, client_id: str, idempotency_key: str, now_ms: int
    ) -> Callable[
        [LedgerTransaction, tuple[PaymentTerms, Certificate]],
        tuple[int, dict[str, Any], Changes],
    ]:
        def run(
            txn: LedgerTransaction, parsed: tuple[PaymentTerms, Certificate]
        ) -> tuple[int, dict[str, Any], Changes]:
            terms, cert = parsed
            auth = authorize(
                cert, self.committee, terms.settlement_id, self.cache, crypto=self.crypto
            )
            outcome = ledger.prevalidate(txn, terms, auth, client_id, idempotency_key, now_ms)
            answer = _outcome_body(outcome)
            if outcome.duplicate:
                return 200, answer, outcome.changes
            if outcome.instruction.state is InstructionState.REJECTED:
                reason = outcome.instruction.reject_reason
                answer["error"] = {
                    "code": "instruction_rejected",
                    "message": f"instruction for settlement {terms.settlement_id.hex()} rejected: {reason}",
                }
                return 422, answer, outcome.changes
            return 201, answer, outcome.changes

        return run

    def execute(
        self,
        client_id: str,
        idempotency_key: str,
        request_hash: bytes,
        settlement_hex: str,
        body: bytes,
        now_ms: int,
    ) -> Reply:
        return self._finish(
            ledger.execute, client_id, idempotency_key, request_hash, settlement_hex, body, now_ms
        )

    def cancel(
        self,
        client_id: str,
        idempotency_key: str,
        request_hash: bytes,
        settlement_hex: str,
        body: bytes,
        now_ms: int,
    ) -> Reply:
        return self._finish(
            ledger.cancel, client_id, idempotency_key, request_hash, settlement_hex, body, now_ms
        )

    def _finish(
        self,
        rule: Callable[..., Outcome],
        client_id: str,
        idempotency_key: str,
        request_hash: bytes,
        settlement_hex: str,
        body: bytes,
        now_ms: int,
    ) -> Reply:
        def parse() -> tuple[bytes, Certificate]:
            sid = parse_settlement_id(settlement_hex, "settlement id in the path")
            fields = parse_json_object(body, ("certificate",))
            return sid, certificate_from_json(fields["certificate"])

        return self._mutate(
            client_id,
            idempotency_key,
            request_hash,
            now_ms,
            parse,
            self._finish_run(rule, client_id, idempotency_key, now_ms),
        )

    def _finish_run(
        self, rule: Callable[..., Outcome], client_id: str, idempotency_key: str, now_ms: int
    ) -> Callable[
        [LedgerTransaction, tuple[bytes, Certificate]], tuple[int, dict[str, Any], Changes]
    ]:
        def run(
            txn: LedgerTransaction, parsed: tuple[bytes, Certificate]
        ) -> tuple[int, dict[str, Any], Changes]:
            sid, cert = parsed
            auth = authorize(cert, self.committee, sid, self.cache, crypto=self.crypto)
            outcome = rule(txn, sid, auth, client_id, idempotency_key, now_ms)
            return 200, _outcome_body(outcome), outcome.changes

        return run

    def apply_report(
        self, client_id: str, idempotency_key: str, request_hash: bytes, body: bytes, now_ms: int
    ) -> Reply:
        """Every decision of one certificate, in report order: PREPARE with the terms the
        request carries for it, COMMIT as execute, ABORT as cancel. Each decision is one
        operation exactly as its own endpoint would run it (its own transaction inside
        this request's group, its own idempotency record under ``KEY/0xSETTLEMENT``), so a
        batch and the same decisions sent one by one leave the same ledger; one refused
        decision does not stop the others. The certificate is checked once; a certificate
        that does not verify refuses the whole request. Every answer states the bank's clock
        (top-level ``as_of_ms``, never stored); the inner answers are exactly what the single
        endpoints answer (stored, replayed as first given)."""
        try:
            fields = parse_json_object(body, ("certificate", "terms"))
            cert = certificate_from_json(fields["certificate"])
            if not isinstance(fields["terms"], list):
                raise BadRequest("invalid_field", "terms must be a list of payment terms", "terms")
            terms_of: dict[bytes, PaymentTerms] = {}
            for item in fields["terms"]:
                if not isinstance(item, dict) or set(item) != set(TERMS_FIELDS):
                    raise BadRequest(
                        "invalid_field",
                        f"terms must be a list of objects with exactly {', '.join(TERMS_FIELDS)}",
                        "terms",
                    )
                terms = _parse_terms(item)
                terms_of[terms.settlement_id] = terms
            if not cert.report.decisions:
                raise BadRequest(
                    "invalid_field", "the certificate holds no decision", "certificate"
                )
            authorize(
                cert,
                self.committee,
                cert.report.decisions[0].settlement_id,
                self.cache,
                crypto=self.crypto,
            )
        except LedgerError as exc:
            return stated_at(_error_reply(exc), now_ms)
        results: list[dict[str, Any]] = []
        committed = False
        for decision in cert.report.decisions:
            sid = decision.settlement_id
            key = f"{idempotency_key}/0x{sid.hex()}"
            sub_hash = hashlib.sha256(request_hash + sid).digest()
            if decision.action is Action.PREPARE:
                wanted = terms_of.get(sid)
                if wanted is None:
                    reply = Reply(
                        400,
                        error_body(
                            "missing_field",
                            f"no terms for the PREPARE of settlement 0x{sid.hex()}; send them in terms",
                            "terms",
                        ),
                    )
                else:
                    reply = self._mutate(
                        client_id,
                        key,
                        sub_hash,
                        now_ms,
                        lambda wanted=wanted: (wanted, cert),  # type: ignore[misc]
                        self._prevalidate_run(client_id, key, now_ms),
                    )
            else:
                rule = ledger.execute if decision.action is Action.COMMIT else ledger.cancel
                reply = self._mutate(
                    client_id,
                    key,
                    sub_hash,
                    now_ms,
                    lambda sid=sid: (sid, cert),  # type: ignore[misc]
                    self._finish_run(rule, client_id, key, now_ms),
                )
            committed = committed or reply.committed
            results.append(
                {"settlement_id": "0x" + sid.hex(), "status": reply.status, "answer": reply.json()}
            )
        # The outer body is built for this request, so it states the bank's clock now, even
        # when every inner answer is a stored first answer replayed.
        answer = {"results": results, "as_of_ms": now_ms}
        return Reply(200, canonical_json(answer).encode(), committed=committed)

    def open_account(
        self, client_id: str, idempotency_key: str, request_hash: bytes, body: bytes, now_ms: int
    ) -> Reply:
        def parse() -> dict[str, Any]:
            return parse_json_object(body, ("account_id", "currency", "opening_balance"))

        def run(
            txn: LedgerTransaction, fields: dict[str, Any]
        ) -> tuple[int, dict[str, Any], Changes]:
            try:
                changes = ledger.open_account(
                    txn, fields["account_id"], fields["currency"], fields["opening_balance"], now_ms
                )
            except TermsError as exc:
                raise BadRequest("invalid_field", str(exc), exc.field) from None
            account = next(a for a in changes.accounts if a.account_id == fields["account_id"])
            return 201, _account_json(account), changes

        return self._mutate(client_id, idempotency_key, request_hash, now_ms, parse, run)

    def _mutate(
        self,
        client_id: str,
        idempotency_key: str,
        request_hash: bytes,
        now_ms: int,
        parse: Callable[[], T],
        run: Callable[[LedgerTransaction, T], tuple[int, dict[str, Any], Changes]],
    ) -> Reply:
        try:
            parsed = parse()
        except LedgerError as exc:
            return _error_reply(exc)
        with self.storage.transaction() as txn:
            prior = txn.idempotency(client_id, idempotency_key)
            if prior is not None:
                if prior.request_hash != request_hash:
                    return Reply(
                        422,
                        error_body(
                            "idempotency_key_reused",
                            f"Idempotency-Key {idempotency_key} was used for a different request; use a new key",
                        ),
                    )
                return Reply(prior.status, prior.body, replayed=True)
            try:
                status, answer, changes = run(txn, parsed)
            except (LedgerError, CertificateRejected) as exc:
                return _error_reply(exc)
            body = canonical_json(answer).encode()
            record = IdempotencyRecord(
                client_id, idempotency_key, request_hash, status, body, now_ms
            )
            txn.apply(changes.plus(Changes(idempotency=(record,))))
        return Reply(status, body, committed=True)

    # reads ---------------------------------------------------------------
    def status(self, settlement_hex: str, now_ms: int) -> Reply:
        """The instruction of a settlement (the polling fallback). Every answer, the 404 of
        an unknown settlement too, states the bank's clock ``now_ms`` as ``as_of_ms``: the
        clock by which nodes judge whether a bank leg has EXPIRED."""
        try:
            sid = parse_settlement_id(settlement_hex, "settlement id in the path")
        except LedgerError as exc:
            return stated_at(_error_reply(exc), now_ms)
        with self.storage.read() as view:
            instruction = view.instruction(sid)
        if instruction is None:
            return stated_at(
                Reply(
                    404,
                    error_body(
                        "unknown_instruction", f"no instruction for settlement {settlement_hex}"
                    ),
                ),
                now_ms,
            )
        body = {
            "instruction": instruction_to_json(instruction),
            "duplicate": False,
            "as_of_ms": now_ms,
        }
        return Reply(200, canonical_json(body).encode())

    def account(self, account_id: str) -> Reply:
        with self.storage.read() as view:
            account = view.account(account_id)
        if account is None or account.internal:
            return Reply(404, error_body("unknown_account", f"no account {account_id}"))
        return Reply(200, canonical_json(_account_json(account)).encode())

    def instruction_states(self, since: int | None = None) -> Reply:
        """Every instruction's state, the settlements ever held and the newest event's seq;
        with ``since``, only the instructions an event after that seq concerns and the
        seq (no ``held``): a poller's cost is what changed, not every instruction."""
        # Since 0 is every instruction (each one's creation records an event; the storage
        # property test holds the two reads equal), in one read with its seq.
        rows, seq = self.storage.instruction_states_since(since or 0)
        body: dict[str, Any] = {}
        if since is None:
            body["held"] = ["0x" + sid.hex() for sid in self.storage.held_settlements()]
        states = {"0x" + sid.hex(): state for sid, state in rows}
        return Reply(200, canonical_json({"instructions": states, "seq": seq, **body}).encode())

    def reconcile(self) -> Reply:
        snapshot = self.storage.snapshot()
        problems = reconcile(snapshot)
        body = {
            "ok": not problems,
            "problems": problems,
            "accounts": len(snapshot.accounts),
            "instructions": len(snapshot.instructions),
            "journal_entries": len(snapshot.journal),
            "pending_deliveries": self.storage.pending_delivery_count(),
        }
        return Reply(200, canonical_json(body).encode())


def _account_json(account: ledger.Account) -> dict[str, Any]:
    return {
        "account_id": account.account_id,
        "currency": account.currency,
        "balance": account.balance,
        "held": account.held,
        "available": account.available,
    }
