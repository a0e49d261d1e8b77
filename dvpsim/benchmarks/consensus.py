"""`dvpsim bench consensus`: certified rounds per wall-clock second of the consensus core.

Runs the real node state machines (Ed25519 observations, BLS shares, leader aggregation,
certificate verification by every member) in the deterministic in-memory harness, with no
faults, and measures:

- throughput at n = 4 (f = 1) and n = 31 (f = 10): rounds back to back (DeltaRound = 0),
  50 ms links; certified rounds divided by the wall time of the run;
- speed of virtual time at n = 4 with 50 ms links and the default Delta parameters
  (DeltaRound = 1 s, as a deployment would use): virtual seconds per wall-clock second;
- the crypto each member does per certified round, from the real cases: how many of each
  operation (Ed25519 observation signatures and checks, BLS shares, aggregate and
  certificate checks, and the messages each member hashed to G2 inside them) and the wall
  time they took, counted by a wrapper around each member's suite in a second run of the
  case (the wrapper costs about a microsecond per call; the timed run above goes without
  it, and the counted run's own CPU seconds are in the figures as ``counted_run``);
- beside the n = 31 figure, the same case on the simulation's memoized suite (what
  `dvpsim sim` uses by default: one process remembers a verification, so each observation
  and certificate is checked once for all members) and on its fast keyed-hash suite
  (`--crypto fast`). They say how fast a simulation of the committee runs, not a member.

Targets: >= 100 rounds/s at n = 4, >= 12 rounds/s at n = 31, virtual time >= 100x real.
In the real cases every member verifies every observation and certificate itself, and
each member has its own suite (``RealCrypto(BlsCache())``): a report hashed to G2 by one
member is hashed again by every other, as it would be in their own processes; nothing is
shared between members but the messages (and decoded public keys, which a member decodes
once for its committee's life). Committee set-up (key generation, proofs of possession) is not
timed, and the harness keeps no history of the deliveries (a test's record, not a
member's work). Wall time is what the targets are about; CPU time is printed beside it because on
a shared machine other processes can take the CPU (then wall exceeds CPU and the figure
understates the harness).

This module must never change the protocol's parameters behind the reader's back: every
parameter that shapes a figure is in the returned dict.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from nacl.signing import SigningKey
from pyblst import BlstP2Element
from rich.console import Console
from rich.table import Table

from consensus.bls import BlsCache, hash_to_g2
from consensus.config import ConsensusConfig
from consensus.crypto import REAL_CRYPTO, CryptoSuite, MemoizedCrypto, RealCrypto
from consensus.harness import (
    NetworkProfile,
    Schedule,
    Simulation,
    SimulationResult,
    simulated_committee,
)
from consensus.outcome import MedianOutcome, encode_number
from scenarios.sim.fastcrypto import FastCrypto

__all__ = ["BACK_TO_BACK", "LINK_DELAY", "CountingCrypto", "CryptoCounts", "observe", "run"]

_T = TypeVar("_T")

LINK_DELAY = 0.05
#: Rounds back to back (DeltaRound = 0): the throughput cases' protocol parameters.
BACK_TO_BACK: Final[dict[str, Any]] = {
    "delta_progress": 2.0,
    "delta_resend": 0.5,
    "delta_round": 0.0,
    "delta_grace": 0.02,
    "delta_stage": 0.5,
    "r_max": 200,
}


def observe(node: int, now: float, epoch: int, round_: int) -> bytes:
    return encode_number(1_000_000 + 17 * node + round_)


class CryptoCounts:
    """Calls and wall seconds per operation, summed over every suite that records here."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def timed(self, op: str, call: Callable[[], _T]) -> _T:
        started = time.perf_counter()
        try:
            return call()
        finally:
            self.calls[op] = self.calls.get(op, 0) + 1
            self.seconds[op] = self.seconds.get(op, 0.0) + time.perf_counter() - started

    def hasher(self, message: bytes, dst: bytes) -> BlstP2Element:
        """``hash_to_g2``, counted and timed as "hash_to_g2" (for a ``BlsCache``)."""
        return self.timed("hash_to_g2", lambda: hash_to_g2(message, dst))


