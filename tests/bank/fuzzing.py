"""Schemathesis against the real bank process, driven by the bank's own OpenAPI document.

``BankFuzzer`` loads ``/openapi.json`` from a running bank (its relative ``servers`` entry
resolves to the address it was fetched from), signs every request the way clients do
(``signing.sign_request`` over the exact bytes sent; the admin token on admin routes),
and adds a hook that turns a share of the generated cases into instructions the bank can
accept: terms over the bank's own accounts, certified by the dev committee (PREPARE for a
prevalidation, COMMIT or ABORT over an instruction created earlier, whole reports), so the
fuzzing reaches the ledger rules instead of stopping at 401/403. It runs each operation
(stateless; three in four cases valid by the document, one in four not) and, where the
document's links allow, sequences of them (stateful), checks every answer with
schemathesis' checks (no 5xx; status, content type, headers and body as documented; a
request the document calls invalid is refused), and tallies the answers per route.

Left out of the fuzzing: ``POST /admin/crash`` (it kills the bank) and ``PUT
/admin/faults`` (injected 5xx and outages are the point of that route).
"""

from __future__ import annotations

import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.stateful import run_state_machine_as_test
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bank_adapter.client import terms_json
from bank_adapter.devcommittee import DevCommittee
from bank_adapter.process import BankProcess
from bank_adapter.signing import HEADER_IDEMPOTENCY, new_nonce, sign_request
from bank_adapter.terms import PaymentTerms
from consensus.report import Action

#: The bank's accounts during fuzzing: (id, currency, opening balance).
ACCOUNTS = (
    ("alice", "EUR", 10**12),
    ("bob", "EUR", 0),
    ("carol", "USD", 10**9),
    ("dave", "USD", 0),
)
CLIENT = "fuzz-node"
FAR_DEADLINE = 4_000_000_000  # unix seconds in 2096
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
EXCLUDED_OPERATIONS = ["crash", "setFaults"]
_MUTATING = ("prevalidate", "executeInstruction", "cancelInstruction", "applyReport")


class SignedRequest(requests.auth.AuthBase):
    """Signs the prepared request, so the signature covers the exact bytes sent."""

    def __init__(self, client_id: str, secret: bytes, admin_token: str) -> None:
        self.client_id = client_id
        self.secret = secret
        self.admin_token = admin_token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        assert request.method is not None and request.path_url is not None
        key = request.headers.get(HEADER_IDEMPOTENCY)
        request.headers.update(
            sign_request(
                self.client_id,
                self.secret,
                request.method,
                request.path_url,
                body,
                timestamp=int(time.time()),
                nonce=new_nonce(),
                idempotency_key=None if key is None else str(key),
            )
        )
        if request.path_url.startswith("/admin/"):
            request.headers["Authorization"] = f"Bearer {self.admin_token}"
        return request


@dataclass
class Tally:
    """Answers per route, by HTTP status."""

    statuses: dict[str, Counter[int]] = field(default_factory=dict)

    def add(self, route: str, status: int) -> None:
        self.statuses.setdefault(route, Counter())[status] += 1

    def shares(self) -> dict[str, float]:
        """The share of 2xx answers of each route."""
        return {
            route: sum(n for s, n in counts.items() if 200 <= s < 300) / counts.total()
            for route, counts in sorted(self.statuses.items())
        }

    def table(self) -> str:
        lines = [f"{'route':<46} {'answers':>7} {'2xx':>5}  statuses"]
        for route, share in self.shares().items():
            counts = self.statuses[route]
            mix = " ".join(f"{s}:{n}" for s, n in sorted(counts.items()))
            lines.append(f"{route:<46} {counts.total():>7} {share:>5.0%}  {mix}")
        return "\n".join(lines)


class BankFuzzer:
    """One fuzzing session against one running bank (module docstring)."""

    def __init__(self, bank: BankProcess, committee: DevCommittee, secret: bytes) -> None:
        self.bank = bank
        self.committee = committee
        self.auth = SignedRequest(CLIENT, secret, bank.admin_token)
        self.instructions: dict[str, PaymentTerms] = {}  # "0x.." -> terms certified
        self.held: set[str] = set()  # prevalidated ("0x.."), as the bank answered
        self.abandoned_replays = 0  # stateful attempts Hypothesis could not replay
        self.tally = Tally()
        self.schema = schemathesis.openapi.from_url(bank.url + "/openapi.json").exclude(
            operation_id=EXCLUDED_OPERATIONS
        )

        def flatmap_case(context: Any, case: schemathesis.Case) -> Any:
            return self._certified_variants(case)

        self.schema.hook(flatmap_case)

    # ----------------------------------------------------------------- the hook
    def _certified_variants(self, case: schemathesis.Case) -> Any:
        """The generated case, or (as often) one the dev committee certified."""
        operation_id = case.operation.definition.raw.get("operationId")
        make = {
            "prevalidate": self._prevalidation,
            "executeInstruction": self._decision,
            "cancelInstruction": self._decision,
            "applyReport": self._report,
            "getInstruction": self._known_instruction,
            "getAccount": self._known_account,
        }.get(operation_id)
        meta = case._meta
        negative = meta is not None and meta.generation.mode.is_negative
        if make is None or negative:
            return st.just(case)
        # Three in four certified: the rest keep what schemathesis generated. The choices
        # depend on what the bank holds by now, so they come from a seeded Random: a
        # Hypothesis draw per choice would make a replay draw differently (a flaky strategy).
        return st.tuples(st.integers(0, 3), st.integers(0, 2**32 - 1)).map(
            lambda drawn: make(case, random.Random(drawn[1])) if drawn[0] else case
        )

    def _terms(self, rng: random.Random) -> PaymentTerms:
        """Terms over the bank's accounts (one in eight each: an amount beyond the
        balance, an unknown payee, a past deadline: the bank must reject those, not fail)."""
        payer, currency, _ = rng.choice([a for a in ACCOUNTS if a[2] > 0])
        payees = [a[0] for a in ACCOUNTS if a[1] == currency and a[0] != payer]
        payee = rng.choice(payees * 7 + ["nobody"])
        amount = rng.choice([1, 100, 10**3, 10**4, 10**5, 10**6, 10**7, 10**13])
        deadline = rng.choice([FAR_DEADLINE] * 7 + [1])
        return PaymentTerms(secrets.token_bytes(32), payer, payee, amount, currency, deadline)

    def _fresh_key(self, case: schemathesis.Case) -> None:
        case.headers = {**(case.headers or {}), HEADER_IDEMPOTENCY: "fuzz-" + secrets.token_hex(8)}

    def _prevalidation(self, case: schemathesis.Case, rng: random.Random) -> schemathesis.Case:
        terms = self._terms(rng)
        cert = self.committee.certificate(terms.settlement_id, Action.PREPARE, terms.terms_hash())
        case.body = {**terms_json(terms), "certificate": self.committee.to_json(cert)}
        self._fresh_key(case)
        self.instructions["0x" + terms.settlement_id.hex()] = terms
        return case

    def _decision(self, case: schemathesis.Case, rng: random.Random) -> schemathesis.Case:
        """A decision over the settlement in the path if the fuzzer made it (a link's
        target), else mostly over a held one, else over any it made."""
        sid_hex = case.path_parameters.get("settlement_id") if case.path_parameters else None
        terms = self.instructions.get(str(sid_hex))
        if terms is None and self.instructions:
            pool = sorted(self.held) if self.held and rng.random() < 0.8 else self.instructions
            sid_hex = rng.choice(sorted(pool))
            terms = self.instructions[sid_hex]
        if terms is None:  # nothing created yet: an abort of an unknown settlement
            terms = self._terms(rng)
            sid_hex = "0x" + terms.settlement_id.hex()
        operation_id = case.operation.definition.raw["operationId"]
        action = Action.COMMIT if operation_id == "executeInstruction" else Action.ABORT
        cert = self.committee.certificate(terms.settlement_id, action, terms.terms_hash())
        case.path_parameters = {"settlement_id": sid_hex}
        case.body = {"certificate": self.committee.to_json(cert)}
        self._fresh_key(case)
        return case

    def _report(self, case: schemathesis.Case, rng: random.Random) -> schemathesis.Case:
        fresh = [self._terms(rng) for _ in range(rng.randint(0, 2))]
        pool = sorted(self.held) or sorted(self.instructions)
        known = rng.sample(pool, min(len(pool), 2))
        decisions = [(t.settlement_id, Action.PREPARE, t.terms_hash()) for t in fresh]
        for sid_hex in known:
            terms = self.instructions[sid_hex]
            action = rng.choice([Action.COMMIT, Action.ABORT])
            decisions.append((terms.settlement_id, action, terms.terms_hash()))
        if not decisions:
            fresh = [self._terms(rng)]
            decisions = [(fresh[0].settlement_id, Action.PREPARE, fresh[0].terms_hash())]
        cert = self.committee.certify(self.committee.report(decisions))
        for terms in fresh:
            self.instructions["0x" + terms.settlement_id.hex()] = terms
        case.body = {
            "certificate": self.committee.to_json(cert),
            "terms": [terms_json(t) for t in fresh],
        }
        self._fresh_key(case)
        return case

    def _known_instruction(self, case: schemathesis.Case, rng: random.Random) -> schemathesis.Case:
        if self.instructions:
            case.path_parameters = {"settlement_id": rng.choice(sorted(self.instructions))}
        return case

    def _known_account(self, case: schemathesis.Case, rng: random.Random) -> schemathesis.Case:
        case.path_parameters = {"account_id": rng.choice(ACCOUNTS)[0]}
        return case

    # ----------------------------------------------------------------- running
    def auth_for(self, case: schemathesis.Case) -> SignedRequest | None:
        """Sign, unless schemathesis broke the case's headers or credentials on purpose:
        it then expects a refusal, which a signature would hide. A case broken in its
        body or path is signed, so the bank judges the body, not the signature."""
        meta = case._meta
        if meta is not None and meta.is_negative_at(ParameterLocation.HEADER):
            return None
        return None if case.operation.schema.is_security_param_negated(case) else self.auth

    def record(self, case: schemathesis.Case, response: Any) -> None:
        """Count the answer; follow which instructions hold funds."""
        self.tally.add(f"{case.method.upper()} {case.path}", response.status_code)
        operation_id = case.operation.definition.raw.get("operationId")
        if response.status_code >= 300 or operation_id not in _MUTATING:
            return
        body = response.json()
        if operation_id == "prevalidate" and body["instruction"]["state"] == "PREVALIDATED":
            self.held.add(body["instruction"]["settlement_id"])
        elif operation_id in ("executeInstruction", "cancelInstruction"):
            self.held.discard(body["instruction"]["settlement_id"])
        elif operation_id == "applyReport":
            for result in body["results"]:
                state = result["answer"].get("instruction", {}).get("state")
                if state == "PREVALIDATED":
                    self.held.add(result["settlement_id"])
                elif state is not None:
                    self.held.discard(result["settlement_id"])

    def call(self, case: schemathesis.Case) -> None:
        response = case.call(auth=self.auth_for(case), timeout=10)
        self.record(case, response)
        case.validate_response(response, checks=CHECKS)

    def run_operations(self, examples: int) -> None:
        """Each operation on its own, ``examples`` generated cases each (valid and invalid
        ones); every operation runs, then the failures of all of them are raised."""
        settings = hypothesis.settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        failures: list[BaseException] = []
        for result in self.schema.get_all_operations():
            operation = result.ok()

            # Three in four valid as the document says, one in four not.
            positive, negative = (operation.as_strategy(mode) for mode in GenerationMode)
            cases = st.sampled_from([positive] * 3 + [negative]).flatmap(lambda s: s)

            @settings
            @hypothesis.given(case=cases)
            def run(case: schemathesis.Case) -> None:
                self.call(case)

            try:
                run()
            except (AssertionError, BaseExceptionGroup) as exc:  # a check failed
                failures.append(exc)
        if failures:
            raise BaseExceptionGroup(f"{len(failures)} operations failed their checks", failures)

    def run_stateful(self, scenarios: int, steps: int) -> None:
        """Sequences that follow the document's links (a prevalidation, then its status,
        execution or cancellation; an opened account, then its balance).

        The bank keeps its state between scenarios, so Hypothesis cannot always replay a
        scenario as it first ran (which links have targets depends on earlier answers):
        it then stops with ``Flaky``. As schemathesis' own runner does, that ends the
        attempt without a verdict of its own; a check that failed is raised all the same,
        and another attempt runs (at most three)."""
        fuzzer = self
        failed: list[BaseException] = []

        class Machine(self.schema.as_state_machine()):  # type: ignore[misc]
            def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
                return {"auth": fuzzer.auth_for(case), "timeout": 10}

            def after_call(self, response: Any, case: schemathesis.Case) -> None:
                super().after_call(response, case)
                fuzzer.record(case, response)

            def validate_response(
                self, response: Any, case: schemathesis.Case, **kwargs: Any
            ) -> None:
                try:
                    case.validate_response(response, checks=CHECKS)
                except FailureGroup as exc:
                    failed.append(exc)
                    raise

        settings = hypothesis.settings(
            max_examples=scenarios,
            stateful_step_count=steps,
            deadline=None,
            database=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        for _attempt in range(3):
            try:
                run_state_machine_as_test(Machine, settings=settings)
                return
            except hypothesis.errors.Flaky:
                if failed:
                    raise BaseExceptionGroup("stateful checks failed", failed) from None
                self.abandoned_replays += 1
