"""Invariant checkers: atomicity, conservation, exactly-once, no conflicting certificates
and validity, judged from a run's final state and the certificates it saw.

A run (real or simulated) ends with the state of every leg and the movements of value
it saw: transfers out of the escrows, payments at the bank, mints on a destination
chain. The runners turn those into a :class:`RunState` (plain data, no I/O); the
checkers here judge it and return one :class:`Verdict` per invariant with the smallest
witness they found (a settlement id and what is wrong with it).

- **Atomicity**: for every settlement, the asset reaches the buyer iff the seller is
  paid; no settlement ends COMMITTED on one leg and ABORTED on another; no leg is both
  released and refunded.
- **Conservation**: for every asset (a token on a chain, an account currency at the
  bank) the sum over all holders is the same before and after the run, counting
  escrowed and held value, and counting a bridge's locked value against what it minted.
- **Exactly once**: no double payment, release or refund: each settlement is paid,
  released and refunded at most once on each leg.
- **No conflicting certificates**: no settlement has both a COMMIT and an ABORT among
  all the certificates seen: those members accepted (from messages, or formed as leader)
  and those applied on a chain or at the bank; and no round has two: members never
  accepted two different reports for one target, epoch and round (honest members sign
  once per round, so that takes more than f members signing twice, e.g. twins on two
  sides of a partition with t = f+1). The witness names the two sightings (and, for a
  round, the members whose shares are in both).
- **Validity**: a settlement with a COMMIT certified had every leg really prepared at
  its target: the escrow fully locked on its chain (a ``LegLocked`` event that left it
  PREPARED, still in the final chain), the payment held at the bank. A lie that f+1
  members certified shows here (and usually in atomicity too).
- **Liveness after heal**: every settlement ends by ``max(heal, its deadline) + bound``,
  where heal is when the last fault ended and the bound comes from the Delta parameters
  (``scenarios.accounting.liveness_bound``, formula in ``docs/ARCHITECTURE.md``). The
  protocol promises it only with at most f members faulty; the check judges every run,
  so f+1 silent members make it invalid. A settlement still open when the run stopped,
  before its limit, makes it unknown.

A verdict is ``valid``, ``invalid`` (with a witness) or ``unknown`` (the run did not
gather what the check needs, e.g. a settlement that never ended). This module never
talks to a chain or the bank.

A scenario states what its run must show (``expect``): ``"pass"`` (every check valid,
every settlement ended) or the list of checks that must be invalid, every other check
valid (an unsafe scenario names the invariant it breaks). :func:`expectation_differences`
compares the verdicts with it; an unknown verdict never meets an expectation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final


class LegState(StrEnum):
    NONE = "none"  # never prepared (e.g. the bank rejected the instruction)
    PREPARED = "prepared"  # locked or held, no decision applied yet
    COMMITTED = "committed"
    ABORTED = "aborted"


class Movement(StrEnum):
    RELEASE = "release"  # asset (or payment) escrow paid out to the counterparty
    REFUND = "refund"  # escrow paid back to its depositor
    PAYMENT = "payment"  # the bank moved the buyer's money to the seller
    HOLD_CANCEL = "hold-cancel"
    MINT = "mint"  # a bridge minted on the destination chain


@dataclass(frozen=True)
class SettlementOutcome:
    settlement_id: str
    legs: Mapping[str, LegState]  # leg target ("A", "B", "bank") -> final state
    asset_to_buyer: int  # asset units the buyer received for this settlement
    paid_to_seller: int  # payment units the seller received for this settlement
    asset_amount: int
    payment_amount: int
    movements: tuple[tuple[str, Movement], ...] = ()  # (leg target, movement), in order seen
    deadline_at: float | None = None  # run seconds: the deadline (None: never created)
    ended_at: float | None = None  # run seconds: the runner saw every leg end (None: open)


@dataclass(frozen=True)
class SeenCertificate:
    """One certificate a run saw, and who saw it: a member that accepted it (``where`` =
    "node 2"), or a target that applied its decisions ("chain A", "bank"). ``decisions``
    are (settlement id, action name) in the settlement outcomes' id form."""

    where: str
    at: float | None  # run seconds; None when the target's records carry no time
    target: str
    epoch: int | None
    round: int | None
    decisions: tuple[tuple[str, str], ...]
    signers: tuple[int, ...] = ()  # the members whose shares it aggregates (when known)

    @property
    def when(self) -> str:
        """The time in a witness (like ' at 12.345 s'), or nothing when it is not known."""
        return "" if self.at is None else f" at {self.at:.3f} s"

    def describe(self, action: str) -> str:
        if self.epoch is None:
            return f"{action} applied by {self.where}{self.when}"
        return (
            f"{action} for {self.target} (epoch {self.epoch}, round {self.round}) "
            f"accepted by {self.where}{self.when}"
        )


