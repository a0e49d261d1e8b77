"""``dvpsim bench verifier``: gas per certificate verification on chain, BLS against ECDSA,
and the Python BLS timings.

On a fresh anvil (127.0.0.1, Prague, stopped by PID when the benchmark ends) it measures,
for committee sizes n in {4, 7, 16, 31, 64, 128} with f = floor((n-1)/3) and
t = floor((n+f)/2)+1:

* BLS (OracleVerifier): gasUsed of a real ``verifyAndRecord`` transaction for a certificate
  of exactly t signers (n - t non-signers: the most the contract subtracts), one-decision
  report, made by consensus.bls / consensus.report; also eth_estimateGas of the ``verify``
  view, the set-up gas (key admission with proofs of possession, setConfig);
* ECDSA (EcdsaVerifier, OCR2-style): gasUsed of ``verifyAndRecord`` with exactly f+1
  signatures (what OCR2 accepts) and with t signatures (the quorum DvP decisions need, so
  the comparison at equal safety);
* the committee size from which BLS is cheaper than each ECDSA variant: measured sizes
  first, then a bisection on further measured sizes (up to n = 256) when needed;
* the signers' aggregate key computed three ways (BLS), to justify OracleVerifier's
  choice: stored aggregate minus non-signers read from a code-stored key table (the
  contract), stored aggregate minus non-signers passed in calldata against per-member
  hashes, all n keys in calldata against one commitment;
* Python: median ms of sign, verify and fast_aggregate_verify of t keys (decoded keys
  cached), fast backend (blst) against the py_ecc reference (few repeats: ~0.1-0.8 s each).

Targets (reported, not asserted): BLS at n = 31 within 270,000 gas per report, hash-to-curve
included; fast backend sign < 1 ms, verify < 2 ms, fast_aggregate_verify of 21 keys < 3 ms.

The benchmark sends a bounded number of transactions, never runs a chain it did not start,
and keys are deterministic (the same work every run).
"""

from __future__ import annotations

import hashlib
import platform
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_account import Account

from chain_adapters.build import Artifact, compile_contracts
from chain_adapters.localchain import start_chain
from chain_adapters.verifier import (
    admit_keys,
    bls_committee_args,
    certificate_calldata,
    configure_ecdsa_verifier,
    deploy_ecdsa_verifier,
    deploy_oracle_verifier,
    ecdsa_sign_report,
    set_bls_committee,
    submit_certificate,
    submit_ecdsa_report,
)
from consensus import bls, bls_timing
from consensus.report import (
    Action,
    Decision,
    Report,
    config_digest,
    default_threshold,
    encode_report,
    make_certificate,
    report_hash,
)

__all__ = ["run"]

SIZES = (4, 7, 16, 31, 64, 128)
QUICK_SIZES = (4, 31)
MAX_SEARCH_SIZE = 256
CROSSOVER_CHECK_AFTER = 4
GAS_TARGET_N31 = 270_000
FAST_TARGETS_MS = {"sign_ms": 1.0, "verify_ms": 2.0, "fast_aggregate_verify_ms": 3.0}
CHAIN_ID = 31338


def faults(n: int) -> int:
    return (n - 1) // 3


def threshold(n: int) -> int:
    return default_threshold(n, faults(n))


def _bls_keys(count: int) -> tuple[tuple[int, ...], tuple[bytes, ...], tuple[bytes, ...]]:
    sks = tuple(
        bls.keygen(hashlib.sha256(b"dvpsim bench verifier %d" % i).digest()) for i in range(count)
    )
    return sks, tuple(bls.sk_to_pk(sk) for sk in sks), tuple(bls.pop_prove(sk) for sk in sks)


def _ecdsa_keys(count: int) -> tuple[str, ...]:
    return tuple(
        "0x" + hashlib.sha256(b"dvpsim bench ecdsa %d" % i).hexdigest() for i in range(count)
    )


def _report(digest: bytes) -> Report:
    return Report(
        config_digest=digest,
        epoch=1,
        round=1,
        decisions=(
            Decision(
                settlement_id=hashlib.sha256(b"bench settlement").digest(),
                action=Action.COMMIT,
                terms_hash=hashlib.sha256(b"bench terms").digest(),
            ),
        ),
    )


