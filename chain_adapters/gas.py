"""Gas for the simulated chains: a calibrated table, not an EVM.

The deterministic simulation runs each chain as ``chain_adapters.model.EscrowModel``, which
knows what a call does (events, reverts, balances) but not what it costs. This module
prices every transaction the simulation sends as the whole-transaction ``gasUsed`` the
same call gets on anvil 1.7.1 with ``--hardfork prague``: the 21,000 base, calldata with
the EIP-7623 floor, and execution. Figures carry :data:`GAS_TABLE_LABEL`.

A transaction is priced in two parts:

* **Exact rules of the EVM** for what depends on the chain's state and the call's bytes:
  calldata tokens (zero byte 1, other byte 4; 4 gas per token, floor 10 per token),
  EIP-2929 cold and warm slots and accounts, EIP-2200 SSTORE prices (a slot written from
  zero to non-zero costs 20,000, a clean non-zero slot 2,900, a slot already written in
  the transaction 100) and EIP-3529 refunds (4,800 for a slot cleared, at most a fifth of
  the gas, none for a reverted transaction). :class:`_Ledger` replays the slots the
  contract touches, in the contract's order, from the state before the call: a recipient
  who held none of a token, a new settlement record, a party emptied by its lock, the
  word of done-report bits a report is checked against and, once done, marked in (a zero
  word costs 20,000 to mark, a word of earlier rounds 2,900; ``model.done_bit``).
* **Fitted constants** (:data:`CODE_GAS`) for everything else: the opcodes of each code
  path of ``DvPCoordinator``, its verifier and ``DvPToken`` (dispatch, checks, hashing,
  events, calls, the BLS precompiles; per decision by outcome, per non-signer member; a
  duplicate refused before verification, ``applyReport:ReportAlreadyApplied``, and the
  marking of a report done, ``report.mark``).
  The EVM is deterministic, so a path costs the same every time;
  ``scripts/calibrate_gas.py`` measures the paths on anvil and fits them. On the
  calibration tour and on tests/escrow/test_gas_table.py's random sequences no
  transaction is off by more than 0.4% (the test holds every one to 5%).

The pre-state is read, never copied: call a ``meter_*`` function or a :class:`GasTable`
method *right after* the model call, with the model in its new state and the call's
``outcome`` (the events the model returned, or the :class:`EscrowRevert` it raised). The
state before the call is the state after it minus the call's own events (a reverted call
changed nothing). The one value no event tells is the allowance an ``approve``
overwrites: pass ``previous``, or use :meth:`GasTable.before`, which reads it.

Not priced (:class:`GasTableError`): committees above 128 members (a second key table),
reverts the escrow calls cannot meet from honest encoders (``MalformedReport``,
``SignatureAtInfinity``, a ``Panic`` on a minted supply beyond 2**256), and
``InsufficientGasForDecision`` (the model has no gas limit). A token call that fails
after an earlier one of the same decision succeeded is priced without the earlier one's
code (it cannot happen: see :func:`_execute`).

This module must never do I/O, never change the model it reads, and never claim to be an
EVM.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from eth_utils.crypto import keccak

from chain_adapters.model import (
    ADMISSION_WINDOW,
    FINAL_SKIPS,
    LOCK_TRANSITIONS,
    MAX_UINT256,
    ZERO_ADDRESS,
    DecisionSkipped,
    EscrowEvent,
    EscrowModel,
    EscrowRevert,
    Leg,
    LegLocked,
    Mode,
    SettlementAborted,
    SettlementCommitted,
    SettlementCreated,
    SettlementExpired,
    SettlementRefused,
    SkipReason,
    State,
    Terms,
    Transfer,
    checksum_address,
    decision_skip,
    done_bit,
    encode_terms,
    leg_token,
    locked_legs,
    terms_hash,
)
from consensus.report import Action, Certificate, Decision, Report, encode_report

__all__ = [
    "CODE_GAS",
    "GAS_TABLE_LABEL",
    "MAX_PRICED_COMMITTEE",
    "Charges",
    "GasTable",
    "GasTableError",
    "Outcome",
    "PendingCall",
    "meter_apply_report",
    "meter_approve",
    "meter_create",
    "meter_create_and_lock",
    "meter_lock_asset",
    "meter_lock_payment",
    "meter_mint",
    "meter_reclaim_after_deadline",
    "meter_transfer",
]

GAS_TABLE_LABEL: Final = "calibrated table (anvil 1.7.1, prague), not an EVM"

#: What a model call produced: its events, or the revert it raised.
Outcome = Sequence[EscrowEvent] | EscrowRevert

#: The verifier reads member keys from one key table up to this size (OracleVerifierBase
#: KEYS_PER_TABLE); bigger committees read a second table the table does not price.
MAX_PRICED_COMMITTEE: Final = 128

# ----------------------------------------------------------------------------- EVM rules

TX_BASE_GAS: Final = 21_000
STANDARD_TOKEN_GAS: Final = 4  # per calldata token (EIP-2028: 16 per non-zero byte = 4 tokens)
FLOOR_TOKEN_GAS: Final = 10  # EIP-7623 (Prague) floor per calldata token
NONZERO_BYTE_TOKENS: Final = 4
COLD_SLOAD_EXTRA: Final = 2_000  # EIP-2929: 2,100 cold minus the 100 of a warm read
COLD_ACCOUNT_EXTRA: Final = 2_500  # EIP-2929: 2,600 cold minus the 100 of a warm access
SSTORE_SET: Final = 20_000
SSTORE_RESET: Final = 2_900
SSTORE_DIRTY: Final = 100
SSTORE_CLEAR_REFUND: Final = 4_800  # EIP-3529
MAX_REFUND_QUOTIENT: Final = 5  # EIP-3529

# ----------------------------------------------------------------------------- constants

#: Gas of each code path beyond what the exact rules above price: "<function>[.<path>]"
#: for a call that succeeded, "<function>:<Error>" for one reverted by that error,
#: "decision.*" per decision of a report, "report.*" per decision for reading and hashing
#: the report, "verify.*" for the signers' key (per non-signer, per bit of the non-signer
#: bitmap), "caller.buyer" for a caller check passed as the buyer, "admission.*" on a
#: coordinator with admission (a create counted, the pace check at the floor, the ended
#: count of a report or reclaim; a refusal's code is "create.refused" and
#: "createAndLock.refused").
#: Measured with scripts/calibrate_gas.py (module docstring there): a fixed tour of
#: transactions run on anvil and on EscrowModel in lockstep, each receipt's gasUsed (or,
#: for a revert, its traced execution) less the exact part above, and a least-squares fit
#: of the relative error. Recalibrate when the contracts change (a test compares
#: CALIBRATED_CONTRACTS with the sources).
#: Fitted on 2026-12-01 by scripts/calibrate_gas.py --seed 1: 3,173 transactions
#: on anvil 1.7.1 --hardfork prague, contracts 7d4c3964c7b03cc6; worst error on them 0.14%.
CALIBRATED_CONTRACTS: Final = "7d4c3964c7b03cc6"
CODE_GAS: Final[Mapping[str, int]] = {
    "admission.admitted": 252,
    "admission.check": 895,
    "admission.ended": 560,
    "applyReport": 177623,
    "applyReport.strict": -42,
    "applyReport:BatchLengthMismatch": 174863,
    "applyReport:ConfigDigestMismatch": 7170,
    "applyReport:ConflictingDecision": 172897,
    "applyReport:DecisionRejected": 172712,
    "applyReport:InvalidSignature": 174588,
    "applyReport:ReportAlreadyApplied": 1919,
    "applyReport:SignerOutOfRange": 7300,
    "applyReport:TooFewSigners": 7427,
    "caller.buyer": 216,
    "create": 8794,
    "create.refused": 5644,
    "create:InvalidTerms": 1755,
    "create:SettlementExists": 3250,
    "create:WrongCaller": 3283,
    "createAndLock.asset.single": 17872,
    "createAndLock.asset.swap_first": 17902,
    "createAndLock.payment.single": 17896,
    "createAndLock.payment.swap_first": 17933,
    "createAndLock.refused": 5620,
    "createAndLock:ERC20InsufficientAllowance": 12463,
    "createAndLock:ERC20InsufficientBalance": 12792,
    "createAndLock:InvalidTerms": 2795,
    "createAndLock:LegNotHere": 9740,
    "createAndLock:SettlementExists": 3228,
    "createAndLock:TokenCallFailed": 11213,
    "createAndLock:WrongCaller": 3261,
    "decision.abort.ASSET_LOCKED": 10346,
    "decision.abort.CREATED": 6330,
    "decision.abort.PAYMENT_LOCKED": 10656,
    "decision.abort.PREPARED.ASSET_ESCROW": 10787,
    "decision.abort.PREPARED.BRIDGE_BUYER_SIDE": 10812,
    "decision.abort.PREPARED.BRIDGE_SELLER_SIDE": 10845,
    "decision.abort.PREPARED.PAYMENT_ESCROW": 10735,
    "decision.abort.PREPARED.SWAP": 14979,
    "decision.commit.ASSET_ESCROW": 10209,
    "decision.commit.BRIDGE_BUYER_SIDE": 10107,
    "decision.commit.BRIDGE_SELLER_SIDE": 10111,
    "decision.commit.PAYMENT_ESCROW": 10199,
    "decision.commit.SWAP": 14400,
    "decision.failed.no_code": 7109,
    "decision.failed.token_reverted": 7919,
    "decision.skip.ALREADY_APPLIED.ABORT": 3454,
    "decision.skip.ALREADY_APPLIED.COMMIT": 3417,
    "decision.skip.CONFLICT.ABORT": 3463,
    "decision.skip.CONFLICT.COMMIT": 3492,
    "decision.skip.NOT_PREPARED": 3486,
    "decision.skip.TERMS_CALLDATA_MISMATCH": 3700,
    "decision.skip.TERMS_MISMATCH": 3296,
    "decision.skip.UNKNOWN_SETTLEMENT": 3174,
    "decision.skip.UNSUPPORTED_ACTION": 2958,
    "lockAsset.single": 9864,
    "lockAsset.swap_first": 9883,
    "lockAsset.swap_second": 9919,
    "lockAsset:DeadlinePassed": 2625,
    "lockAsset:ERC20InsufficientAllowance": 4423,
    "lockAsset:ERC20InsufficientBalance": 4752,
    "lockAsset:LegNotHere": 1744,
    "lockAsset:TermsMismatch": 1362,
    "lockAsset:TokenCallFailed": 3200,
    "lockAsset:UnknownSettlement": 1047,
    "lockAsset:WrongCaller": 1956,
    "lockAsset:WrongState": 2369,
    "lockPayment.single": 9893,
    "lockPayment.swap_first": 9925,
    "lockPayment.swap_second": 10003,
    "lockPayment:DeadlinePassed": 2657,
    "lockPayment:ERC20InsufficientAllowance": 4455,
    "lockPayment:ERC20InsufficientBalance": 4799,
    "lockPayment:LegNotHere": 1755,
    "lockPayment:TermsMismatch": 1362,
    "lockPayment:TokenCallFailed": 3242,
    "lockPayment:UnknownSettlement": 1047,
    "lockPayment:WrongCaller": 1978,
    "lockPayment:WrongState": 2285,
    "reclaimAfterDeadline.ASSET_LOCKED": 8573,
    "reclaimAfterDeadline.PAYMENT_LOCKED": 8593,
    "reclaimAfterDeadline.PREPARED.ASSET_ESCROW": 8877,
    "reclaimAfterDeadline.PREPARED.BRIDGE_BUYER_SIDE": 8893,
    "reclaimAfterDeadline.PREPARED.BRIDGE_SELLER_SIDE": 8893,
    "reclaimAfterDeadline.PREPARED.PAYMENT_ESCROW": 8877,
    "reclaimAfterDeadline.PREPARED.SWAP": 13046,
    "reclaimAfterDeadline:DeadlineNotPassed": 2202,
    "reclaimAfterDeadline:TermsMismatch": 1337,
    "reclaimAfterDeadline:UnknownSettlement": 1022,
    "reclaimAfterDeadline:UnsafeSelfRefundDisabled": 766,
    "reclaimAfterDeadline:WrongCaller": 1835,
    "reclaimAfterDeadline:WrongState": 1861,
    "report.hash": 27,
    "report.mark": 422,
    "report.validate": 105,
    "token.approve": 2519,
    "token.mint": 2737,
    "token.mint:ERC20InvalidReceiver": 531,
    "token.mint:NotMinter": 471,
    "token.transfer": 2841,
    "token.transfer:ERC20InsufficientBalance": 764,
    "token.transfer:ERC20InvalidReceiver": 513,
    "transferFrom.finite_allowance": 157,
    "verify.bitmap_bit": 145,
    "verify.highest_signer_bit": 123,
    "verify.nonsigner": 1038,
    "verify.some_nonsigners": 91,
}


class GasTableError(ValueError):
    """The table cannot price this call (a path it was not calibrated for)."""


# ----------------------------------------------------------------------------- charges


@dataclass(frozen=True, slots=True)
class Charges:
    """What one transaction does, in the units the table prices.

    ``exact_gas`` is storage and account access priced by the EVM's rules; ``code`` counts
    how often each fitted code path ran; ``refund`` is the EIP-3529 refund counter before
    the cap (0 for a reverted transaction)."""

    calldata_tokens: int
    exact_gas: int
    refund: int
    code: Mapping[str, int]
    reverted: bool

    def execution_gas(self, code_gas: Mapping[str, int]) -> int:
        total = self.exact_gas
        for key, count in self.code.items():
            try:
                total += count * code_gas[key]
            except KeyError:
                raise GasTableError(f"no calibrated gas for code path {key!r}") from None
        return total

    def floor_gas(self) -> int:
        """EIP-7623: no transaction uses less than 10 gas per calldata token (plus 21,000)."""
        return TX_BASE_GAS + FLOOR_TOKEN_GAS * self.calldata_tokens

    def gas_used(self, code_gas: Mapping[str, int]) -> int:
        """The receipt's gasUsed: base, calldata and execution, less the capped refund,
        but never below the EIP-7623 floor."""
        spent = (
            TX_BASE_GAS + STANDARD_TOKEN_GAS * self.calldata_tokens + self.execution_gas(code_gas)
        )
        refund = 0 if self.reverted else min(self.refund, spent // MAX_REFUND_QUOTIENT)
        return max(spent - refund, self.floor_gas())


# ----------------------------------------------------------------------------- calldata


def _selector(signature: str) -> bytes:
    return bytes(keccak(text=signature))[:4]


_TERMS_TUPLE: Final = "(bytes32,uint8,address,address,address,uint256,address,uint256,uint64)"
_SELECTORS: Final[Mapping[str, bytes]] = {
    **{
        name: _selector(f"{name}({_TERMS_TUPLE})")
        for name in ("create", "createAndLock", "lockAsset", "lockPayment", "reclaimAfterDeadline")
    },
    "applyReport": _selector(f"applyReport(bytes,uint256,bytes,{_TERMS_TUPLE}[])"),
    "applyReportStrict": _selector(f"applyReportStrict(bytes,uint256,bytes,{_TERMS_TUPLE}[])"),
    "mint": _selector("mint(address,uint256)"),
    "approve": _selector("approve(address,uint256)"),
    "transfer": _selector("transfer(address,uint256)"),
}
_WORD: Final = 32
_G2_ENCODED: Final = 256  # EIP-2537 G2 point: four 64-byte field elements
_G2_PADDING_ZEROS: Final = 64  # 16 zero bytes before each 48-byte field element


def _tokens(length: int, zeros: int) -> int:
    return zeros + NONZERO_BYTE_TOKENS * (length - zeros)


def _word_zeros(value: int) -> int:
    return value.to_bytes(_WORD, "big").count(0)


def _address_zeros(address: str) -> int:
    return 12 + bytes.fromhex(address[2:]).count(0)


def _terms_zeros(terms: Terms) -> int:
    return encode_terms(terms).count(0)


_TERMS_BYTES: Final = 9 * _WORD


def _terms_call_tokens(function: str, terms: Terms) -> int:
    return _tokens(4 + _TERMS_BYTES, _SELECTORS[function].count(0) + _terms_zeros(terms))


def _token_call_tokens(function: str, address: str, amount: int) -> int:
    zeros = _SELECTORS[function].count(0) + _address_zeros(address) + _word_zeros(amount)
    return _tokens(4 + 2 * _WORD, zeros)


def _signature_zeros(signature: bytes) -> int:
    """Zero bytes of the EIP-2537 encoding of a compressed G2 signature. The compressed
    form holds x (flags in the top three bits); y would need a square root (0.7 ms), and
    its 96 bytes hold about 0.4 zero bytes on average, so they count as non-zero: 12 gas
    too many per zero byte, about 5 gas on average. Any other length (a simulation's
    stand-in signature) counts as 192 non-zero bytes after the padding."""
    if len(signature) != 96:
        return _G2_PADDING_ZEROS
    x = bytes([signature[0] & 0x1F]) + signature[1:]
    return _G2_PADDING_ZEROS + x.count(0)


def _apply_report_calldata_tokens(
    certificate: Certificate, terms: Sequence[Terms], *, strict: bool = False
) -> int:
    """Calldata tokens of ``applyReport(report, signers, signature, terms)`` as
    ``CoordinatorBinding.apply_report_tx`` encodes it."""
    report = encode_report(certificate.report)
    sig_offset = 4 * _WORD + _WORD + len(report)
    terms_offset = sig_offset + _WORD + _G2_ENCODED
    head = (
        _word_zeros(4 * _WORD)
        + _word_zeros(certificate.signers)
        + _word_zeros(sig_offset)
        + _word_zeros(terms_offset)
    )
    zeros = (
        _SELECTORS["applyReportStrict" if strict else "applyReport"].count(0)
        + head
        + _word_zeros(len(report))
        + report.count(0)
        + _word_zeros(_G2_ENCODED)
        + _signature_zeros(certificate.signature)
        + _word_zeros(len(terms))
        + sum(_terms_zeros(t) for t in terms)
    )
    length = 4 + 4 * _WORD + _WORD + len(report) + _WORD + _G2_ENCODED + _WORD
    return _tokens(length + _TERMS_BYTES * len(terms), zeros)


# ----------------------------------------------------------------------------- state


_Slot = tuple[str, ...]


def _balance_slot(token: str, holder: str) -> _Slot:
    return ("balance", token, holder)


def _allowance_slot(token: str, owner: str, spender: str) -> _Slot:
    return ("allowance", token, owner, spender)


def _supply_slot(token: str) -> _Slot:
    return ("supply", token)


def _state_slot(settlement_id: bytes) -> _Slot:
    return ("state", settlement_id.hex())


def _terms_slot(settlement_id: bytes) -> _Slot:
    return ("terms", settlement_id.hex())


_OPEN_SLOT: Final[_Slot] = ("admission", "open")


def _ended_slot(window: int) -> _Slot:
    """The admission count of settlements that became final in ``window``."""
    return ("admission", "ended", str(window))


def _done_slot(report: Report) -> _Slot:
    """The word of ``s_reportsDone`` that holds ``report``'s done bit."""
    (digest, epoch, high), _bit = done_bit(report)
    return ("done", digest.hex(), str(epoch), str(high))


class _PreState:
    """Slot values before the call: the model's values now, minus what the call's own
    events say it changed (a reverted call changed nothing)."""

    def __init__(
        self, model: EscrowModel, events: Sequence[EscrowEvent], terms: Sequence[Terms]
    ) -> None:
        self.model = model
        modes = {t.settlement_id: t.mode for t in terms}
        self._balance_delta: Counter[tuple[str, str]] = Counter()
        self._minted: Counter[str] = Counter()
        self._spent: Counter[tuple[str, str]] = Counter()  # (token, owner) -> locked amount
        self._created: set[bytes] = set()
        self._state_before: dict[bytes, int] = {}
        self._ended = 0  # settlements the call made final (admission counts them)
        for event in events:
            if isinstance(event, Transfer):
                self._balance_delta[(event.emitter, event.to)] += event.value
                if event.sender == ZERO_ADDRESS:
                    self._minted[event.emitter] += event.value
                else:
                    self._balance_delta[(event.emitter, event.sender)] -= event.value
            elif isinstance(event, SettlementCreated):
                self._created.add(event.settlement_id)
                self._state_before.setdefault(event.settlement_id, int(State.NONE))
            elif isinstance(event, LegLocked):
                self._spent[(event.token, event.party)] += event.amount
                mode = modes.get(event.settlement_id)
                if mode is None:
                    raise GasTableError("a lock event for terms the call did not carry")
                self._state_before.setdefault(event.settlement_id, _before_lock(mode, event))
            elif isinstance(event, SettlementCommitted):
                self._ended += 1
                self._state_before.setdefault(event.settlement_id, int(State.PREPARED))
            elif isinstance(event, SettlementAborted | SettlementExpired):
                self._ended += 1
                self._state_before.setdefault(event.settlement_id, int(event.previous_state))

    def state_before(self, settlement_id: bytes) -> State:
        before = self._state_before.get(settlement_id)
        return State(before) if before is not None else self.model.state_of(settlement_id)

    def value(self, slot: _Slot) -> int:
        kind = slot[0]
        if kind == "admission":
            model = self.model
            if slot == _OPEN_SLOT:
                return model.open_count - len(self._created) + self._ended
            window = int(slot[2])
            ended = model.ended_in(window)
            return ended - self._ended if window == model.clock // ADMISSION_WINDOW else ended
        if kind == "balance":
            ledger = self.model.tokens.get(slot[1])
            now = ledger.balance_of(slot[2]) if ledger else 0
            return now - self._balance_delta[(slot[1], slot[2])]
        if kind == "allowance":
            ledger = self.model.tokens.get(slot[1])
            now = ledger.allowance(slot[2], slot[3]) if ledger else 0
            spender_is_coordinator = slot[3] == self.model.coordinator
            if now == MAX_UINT256 or not spender_is_coordinator:
                return now
            return now + self._spent[(slot[1], slot[2])]
        if kind == "supply":
            ledger = self.model.tokens.get(slot[1])
            return (ledger.total_supply if ledger else 0) - self._minted[slot[1]]
        settlement_id = bytes.fromhex(slot[1])
        if kind == "state":
            return int(self.state_before(settlement_id))
        if settlement_id in self._created:
            return 0
        return int.from_bytes(self.model.terms_hash_of(settlement_id), "big")


def _before_lock(mode: int, event: LegLocked) -> int:
    """The state a lock started from, from the state it reached (LOCK_TRANSITIONS)."""
    for (swap, leg, before), after in LOCK_TRANSITIONS.items():
        if swap == (mode == Mode.SWAP) and leg == event.leg and after == event.state:
            return int(before)
    raise GasTableError(f"no lock transition reaches {event.state!r}")


@dataclass
class _Checkpoint:
    current: dict[_Slot, int]
    warm_slots: set[_Slot]
    warm_accounts: set[str]
    refund: int


@dataclass
class _Ledger:
    """The slots and accounts one transaction touches, priced by EIP-2929 (first access
    cold), EIP-2200 (SSTORE) and EIP-3529 (refunds). It charges what depends on the state
    and on what the transaction touched before: the surcharge of a cold first access
    (beyond the 100 gas of a warm one, which the code constants hold) and every SSTORE."""

    before: _PreState
    warm_accounts: set[str]
    gas: int = 0
    refund: int = 0
    _original: dict[_Slot, int] = field(default_factory=dict)
    _current: dict[_Slot, int] = field(default_factory=dict)
    _warm_slots: set[_Slot] = field(default_factory=set)

    def load(self, slot: _Slot) -> int:
        if slot not in self._warm_slots:
            self._warm_slots.add(slot)
            self.gas += COLD_SLOAD_EXTRA
        if slot in self._current:
            return self._current[slot]
        original = self.before.value(slot)
        self._original[slot] = original
        self._current[slot] = original
        return original

    def store(self, slot: _Slot, new: int) -> None:
        current = self.load(slot)
        original = self._original[slot]
        if new == current:
            self.gas += SSTORE_DIRTY
            return
        if current == original:
            self.gas += SSTORE_SET if original == 0 else SSTORE_RESET
            if original != 0 and new == 0:
                self.refund += SSTORE_CLEAR_REFUND
        else:
            self.gas += SSTORE_DIRTY
            if original != 0:
                if current == 0:
                    self.refund -= SSTORE_CLEAR_REFUND
                elif new == 0:
                    self.refund += SSTORE_CLEAR_REFUND
            if new == original:
                self.refund += (
                    SSTORE_SET - SSTORE_DIRTY if original == 0 else SSTORE_RESET - SSTORE_DIRTY
                )
        self._current[slot] = new

    def add(self, slot: _Slot, amount: int) -> None:
        self.store(slot, self.load(slot) + amount)

    def seed(self, slot: _Slot, value: int) -> None:
        """The value of ``slot`` before the call, where the pre-state cannot tell it."""
        self._original[slot] = value
        self._current[slot] = value

    def account(self, address: str) -> None:
        if address not in self.warm_accounts:
            self.warm_accounts.add(address)
            self.gas += COLD_ACCOUNT_EXTRA

    def checkpoint(self) -> _Checkpoint:
        return _Checkpoint(
            dict(self._current), set(self._warm_slots), set(self.warm_accounts), self.refund
        )

    def rollback(self, saved: _Checkpoint) -> None:
        """A reverted call frame: its writes, warm marks and refunds are undone, its gas
        is spent."""
        self._current = saved.current
        self._warm_slots = saved.warm_slots
        self.warm_accounts = saved.warm_accounts
        self.refund = saved.refund


class _Reverted(Exception):
    """The walk reached the point where the call reverted."""


class _Meter:
    """Walks one transaction in the contract's order, charging the ledger and counting the
    code paths; stops at the point where the model says the call reverted."""

    def __init__(
        self,
        model: EscrowModel,
        function: str,
        outcome: Outcome,
        calldata_tokens: int,
        tx_to: str,
        sender: str,
        terms: Sequence[Terms] = (),
    ) -> None:
        self.model = model
        self.function = function
        self.error = outcome.error if isinstance(outcome, EscrowRevert) else None
        self.revert = outcome if isinstance(outcome, EscrowRevert) else None
        self.events: Sequence[EscrowEvent] = () if isinstance(outcome, EscrowRevert) else outcome
        self.before = _PreState(model, self.events, terms)
        self.ledger = _Ledger(self.before, {tx_to, sender})
        self.code: Counter[str] = Counter()
        self.calldata_tokens = calldata_tokens

    def path(self, key: str, count: int = 1) -> None:
        if count:
            self.code[key] += count

    def stop_if(self, error: str, *also: str) -> None:
        """The call may revert with ``error`` (or an error of ``also``, priced the same)
        here: stop the walk if it did."""
        if self.error == error or self.error in also:
            self.code[f"{self.function}:{error}"] += 1
            raise _Reverted

    def charges(self) -> Charges:
        return Charges(
            calldata_tokens=self.calldata_tokens,
            exact_gas=self.ledger.gas,
            refund=0 if self.error else max(self.ledger.refund, 0),
            code=dict(self.code),
            reverted=self.error is not None,
        )

    def run(self, walk: Callable[[], None]) -> Charges:
        try:
            walk()
        except _Reverted:
            return self.charges()
        if self.error is not None:
            raise GasTableError(
                f"{self.function} reverted with {self.error}, a revert the table does not price"
            )
        return self.charges()

    # ------------------------------------------------------------------ token calls

    def move(self, token: str, sender: str, to: str, amount: int) -> None:
        """DvPToken._move: receiver check, sender balance, both balances written."""
        self.stop_if("ERC20InvalidReceiver")
        balance = self.ledger.load(_balance_slot(token, sender))
        self.stop_if("ERC20InsufficientBalance")
        self.ledger.store(_balance_slot(token, sender), balance - amount)
        self.ledger.add(_balance_slot(token, to), amount)

    def token_exists(self, token: str) -> None:
        """DvPCoordinator._callToken: the code-size check touches the token's account."""
        self.ledger.account(token)
        self.stop_if("TokenCallFailed")


# ----------------------------------------------------------------------------- parties


def _caller_check(meter: _Meter, caller: str, terms: Terms) -> None:
    """``msg.sender != t.seller && msg.sender != t.buyer``: the buyer takes a second
    comparison (and its calldata decoding), about 200 gas."""
    meter.stop_if("WrongCaller")
    if not _same(caller, terms.seller):
        meter.path("caller.buyer")


def _create_part(meter: _Meter, caller: str, terms: Terms) -> bool:
    """DvPCoordinator._create; False when admission refused the settlement."""
    meter.stop_if("InvalidTerms")
    _caller_check(meter, caller, terms)
    meter.ledger.load(_state_slot(terms.settlement_id))
    meter.stop_if("SettlementExists")
    if meter.model.admission_floor and not _admit_part(meter):
        return False
    meter.ledger.store(_terms_slot(terms.settlement_id), int.from_bytes(terms_hash(terms), "big"))
    meter.ledger.store(_state_slot(terms.settlement_id), int(State.CREATED))
    return True


def _admit_part(meter: _Meter) -> bool:
    """DvPCoordinator._admit: the open count, the last window's count when the floor is
    reached, then the open count written (admitted) or SettlementRefused (refused)."""
    open_ = meter.ledger.load(_OPEN_SLOT)
    if open_ >= meter.model.admission_floor:
        window = meter.model.clock // ADMISSION_WINDOW
        meter.path("admission.check")
        if window:
            meter.ledger.load(_ended_slot(window - 1))
        if any(isinstance(event, SettlementRefused) for event in meter.events):
            return False  # the refusal's code is its call's ("create.refused", ...)
    meter.ledger.store(_OPEN_SLOT, open_ + 1)
    meter.path("admission.admitted")
    return True


def _ended_part(meter: _Meter, count: int) -> None:
    """DvPCoordinator._ended: ``count`` open settlements became final in this block's window."""
    meter.ledger.store(_OPEN_SLOT, meter.ledger.load(_OPEN_SLOT) - count)
    slot = _ended_slot(meter.model.clock // ADMISSION_WINDOW)
    meter.ledger.store(slot, meter.ledger.load(slot) + count)
    meter.path("admission.ended")


def _known_part(meter: _Meter, terms: Terms) -> int:
    """DvPCoordinator._known: the settlement's state, then its terms hash."""
    state = meter.ledger.load(_state_slot(terms.settlement_id))
    meter.stop_if("UnknownSettlement")
    meter.ledger.load(_terms_slot(terms.settlement_id))
    meter.stop_if("TermsMismatch")
    return state


def _lock_part(meter: _Meter, leg: Leg, terms: Terms) -> str:
    """DvPCoordinator._lock, the token's transferFrom included. Returns the kind of lock
    transition (``_afterLock`` compares more for a swap's second leg)."""
    state = _known_part(meter, terms)
    meter.stop_if("LegNotHere")
    meter.stop_if("WrongCaller")
    meter.stop_if("WrongState")
    meter.stop_if("DeadlinePassed")
    after = LOCK_TRANSITIONS.get((terms.mode == Mode.SWAP, leg, State(state)))
    if after is None:
        raise GasTableError(f"no lock of {leg.name} from state {state} in mode {terms.mode}")
    meter.ledger.store(_state_slot(terms.settlement_id), int(after))
    token, amount = leg_token(terms, leg)
    party = terms.seller if leg == Leg.ASSET else terms.buyer
    meter.token_exists(token)
    allowance_slot = _allowance_slot(token, party, meter.model.coordinator)
    allowed = meter.ledger.load(allowance_slot)
    meter.stop_if("ERC20InsufficientAllowance")
    if allowed != MAX_UINT256:
        meter.path("transferFrom.finite_allowance")
        meter.ledger.store(allowance_slot, allowed - amount)
    meter.move(token, party, meter.model.coordinator, amount)
    if terms.mode != Mode.SWAP:
        return "single"
    return "swap_first" if state == State.CREATED else "swap_second"


def _party_meter(
    model: EscrowModel, function: str, caller: str, terms: Terms, outcome: Outcome
) -> _Meter:
    return _Meter(
        model,
        function,
        outcome,
        _terms_call_tokens(function, terms),
        model.coordinator,
        caller,
        (terms,),
    )


def meter_create(model: EscrowModel, caller: str, terms: Terms, outcome: Outcome) -> Charges:
    """``create(terms)`` sent by ``caller``."""
    meter = _party_meter(model, "create", caller, terms, outcome)

    def walk() -> None:
        meter.path("create" if _create_part(meter, caller, terms) else "create.refused")

    return meter.run(walk)


def meter_create_and_lock(
    model: EscrowModel, caller: str, terms: Terms, outcome: Outcome
) -> Charges:
    """``createAndLock(terms)`` sent by ``caller`` (the seller locks the asset, anyone
    else the payment)."""
    meter = _party_meter(model, "createAndLock", caller, terms, outcome)
    leg = Leg.ASSET if _same(caller, terms.seller) else Leg.PAYMENT

    def walk() -> None:
        if not _create_part(meter, caller, terms):
            meter.path("createAndLock.refused")
            return
        transition = _lock_part(meter, leg, terms)
        meter.path(f"createAndLock.{leg.name.lower()}.{transition}")

    return meter.run(walk)


def meter_lock_asset(model: EscrowModel, caller: str, terms: Terms, outcome: Outcome) -> Charges:
    """``lockAsset(terms)`` sent by ``caller``."""
    meter = _party_meter(model, "lockAsset", caller, terms, outcome)

    def walk() -> None:
        meter.path(f"lockAsset.{_lock_part(meter, Leg.ASSET, terms)}")

    return meter.run(walk)


def meter_lock_payment(model: EscrowModel, caller: str, terms: Terms, outcome: Outcome) -> Charges:
    """``lockPayment(terms)`` sent by ``caller``."""
    meter = _party_meter(model, "lockPayment", caller, terms, outcome)

    def walk() -> None:
        meter.path(f"lockPayment.{_lock_part(meter, Leg.PAYMENT, terms)}")

    return meter.run(walk)


def meter_reclaim_after_deadline(
    model: EscrowModel, caller: str, terms: Terms, outcome: Outcome
) -> Charges:
    """``reclaimAfterDeadline(terms)`` (the unsafe variant's self-refund)."""
    meter = _party_meter(model, "reclaimAfterDeadline", caller, terms, outcome)

    def walk() -> None:
        meter.stop_if("UnsafeSelfRefundDisabled")
        _known_part(meter, terms)
        _caller_check(meter, caller, terms)
        meter.stop_if("WrongState")
        meter.stop_if("DeadlineNotPassed")
        before = meter.before.state_before(terms.settlement_id)
        meter.ledger.store(_state_slot(terms.settlement_id), int(State.EXPIRED))
        if meter.model.admission_floor:
            _ended_part(meter, 1)
        for leg in locked_legs(terms.mode, before):
            token, amount = leg_token(terms, leg)
            to = terms.seller if leg == Leg.ASSET else terms.buyer
            meter.ledger.account(token)
            meter.move(token, meter.model.coordinator, to, amount)
        meter.path(f"reclaimAfterDeadline.{_legs_path(terms.mode, before)}")

    return meter.run(walk)


def _same(a: str, b: str) -> bool:
    return a.lower() == b.lower()


# ----------------------------------------------------------------------------- tokens


def _token_meter(
    model: EscrowModel,
    function: str,
    token: str,
    caller: str,
    to: str,
    amount: int,
    outcome: Outcome,
) -> _Meter:
    return _Meter(
        model,
        f"token.{function}",
        outcome,
        _token_call_tokens(function, to, amount),
        _checksum(model, token),
        caller,
    )


def _checksum(model: EscrowModel, token: str) -> str:
    return model.token(token).address


def meter_mint(
    model: EscrowModel, token: str, caller: str, to: str, amount: int, outcome: Outcome
) -> Charges:
    """``token.mint(to, amount)`` sent by ``caller`` (the minter)."""
    meter = _token_meter(model, "mint", token, caller, to, amount, outcome)
    address, receiver = _checksum(model, token), checksum_address(to)

    def walk() -> None:
        meter.stop_if("NotMinter")
        meter.stop_if("ERC20InvalidReceiver")
        meter.ledger.add(_supply_slot(address), amount)
        meter.ledger.add(_balance_slot(address, receiver), amount)
        meter.path("token.mint")

    return meter.run(walk)


def meter_transfer(
    model: EscrowModel, token: str, caller: str, to: str, amount: int, outcome: Outcome
) -> Charges:
    """``token.transfer(to, amount)`` sent by ``caller``."""
    meter = _token_meter(model, "transfer", token, caller, to, amount, outcome)
    address = _checksum(model, token)

    def walk() -> None:
        meter.move(address, checksum_address(caller), checksum_address(to), amount)
        meter.path("token.transfer")

    return meter.run(walk)


def meter_approve(
    model: EscrowModel,
    token: str,
    caller: str,
    spender: str,
    amount: int,
    outcome: Outcome,
    *,
    previous: int,
) -> Charges:
    """``token.approve(spender, amount)`` sent by ``caller``; ``previous`` is the allowance
    it overwrites (the event does not say, and it decides the price of the write)."""
    meter = _token_meter(model, "approve", token, caller, spender, amount, outcome)
    slot = _allowance_slot(
        _checksum(model, token), checksum_address(caller), checksum_address(spender)
    )
    meter.ledger.seed(slot, previous)

    def walk() -> None:
        meter.ledger.store(slot, amount)
        meter.path("token.approve")

    return meter.run(walk)


# ----------------------------------------------------------------------------- reports


@dataclass(frozen=True, slots=True)
class _Applied:
    """One decision of a report as the contract took it: applied, or skipped and why."""

    reason: SkipReason | None
    state_before: State


def _decisions_from_events(meter: _Meter, decisions: Sequence[Decision]) -> Iterator[_Applied]:
    """Per decision, what the model's events of a successful call say happened."""
    events = list(meter.events)
    position = 0
    for decision in decisions:
        sid = decision.settlement_id
        head = events[position] if position < len(events) else None
        if isinstance(head, DecisionSkipped) and head.settlement_id == sid:
            position += 1
            yield _Applied(head.reason, meter.model.state_of(sid))
            continue
        while position < len(events):
            event = events[position]
            position += 1
            if isinstance(event, SettlementCommitted) and event.settlement_id == sid:
                yield _Applied(None, State.PREPARED)
                break
            if isinstance(event, SettlementAborted) and event.settlement_id == sid:
                yield _Applied(None, State(event.previous_state))
                break
        else:
            raise GasTableError(f"no outcome event for settlement 0x{sid.hex()}")


def _token_ops(terms: Terms, action: int, before: State) -> list[tuple[str, str, str, int]]:
    """(kind, token, to, amount) of executeDecision, in the contract's order."""
    mode = terms.mode
    if action == Action.COMMIT:
        ops = []
        if mode in (Mode.SWAP, Mode.ASSET_ESCROW):
            ops.append(("transfer", terms.asset_token, terms.buyer, terms.asset_amount))
        if mode in (Mode.SWAP, Mode.PAYMENT_ESCROW):
            ops.append(("transfer", terms.payment_token, terms.seller, terms.payment_amount))
        if mode == Mode.BRIDGE_SELLER_SIDE:
            ops.append(("mint", terms.payment_token, terms.seller, terms.payment_amount))
        if mode == Mode.BRIDGE_BUYER_SIDE:
            ops.append(("mint", terms.asset_token, terms.buyer, terms.asset_amount))
        return ops
    ops = []
    for leg in locked_legs(mode, before):  # _refund: asset to the seller, payment to the buyer
        token, amount = leg_token(terms, leg)
        ops.append(("transfer", token, terms.seller if leg == Leg.ASSET else terms.buyer, amount))
    return ops


def _legs_path(mode: int, state: State) -> str:
    """The code path of ``_refund(t, state)``: which legs, and how far its mode tests go."""
    if state == State.PREPARED:
        return f"PREPARED.{Mode(mode).name}"
    return state.name


def _execute(meter: _Meter, terms: Terms, action: int, before: State) -> bool:
    """executeDecision: the state write, then the token calls. Returns False where a token
    call fails, having counted where (the caller rolls the frame back).

    A call can only fail first: transfers move tokens the coordinator holds for this very
    settlement, so only a bridge mode's single mint (a token the coordinator may not mint,
    or no code at the address) fails. Were a later call to fail, the code of the calls
    before it would go uncounted (their storage is still priced)."""
    ledger, coordinator = meter.ledger, meter.model.coordinator
    after = State.COMMITTED if action == Action.COMMIT else State.ABORTED
    ledger.store(_state_slot(terms.settlement_id), int(after))
    for kind, token, to, amount in _token_ops(terms, action, before):
        ledger.account(token)
        token_ledger = meter.model.tokens.get(token)
        if token_ledger is None:
            meter.path("decision.failed.no_code")
            return False
        if kind == "mint":
            if token_ledger.minter != coordinator or to == ZERO_ADDRESS:
                meter.path("decision.failed.token_reverted")
                return False
            supply = ledger.load(_supply_slot(token))
            if supply + amount > MAX_UINT256:
                meter.path("decision.failed.token_reverted")
                return False
            ledger.store(_supply_slot(token), supply + amount)
            ledger.add(_balance_slot(token, to), amount)
            continue
        if to == ZERO_ADDRESS:
            meter.path("decision.failed.token_reverted")
            return False
        balance = ledger.load(_balance_slot(token, coordinator))
        if balance < amount:
            meter.path("decision.failed.token_reverted")
            return False
        ledger.store(_balance_slot(token, coordinator), balance - amount)
        ledger.add(_balance_slot(token, to), amount)
    return True


def _decide(meter: _Meter, decision: Decision, terms: Terms, applied: _Applied) -> None:
    """DvPCoordinator._decide for a decision whose outcome is known."""
    reason, sid, ledger = applied.reason, decision.settlement_id, meter.ledger
    if reason == SkipReason.UNSUPPORTED_ACTION:
        meter.path("decision.skip.UNSUPPORTED_ACTION")
        return
    ledger.load(_state_slot(sid))
    if reason == SkipReason.UNKNOWN_SETTLEMENT:
        meter.path("decision.skip.UNKNOWN_SETTLEMENT")
        return
    ledger.load(_terms_slot(sid))
    if reason in (SkipReason.ALREADY_APPLIED, SkipReason.CONFLICT):
        # _outcome's comparisons depend on the action
        meter.path(f"decision.skip.{reason.name}.{Action(decision.action).name}")
        return
    if reason is not None and reason != SkipReason.EXECUTION_FAILED:
        meter.path(f"decision.skip.{reason.name}")
        return
    action, before = int(decision.action), applied.state_before
    if reason == SkipReason.EXECUTION_FAILED:
        saved = ledger.checkpoint()
        if _execute(meter, terms, action, before):
            raise GasTableError(f"settlement 0x{sid.hex()}: execution failed, but not here")
        ledger.rollback(saved)  # _execute counted the path of the failure
        return
    if not _execute(meter, terms, action, before):
        raise GasTableError(f"settlement 0x{sid.hex()}: applied, but a token call would fail")
    if action == Action.COMMIT:
        meter.path(f"decision.commit.{Mode(terms.mode).name}")
    else:
        meter.path(f"decision.abort.{_legs_path(terms.mode, before)}")


def _derive(meter: _Meter, decision: Decision, terms: Terms) -> _Applied:
    """What _decide does with a decision, from the state before the call (for a strict
    call that reverted: the model kept nothing of it)."""
    model, sid = meter.model, decision.settlement_id
    state = model.state_of(sid)
    reason = decision_skip(decision.action, state, model.terms_hash_of(sid), decision.terms_hash)
    if reason is not None:
        return _Applied(reason, state)
    if terms_hash(terms) != decision.terms_hash:
        return _Applied(SkipReason.TERMS_CALLDATA_MISMATCH, state)
    saved = meter.ledger.checkpoint()
    gas, code = meter.ledger.gas, Counter(meter.code)
    works = _execute(meter, terms, int(decision.action), state)
    meter.ledger.rollback(saved)
    meter.ledger.gas, meter.code = gas, code
    return _Applied(None if works else SkipReason.EXECUTION_FAILED, state)


def meter_apply_report(
    model: EscrowModel,
    certificate: Certificate,
    terms: Sequence[Terms],
    outcome: Outcome,
    *,
    committee_n: int,
    strict: bool = False,
    sender: str = ZERO_ADDRESS,
) -> Charges:
    """``applyReport(report, signers, signature, terms)`` (``applyReportStrict`` when
    ``strict``) for a committee of ``committee_n`` members, sent by ``sender``."""
    if not 1 <= committee_n <= MAX_PRICED_COMMITTEE:
        raise GasTableError(
            f"committee of {committee_n}: the table prices committees of 1 to {MAX_PRICED_COMMITTEE}"
        )
    tokens = _apply_report_calldata_tokens(certificate, terms, strict=strict)
    meter = _Meter(model, "applyReport", outcome, tokens, model.coordinator, sender, terms)
    decisions = certificate.report.decisions
    count = len(decisions)
    missing = ~certificate.signers & ((1 << committee_n) - 1)
    nonsigners = bin(missing).count("1")
    report = certificate.report
    done, bit = _done_slot(report), done_bit(report)[1]
    # The word before the call: a call that went through found its bit clear (or it
    # would have reverted), and may have set it; a reverted one changed nothing.
    word = model.done_word(report)
    meter.ledger.seed(done, word if meter.error else word & ~bit)

    def walk() -> None:
        if strict:
            meter.path("applyReport.strict")
        meter.ledger.load(done)  # _refuseIfDone, before anything else
        meter.stop_if("ReportAlreadyApplied")
        meter.path("report.validate", count)
        meter.stop_if("ConfigDigestMismatch")
        if meter.error == "SignerOutOfRange":
            meter.path("verify.highest_signer_bit", certificate.signers.bit_length() - 1)
        meter.stop_if("SignerOutOfRange")
        meter.stop_if("TooFewSigners")
        meter.path("verify.nonsigner", nonsigners)
        meter.path("verify.bitmap_bit", missing.bit_length())
        meter.path("verify.some_nonsigners", 1 if nonsigners else 0)
        meter.path("report.hash", count)
        # The pairing check rejects a signature off the curve or outside the subgroup
        # (MalformedSignature) one branch before a wrong one (InvalidSignature). The
        # earlier encoding checks never fail for a signature encoded from its compressed
        # form, as every transmitter does.
        meter.stop_if("InvalidSignature", "MalformedSignature")
        meter.stop_if("BatchLengthMismatch")
        if meter.error in ("DecisionRejected", "ConflictingDecision"):
            _strict_revert(meter, decisions, terms)
        final = True
        ended = 0
        for decision, supplied, applied in zip(
            decisions, terms, _decisions_from_events(meter, decisions), strict=True
        ):
            _decide(meter, decision, supplied, applied)
            final = final and (applied.reason is None or applied.reason in FINAL_SKIPS)
            ended += applied.reason is None
        if ended and meter.model.admission_floor:
            _ended_part(meter, ended)
        if final:  # the report is done: its bit is set
            meter.ledger.store(done, meter.ledger.load(done) | bit)
            meter.path("report.mark")
        meter.path("applyReport")

    return meter.run(walk)


def _strict_revert(meter: _Meter, decisions: Sequence[Decision], terms: Sequence[Terms]) -> None:
    """applyReportStrict reverted at the decision its error names: the decisions before it
    ran (and were undone), from the state the model kept."""
    assert meter.revert is not None
    failed = bytes(meter.revert.args_[0])
    for decision, supplied in zip(decisions, terms, strict=True):
        _decide(meter, decision, supplied, _derive(meter, decision, supplied))
        if decision.settlement_id == failed:
            meter.stop_if(meter.revert.error)
    raise GasTableError(f"strict revert names settlement 0x{failed.hex()}, not in the report")


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True, slots=True)
class PendingCall:
    """A model call about to run, as :meth:`GasTable.before` took it: the call's name (the
    model method: ``create_and_lock``, ``apply_certificate``, ``mint``, ...), its sender,
    its model arguments after the sender, and the one pre-state value no event tells
    (the allowance an ``approve`` overwrites)."""

    model: EscrowModel
    function: str
    sender: str
    args: tuple[object, ...]
    previous_allowance: int = 0


