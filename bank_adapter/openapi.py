"""The OpenAPI 3.1 document of the bank's API, served at ``GET /openapi.json``.

It describes what ``server.py`` routes and ``service.py`` answers; a test checks that every
route of the application appears here and that the documented error codes are the ones the
service uses. This module must never describe a route the server does not have.
"""

from __future__ import annotations

from typing import Any

from bank_adapter.service import TERMS_FIELDS
from bank_adapter.signing import (
    HEADER_CLIENT,
    HEADER_IDEMPOTENCY,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    WEBHOOK_EVENT_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
)

__all__ = ["openapi_document"]

_HEX32 = {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"}
_ACCOUNT = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"}
_AMOUNT = {
    "type": "integer",
    "minimum": 1,
    "maximum": 2**63 - 1,
    "description": "minor units, written as an integer literal (100, never 100.0: the bank "
    "refuses a number with a fraction or exponent part, though JSON Schema calls it an integer)",
}
_AS_OF_MS = {
    "type": "integer",
    "minimum": 0,
    "description": "the bank's clock when it answered, unix ms; set for this answer, never "
    "stored or replayed. Nodes judge a bank leg EXPIRED by it: as_of_ms > deadline * 1000 "
    "while the instruction is not final (EXECUTED, CANCELLED, REJECTED)",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int, schema: str = "Error") -> dict[str, Any]:
    text = {
        400: "malformed request (invalid_json, missing_field, unknown_field, invalid_field, invalid_amount, certificate_malformed, missing_idempotency_key)",
        401: "authentication failed (bad signature, unknown client, stale timestamp, replayed nonce)",
        403: "certificate refused (certificate_invalid, certificate_wrong_settlement, certificate_wrong_action, certificate_terms_mismatch)",
        404: "unknown_instruction / unknown_account",
        409: "settlement_conflict, invalid_state, certificate_replayed",
        422: "instruction_rejected (with the REJECTED instruction) or idempotency_key_reused",
        503: "bank_outage or injected_error (fault controls); retry with the same Idempotency-Key",
    }
    return {str(s): _json(_ref(schema), text[s]) for s in statuses}


_AUTH_HEADERS = [
    {"name": h, "in": "header", "required": True, "schema": {"type": "string"}}
    for h in (HEADER_CLIENT, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)
]
_IDEMPOTENCY = {
    "name": HEADER_IDEMPOTENCY,
    "in": "header",
    "required": True,
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
    "description": "1-255 visible ASCII characters; a retry with the same key and request "
    "returns the first answer",
}
#: Where a created instruction leads: its status, and the certified decisions that end it.
_INSTRUCTION_LINKS: dict[str, Any] = {
    name: {
        "operationId": name,
        "parameters": {"settlement_id": "$response.body#/instruction/settlement_id"},
    }
    for name in ("getInstruction", "executeInstruction", "cancelInstruction")
}
_SID_PARAM = {"name": "settlement_id", "in": "path", "required": True, "schema": _HEX32}


_ERROR_OBJECT: dict[str, Any] = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "field": {"type": "string"},
    },
}

_PAYMENT_TERMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": list(TERMS_FIELDS),
    "properties": {
        "settlement_id": _HEX32,
        "payer_account": _ACCOUNT,
        "payee_account": _ACCOUNT,
        "amount": _AMOUNT,
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "deadline": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    },
}