@dataclass(frozen=True)
class LivenessWindow:
    """When a run's faults healed and how long after that (or after a settlement's
    deadline) every settlement must have ended; ``run_end``: when the run stopped
    watching (run seconds)."""

    heal_at: float
    bound_s: float
    run_end: float


@dataclass(frozen=True)
class RunState:
    settlements: tuple[SettlementOutcome, ...]
    # asset name -> total before / after (all holders, escrows and holds included)
    supply_before: Mapping[str, int] = field(default_factory=dict)
    supply_after: Mapping[str, int] = field(default_factory=dict)
    # Every certificate seen; None: the run did not gather them.
    certificates: tuple[SeenCertificate, ...] | None = None
    # (leg target, settlement id) of every leg really prepared at its target; None: not read.
    prepared: frozenset[tuple[str, str]] | None = None
    liveness: LivenessWindow | None = None


@dataclass(frozen=True)
class Verdict:
    invariant: str
    status: str  # "valid" | "invalid" | "unknown"
    witness: str = ""
    checked: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "valid"


def check_atomicity(state: RunState) -> Verdict:
    unknown = []
    for s in sorted(state.settlements, key=lambda s: s.settlement_id):
        finals = set(s.legs.values())
        if LegState.COMMITTED in finals and LegState.ABORTED in finals:
            return Verdict(
                "atomicity",
                "invalid",
                f"{s.settlement_id}: committed on one leg and aborted on another ({_legs(s)})",
            )
        delivered = s.asset_to_buyer >= s.asset_amount
        paid = s.paid_to_seller >= s.payment_amount
        if delivered != paid:
            what = (
                "asset delivered to the buyer but the seller was not paid"
                if delivered
                else "seller paid but the asset was not delivered"
            )
            return Verdict("atomicity", "invalid", f"{s.settlement_id}: {what} ({_legs(s)})")
        for leg in s.legs:
            leg_moves = {m for target, m in s.movements if target == leg}
            if Movement.REFUND in leg_moves and (
                Movement.RELEASE in leg_moves or Movement.MINT in leg_moves
            ):
                return Verdict(
                    "atomicity",
                    "invalid",
                    f"{s.settlement_id}: leg {leg} both released and refunded",
                )
        if LegState.PREPARED in finals:
            unknown.append(s.settlement_id)
    if unknown:
        return Verdict(
            "atomicity",
            "unknown",
            f"{len(unknown)} settlement(s) still prepared at the end, e.g. {unknown[0]}",
            len(state.settlements),
        )
    return Verdict("atomicity", "valid", checked=len(state.settlements))


def check_conservation(state: RunState) -> Verdict:
    if not state.supply_before:
        return Verdict("conservation", "unknown", "no balances were gathered")
    for asset in sorted(set(state.supply_before) | set(state.supply_after)):
        before, after = state.supply_before.get(asset), state.supply_after.get(asset)
        if before is None or after is None:
            return Verdict(
                "conservation",
                "unknown",
                f"{asset}: balance missing {'before' if before is None else 'after'} the run",
            )
        if before != after:
            return Verdict(
                "conservation",
                "invalid",
                f"{asset}: total {before} before the run, {after} after ({after - before:+d})",
            )
    return Verdict("conservation", "valid", checked=len(state.supply_before))


