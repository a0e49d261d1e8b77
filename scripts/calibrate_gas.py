"""Calibrate chain_adapters/gas.py: measure every priced code path on anvil and fit CODE_GAS.

    .venv/bin/python scripts/calibrate_gas.py [--seed 1] [--samples FILE] [--refit FILE]

Starts one anvil (``chain_adapters.localchain.start_chain``: 127.0.0.1, ``--hardfork
prague``, stopped by its PID), deploys four escrow stacks (``chain_adapters.devstack``):
committees of n = 4, 16 and 31 and an unsafe-variant coordinator with n = 4. It then runs a
fixed tour of transactions, each on the chain and on ``EscrowModel`` in lockstep
(``tests.escrow.escrow_helpers.GasTwin``): token mints, approvals and transfers; creates
and locks in every mode, by fresh and existing holders; every revert of a party call; the
unsafe self-refund; certified reports of 1 to 128 decisions with every per-decision
outcome, all or only t of the members signing, duplicate transmissions (refused before
verification), reports done and not done (marked or not), and certificates that revert.

For each transaction ``chain_adapters.gas`` gives the exact part (calldata tokens, cold
accesses, SSTORE prices, refunds) and counts the code paths it ran. The code gas of a
transaction is its receipt's gasUsed (plus the refund) less the exact part; for a reverted
transaction, whose gasUsed is often the EIP-7623 floor, it is the execution gas of a
``debug_traceCall`` replay instead (transactions at the floor or whose refund hit the cap
are otherwise left out: their execution is not seen). The constants are the least-squares
fit of the code gas, weighted by 1/gasUsed so that every transaction counts by its
relative error, solved exactly over the rationals.

Output: each call kind's worst relative error with the fitted constants (stderr), then the
block to paste into gas.py (stdout): a comment saying when and how, the digest of the
contract sources (``CALIBRATED_CONTRACTS``, which a test compares) and ``CODE_GAS``.
``--samples`` keeps every measured transaction as JSON, ``--refit`` fits such a file
again without a chain. About 3,100 transactions, 40 s on two cores. It fetches nothing
from the network and sends transactions only to the anvil it started.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chain_adapters.build import compile_contracts  # noqa: E402
from chain_adapters.devstack import deploy_escrow_stack  # noqa: E402
from chain_adapters.gas import STANDARD_TOKEN_GAS, TX_BASE_GAS, Charges  # noqa: E402
from chain_adapters.localchain import anvil_version, start_chain  # noqa: E402
from chain_adapters.model import (  # noqa: E402
    ADMISSION_WINDOW,
    MAX_UINT256,
    ZERO_ADDRESS,
    Mode,
    State,
    Terms,
)
from consensus.report import Action  # noqa: E402
from tests.escrow.escrow_helpers import (  # noqa: E402
    ChainClock,
    GasSample,
    GasTwin,
    contract_sources_digest,
)

CHAIN_ID = 31_341
COMMITTEES = ((4, 1), (16, 5), (31, 10))


# ----------------------------------------------------------------------------- the tour


def prepared(twin: GasTwin, mode: Mode, *, fresh: bool = True, buyer_first: bool = False) -> Terms:
    """A settlement of ``mode`` with every local leg locked, by funded parties. With
    ``fresh`` the parties are new accounts holding only the token they lock, so a COMMIT
    pays into empty balance slots; else long-lived accounts holding both tokens."""
    stack = twin.stack
    seller = twin.funded_party(stack.asset) if fresh else _regular(twin, "seller")
    buyer = twin.funded_party(stack.payment) if fresh else _regular(twin, "buyer")
    terms = twin.terms(mode, seller, buyer)
    locks_asset = mode in (Mode.SWAP, Mode.ASSET_ESCROW, Mode.BRIDGE_SELLER_SIDE)
    locks_payment = mode in (Mode.SWAP, Mode.PAYMENT_ESCROW, Mode.BRIDGE_BUYER_SIDE)
    if locks_asset and not (buyer_first and locks_payment):
        twin.create_and_lock(terms, seller)
        if locks_payment:
            twin.lock_payment(terms)
    else:
        twin.create_and_lock(terms, buyer)
        if locks_asset:
            twin.lock_asset(terms)
    assert twin.model.state_of(terms.settlement_id) == State.PREPARED
    return terms


_REGULARS: dict[tuple[int, str], str] = {}


def _regular(twin: GasTwin, role: str) -> str:
    key = (id(twin), role)
    if key not in _REGULARS:
        _REGULARS[key] = twin.funded_party(twin.stack.asset, twin.stack.payment, amount=10**30)
    return _REGULARS[key]


def tour_tokens(twin: GasTwin) -> None:
    stack = twin.stack
    holder = twin.new_party()
    twin.mint(stack.asset, holder, 1_000)  # fresh balance
    twin.mint(stack.asset, holder, 1_000)  # existing balance
    twin.mint(stack.asset, holder, 5, sender=holder)  # NotMinter
    twin.mint(stack.asset, ZERO_ADDRESS, 5)  # ERC20InvalidReceiver
    twin.approve(stack.asset, holder, 700)  # zero -> non-zero
    twin.approve(stack.asset, holder, 700)  # unchanged
    twin.approve(stack.asset, holder, MAX_UINT256)  # non-zero -> non-zero
    twin.approve(stack.asset, holder, 0)  # cleared: refund
    other = twin.new_party()
    twin.transfer(stack.asset, holder, other, 500)  # to a fresh holder
    twin.transfer(stack.asset, holder, other, 500)  # to an existing holder
    twin.transfer(stack.asset, holder, other, 1_000)  # sender emptied: refund
    twin.transfer(stack.asset, holder, other, 1)  # ERC20InsufficientBalance
    twin.transfer(stack.asset, other, ZERO_ADDRESS, 1)  # ERC20InvalidReceiver


def tour_parties(twin: GasTwin) -> None:
    """Creates and locks in every mode, and every revert of a party call."""
    stack = twin.stack
    for mode in Mode:
        for buyer_first in (False, True):
            prepared(twin, mode, buyer_first=buyer_first)
            prepared(twin, mode, fresh=False, buyer_first=buyer_first)
    seller = twin.funded_party(stack.asset, stack.payment)
    buyer = twin.funded_party(stack.asset, stack.payment)
    # create, then lock, by each leg (a swap in both orders)
    for mode in Mode:
        terms = twin.terms(mode, seller, buyer)
        twin.create(terms, buyer)
        if mode in (Mode.SWAP, Mode.ASSET_ESCROW, Mode.BRIDGE_SELLER_SIDE):
            twin.lock_asset(terms)
        if mode in (Mode.SWAP, Mode.PAYMENT_ESCROW, Mode.BRIDGE_BUYER_SIDE):
            twin.lock_payment(terms)
    swap = _created(twin, Mode.SWAP, seller, buyer)
    twin.lock_payment(swap)
    twin.lock_asset(swap)
    # a party whose allowance is finite, emptied by its lock (refunds of two slots)
    exact = twin.new_party()
    twin.mint(stack.asset, exact, 5 * 10**18)
    twin.approve(stack.asset, exact, 5 * 10**18)
    twin.create_and_lock(twin.terms(Mode.ASSET_ESCROW, exact, buyer), exact)
    finite = twin.new_party()
    twin.mint(stack.payment, finite, 10**9)
    twin.approve(stack.payment, finite, 10**8)
    twin.create_and_lock(twin.terms(Mode.PAYMENT_ESCROW, seller, finite), finite)
    # create reverts
    good = twin.terms(Mode.SWAP, seller, buyer)
    twin.create(twin.terms(Mode.SWAP, seller, seller), seller)  # InvalidTerms
    twin.create(good, twin.new_party())  # WrongCaller
    twin.create(good, seller)
    twin.create(good, seller)  # SettlementExists
    # createAndLock reverts
    twin.create_and_lock(twin.terms(Mode.SWAP, seller, buyer, deadline_in=-5), seller)
    twin.create_and_lock(twin.terms(Mode.SWAP, seller, buyer), twin.new_party())
    twin.create_and_lock(good, seller)  # SettlementExists
    twin.create_and_lock(twin.terms(Mode.PAYMENT_ESCROW, seller, buyer), seller)  # LegNotHere
    no_code = "0x" + "ab" * 20
    twin.create_and_lock(twin.terms(Mode.SWAP, seller, buyer, asset_token=no_code), seller)
    poor = twin.new_party()
    twin.create_and_lock(twin.terms(Mode.SWAP, poor, buyer), poor)  # allowance
    twin.approve(stack.asset, poor, MAX_UINT256)
    twin.create_and_lock(twin.terms(Mode.SWAP, poor, buyer), poor)  # balance
    twin.mint(stack.asset, poor, 10)
    twin.create_and_lock(twin.terms(Mode.SWAP, poor, buyer), poor)  # balance, not empty
    # lock reverts, for both legs
    twin.lock_asset(twin.terms(Mode.SWAP, seller, buyer))  # UnknownSettlement
    twin.lock_payment(twin.terms(Mode.SWAP, seller, buyer))
    tampered = replace(good, asset_amount=good.asset_amount + 1)
    twin.lock_asset(tampered)  # TermsMismatch
    twin.lock_payment(tampered)
    escrow = twin.terms(Mode.ASSET_ESCROW, seller, buyer)
    twin.create(escrow, seller)
    twin.lock_payment(escrow)  # LegNotHere
    pay = twin.terms(Mode.PAYMENT_ESCROW, seller, buyer)
    twin.create(pay, seller)
    twin.lock_asset(pay)  # LegNotHere
    twin.lock_asset(good, buyer)  # WrongCaller
    twin.lock_payment(good, seller)
    twin.lock_asset(good)
    twin.lock_asset(good)  # WrongState
    twin.lock_payment(escrow := _created(twin, Mode.PAYMENT_ESCROW, seller, buyer))
    twin.lock_payment(escrow)  # WrongState
    late = twin.terms(Mode.SWAP, seller, buyer, deadline_in=3)
    twin.create(late, seller)
    twin.now += 10
    twin.lock_asset(late)  # DeadlinePassed
    twin.lock_payment(late)
    nocode = twin.terms(Mode.SWAP, seller, buyer, asset_token=no_code, payment_token=no_code)
    twin.create(nocode, seller)
    twin.lock_payment(nocode)  # TokenCallFailed
    twin.lock_asset(nocode)
    twin.reclaim(good)  # UnsafeSelfRefundDisabled (a safe coordinator)
    twin.lock_asset(_created(twin, Mode.ASSET_ESCROW, poor, buyer))  # balance
    broke = twin.new_party()
    twin.lock_asset(_created(twin, Mode.ASSET_ESCROW, broke, buyer))  # allowance
    twin.lock_payment(_created(twin, Mode.PAYMENT_ESCROW, seller, broke))  # allowance
    twin.approve(stack.payment, broke, 10**12)
    twin.lock_payment(_created(twin, Mode.PAYMENT_ESCROW, seller, broke))  # balance


def _created(twin: GasTwin, mode: Mode, seller: str, buyer: str) -> Terms:
    terms = twin.terms(mode, seller, buyer)
    twin.create(terms, seller)
    return terms


def tour_reclaim(twin: GasTwin) -> None:
    """The unsafe variant: reclaims in every lockable state, and their reverts."""
    stack = twin.stack
    seller = twin.funded_party(stack.asset, stack.payment)
    buyer = twin.funded_party(stack.asset, stack.payment)
    cases = []
    for mode in Mode:
        cases.append(prepared(twin, mode))
        cases.append(prepared(twin, mode, fresh=False))
    half = twin.terms(Mode.SWAP, seller, buyer)
    twin.create_and_lock(half, seller)
    cases.append(half)
    half_b = twin.terms(Mode.SWAP, seller, buyer)
    twin.create_and_lock(half_b, buyer)
    cases.append(half_b)
    early = prepared(twin, Mode.SWAP)
    twin.reclaim(early)  # DeadlineNotPassed
    twin.reclaim(twin.terms(Mode.SWAP, seller, buyer))  # UnknownSettlement
    twin.reclaim(replace(early, payment_amount=1))  # TermsMismatch
    twin.reclaim(early, twin.new_party())  # WrongCaller
    only_created = _created(twin, Mode.SWAP, seller, buyer)
    twin.now += 4000
    twin.reclaim(only_created)  # WrongState
    for terms in cases:
        twin.reclaim(terms, terms.buyer if twin.rng.random() < 0.5 else terms.seller)


def tour_admission(twin: GasTwin) -> None:
    """Admission (a coordinator deployed with admissionFloor 3): creates admitted below the
    floor, admitted and refused at it by the last window's pace, by create and by
    createAndLock; reports that end settlements (the window's first count and a later
    one) and one that ends none."""
    stack = twin.stack
    seller = twin.funded_party(stack.asset, stack.payment)
    buyer = twin.funded_party(stack.asset, stack.payment)
    rounds = iter(range(1, 100))

    def next_window() -> None:  # the next call is the first of a new window
        twin.now = (twin.now // ADMISSION_WINDOW + 1) * ADMISSION_WINDOW

    def end(pairs: Sequence[tuple[Terms, Action]]) -> None:
        decisions = [(t.settlement_id, action, t.terms_hash()) for t, action in pairs]
        twin.apply(twin.certify(decisions, round=next(rounds)), [t for t, _ in pairs])

    def lock(deadline_in: int = 3600) -> Terms:
        terms = twin.terms(Mode.ASSET_ESCROW, seller, buyer, deadline_in=deadline_in)
        twin.create_and_lock(terms, seller)
        return terms

    next_window()
    first = [lock() for _ in range(3)]  # below the floor
    lock()  # refused: nothing ended in the last window
    twin.create(twin.terms(Mode.SWAP, seller, buyer), buyer)  # refused, by create
    end([(first[0], Action.COMMIT), (first[1], Action.ABORT)])  # the window's first count
    end([(first[2], Action.ABORT)])  # a later count in the same window
    next_window()  # the last window ended 3; none is open
    second = [lock() for _ in range(3)]
    second.append(lock())  # at the floor: admitted at the last window's pace
    lock(deadline_in=20)  # refused: too close to its deadline for that pace
    twin.create(twin.terms(Mode.SWAP, seller, buyer, deadline_in=20), seller)  # refused
    created = twin.terms(Mode.SWAP, seller, buyer)
    twin.create(created, seller)  # admitted at the pace, by create
    end([(t, Action.ABORT) for t in second] + [(created, Action.ABORT)])
    unknown = twin.terms(Mode.SWAP, seller, buyer)
    end([(unknown, Action.ABORT)])  # ends nothing (UNKNOWN_SETTLEMENT)
    twin.now += 3 * ADMISSION_WINDOW  # windows with nothing ended
    for _ in range(4):
        lock()  # the last is refused: the last window ended none


def tour_reports(twin: GasTwin, batches: Sequence[int], mixed: Sequence[int]) -> None:
    """Reports of every batch size, with every per-decision outcome and signer pattern."""
    committee = twin.stack.committee.config
    n, t = committee.n, committee.t
    signer_sets = [None, list(range(n)), sorted(twin.rng.sample(range(n), t))]
    round_ = 100
    for batch in batches:
        combos = [(a, f) for a in (Action.COMMIT, Action.ABORT) for f in (True, False)]
        for action, fresh in combos if batch <= 32 else combos[::3]:
            modes = [Mode(1 + i % 5) for i in range(batch)]
            chosen = [prepared(twin, m, fresh=fresh) for m in modes]
            round_ += 1
            cert = twin.certify(
                [(x.settlement_id, action, x.terms_hash()) for x in chosen],
                signers=signer_sets[round_ % 3],
                round=round_,
            )
            twin.apply(cert, chosen, label=f" n={n} batch={batch}")
            # a duplicate transmission: refused before verification (ReportAlreadyApplied)
            twin.apply(cert, chosen, label=f" n={n} batch={batch} duplicate")
            if batch <= 8:  # the same decisions certified again: every one ALREADY_APPLIED
                again = twin.certify(
                    [(x.settlement_id, action, x.terms_hash()) for x in chosen],
                    signers=signer_sets[round_ % 3],
                    round=round_ + 5000,
                )
                twin.apply(again, chosen, label=f" n={n} batch={batch} replay")
    # every applied path in one report, twice
    for _ in range(2):
        round_ += 1
        _every_path_report(twin, round_, signer_sets[round_ % 3])
    # mixed outcomes in one report
    for batch in mixed:
        round_ += 1
        _mixed_report(twin, batch, round_, signer_sets[round_ % 3])
    for batch in (1, 3, 6):
        round_ += 10
        _strict_reports(twin, batch, round_, signer_sets[round_ % 3])


def _strict_reports(twin: GasTwin, batch: int, round_: int, signers: Sequence[int] | None) -> None:
    """applyReportStrict: applied, replayed (ALREADY_APPLIED), flipped (reverts with
    ConflictingDecision), and a report whose last decision is rejected."""
    chosen = [prepared(twin, Mode(twin.rng.randrange(1, 6))) for _ in range(batch)]
    decisions = [(t.settlement_id, Action.COMMIT, t.terms_hash()) for t in chosen]
    cert = twin.certify(decisions, signers=signers, round=round_)
    twin.apply(cert, chosen, strict=True, label=f" strict batch={batch}")
    twin.apply(cert, chosen, strict=True, label=f" strict batch={batch} replay")
    flipped = [(sid, Action.ABORT, h) for sid, _, h in decisions]
    twin.apply(twin.certify(flipped, signers=signers, round=round_ + 1), chosen, strict=True)
    more = [prepared(twin, Mode(twin.rng.randrange(1, 6))) for _ in range(batch)]
    unknown = twin.terms(Mode.SWAP, _regular(twin, "seller"), twin.new_party())
    rejected = [(t.settlement_id, Action.COMMIT, t.terms_hash()) for t in (*more, unknown)]
    twin.apply(
        twin.certify(rejected, signers=signers, round=round_ + 2), [*more, unknown], strict=True
    )


def _every_path_report(twin: GasTwin, round_: int, signers: Sequence[int] | None) -> None:
    """COMMIT in every mode, ABORT from every state and mode, in one report (shuffled)."""
    cases: list[tuple[Terms, Action]] = []
    for mode in Mode:
        cases.append((prepared(twin, mode), Action.COMMIT))
        cases.append((prepared(twin, mode, fresh=False), Action.ABORT))
        cases.append(
            (_created(twin, mode, _regular(twin, "seller"), twin.new_party()), Action.ABORT)
        )
    for first in ("seller", "buyer"):
        half = twin.terms(Mode.SWAP, _regular(twin, "seller"), _regular(twin, "buyer"))
        twin.create_and_lock(half, half.seller if first == "seller" else half.buyer)
        cases.append((half, Action.ABORT))
    twin.rng.shuffle(cases)
    decisions = [(t.settlement_id, action, t.terms_hash()) for t, action in cases]
    twin.apply(
        twin.certify(decisions, signers=signers, round=round_),
        [t for t, _ in cases],
        label=f" every path batch={len(cases)}",
    )


def _mixed_report(
    twin: GasTwin, batch: int, round_: int, signers: Sequence[int] | None, strict: bool = False
) -> None:
    stack = twin.stack
    seller = _regular(twin, "seller")
    decisions, terms = [], []
    for _ in range(batch):
        kind = twin.rng.randrange(10)
        mode = Mode(twin.rng.randrange(1, 6))
        if kind == 0:  # COMMIT applied
            t = prepared(twin, mode)
            decisions.append((t.settlement_id, Action.COMMIT, t.terms_hash()))
        elif kind == 1:  # ABORT from CREATED
            t = _created(twin, mode, seller, twin.new_party())
            decisions.append((t.settlement_id, Action.ABORT, t.terms_hash()))
        elif kind == 2:  # unknown settlement
            t = twin.terms(mode, seller, twin.new_party())
            decisions.append((t.settlement_id, Action.COMMIT, t.terms_hash()))
        elif kind == 3:  # terms mismatch
            t = _created(twin, mode, seller, twin.new_party())
            decisions.append((t.settlement_id, Action.COMMIT, twin.rng.randbytes(32)))
        elif kind == 4:  # not prepared
            t = _created(twin, mode, seller, twin.new_party())
            decisions.append((t.settlement_id, Action.COMMIT, t.terms_hash()))
        elif kind == 5:  # terms calldata mismatch
            t = prepared(twin, mode)
            decisions.append((t.settlement_id, Action.COMMIT, t.terms_hash()))
            t = replace(t, buyer=t.seller)
        elif kind == 6:  # PREPARE: unsupported
            t = prepared(twin, mode)
            decisions.append((t.settlement_id, Action.PREPARE, t.terms_hash()))
        elif kind == 7:  # ABORT of a half-locked swap, or a prepared leg
            if mode == Mode.SWAP:
                t = twin.terms(mode, _regular(twin, "seller"), _regular(twin, "buyer"))
                twin.create_and_lock(t, twin.rng.choice([t.buyer, t.seller]))
            else:
                t = prepared(twin, mode)
            decisions.append((t.settlement_id, Action.ABORT, t.terms_hash()))
        elif kind == 8:  # execution fails: a mint the coordinator may not make, or no code
            bad = stack.asset.address if twin.rng.random() < 0.5 else "0x" + "cd" * 20
            buyer = twin.funded_party(stack.payment)
            t = twin.terms(Mode.BRIDGE_BUYER_SIDE, seller, buyer, asset_token=bad)
            twin.create_and_lock(t, buyer)
            decisions.append((t.settlement_id, Action.COMMIT, t.terms_hash()))
        else:  # conflict / already applied need an earlier report: commit now, abort later
            t = prepared(twin, mode)
            decisions.append((t.settlement_id, Action.ABORT, t.terms_hash()))
        terms.append(t)
    cert = twin.certify(decisions, signers=signers, round=round_)
    twin.apply(cert, terms, strict=strict, label=f" mixed batch={batch}")
    # the same settlements again: ALREADY_APPLIED, CONFLICT for the other action
    flipped = [
        (sid, Action.COMMIT if a == Action.ABORT else Action.ABORT, h) for sid, a, h in decisions
    ]
    twin.apply(
        twin.certify(flipped, signers=signers, round=round_ + 1000),
        terms,
        label=f" mixed batch={batch} flipped",
    )


def tour_bad_certificates(twin: GasTwin) -> None:
    committee = twin.stack.committee.config
    n, t = committee.n, committee.t
    for batch in (1, 8):
        chosen = [prepared(twin, Mode.ASSET_ESCROW, fresh=False) for _ in range(batch)]
        decisions = [(x.settlement_id, Action.COMMIT, x.terms_hash()) for x in chosen]
        twin.apply(twin.certify(decisions, round=7, digest=twin.rng.randbytes(32)), chosen)
        twin.apply(twin.certify(decisions, signers=list(range(t - 1)), round=7), chosen)
        good = twin.certify(decisions, round=7)
        forged = type(good)(good.report, good.signers ^ (1 << (n - 1)) | 1, good.signature)
        twin.apply(forged, chosen)  # InvalidSignature
        twin.apply(type(good)(good.report, good.signers | 1 << n, good.signature), chosen)
        twin.apply(good, chosen[:-1] if batch > 1 else [], label=" short")  # BatchLengthMismatch


# ----------------------------------------------------------------------------- the fit


_Row = tuple[Mapping[str, int], int, int]  # code counts, code gas, the transaction's gas


def fit_rows(samples: Sequence[GasSample]) -> list[_Row]:
    """(code counts, code gas, gasUsed) of each sample whose execution gas is known: from
    the receipt, or from a trace where the receipt shows only the EIP-7623 floor."""
    rows = []
    for s in samples:
        c = s.charges
        if s.traced_execution is not None:
            rows.append((c.code, s.traced_execution - c.exact_gas, s.gas_used))
            continue
        refund = 0 if c.reverted else c.refund
        if s.gas_used == c.floor_gas() or refund * 4 > s.gas_used:
            continue
        spent = s.gas_used + refund
        code_gas = spent - TX_BASE_GAS - STANDARD_TOKEN_GAS * c.calldata_tokens - c.exact_gas
        rows.append((c.code, code_gas, s.gas_used))
    return rows


def least_squares(rows: Sequence[_Row]) -> dict[str, Fraction]:
    """Least squares of the relative error (each row weighted by 1/gasUsed), exact over
    the rationals (normal equations, Gauss-Jordan): a 5-million-gas report must not
    outweigh a 30,000-gas revert. A code path that no sample separates from the others
    is an error."""
    keys = sorted({k for counts, _, _ in rows for k in counts})
    index = {k: i for i, k in enumerate(keys)}
    size = len(keys)
    a = [[Fraction(0)] * (size + 1) for _ in range(size)]
    for counts, y, used in rows:
        weight = Fraction(1, used * used)
        items = [(index[k], v) for k, v in counts.items()]
        for i, vi in items:
            for j, vj in items:
                a[i][j] += weight * vi * vj
            a[i][size] += weight * vi * y
    for col in range(size):
        pivot = next((r for r in range(col, size) if a[r][col] != 0), None)
        if pivot is None:
            raise SystemExit(f"code path {keys[col]!r} is not separable from the others")
        a[col], a[pivot] = a[pivot], a[col]
        p = a[col][col]
        a[col] = [v / p for v in a[col]]
        for r in range(size):
            if r != col and a[r][col] != 0:
                factor = a[r][col]
                a[r] = [vr - factor * vc for vr, vc in zip(a[r], a[col], strict=True)]
    return {k: a[index[k]][size] for k in keys}


def report_errors(samples: Sequence[GasSample], code_gas: Mapping[str, int]) -> dict[str, float]:
    """Print (to stderr) and return the worst relative error of each call kind."""
    worst: dict[str, tuple[float, str, int, int]] = {}
    for s in samples:
        predicted = s.charges.gas_used(code_gas)
        error = (predicted - s.gas_used) / s.gas_used
        group = s.kind.split(" n=")[0].split(" mixed")[0]
        if group not in worst or abs(error) > abs(worst[group][0]):
            worst[group] = (error, s.kind, predicted, s.gas_used)
    for group in sorted(worst):
        error, kind, predicted, used = worst[group]
        print(
            f"  {group:<55} {error:+.3%}  ({kind}: table {predicted:,}, anvil {used:,})",
            file=sys.stderr,
        )
    return {g: w[0] for g, w in worst.items()}


def run_tour(seed: int) -> list[GasSample]:
    rng = random.Random(seed)
    artifacts = compile_contracts()
    log_dir = Path(tempfile.mkdtemp(prefix="dvpsim-calibrate-gas-"))
    samples: list[GasSample] = []
    with start_chain(CHAIN_ID, log_dir=log_dir) as chain:
        w3 = chain.web3()
        stacks = {n: deploy_escrow_stack(w3, artifacts, n=n, f=f) for n, f in COMMITTEES}
        unsafe_stack = deploy_escrow_stack(
            w3, artifacts, n=4, f=1, unsafe_self_refund_after_deadline=True
        )
        clock = ChainClock(int(w3.eth.get_block("latest")["timestamp"]))
        twins = {
            n: GasTwin(chain, stack, rng, clock=clock, trace_reverts=True)
            for n, stack in stacks.items()
        }
        unsafe = GasTwin(chain, unsafe_stack, rng, unsafe=True, clock=clock, trace_reverts=True)
        # Admission: a floor the tour crosses, and an unsafe coordinator whose floor it
        # never reaches (its reclaims count ended settlements).
        admission_stack = deploy_escrow_stack(w3, artifacts, n=4, f=1, admission_floor=3)
        admission = GasTwin(
            chain, admission_stack, rng, admission_floor=3, clock=clock, trace_reverts=True
        )
        unsafe_admission_stack = deploy_escrow_stack(
            w3, artifacts, n=4, f=1, unsafe_self_refund_after_deadline=True, admission_floor=1000
        )
        unsafe_admission = GasTwin(
            chain,
            unsafe_admission_stack,
            rng,
            unsafe=True,
            admission_floor=1000,
            clock=clock,
            trace_reverts=True,
        )
        begun = time.monotonic()
        steps: list[tuple[str, Callable[[], None]]] = [
            ("tokens", lambda: tour_tokens(twins[4])),
            ("parties", lambda: tour_parties(twins[4])),
            ("reclaim", lambda: tour_reclaim(unsafe)),
            ("admission", lambda: tour_admission(admission)),
            ("reclaim with admission", lambda: tour_reclaim(unsafe_admission)),
            ("bad certificates n=4", lambda: tour_bad_certificates(twins[4])),
            ("bad certificates n=16", lambda: tour_bad_certificates(twins[16])),
            ("reports n=4", lambda: tour_reports(twins[4], (1, 2, 8), (3, 5, 8, 13, 20))),
            ("reports n=16", lambda: tour_reports(twins[16], (1, 8), (4, 9, 16))),
            ("reports n=31", lambda: tour_reports(twins[31], (1, 8, 33, 128), (6, 11, 128))),
        ]
        for name, step in steps:
            started = time.monotonic()
            step()
            print(f"{name}: {time.monotonic() - started:.1f} s", file=sys.stderr)
        for twin in (*twins.values(), unsafe, admission, unsafe_admission):
            samples += twin.samples
        print(f"{len(samples)} transactions in {time.monotonic() - begun:.0f} s", file=sys.stderr)
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--samples", type=Path, help="write every measured sample here (JSON)")
    parser.add_argument("--refit", type=Path, help="fit samples written earlier; no chain")
    args = parser.parse_args(argv)
    samples = load_samples(args.refit) if args.refit else run_tour(args.seed)
    if args.samples:
        save_samples(args.samples, samples)
    fitted = least_squares(fit_rows(samples))
    code_gas = {k: round(v) for k, v in fitted.items()}
    print("worst relative error per call kind, with these constants:", file=sys.stderr)
    worst = report_errors(samples, code_gas)
    print(
        f"#: Fitted on {datetime.date.today().isoformat()} by scripts/calibrate_gas.py "
        f"--seed {args.seed}: {len(samples):,} transactions"
    )
    print(
        f"#: on anvil {anvil_version()} --hardfork prague, contracts {contract_sources_digest()}; "
        f"worst error on them {max(abs(e) for e in worst.values()):.2%}."
    )
    print(f'CALIBRATED_CONTRACTS: Final = "{contract_sources_digest()}"')
    print("CODE_GAS: Final[Mapping[str, int]] = {")
    for key, value in sorted(code_gas.items()):
        print(f'    "{key}": {value},')
    print("}")
    return 0


def save_samples(path: Path, samples: Sequence[GasSample]) -> None:
    rows = [
        {
            "call": s.call,
            "kind": s.kind,
            "gas_used": s.gas_used,
            "traced_execution": s.traced_execution,
            "calldata_tokens": s.charges.calldata_tokens,
            "exact_gas": s.charges.exact_gas,
            "refund": s.charges.refund,
            "reverted": s.charges.reverted,
            "code": dict(s.charges.code),
        }
        for s in samples
    ]
    path.write_text(json.dumps(rows, indent=None, separators=(",", ":")))


def load_samples(path: Path) -> list[GasSample]:
    return [
        GasSample(
            r["call"],
            r["kind"],
            Charges(r["calldata_tokens"], r["exact_gas"], r["refund"], r["code"], r["reverted"]),
            r["gas_used"],
            r["traced_execution"],
        )
        for r in json.loads(path.read_text())
    ]


if __name__ == "__main__":
    raise SystemExit(main())