@dataclass(frozen=True)
class BlsPoint:
    n: int
    f: int
    t: int
    verify_tx_gas: int  # gasUsed of verifyAndRecord, t signers
    verify_estimate_gas: int  # eth_estimateGas of the verify view
    set_config_gas: int


@dataclass(frozen=True)
class EcdsaPoint:
    n: int
    signatures: int
    verify_tx_gas: int


class _Bench:
    """One chain, one BLS verifier per aggregation variant and one ECDSA verifier; keys are
    admitted once (admission survives setConfig), so a size costs only a setConfig."""

    def __init__(self, w3: Any, artifacts: dict[str, Artifact], max_n: int) -> None:
        self.w3 = w3
        self.artifacts = artifacts
        self.sks, self.pks, self.pops = _bls_keys(max_n)
        self.ecdsa_keys = _ecdsa_keys(max_n)
        self.bls = deploy_oracle_verifier(w3, artifacts)
        receipts = admit_keys(self.bls, self.pks, self.pops)
        self.admission_gas_per_key = sum(r["gasUsed"] for r in receipts) / max_n
        self.ecdsa = deploy_ecdsa_verifier(w3, artifacts)
        self._variants: dict[str, Any] = {}

    def _certificate(self, digest: bytes, t: int) -> Any:
        report = _report(digest)
        message = report_hash(report)
        return make_certificate(report, {i: bls.sign(self.sks[i], message) for i in range(t)})

    def bls_point(self, n: int) -> BlsPoint:
        f, t = faults(n), threshold(n)
        cfg = set_bls_committee(self.bls, self.pks[:n], f, t)
        # anvil mines each transaction in its own block: the latest block is setConfig's.
        set_config_gas = int(self.w3.eth.get_block("latest")["gasUsed"])
        cert = self._certificate(config_digest(cfg), t)
        receipt = submit_certificate(self.bls, cert)
        if receipt["status"] != 1:
            raise RuntimeError(f"BLS certificate for n={n} reverted: the benchmark is broken")
        estimate = self.bls.functions.verify(*certificate_calldata(cert).as_args()).estimate_gas()
        return BlsPoint(n, f, t, receipt["gasUsed"], estimate, set_config_gas)

    def ecdsa_point(self, n: int, signatures: int) -> EcdsaPoint:
        keys = self.ecdsa_keys[:n]
        committee = configure_ecdsa_verifier(
            self.ecdsa, [Account.from_key(k).address for k in keys], faults(n), signatures
        )
        report = encode_report(_report(committee.config_digest))
        sigs = [ecdsa_sign_report(k, report) for k in keys[:signatures]]
        receipt = submit_ecdsa_report(self.ecdsa, report, sigs)
        if receipt["status"] != 1:
            raise RuntimeError(f"ECDSA report for n={n} reverted: the benchmark is broken")
        return EcdsaPoint(n, signatures, receipt["gasUsed"])

    def variant_gas(self, name: str, n: int) -> int:
        """verifyAndRecord gas of an aggregation variant for n (t signers)."""
        if name not in self._variants:
            contract = deploy_oracle_verifier(self.w3, self.artifacts, contract=name)
            admit_keys(contract, self.pks, self.pops)
            self._variants[name] = contract
        contract = self._variants[name]
        f, t = faults(n), threshold(n)
        cfg = set_bls_committee(contract, self.pks[:n], f, t)
        keys_g1 = bls_committee_args(self.pks[:n]).public_keys_g1
        sender = {"from": self.w3.eth.accounts[0]}
        if name == "AllKeysCalldataVerifier":
            setup = contract.functions.commitKeys(keys_g1)
            extra = keys_g1
        else:
            setup = contract.functions.storeKeys(keys_g1)
            extra = keys_g1[128 * t : 128 * n]  # the non-signers: members t..n-1
        self.w3.eth.wait_for_transaction_receipt(setup.transact(sender))
        args = certificate_calldata(self._certificate(config_digest(cfg), t)).as_args()
        tx = contract.functions.verifyAndRecord(*args, extra).transact(sender)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        if receipt["status"] != 1:
            raise RuntimeError(f"{name} reverted for n={n}: the benchmark is broken")
        return int(receipt["gasUsed"])