def check_exactly_once(state: RunState) -> Verdict:
    for s in sorted(state.settlements, key=lambda s: s.settlement_id):
        counts = Counter(s.movements)
        for (leg, movement), times in sorted(counts.items()):
            if times > 1:
                return Verdict(
                    "exactly-once",
                    "invalid",
                    f"{s.settlement_id}: {movement.value} on leg {leg} happened {times} times",
                )
        if s.asset_to_buyer > s.asset_amount:
            return Verdict(
                "exactly-once",
                "invalid",
                f"{s.settlement_id}: buyer received {s.asset_to_buyer} asset units for {s.asset_amount}",
            )
        if s.paid_to_seller > s.payment_amount:
            return Verdict(
                "exactly-once",
                "invalid",
                f"{s.settlement_id}: seller received {s.paid_to_seller} for {s.payment_amount}",
            )
    return Verdict("exactly-once", "valid", checked=len(state.settlements))


def _in_order(certificates: Iterable[SeenCertificate]) -> list[SeenCertificate]:
    """Sightings by time (those without one last), then by who saw them: the earliest
    witnesses first, the same order in every run of the same history."""
    return sorted(
        certificates,
        key=lambda c: (c.at is None, c.at or 0.0, c.where, c.target, c.epoch or 0, c.round or 0),
    )


def _report_text(cert: SeenCertificate) -> str:
    """A certified report's decisions, briefly (the witness of a round's two reports)."""
    if not cert.decisions:
        return "no decisions"
    shown = ", ".join(f"{action} {sid}" for sid, action in cert.decisions[:2])
    more = len(cert.decisions) - 2
    return f"[{shown}{f', +{more} more' if more > 0 else ''}]"


def check_no_conflicting_certificates(state: RunState) -> Verdict:
    name = "no-conflicting-certificates"
    if state.certificates is None:
        return Verdict(name, "unknown", "the run gathered no certificates")
    first: dict[str, dict[str, SeenCertificate]] = {}
    rounds: dict[tuple[str, int, int], SeenCertificate] = {}
    # Two reports for one round are a conflict, but COMMIT against ABORT for one
    # settlement is the one that breaks a settlement: it is the witness when both exist.
    round_conflict: str | None = None
    for cert in _in_order(state.certificates):
        if cert.epoch is not None and cert.round is not None:
            earlier = rounds.setdefault((cert.target, cert.epoch, cert.round), cert)
            if earlier.decisions != cert.decisions and round_conflict is None:
                both = sorted(set(earlier.signers) & set(cert.signers))
                signed = f"; member(s) {', '.join(map(str, both))} signed both" if both else ""
                round_conflict = (
                    f"two reports for {cert.target} (epoch {cert.epoch}, round {cert.round}): "
                    f"{_report_text(earlier)} accepted by {earlier.where}{earlier.when}, "
                    f"and {_report_text(cert)} accepted by {cert.where}{cert.when}{signed}"
                )
        for sid, action in cert.decisions:
            if action not in ("COMMIT", "ABORT"):
                continue  # PREPARE conflicts with neither
            seen = first.setdefault(sid, {})
            other = "ABORT" if action == "COMMIT" else "COMMIT"
            if other in seen:
                return Verdict(
                    name,
                    "invalid",
                    f"{sid}: {seen[other].describe(other)}, and {cert.describe(action)}",
                )
            seen.setdefault(action, cert)
    if round_conflict is not None:
        return Verdict(name, "invalid", round_conflict)
    return Verdict(name, "valid", checked=len(state.certificates))


