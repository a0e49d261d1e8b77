"""Checkers for the consensus invariants, over what a simulation observed.

- Agreement: no two valid certificates (for any targets) carry conflicting decisions for
  one settlement (``consensus.report.conflicts``). Every certificate that appeared
  anywhere counts, including ones only a Byzantine member ever sent: a target would
  accept it.
- Validity (facts): every decision in a valid certificate was observed, as a fact, by at
  least one honest member.
- Determinism: the same simulation run twice yields the same history, byte for byte.
- Liveness: once the network has healed, every honest member accepts a certificate within
  a bound derived from the Delta parameters (``liveness_bound``).

Checkers verify certificates themselves (``verify_certificate``) rather than trusting any
node, and return a ``Verdict`` with the smallest witness they found, never raise on a
violation.

This module must never change a result it checks, and does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from consensus.config import ConsensusConfig
from consensus.crypto import REAL_CRYPTO, CryptoSuite
from consensus.harness import CertificateSighting, NetworkProfile, Simulation, SimulationResult
from consensus.outcome import decode_facts
from consensus.pacemaker import PROGRESS_BACKOFF_DOUBLINGS, progress_timeout
from consensus.report import CertificateError, Decision, conflicts, verify_certificate

__all__ = [
    "Verdict",
    "check_agreement",
    "check_determinism",
    "check_fact_validity",
    "check_liveness",
    "liveness_bound",
    "valid_sightings",
]


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    detail: str
    witness: tuple[CertificateSighting, ...] = ()


def valid_sightings(
    config: ConsensusConfig,
    sightings: Iterable[CertificateSighting],
    *,
    crypto: CryptoSuite = REAL_CRYPTO,
) -> list[CertificateSighting]:
    """The sightings whose certificate verifies for its target's committee, with the
    run's crypto suite (a certificate of one suite never verifies under another)."""
    valid = []
    for s in sightings:
        try:
            verify_certificate(s.certificate, config.targets[s.target].committee, crypto=crypto)
        except CertificateError:
            continue
        valid.append(s)
    return valid


def check_agreement(
    config: ConsensusConfig,
    sightings: Sequence[CertificateSighting],
    *,
    crypto: CryptoSuite = REAL_CRYPTO,
) -> Verdict:
    first: dict[bytes, tuple[Decision, CertificateSighting]] = {}
    valid = valid_sightings(config, sightings, crypto=crypto)
    for s in valid:
        for d in s.certificate.report.decisions:
            seen = first.get(d.settlement_id)
            if seen is None:
                first[d.settlement_id] = (d, s)
            elif conflicts(seen[0], d):
                return Verdict(
                    False,
                    f"settlement 0x{d.settlement_id.hex()} certified {seen[0].action.name} "
                    f"(epoch {seen[1].certificate.report.epoch}, round "
                    f"{seen[1].certificate.report.round}) and {d.action.name} (epoch "
                    f"{s.certificate.report.epoch}, round {s.certificate.report.round})",
                    (seen[1], s),
                )
    return Verdict(True, f"{len(valid)} valid certificates, no conflicting decisions")


def check_fact_validity(
    config: ConsensusConfig,
    sightings: Sequence[CertificateSighting],
    honest_observations: Iterable[bytes],
    *,
    crypto: CryptoSuite = REAL_CRYPTO,
) -> Verdict:
    """For ``FactsOutcome`` runs: each certified decision is a fact an honest member
    observed (``honest_observations``: every observation honest members produced)."""
    observed: set[Decision] = set()
    for observation in honest_observations:
        observed.update(decode_facts(observation) or ())
    for s in valid_sightings(config, sightings, crypto=crypto):
        for d in s.certificate.report.decisions:
            if d not in observed:
                return Verdict(
                    False,
                    f"certified {d.action.name} for settlement 0x{d.settlement_id.hex()} "
                    "was observed by no honest member",
                    (s,),
                )
    return Verdict(True, "every certified fact was observed by an honest member")


def liveness_bound(
    config: ConsensusConfig, network: NetworkProfile, observation_delay: float = 0.0
) -> float:
    """Time after the network heals by which every honest member has accepted a
    certificate, if at most f members are faulty. With D the longest healthy delay:

    - DeltaProgress + D: every honest member has heard every honest member's latest
      NEW-EPOCH (a pending request is resent every DeltaResend, the epoch a member is in
      every DeltaProgress);
    - up to 2f+2 epochs fail: at most 2f consecutive epochs have faulty leaders (every
      block of n epochs has each leader once), one more may be cut short by r_max and
      one entered while members were out of step; each costs at most DeltaProgress
      (doubled after failed epochs, ``progress_timeout``) until the timeout,
      DeltaResend until the requests are resent, and 2D for them to arrive;
    - then a round of an honest leader: DeltaGrace, five message delays, one resend of a
      lost request, the observation delay, and D for the certificate to reach everyone.
    """
    d = network.max_healthy_delay
    longest_epoch = progress_timeout(config.delta_progress, PROGRESS_BACKOFF_DOUBLINGS)
    failed_epoch = longest_epoch + config.delta_resend + 2 * d
    good_round = config.delta_grace + 6 * d + config.delta_resend + observation_delay
    return config.delta_progress + d + (2 * config.f + 2) * failed_epoch + good_round


def check_determinism(make: Callable[[], Simulation]) -> Verdict:
    """Run the simulation ``make`` builds twice and compare the histories record for
    record; on a difference, name the first record that differs."""
    first, second = make().run(), make().run()
    if first.history == second.history:
        return Verdict(True, f"{len(first.history)} records, identical ({first.history_digest()})")
    for index, (a, b) in enumerate(zip(first.history, second.history, strict=False)):
        if a != b:
            return Verdict(False, f"histories differ at record {index}: {a!r} vs {b!r}")
    return Verdict(
        False, f"histories differ in length: {len(first.history)} vs {len(second.history)}"
    )


def check_liveness(result: SimulationResult, heal_at: float, bound: float) -> Verdict:
    deadline = heal_at + bound
    if result.end_time < deadline:
        return Verdict(False, f"run ended at {result.end_time}, before the deadline {deadline}")
    late = []
    for node in sorted(result.honest):
        times = [c.time for c in result.certified if c.node == node and heal_at <= c.time]
        if not times or min(times) > deadline:
            late.append(node)
    if late:
        return Verdict(
            False,
            f"honest members {late} accepted no certificate between {heal_at} and {deadline}",
        )
    return Verdict(True, f"every honest member certified within {bound:.3f} s of healing")