def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": _ERROR_OBJECT},
        },
        "TimedError": {
            "type": "object",
            "description": "an error of a status or report request, with the bank's clock",
            "required": ["error", "as_of_ms"],
            "properties": {"error": _ERROR_OBJECT, "as_of_ms": _AS_OF_MS},
        },
        "Certificate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["report", "signers", "signature"],
            "properties": {
                "report": {"type": "string", "description": "0x ABI-encoded report"},
                "signers": {"type": "string", "description": "0x hex signer bitmap"},
                "signature": {"type": "string", "description": "0x 96-byte BLS aggregate"},
            },
        },
        "PrevalidateRequest": {
            **_PAYMENT_TERMS,
            "required": [*_PAYMENT_TERMS["required"], "certificate"],
            "properties": {**_PAYMENT_TERMS["properties"], "certificate": _ref("Certificate")},
        },
        "DecisionRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["certificate"],
            "properties": {"certificate": _ref("Certificate")},
        },
        "PaymentTerms": _PAYMENT_TERMS,
        "ReportRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["certificate", "terms"],
            "properties": {
                "certificate": _ref("Certificate"),
                "terms": {
                    "type": "array",
                    "description": "the payment terms of the report's PREPARE decisions",
                    "items": _ref("PaymentTerms"),
                },
            },
        },
        "ReportReply": {
            "type": "object",
            "required": ["results", "as_of_ms"],
            "properties": {
                "results": {
                    "type": "array",
                    "description": "one per decision, in report order: the status and body "
                    "its own endpoint would have answered (a retry with the same "
                    "Idempotency-Key gets the stored first answers here)",
                    "items": {
                        "type": "object",
                        "required": ["settlement_id", "status", "answer"],
                        "properties": {
                            "settlement_id": _HEX32,
                            "status": {"type": "integer"},
                            "answer": {"type": "object"},
                        },
                    },
                },
                "as_of_ms": {
                    **_AS_OF_MS,
                    "description": "the bank's clock when it answered this request, unix ms "
                    "(a retry states the time of the retry); see StatusReply",
                },
            },
        },
        "Instruction": {
            "type": "object",
            "properties": {
                "settlement_id": _HEX32,
                "state": {"enum": ["PREVALIDATED", "REJECTED", "EXECUTED", "CANCELLED"]},
                "reject_reason": {
                    "enum": [
                        None,
                        "insufficient_funds",
                        "unknown_account",
                        "currency_mismatch",
                        "expired",
                    ]
                },
                "terms_hash": _HEX32,
                "payer_account": {"type": ["string", "null"]},
                "payee_account": {"type": ["string", "null"]},
                "amount": {"type": ["integer", "null"]},
                "currency": {"type": ["string", "null"]},
                "deadline": {"type": ["integer", "null"]},
                "created_ms": {"type": "integer"},
                "updated_ms": {"type": "integer"},
                "prepare_report_hash": {"type": ["string", "null"]},
                "outcome_report_hash": {"type": ["string", "null"]},
            },
        },
        "InstructionReply": {
            "type": "object",
            "required": ["instruction", "duplicate"],
            "properties": {
                "instruction": _ref("Instruction"),
                "duplicate": {"type": "boolean", "description": "already applied; nothing changed"},
            },
        },
        "StatusReply": {
            "type": "object",
            "required": ["instruction", "duplicate", "as_of_ms"],
            "properties": {
                "instruction": _ref("Instruction"),
                "duplicate": {"type": "boolean", "description": "always false"},
                "as_of_ms": _AS_OF_MS,
            },
        },
        "Account": {
            "type": "object",
            "properties": {
                "account_id": _ACCOUNT,
                "currency": {"type": "string"},
                "balance": {"type": "integer"},
                "held": {"type": "integer"},
                "available": {"type": "integer"},
            },
        },
        "CallbackEvent": {
            "type": "object",
            "description": f"POSTed to each webhook URL, signed in {WEBHOOK_SIGNATURE_HEADER} (t=<unix s>,ed25519=<hex>) over 'dvpsim-bank-webhook-v1.<t>.<body>'; event id also in {WEBHOOK_EVENT_HEADER}. Delivered at least once: deduplicate by event_id. Events due together for one URL come in one POST as a JSON array of these objects (signed once, no event id header).",
            "properties": {
                "event_id": {"type": "string"},
                "type": {
                    "enum": [
                        "instruction.prevalidated",
                        "instruction.rejected",
                        "instruction.executed",
                        "instruction.cancelled",
                    ]
                },
                "created_ms": {
                    "type": "integer",
                    "description": "when the bank made the change (unix ms)",
                },
                "instruction": _ref("Instruction"),
                "as_of_ms": {
                    **_AS_OF_MS,
                    "description": "the bank's clock when this delivery attempt was sent, unix "
                    "ms: added to the event at each attempt (a retry or duplicate states a "
                    "later time) and covered by the signature; not part of the event's "
                    "identity (deduplicate by event_id)",
                },
            },
        },
        "OpenAccountRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["account_id", "currency", "opening_balance"],
            "properties": {
                "account_id": _ACCOUNT,
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "opening_balance": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
            },
        },
        "Health": {
            "type": "object",
            "required": ["ok"],
            "properties": {"ok": {"const": True}},
        },
        "WebhookKey": {
            "type": "object",
            "required": ["ed25519_public_key"],
            "properties": {"ed25519_public_key": {"type": "string", "pattern": "^0x[0-9a-f]{64}$"}},
        },
        "Reconciliation": {
            "type": "object",
            "required": ["ok", "problems"],
            "properties": {
                "ok": {"type": "boolean"},
                "problems": {"type": "array", "items": {"type": "string"}},
                "accounts": {"type": "integer"},
                "instructions": {"type": "integer"},
                "journal_entries": {"type": "integer"},
                "pending_deliveries": {"type": "integer"},
            },
        },
        "InstructionStates": {
            "type": "object",
            "required": ["instructions", "seq"],
            "properties": {
                "instructions": {
                    "type": "object",
                    "additionalProperties": {
                        "enum": ["PREVALIDATED", "REJECTED", "EXECUTED", "CANCELLED"]
                    },
                },
                "held": {"type": "array", "items": _HEX32},
                "seq": {"type": "integer", "minimum": 0},
            },
        },
        "FaultConfig": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "latency_ms": {"type": "integer"},
                "latency_jitter_ms": {"type": "integer"},
                "error_rate": {"type": "number"},
                "error_phase": {"enum": ["before", "after"]},
                "outage_start_s": {"type": ["number", "null"]},
                "outage_end_s": {"type": ["number", "null"]},
                "duplicate_callback_rate": {"type": "number"},
                "reorder_callback_window_ms": {"type": "integer"},
                "crash_after_commits": {"type": ["integer", "null"]},
                "seed": {"type": "integer"},
            },
        },
    }
    signed: list[dict[str, list[str]]] = [{"hmacRequest": []}]
    admin: list[dict[str, list[str]]] = [{"adminToken": []}]
    instruction_reply = _ref("InstructionReply")
    paths: dict[str, Any] = {
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "this document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "summary": "Prometheus metrics: request latencies (histograms) and process_*",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/v1/health": {
            "get": {
                "operationId": "getHealth",
                "summary": "liveness",
                "responses": {"200": _json(_ref("Health"), "ok")},
            }
        },
        "/v1/webhook-key": {
            "get": {
                "operationId": "getWebhookKey",
                "summary": "the Ed25519 public key that signs callbacks (pin it from configuration)",
                "responses": {"200": _json(_ref("WebhookKey"), "key")},
            }
        },
        "/v1/instructions": {
            "post": {
                "operationId": "prevalidate",
                "summary": "prevalidate: record an instruction and hold the funds (PREPARE certificate)",
                "security": signed,
                "parameters": [*_AUTH_HEADERS, _IDEMPOTENCY],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("PrevalidateRequest")}},
                },
                "responses": {
                    "201": {
                        **_json(instruction_reply, "PREVALIDATED: funds held"),
                        "links": _INSTRUCTION_LINKS,
                    },
                    "200": {
                        **_json(
                            instruction_reply, "duplicate: the instruction exists with these terms"
                        ),
                        "links": _INSTRUCTION_LINKS,
                    },
                    **_errors(400, 401, 403, 409, 422, 503),
                },
            }
        },
        "/v1/reports": {
            "post": {
                "operationId": "applyReport",
                "summary": "every decision of one certificate in one request (PREPARE with its "
                "terms, COMMIT as execute, ABORT as cancel); the certificate is checked once",
                "security": signed,
                "parameters": [*_AUTH_HEADERS, _IDEMPOTENCY],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ReportRequest")}},
                },
                "responses": {
                    "200": _json(
                        _ref("ReportReply"), "one result per decision, and the bank's clock"
                    ),
                    **_errors(400, 403, 422, schema="TimedError"),
                    **_errors(401, 503),
                },
            }
        },
        "/v1/instructions/{settlement_id}": {
            "get": {
                "operationId": "getInstruction",
                "summary": "instruction status (polling fallback for callbacks), with the "
                "bank's clock (as_of_ms), the 404 of an unknown settlement too",
                "security": signed,
                "parameters": [_SID_PARAM, *_AUTH_HEADERS],
                "responses": {
                    "200": _json(_ref("StatusReply"), "the instruction and the bank's clock"),
                    **_errors(400, 404, schema="TimedError"),
                    **_errors(401, 503),
                },
            }
        },
        "/v1/instructions/{settlement_id}/execute": {
            "post": {
                "operationId": "executeInstruction",
                "summary": "execute: move the held funds to the payee (COMMIT certificate); irrevocable",
                "security": signed,
                "parameters": [_SID_PARAM, *_AUTH_HEADERS, _IDEMPOTENCY],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("DecisionRequest")}},
                },
                "responses": {
                    "200": _json(instruction_reply, "EXECUTED"),
                    **_errors(400, 401, 403, 404, 409, 422, 503),
                },
            }
        },
        "/v1/instructions/{settlement_id}/cancel": {
            "post": {
                "operationId": "cancelInstruction",
                "summary": "cancel: release the hold (ABORT certificate); for an unknown settlement, record the abort so a late prevalidation is refused",
                "security": signed,
                "parameters": [_SID_PARAM, *_AUTH_HEADERS, _IDEMPOTENCY],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("DecisionRequest")}},
                },
                "responses": {
                    "200": _json(instruction_reply, "CANCELLED"),
                    **_errors(400, 401, 403, 409, 422, 503),
                },
            }
        },
        "/v1/accounts/{account_id}": {
            "get": {
                "operationId": "getAccount",
                "summary": "account balance, held and available amounts",
                "security": signed,
                "parameters": [
                    {"name": "account_id", "in": "path", "required": True, "schema": _ACCOUNT},
                    *_AUTH_HEADERS,
                ],
                "responses": {
                    "200": _json(_ref("Account"), "the account"),
                    **_errors(401, 404, 503),
                },
            }
        },
        "/admin/accounts": {
            "post": {
                "operationId": "openAccount",
                "summary": "open a customer account with an opening balance (admin)",
                "security": admin,
                "parameters": [_IDEMPOTENCY],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("OpenAccountRequest")}},
                },
                "responses": {
                    "201": {
                        **_json(_ref("Account"), "opened"),
                        "links": {
                            "getAccount": {
                                "operationId": "getAccount",
                                "parameters": {"account_id": "$response.body#/account_id"},
                            }
                        },
                    },
                    **_errors(400, 401, 409, 422),
                },
            }
        },
        "/admin/reconcile": {
            "get": {
                "operationId": "reconcile",
                "summary": "check the ledger invariants (admin)",
                "security": admin,
                "responses": {
                    "200": _json(_ref("Reconciliation"), "ok flag and problems"),
                    **_errors(401),
                },
            }
        },
        "/admin/instructions": {
            "get": {
                "operationId": "listInstructionStates",
                "summary": "the state of every instruction, by settlement id, the settlements "
                "ever held and the newest event's seq (admin; one read instead of one status "
                "request per settlement); with since, only the instructions an event after "
                "that seq concerns, and the seq, without held",
                "security": admin,
                "parameters": [
                    {
                        "name": "since",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                    }
                ],
                "responses": {
                    "200": _json(_ref("InstructionStates"), "instructions: {settlement id: state}"),
                    **_errors(400, 401),
                },
            }
        },
        "/admin/faults": {
            "get": {
                "operationId": "getFaults",
                "summary": "current fault settings (admin)",
                "security": admin,
                "responses": {"200": _json(_ref("FaultConfig"), "settings"), **_errors(401)},
            },
            "put": {
                "operationId": "setFaults",
                "summary": "replace the fault settings (admin)",
                "security": admin,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("FaultConfig")}},
                },
                "responses": {"200": _json(_ref("FaultConfig"), "settings"), **_errors(400, 401)},
            },
        },
        "/admin/crash": {
            "post": {
                "operationId": "crash",
                "summary": "kill the service with SIGKILL after after_ms milliseconds (admin)",
                "security": admin,
                "parameters": [
                    {"name": "after_ms", "in": "query", "schema": {"type": "integer", "minimum": 0}}
                ],
                "responses": {
                    "202": _json(
                        {
                            "type": "object",
                            "required": ["crashing_in_ms"],
                            "properties": {"crashing_in_ms": {"type": "integer"}},
                        },
                        "crashing",
                    ),
                    **_errors(400, 401),
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dvpsim bank payment service",
            "version": "1",
            "description": "Deposit-account payment network of dvpsim: instructions authorized by oracle-network BLS certificates, holds, execution, signed callbacks. Admin routes exist only when the service runs with an admin token.",
        },
        # Relative: resolved against the address this document was fetched from, so a
        # spec-driven client finds the bank at whatever port it was started on.
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "hmacRequest": {
                    "type": "apiKey",
                    "in": "header",
                    "name": HEADER_SIGNATURE,
                    "description": f"hex HMAC-SHA256 with the client secret over METHOD\\nPATH?QUERY\\n{HEADER_TIMESTAMP}\\n{HEADER_NONCE}\\n{HEADER_IDEMPOTENCY}\\nsha256hex(body); with {HEADER_CLIENT}",
                },
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }
