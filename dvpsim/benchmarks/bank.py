"""``dvpsim bench bank``: throughput and latency of the real bank service on loopback.

Starts the bank as a subprocess on 127.0.0.1 (SQLite ledger, synchronous=FULL), then with
a bounded number of concurrent clients (``BankClient``: HMAC-signed httpx requests)
measures

* status requests: requests/s and p50/p99 latency over a fixed duration;
* executed payments: prevalidate + execute, each with a real BLS certificate made before
  timing starts, counted per second; once with batched reports (one certificate carrying
  the decisions for 16 settlements, as the oracle network batches a round) and once with
  one certificate per decision (every request pays a full pairing check);
* the same batched reports through ``POST /v1/reports``, the way the nodes transmit: one
  request applies a whole certificate (16 decisions). The per-decision endpoints above are
  its baseline in the same run.

Targets: >= 500 status requests/s with p99 < 50 ms, >= 200 executed payments/s. The
clients run in this process and share the machine's cores with the bank, so the figures
are a lower bound for the service. The benchmark never runs longer than its fixed
durations and payment counts, and stops the bank by PID.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bank_adapter.client import BankClient
from bank_adapter.devcommittee import DevCommittee
from bank_adapter.process import BankProcess
from bank_adapter.terms import PaymentTerms
from consensus.report import Action, Certificate

__all__ = ["run"]

CLIENT_ID = "bench"
PAYERS = 8
BATCH = 16


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run_clients(
    url: str,
    secret: bytes,
    concurrency: int,
    max_attempts: int,
    worker: Callable[[BankClient], Awaitable[None]],
) -> float:
    """Run ``worker`` once per concurrent client; returns the wall time it took."""
    clients = [
        BankClient(url, CLIENT_ID, secret, max_attempts=max_attempts, max_connections=2)
        for _ in range(concurrency)
    ]
    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        for c in clients:
            await c.aclose()
    return time.perf_counter() - started


async def _status_load(
    url: str, secret: bytes, sid: bytes, concurrency: int, duration_s: float
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + duration_s

    async def worker(client: BankClient) -> None:
        nonlocal errors
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            try:
                await client.status(sid)
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)

    elapsed = await _run_clients(url, secret, concurrency, 1, worker)
    return {
        "concurrency": concurrency,
        "duration_s": round(elapsed, 2),
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2) if latencies else None,
    }


def _payments(
    committee: DevCommittee, count: int, batch: int, rng: random.Random
) -> list[tuple[PaymentTerms, Certificate, Certificate]]:
    """Terms and their PREPARE and COMMIT certificates, ``batch`` decisions per report."""
    terms = [
        PaymentTerms(
            rng.randbytes(32),
            f"payer{i % PAYERS}",
            f"payee{i % PAYERS}",
            rng.randint(1, 1000),
            "EUR",
            4_000_000_000,
        )
        for i in range(count)
    ]
    out = []
    for start in range(0, count, batch):
        chunk = terms[start : start + batch]
        prepare = committee.certify(
            committee.report(
                [(t.settlement_id, Action.PREPARE, t.terms_hash()) for t in chunk],
                round=2 * start + 1,
            )
        )
        commit = committee.certify(
            committee.report(
                [(t.settlement_id, Action.COMMIT, t.terms_hash()) for t in chunk],
                round=2 * start + 2,
            )
        )
        out.extend((t, prepare, commit) for t in chunk)
    return out


async def _payment_load(
    url: str,
    secret: bytes,
    work: list[tuple[PaymentTerms, Certificate, Certificate]],
    concurrency: int,
) -> dict[str, Any]:
    queue = list(reversed(work))
    latencies: list[float] = []
    failures = 0

    async def worker(client: BankClient) -> None:
        nonlocal failures
        while queue:
            terms, prepare, commit = queue.pop()
            t0 = time.perf_counter()
            try:
                await client.prevalidate(terms, prepare)
                result = await client.execute(terms.settlement_id, commit)
            except Exception:
                failures += 1
                continue
            if result.state != "EXECUTED":
                failures += 1
            latencies.append(time.perf_counter() - t0)

    elapsed = await _run_clients(url, secret, concurrency, 3, worker)
    return _load_figures(concurrency, len(latencies) - failures, failures, elapsed, latencies)


def _load_figures(
    concurrency: int, executed: int, failures: int, elapsed: float, latencies: list[float]
) -> dict[str, Any]:
    return {
        "concurrency": concurrency,
        "payments": executed,
        "failures": failures,
        "duration_s": round(elapsed, 2),
        "executed_per_s": round(executed / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2) if latencies else None,
    }


async def _report_load(
    url: str,
    secret: bytes,
    work: list[tuple[PaymentTerms, Certificate, Certificate]],
    concurrency: int,
) -> dict[str, Any]:
    """Each unit: one ``/v1/reports`` call with a PREPARE certificate and its terms, then
    one with the COMMIT certificate; payments counted by the decisions that executed."""
    reports: dict[bytes, list[PaymentTerms]] = {}
    certificates: dict[bytes, tuple[Certificate, Certificate]] = {}
    for terms, prepare, commit in work:
        key = prepare.signature
        reports.setdefault(key, []).append(terms)
        certificates[key] = (prepare, commit)
    queue = [(reports[k], *certificates[k]) for k in reversed(list(reports))]
    latencies: list[float] = []
    executed = failures = 0

    async def worker(client: BankClient) -> None:
        nonlocal executed, failures
        while queue:
            chunk, prepare, commit = queue.pop()
            t0 = time.perf_counter()
            try:
                await client.apply_report(prepare, chunk)
                results = await client.apply_report(commit, [])
            except Exception:
                failures += len(chunk)
                continue
            done = sum(
                1
                for r in results
                if r.instruction is not None and r.instruction.state == "EXECUTED"
            )
            executed += done
            failures += len(chunk) - done
            latencies.append(time.perf_counter() - t0)

    elapsed = await _run_clients(url, secret, concurrency, 3, worker)
    return _load_figures(concurrency, executed, failures, elapsed, latencies)


def run(quick: bool) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    rng = random.Random(2024)
    committee = DevCommittee.create(n=4, f=1)
    secret = secrets.token_bytes(32)
    count = 300 if quick else 2000
    status_s = 3.0 if quick else 10.0
    concurrency = 16
    t0 = time.perf_counter()
    batched = _payments(committee, count, BATCH, rng)
    single = _payments(committee, count // 2, 1, rng)
    by_report = _payments(committee, count, BATCH, rng)
    prep_s = time.perf_counter() - t0
    accounts = [(f"payer{i}", "EUR", 10**12) for i in range(PAYERS)] + [
        (f"payee{i}", "EUR", 0) for i in range(PAYERS)
    ]
    with tempfile.TemporaryDirectory(prefix="dvpsim-bench-bank-") as tmp:
        bank = BankProcess(Path(tmp), committee, clients={CLIENT_ID: secret}, accounts=accounts)
        bank.start()
        try:
            # One known instruction for the status requests to read.
            first_terms, first_prepare, _ = batched[0]

            async def main() -> dict[str, Any]:
                async with BankClient(bank.url, CLIENT_ID, secret) as c:
                    await c.prevalidate(first_terms, first_prepare)
                status = await _status_load(
                    bank.url, secret, first_terms.settlement_id, concurrency, status_s
                )
                pay_batched = await _payment_load(bank.url, secret, batched[1:], concurrency)
                pay_single = await _payment_load(bank.url, secret, single, concurrency)
                # One request per report: fewer, larger requests, so fewer clients.
                pay_reports = await _report_load(bank.url, secret, by_report, 4)
                return {
                    "status": status,
                    "payments_batched": pay_batched,
                    "payments_single": pay_single,
                    "payments_reports": pay_reports,
                }

            figures = asyncio.run(main())
        finally:
            bank.stop()
    figures["setup"] = {
        "certificates_prepared_s": round(prep_s, 2),
        "committee": "n=4 f=1 t=3",
        "batch": BATCH,
        "quick": quick,
        "sqlite_synchronous": "FULL",
    }
    figures["targets"] = {
        "status_per_s>=500": figures["status"]["requests_per_s"] >= 500,
        "status_p99<50ms": (figures["status"]["p99_ms"] or 1e9) < 50,
        "executed_per_s>=200": figures["payments_batched"]["executed_per_s"] >= 200,
    }

    table = Table(
        title=f"dvpsim bank on 127.0.0.1 ({'quick' if quick else 'full'}; {concurrency} concurrent clients)"
    )
    for column in ("measure", "rate", "p50 ms", "p99 ms", "count", "errors"):
        table.add_column(column)
    s = figures["status"]
    table.add_row(
        "status GET",
        f"{s['requests_per_s']} req/s",
        str(s["p50_ms"]),
        str(s["p99_ms"]),
        str(s["requests"]),
        str(s["errors"]),
    )
    for key, label in (
        ("payments_batched", f"payments, {BATCH}/certificate"),
        ("payments_single", "payments, 1/certificate"),
        ("payments_reports", f"payments, /v1/reports ({BATCH}/request; p50/p99 per report)"),
    ):
        p = figures[key]
        table.add_row(
            label,
            f"{p['executed_per_s']} executed/s",
            str(p["p50_ms"]),
            str(p["p99_ms"]),
            str(p["payments"]),
            str(p["failures"]),
        )
    Console().print(table)
    Console().print(f"targets met: {figures['targets']}")
    return figures
