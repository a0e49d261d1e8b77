"""The bank's OpenAPI document as a contract: it validates as OpenAPI 3.1, a spec-driven
client finds the server from it, and schemathesis, driven by it, fuzzes the real bank
process (``tests/bank/fuzzing.py``) without a 5xx or an answer the document does not
describe, and leaves books that reconcile. Also the bank's Prometheus endpoint."""

from __future__ import annotations

import json
import math
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from bank_adapter.devcommittee import DevCommittee
from bank_adapter.ledger import reconcile
from bank_adapter.openapi import openapi_document
from bank_adapter.process import BankProcess
from bank_adapter.signing import new_nonce, sign_request
from bank_adapter.sqlite_storage import SqliteStorage
from tests.prometheus_text import PROCESS_METRICS, histogram_quantile, scrape

from .fuzzing import ACCOUNTS, CLIENT, BankFuzzer

SECRET = secrets.token_bytes(32)
#: The operations the dev committee's certificates open: the fuzzing must get 2xx there.
CERTIFIED_ROUTES = (
    "POST /v1/instructions",
    "POST /v1/instructions/{settlement_id}/execute",
    "POST /v1/instructions/{settlement_id}/cancel",
    "POST /v1/reports",
)


def start_bank(committee: DevCommittee, workdir: Path) -> BankProcess:
    bank = BankProcess(workdir, committee, clients={CLIENT: SECRET}, accounts=ACCOUNTS)
    bank.start()
    return bank


@pytest.fixture(scope="module")
def bank(
    committee: DevCommittee, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BankProcess]:
    process = start_bank(committee, tmp_path_factory.mktemp("fuzzed-bank"))
    yield process
    process.stop()


def books_problems(bank: BankProcess) -> list[str]:
    """What ``dvpsim bank reconcile`` says about the bank's ledger file."""
    storage = SqliteStorage(bank.db)
    try:
        return reconcile(storage.snapshot())
    finally:
        storage.close()


def ledger_states(bank: BankProcess) -> Counter[str]:
    """Instructions by state, and how many ever held funds (``held``), from the admin API."""
    answer = httpx.get(
        bank.url + "/admin/instructions", headers={"Authorization": f"Bearer {bank.admin_token}"}
    ).json()
    return Counter(answer["instructions"].values()) + Counter(held=len(answer["held"]))


def report_shares(fuzzer: BankFuzzer, record_property: pytest.RecordProperty) -> None:
    print("\nshare of 2xx answers per route (bank fuzzing)\n" + fuzzer.tally.table())
    print(f"stateful attempts Hypothesis could not replay: {fuzzer.abandoned_replays}")
    record_property("bank_fuzz_2xx_share", json.dumps(fuzzer.tally.shares()))


def test_document_is_valid_openapi_31() -> None:
    validate(openapi_document())  # raises OpenAPIValidationError
    broken = openapi_document()
    broken["paths"]["/v1/health"]["get"]["responses"] = {"200": {"content": {}}}
    with pytest.raises(OpenAPIValidationError):
        validate(broken)  # the validator does look: a response needs a description


def test_servers_entry_leads_a_spec_client_to_the_bank(bank: BankProcess) -> None:
    schema = schemathesis.openapi.from_url(bank.url + "/openapi.json")
    assert schema.get_base_url().rstrip("/") == bank.url
    operation = schema["/v1/health"]["GET"]
    response = operation.Case().call()
    assert response.status_code == 200
    operation.Case().validate_response(response)


def test_fuzzing_from_the_document_finds_no_5xx_and_nothing_undocumented(
    bank: BankProcess, committee: DevCommittee, record_property: pytest.RecordProperty
) -> None:
    fuzzer = BankFuzzer(bank, committee, SECRET)
    try:
        fuzzer.run_operations(examples=8)
        fuzzer.run_stateful(scenarios=3, steps=6)
    finally:
        report_shares(fuzzer, record_property)
    assert all(route in fuzzer.tally.shares() for route in CERTIFIED_ROUTES)
    # Past the 4xx: the certified requests reached the ledger rules.
    reached = ledger_states(bank)
    print(f"instructions by state after the fuzzing: {dict(sorted(reached.items()))}")
    assert reached["held"] > 0, "no certified prevalidation held funds"
    assert reached["EXECUTED"] + reached["CANCELLED"] > 0, "no certified decision applied"
    assert books_problems(bank) == []
    assert httpx.get(bank.url + "/v1/health").status_code == 200  # still up


def test_a_report_without_idempotency_key_states_the_banks_clock(bank: BankProcess) -> None:
    # Found by the fuzzing: this 400 came without as_of_ms, which every /v1/reports
    # answer states (the document's TimedError).
    body = b'{"certificate": {"report": "", "signers": "", "signature": ""}, "terms": []}'
    headers = sign_request(
        CLIENT, SECRET, "POST", "/v1/reports", body, timestamp=int(time.time()), nonce=new_nonce()
    )
    before_ms = int(time.time() * 1000)
    answer = httpx.post(bank.url + "/v1/reports", content=body, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "missing_idempotency_key"
    assert answer.json()["as_of_ms"] >= before_ms


def test_bank_metrics_are_histograms_with_process_metrics(bank: BankProcess) -> None:
    for _ in range(5):
        httpx.get(bank.url + "/v1/health")
    families = scrape(bank.url + "/metrics")
    latency = families["dvpsim_bank_request_latency_seconds"]
    assert latency.type == "histogram"
    bounds = {
        float(s.labels["le"])
        for s in latency.samples
        if s.name.endswith("_bucket") and s.labels["route"] == "/v1/health"
    }
    assert {0.001, 0.01, 0.1, 1.0, math.inf} <= bounds
    p99 = histogram_quantile(latency, 0.99, route="/v1/health", method="GET")
    assert 0 < p99 <= 10.0
    routes = sorted(
        {(s.labels["method"], s.labels["route"]) for s in latency.samples if "route" in s.labels}
    )
    print("\nbank request latency (ms) after the fuzzing: p50 p99 per route")
    for method, route in routes:
        p50, p99 = (
            1000 * histogram_quantile(latency, q, method=method, route=route) for q in (0.5, 0.99)
        )
        print(f"{method:<5} {route:<42} {p50:8.2f} {p99:8.2f}")
    answers = families["dvpsim_bank_responses"]
    assert any(
        s.labels == {"method": "GET", "route": "/v1/health", "status": "200"} and s.value >= 5
        for s in answers.samples
    )
    for name in PROCESS_METRICS:
        assert name in families, f"{name} missing from the bank's metrics"
    cpu = families["process_cpu_seconds"].samples[0]
    assert cpu.name == "process_cpu_seconds_total" and cpu.value > 0


@pytest.mark.slow
def test_fuzzing_at_length(
    committee: DevCommittee, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    bank = start_bank(committee, tmp_path / "bank")
    try:
        fuzzer = BankFuzzer(bank, committee, SECRET)
        try:
            fuzzer.run_operations(examples=150)
            fuzzer.run_stateful(scenarios=60, steps=15)
        finally:
            report_shares(fuzzer, record_property)
        shares = fuzzer.tally.shares()
        for route in CERTIFIED_ROUTES:
            assert shares[route] > 0, f"no 2xx on {route}"
        reached = ledger_states(bank)
        print(f"instructions by state after the fuzzing: {dict(sorted(reached.items()))}")
        assert min(reached[s] for s in ("held", "EXECUTED", "CANCELLED", "REJECTED")) > 0
        assert books_problems(bank) == []
    finally:
        bank.stop()