class CountingCrypto:
    """A crypto suite that hands every call to ``inner`` and counts it and its wall time
    per operation in ``counts`` (the answers are the inner suite's, unchanged)."""

    def __init__(self, inner: CryptoSuite, counts: CryptoCounts | None = None) -> None:
        self.inner = inner
        self.counts = counts if counts is not None else CryptoCounts()
        self._timed = self.counts.timed

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def calls(self) -> dict[str, int]:
        return self.counts.calls

    @property
    def seconds(self) -> dict[str, float]:
        return self.counts.seconds

    def sk_to_pk(self, sk: int) -> bytes:
        return self.inner.sk_to_pk(sk)

    def bls_sign(self, sk: int, message: bytes) -> bytes:
        return self._timed("bls_sign", lambda: self.inner.bls_sign(sk, message))

    def bls_verify(self, pk: bytes, message: bytes, signature: bytes) -> bool:
        return self._timed("bls_verify", lambda: self.inner.bls_verify(pk, message, signature))

    def bls_aggregate(self, signatures: Sequence[bytes]) -> bytes:
        return self._timed("bls_aggregate", lambda: self.inner.bls_aggregate(signatures))

    def bls_signature_validate(self, signature: bytes) -> bool:
        return self._timed(
            "bls_signature_validate", lambda: self.inner.bls_signature_validate(signature)
        )

    def bls_fast_aggregate_verify(
        self, pks: Sequence[bytes], message: bytes, signature: bytes
    ) -> bool:
        return self._timed(
            "bls_fast_aggregate_verify",
            lambda: self.inner.bls_fast_aggregate_verify(pks, message, signature),
        )

    def pop_prove(self, sk: int) -> bytes:
        return self.inner.pop_prove(sk)

    def pop_verify(self, pk: bytes, proof: bytes) -> bool:
        return self.inner.pop_verify(pk, proof)

    def sign_observation(self, key: SigningKey, message: bytes) -> bytes:
        return self._timed("sign_observation", lambda: self.inner.sign_observation(key, message))

    def verify_observation(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        return self._timed(
            "verify_observation",
            lambda: self.inner.verify_observation(public_key, message, signature),
        )


def _per_member_round(counts: CryptoCounts, n: int, rounds: int) -> dict[str, Any]:
    """Each operation's calls and milliseconds per member per certified round."""
    per = max(n * rounds, 1)
    return {
        op: {
            "calls": round(counts.calls[op] / per, 2),
            "ms": round(1000 * counts.seconds[op] / per, 3),
        }
        for op in sorted(counts.calls)
    }


def _member_suites(n: int, counts: CryptoCounts | None) -> list[CryptoSuite]:
    """One real suite per member, each with its own BLS cache; counted in ``counts`` if
    given."""
    if counts is None:
        return [RealCrypto(BlsCache()) for _ in range(n)]
    return [CountingCrypto(RealCrypto(BlsCache(hasher=counts.hasher)), counts) for _ in range(n)]


def _run(
    n: int,
    f: int,
    duration: float,
    parameters: dict[str, Any],
    crypto: CryptoSuite | None,
    counts: CryptoCounts | None = None,
    *,
    record_history: bool = False,
) -> tuple[ConsensusConfig, SimulationResult, int, float, float]:
    """One simulation of the case: its config, result, certified rounds, wall and CPU
    seconds of the run (set-up excluded)."""
    # Keys and configs are the same under every suite (consensus.crypto).
    config, keys = simulated_committee(n, f, seed=7, crypto=REAL_CRYPTO, **parameters)
    schedule = Schedule(
        seed=1, network=NetworkProfile(delay=LINK_DELAY, jitter=0.002), duration=duration
    )
    simulation = Simulation(
        config,
        keys,
        MedianOutcome(),
        observe,
        schedule,
        crypto=REAL_CRYPTO if crypto is None else crypto,
        member_crypto=_member_suites(n, counts) if crypto is None else None,
        # The harness's own record of every delivery is for tests, not a member's work.
        record_history=record_history,
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    result = simulation.run()
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    rounds = len(
        {
            (c.certificate.report.epoch, c.certificate.report.round)
            for c in result.certified
            if c.target == config.targets[0].name
        }
    )
    return config, result, rounds, wall, cpu


def _measure(
    name: str,
    n: int,
    f: int,
    duration: float,
    parameters: dict[str, Any],
    target: dict[str, float],
    crypto: CryptoSuite | None = None,
    *,
    count: bool = False,
) -> dict[str, Any]:
    """One case; ``crypto`` None means the real suite, one per member (module docstring),
    otherwise one suite shared by every member (the simulation's). With ``count`` (real
    suite only), a second run of the same case counts and times the crypto; the first,
    timed one runs without the counting wrapper."""
    config, result, rounds, wall, cpu = _run(n, f, duration, parameters, crypto)
    figures: dict[str, Any] = {
        "name": name,
        "crypto": REAL_CRYPTO.name if crypto is None else crypto.name,
        "n": n,
        "f": f,
        "t": config.targets[0].committee.t,
        "link_delay_s": LINK_DELAY,
        "parameters": {
            "delta_progress": config.delta_progress,
            "delta_resend": config.delta_resend,
            "delta_round": config.delta_round,
            "delta_grace": config.delta_grace,
            "delta_stage": config.delta_stage,
            "r_max": config.r_max,
            "observation_quorum": config.quorum,
        },
        "certified_rounds": rounds,
        "virtual_s": duration,
        "wall_s": round(wall, 4),
        # Well below wall_s means other processes had the CPU: the figure understates.
        "cpu_s": round(cpu, 4),
        "rounds_per_s": round(rounds / wall, 2),
        "virtual_per_real": round(duration / wall, 1),
        "messages_delivered": result.messages_delivered,
        "steps": result.steps,
    }
    if count and crypto is None:
        counts = CryptoCounts()
        _, _, counted_rounds, counted_wall, counted_cpu = _run(
            n, f, duration, parameters, None, counts
        )
        figures["crypto_per_member_round"] = _per_member_round(counts, n, counted_rounds)
        # The counted run (wrapper included), for comparison with the timed one.
        figures["counted_run"] = {
            "certified_rounds": counted_rounds,
            "wall_s": round(counted_wall, 4),
            "cpu_s": round(counted_cpu, 4),
        }
    checks = {}
    for key, minimum in target.items():
        checks[key] = {"minimum": minimum, "met": figures[key] >= minimum}
    figures["targets"] = checks
    return figures


def _crypto_table(cases: list[dict[str, Any]]) -> Table:
    table = Table(
        title="crypto per member per certified round (real suite, a second, counted run; calls, ms)",
        caption=(
            "leader and followers averaged; every member checks for itself; hash_to_g2 is "
            "inside bls_sign and bls_fast_aggregate_verify (not added to all)"
        ),
    )
    measured = [
        c for c in cases if "crypto_per_member_round" in c and c["name"].startswith("rounds")
    ]
    ops = sorted({op for c in measured for op in c["crypto_per_member_round"]})
    table.add_column("operation")
    for case in measured:
        table.add_column(f"{case['name']} calls", justify="right")
        table.add_column(f"{case['name']} ms", justify="right")
    for op in ops:
        row = [op]
        for case in measured:
            figure = case["crypto_per_member_round"].get(op, {"calls": 0, "ms": 0.0})
            row += [f"{figure['calls']:.2f}", f"{figure['ms']:.3f}"]
        table.add_row(*row)
    total = ["all"]
    for case in measured:
        figures = case["crypto_per_member_round"].items()
        total += ["", f"{sum(f['ms'] for op, f in figures if op != 'hash_to_g2'):.3f}"]
    table.add_row(*total)
    pace = ["rounds/s of the counted run"]
    for case in measured:
        counted = case["counted_run"]
        pace += ["", f"{counted['certified_rounds'] / counted['wall_s']:.1f}"]
    table.add_row(*pace)
    return table


def run(quick: bool) -> dict[str, Any]:
    """Measure, print a table, return the figures (see the module docstring)."""
    cases = [
        _measure(
            "rounds n=4",
            4,
            1,
            8.0 if quick else 40.0,
            BACK_TO_BACK,
            {"rounds_per_s": 100.0},
            count=True,
        ),
        _measure(
            "rounds n=31",
            31,
            10,
            2.0 if quick else 8.0,
            BACK_TO_BACK,
            {"rounds_per_s": 12.0},
            count=True,
        ),
        *(
            _measure("rounds n=31 sim", 31, 10, 2.0 if quick else 8.0, BACK_TO_BACK, {}, crypto)
            for crypto in (MemoizedCrypto(REAL_CRYPTO), FastCrypto())
        ),
        _measure(
            "clock n=4",
            4,
            1,
            30.0 if quick else 300.0,
            {},
            {"virtual_per_real": 100.0},
        ),
    ]
    table = Table(
        title="consensus core in the in-memory harness (real Ed25519 + BLS)",
        caption="rounds: DeltaRound 0, 50 ms links; clock: default Deltas (DeltaRound 1 s)",
    )
    for column in (
        "case",
        "crypto",
        "n/f/t",
        "rounds",
        "virt s",
        "wall s",
        "cpu s",
        "rounds/s",
        "virt/real",
        "target",
    ):
        table.add_column(column, justify="right" if column != "case" else "left")
    for case in cases:
        verdicts = [
            f">={check['minimum']:g}{'/s' if key == 'rounds_per_s' else 'x'} "
            f"{'met' if check['met'] else 'MISSED'}"
            for key, check in case["targets"].items()
        ]
        table.add_row(
            case["name"],
            case["crypto"],
            f"{case['n']}/{case['f']}/{case['t']}",
            str(case["certified_rounds"]),
            f"{case['virtual_s']:g}",
            f"{case['wall_s']:.2f}",
            f"{case['cpu_s']:.2f}",
            f"{case['rounds_per_s']:.1f}",
            f"{case['virtual_per_real']:.0f}x",
            "; ".join(verdicts) or "-",
        )
    # Piped output defaults to 80 columns, too narrow for the table.
    console = Console(width=max(Console().width, 120))
    console.print(table)
    console.print(_crypto_table(cases))
    return {
        "benchmark": "consensus",
        "quick": quick,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cases": cases,
        "all_targets_met": all(
            check["met"] for case in cases for check in case["targets"].values()
        ),
    }