class GasTable:
    """Prices the simulation's transactions with calibrated constants (module docstring).

    Two ways to call it, both right around the model call they price:

    * one typed method per call, after it: ``events = model.lock_asset(seller, terms,
      now)`` then ``table.lock_asset(model, seller, terms, events)`` (pass the
      :class:`EscrowRevert` instead of the events when the call reverted);
    * generically, as a chain that dispatches calls by name does: ``pending =
      table.before(model, "lock_asset", seller, (terms,))``, run the call, then
      ``table.gas_used(pending, events_or_revert)``. ``before`` copies nothing (it reads
      one allowance for ``approve``); ``apply_certificate`` needs ``committee_n``.
    """

    label: Final = GAS_TABLE_LABEL

    def __init__(self, code_gas: Mapping[str, int] | None = None) -> None:
        self.code_gas: Mapping[str, int] = CODE_GAS if code_gas is None else code_gas

    def price(self, charges: Charges) -> int:
        return charges.gas_used(self.code_gas)

    # ------------------------------------------------------------------ by name

    def before(
        self, model: EscrowModel, function: str, sender: str, args: Sequence[object]
    ) -> PendingCall:
        previous = 0
        if function == "approve":
            token, spender, _amount = args
            previous = model.token(str(token)).allowance(sender, str(spender))
        return PendingCall(model, function, sender, tuple(args), previous)

    def gas_used(
        self, pending: PendingCall, outcome: Outcome, *, committee_n: int | None = None
    ) -> int:
        """The gasUsed of ``pending`` once it ran with ``outcome``."""
        model, function, sender, args = (
            pending.model,
            pending.function,
            pending.sender,
            pending.args,
        )
        if function in _PARTY_METERS:
            (terms,) = args
            assert isinstance(terms, Terms)
            return self.price(_PARTY_METERS[function](model, sender, terms, outcome))
        if function == "apply_certificate":
            certificate, terms_list = args[0], args[1]
            assert isinstance(certificate, Certificate) and isinstance(terms_list, Sequence)
            if committee_n is None:
                raise GasTableError("apply_certificate is priced with committee_n")
            return self.apply_report(
                model, certificate, terms_list, outcome, committee_n=committee_n, sender=sender
            )
        if function in ("mint", "transfer"):
            token, to, amount = args
            assert isinstance(token, str) and isinstance(to, str) and isinstance(amount, int)
            meter = meter_mint if function == "mint" else meter_transfer
            return self.price(meter(model, token, sender, to, amount, outcome))
        if function == "approve":
            token, spender, amount = args
            assert isinstance(token, str) and isinstance(spender, str)
            assert isinstance(amount, int)
            return self.approve(
                model,
                token,
                sender,
                spender,
                amount,
                outcome,
                previous=pending.previous_allowance,
            )
        raise GasTableError(f"no gas for a call named {function!r}")

    # ------------------------------------------------------------------ typed

    def create(self, model: EscrowModel, caller: str, terms: Terms, outcome: Outcome) -> int:
        return self.price(meter_create(model, caller, terms, outcome))

    def create_and_lock(
        self, model: EscrowModel, caller: str, terms: Terms, outcome: Outcome
    ) -> int:
        return self.price(meter_create_and_lock(model, caller, terms, outcome))

    def lock_asset(self, model: EscrowModel, caller: str, terms: Terms, outcome: Outcome) -> int:
        return self.price(meter_lock_asset(model, caller, terms, outcome))

    def lock_payment(self, model: EscrowModel, caller: str, terms: Terms, outcome: Outcome) -> int:
        return self.price(meter_lock_payment(model, caller, terms, outcome))

    def reclaim_after_deadline(
        self, model: EscrowModel, caller: str, terms: Terms, outcome: Outcome
    ) -> int:
        return self.price(meter_reclaim_after_deadline(model, caller, terms, outcome))

    def apply_report(
        self,
        model: EscrowModel,
        certificate: Certificate,
        terms: Sequence[Terms],
        outcome: Outcome,
        *,
        committee_n: int,
        strict: bool = False,
        sender: str = ZERO_ADDRESS,
    ) -> int:
        return self.price(
            meter_apply_report(
                model,
                certificate,
                terms,
                outcome,
                committee_n=committee_n,
                strict=strict,
                sender=sender,
            )
        )

    def mint(
        self, model: EscrowModel, token: str, caller: str, to: str, amount: int, outcome: Outcome
    ) -> int:
        return self.price(meter_mint(model, token, caller, to, amount, outcome))

    def transfer(
        self, model: EscrowModel, token: str, caller: str, to: str, amount: int, outcome: Outcome
    ) -> int:
        return self.price(meter_transfer(model, token, caller, to, amount, outcome))

    def approve(
        self,
        model: EscrowModel,
        token: str,
        caller: str,
        spender: str,
        amount: int,
        outcome: Outcome,
        *,
        previous: int,
    ) -> int:
        return self.price(
            meter_approve(model, token, caller, spender, amount, outcome, previous=previous)
        )


_PartyMeter = Callable[[EscrowModel, str, Terms, Outcome], Charges]
_PARTY_METERS: Final[Mapping[str, _PartyMeter]] = {
    "create": meter_create,
    "create_and_lock": meter_create_and_lock,
    "lock_asset": meter_lock_asset,
    "lock_payment": meter_lock_payment,
    "reclaim_after_deadline": meter_reclaim_after_deadline,
}