def _crossover(
    measured_bls: dict[int, int],
    measured_ecdsa: dict[int, int],
    bls_at: Callable[[int], int],
    ecdsa_at: Callable[[int], int],
    search: bool,
) -> dict[str, Any]:
    """Smallest n where BLS gas < ECDSA gas, assuming one crossing (ECDSA grows ~linearly
    in its signature count, BLS slowly in n - t). Bisection between measured sizes."""
    sizes = sorted(measured_bls)
    cheaper = [n for n in sizes if measured_bls[n] < measured_ecdsa[n]]
    if cheaper and cheaper[0] == sizes[0]:
        return {"n": sizes[0], "exact": False, "note": "BLS already cheaper at the smallest size"}
    low = max((n for n in sizes if measured_bls[n] >= measured_ecdsa[n]), default=sizes[0])
    high = min((n for n in cheaper if n > low), default=None)
    if high is None:
        if not search:
            return {"n": None, "exact": False, "note": f"not reached up to n={sizes[-1]}"}
        high = MAX_SEARCH_SIZE
        if bls_at(high) >= ecdsa_at(high):
            return {"n": None, "exact": True, "note": f"not reached up to n={MAX_SEARCH_SIZE}"}
    if not search:
        return {"n": high, "exact": False, "note": f"between n={low} and n={high}"}
    while high - low > 1:
        middle = (low + high) // 2
        if bls_at(middle) < ecdsa_at(middle):
            high = middle
        else:
            low = middle
    # The gap is not monotone in n (t and n - t grow in turns), so look a few sizes further.
    after = range(high + 1, min(high + 1 + CROSSOVER_CHECK_AFTER, MAX_SEARCH_SIZE + 1))
    flips_back = [m for m in after if bls_at(m) >= ecdsa_at(m)]
    return {
        "n": high,
        "exact": True,
        "bls_gas": bls_at(high),
        "ecdsa_gas": ecdsa_at(high),
        "flips_back_at": flips_back,
        "note": f"n={high}: BLS {bls_at(high):,} < ECDSA {ecdsa_at(high):,}; "
        f"n={low}: BLS {bls_at(low):,} >= ECDSA {ecdsa_at(low):,}; "
        + (
            f"ECDSA cheaper again at n={flips_back}"
            if flips_back
            else f"BLS stays cheaper for n={after.start}..{after.stop - 1}"
        ),
    }


def _python_timings(quick: bool, sizes: tuple[int, ...]) -> dict[str, Any]:
    fast_repeats = 30 if quick else 200
    fast = {
        threshold(n): bls_timing.measure("fast", threshold(n), fast_repeats).as_dict()
        for n in sizes
    }
    headline = bls_timing.measure("fast", 21, fast_repeats).as_dict()
    reference = bls_timing.measure("reference", 21, 1 if quick else 3).as_dict()
    return {
        "fast_by_t": fast,
        "fast_t21": headline,
        "reference_t21": reference,
        "fast_targets_ms": FAST_TARGETS_MS,
        "fast_targets_met": all(headline[k] < v for k, v in FAST_TARGETS_MS.items()),
    }


def run(quick: bool) -> dict[str, Any]:
    """Measure, print the tables, return the figures (see the module docstring)."""
    from rich.console import Console
    from rich.table import Table

    sizes = QUICK_SIZES if quick else SIZES
    artifacts = compile_contracts()
    log_dir = Path(tempfile.mkdtemp(prefix="dvpsim-bench-verifier-"))
    with start_chain(CHAIN_ID, log_dir=log_dir) as chain:
        w3 = chain.web3()
        max_n = max(sizes) if quick else MAX_SEARCH_SIZE
        bench = _Bench(w3, artifacts, max_n)
        bls_cache: dict[int, BlsPoint] = {}
        ecdsa_cache: dict[tuple[int, int], EcdsaPoint] = {}

        def bls_at(n: int) -> int:
            if n not in bls_cache:
                bls_cache[n] = bench.bls_point(n)
            return bls_cache[n].verify_tx_gas

        def ecdsa_at(n: int, signatures: int) -> int:
            if (n, signatures) not in ecdsa_cache:
                ecdsa_cache[n, signatures] = bench.ecdsa_point(n, signatures)
            return ecdsa_cache[n, signatures].verify_tx_gas

        rows = []
        for n in sizes:
            rows.append(
                {
                    **asdict(bench.bls_point(n)),
                    "ecdsa_f_plus_1_gas": ecdsa_at(n, faults(n) + 1),
                    "ecdsa_t_gas": ecdsa_at(n, threshold(n)),
                }
            )
            bls_cache[n] = BlsPoint(**{k: rows[-1][k] for k in BlsPoint.__dataclass_fields__})
        measured_bls = {r["n"]: r["verify_tx_gas"] for r in rows}
        crossover = {
            "ecdsa_f_plus_1": _crossover(
                measured_bls,
                {r["n"]: r["ecdsa_f_plus_1_gas"] for r in rows},
                bls_at,
                lambda n: ecdsa_at(n, faults(n) + 1),
                search=not quick,
            ),
            "ecdsa_t": _crossover(
                measured_bls,
                {r["n"]: r["ecdsa_t_gas"] for r in rows},
                bls_at,
                lambda n: ecdsa_at(n, threshold(n)),
                search=not quick,
            ),
        }
        variant_sizes = (31,) if quick else sizes
        aggregation = [
            {
                "n": n,
                "key_table_gas": bls_at(n),
                "non_signers_in_calldata_gas": bench.variant_gas(
                    "NonSignerKeysCalldataVerifier", n
                ),
                "all_keys_in_calldata_gas": bench.variant_gas("AllKeysCalldataVerifier", n),
            }
            for n in variant_sizes
        ]
        admission_gas_per_key = bench.admission_gas_per_key
    python = _python_timings(quick, sizes)

    gas_n31 = measured_bls.get(31)
    console = Console()
    table = Table(title="gas per report verification (anvil, Prague; t signers for BLS)")
    for column in ("n", "f", "t", "BLS tx", "BLS estimate", "ECDSA f+1", "ECDSA t", "setConfig"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            *(str(r[k]) for k in ("n", "f", "t")),
            f"{r['verify_tx_gas']:,}",
            f"{r['verify_estimate_gas']:,}",
            f"{r['ecdsa_f_plus_1_gas']:,}",
            f"{r['ecdsa_t_gas']:,}",
            f"{r['set_config_gas']:,}",
        )
    console.print(table)
    agg = Table(title="BLS signers' aggregate key: three ways (verifyAndRecord gas)")
    for column in ("n", "key table (chosen)", "non-signers in calldata", "all keys in calldata"):
        agg.add_column(column, justify="right")
    for a in aggregation:
        agg.add_row(
            str(a["n"]),
            f"{a['key_table_gas']:,}",
            f"{a['non_signers_in_calldata_gas']:,}",
            f"{a['all_keys_in_calldata_gas']:,}",
        )
    console.print(agg)
    py = Table(title="Python BLS, median ms (keys decoded and cached)")
    for column in ("backend", "keys", "repeats", "sign", "verify", "FastAggregateVerify"):
        py.add_column(column, justify="right")
    fast_by_t = [python["fast_by_t"][t] for t in sorted(python["fast_by_t"]) if t != 21]
    for timing in (*fast_by_t, python["fast_t21"], python["reference_t21"]):
        py.add_row(
            str(timing["backend"]),
            str(timing["committee_size"]),
            str(timing["repeats"]),
            f"{timing['sign_ms']:.3f}",
            f"{timing['verify_ms']:.3f}",
            f"{timing['fast_aggregate_verify_ms']:.3f}",
        )
    console.print(py)
    for name, c in crossover.items():
        console.print(f"BLS cheaper than {name.replace('_', ' ')} from n = {c['n']} ({c['note']})")
    if gas_n31 is not None:
        verdict = "met" if gas_n31 <= GAS_TARGET_N31 else "MISSED"
        console.print(f"BLS at n=31: {gas_n31:,} gas (target <= {GAS_TARGET_N31:,}: {verdict})")
    console.print(f"key admission (PoP on chain): {admission_gas_per_key:,.0f} gas per key")
    return {
        "benchmark": "verifier",
        "quick": quick,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "chain": "anvil --hardfork prague",
        "gas": rows,
        "crossover": crossover,
        "aggregation_variants": aggregation,
        "admission_gas_per_key": admission_gas_per_key,
        "bls_gas_n31": gas_n31,
        "bls_gas_n31_target": GAS_TARGET_N31,
        "bls_gas_n31_target_met": gas_n31 is not None and gas_n31 <= GAS_TARGET_N31,
        "python_timings": python,
        "extra_points": {
            "bls": {n: asdict(p) for n, p in sorted(bls_cache.items()) if n not in sizes},
            "ecdsa": [asdict(p) for key, p in sorted(ecdsa_cache.items()) if key[0] not in sizes],
        },
    }