def check_validity(state: RunState) -> Verdict:
    name = "validity"
    if state.certificates is None or state.prepared is None:
        return Verdict(name, "unknown", "the run gathered no certificates or leg records")
    committed: dict[str, SeenCertificate] = {}
    for cert in _in_order(state.certificates):
        for sid, action in cert.decisions:
            if action == "COMMIT":
                committed.setdefault(sid, cert)
    known = {s.settlement_id for s in state.settlements}
    for sid, first in sorted(committed.items()):
        if sid not in known:
            return Verdict(
                name, "invalid", f"{sid}: {first.describe('COMMIT')}, but no party created it"
            )
    for s in sorted(state.settlements, key=lambda s: s.settlement_id):
        seen = committed.get(s.settlement_id)
        if seen is None:
            continue
        for leg in sorted(s.legs):
            if (leg, s.settlement_id) not in state.prepared:
                return Verdict(
                    name,
                    "invalid",
                    f"{s.settlement_id}: {seen.describe('COMMIT')}, but leg {leg} was never "
                    f"prepared at its target ({_legs(s)})",
                )
    return Verdict(name, "valid", checked=len(committed))


def check_liveness(state: RunState) -> Verdict:
    name = "liveness"
    window = state.liveness
    if window is None:
        return Verdict(name, "unknown", "the run did not time its settlements")
    waiting = []
    for s in sorted(state.settlements, key=lambda s: s.settlement_id):
        if s.deadline_at is None:
            waiting.append(s.settlement_id)
            continue
        limit = max(window.heal_at, s.deadline_at) + window.bound_s
        if s.ended_at is not None and s.ended_at <= limit:
            continue
        if s.ended_at is None and window.run_end < limit:
            waiting.append(s.settlement_id)
            continue
        seen = (
            f"ended at {s.ended_at:.3f} s"
            if s.ended_at is not None
            else f"still open when the run stopped at {window.run_end:.3f} s"
        )
        return Verdict(
            name,
            "invalid",
            f"{s.settlement_id}: {seen}, after its limit {limit:.3f} s = max(heal "
            f"{window.heal_at:.3f} s, deadline {s.deadline_at:.3f} s) + bound "
            f"{window.bound_s:.3f} s ({_legs(s)})",
        )
    if waiting:
        return Verdict(
            name,
            "unknown",
            f"{len(waiting)} settlement(s) open when the run stopped, before their limit, "
            f"e.g. {waiting[0]}",
            len(state.settlements),
        )
    return Verdict(name, "valid", checked=len(state.settlements))


CHECKS = (
    check_atomicity,
    check_conservation,
    check_exactly_once,
    check_no_conflicting_certificates,
    check_validity,
    check_liveness,
)
#: The invariant each check judges, in the order ``check_all`` gives their verdicts: the
#: names a scenario's ``expect`` may use.
CHECK_NAMES: Final = (
    "atomicity",
    "conservation",
    "exactly-once",
    "no-conflicting-certificates",
    "validity",
    "liveness",
)


def check_all(state: RunState) -> tuple[Verdict, ...]:
    return tuple(check(state) for check in CHECKS)


def passed(verdicts: Iterable[Verdict]) -> bool:
    """A run passes when no invariant is invalid and none is unknown."""
    return all(v.ok for v in verdicts)


def expectation_differences(
    expect: Sequence[str], verdicts: Iterable[Verdict], open_settlements: int
) -> tuple[str, ...]:
    """How a run differs from its scenario's expectation, one line per difference; empty
    when the expectation is met. ``expect`` names the checks that must be invalid; empty
    means "pass", which also needs every settlement ended (``open_settlements`` = 0)."""
    must_fail = set(expect)
    differences = []
    for v in verdicts:
        want = "invalid" if v.invariant in must_fail else "valid"
        if v.status != want:
            seen = f"{v.status} ({v.witness})" if v.witness and v.status != "valid" else v.status
            differences.append(f"{v.invariant}: expected {want}, got {seen}")
    if not must_fail and open_settlements:
        differences.append(f"{open_settlements} settlement(s) left open at the end")
    return tuple(differences)


def _legs(s: SettlementOutcome) -> str:
    return ", ".join(f"{leg}={state.value}" for leg, state in sorted(s.legs.items()))
