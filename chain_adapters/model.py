"""The DvP escrow coordinator as a pure-Python state machine: the contract's executable model.

``chain_adapters/contracts/DvPCoordinator.sol`` holds the on-chain legs of a settlement and
moves value only on a certified decision. This module follows the same rules, in the same
order, with the same custom-error names and the same events, so that

* the deterministic simulation can run "a chain" without anvil, and
* a differential test (tests/escrow/test_differential.py) can hold the contract against
  this model on random operation sequences: same states, same events, same balances.

A settlement is a set of legs on one coordinator. Its *mode* says which legs live here:

========================  =====================================  =======================================
mode                      locked here (refunded on ABORT)        on COMMIT
========================  =====================================  =======================================
SWAP                      asset from seller, payment from buyer  asset -> buyer, payment -> seller
ASSET_ESCROW              asset from seller                      asset -> buyer (payment: bank / chain B)
PAYMENT_ESCROW            payment from buyer                     payment -> seller (asset: chain A)
BRIDGE_SELLER_SIDE        asset from seller                      asset stays (backs the asset minted on
                                                                 the buyer's chain); payment minted to
                                                                 seller
BRIDGE_BUYER_SIDE         payment from buyer                     payment stays (backs the payment minted
                                                                 on the seller's chain); asset minted to
                                                                 buyer
========================  =====================================  =======================================

The four settlement modes of the design map onto these: single-chain on-chain payment is
SWAP; single-chain off-chain payment is ASSET_ESCROW (payment at the bank); multi-chain
messaging is ASSET_ESCROW on chain A plus the bank or PAYMENT_ESCROW on chain B; multi-chain
token transfer is BRIDGE_SELLER_SIDE on chain A plus BRIDGE_BUYER_SIDE on chain B.

The state machine (``LOCK_TRANSITIONS`` and ``DECISION_OUTCOMES`` below are the whole of it)::

    NONE -create-> CREATED -lock-> ASSET_LOCKED / PAYMENT_LOCKED -lock-> PREPARED
    PREPARED -COMMIT-> COMMITTED
    CREATED | ASSET_LOCKED | PAYMENT_LOCKED | PREPARED -ABORT-> ABORTED
    ASSET_LOCKED | PAYMENT_LOCKED | PREPARED -reclaim after deadline-> EXPIRED   (unsafe variant only)

A prepared leg never refunds by itself: only a certified ABORT refunds. The unsafe research
variant (``unsafe_self_refund_after_deadline``) lets a party reclaim after the deadline
without a certificate; a later certified COMMIT then finds nothing to release, which is the
atomicity violation the checkers are meant to show.

Decisions arrive in certified reports. ``apply_report`` never fails because of one decision:
each decision is applied or *skipped* with a reason (unknown settlement, terms mismatch,
not prepared, conflict, ...) reported in a ``DecisionSkipped`` event, and a conflicting
decision never moves value. A repeated identical decision is a no-op (``ALREADY_APPLIED``).
The strict path (``strict=True``, the contract's ``applyReportStrict``) reverts the whole
call on the first skip other than ``ALREADY_APPLIED``.

Duplicate transmissions are cheap: a report whose every decision ended in an outcome no
later call can change (applied, or skipped for a reason in ``FINAL_SKIPS``) is marked done
by its (config digest, epoch, round), and a later copy reverts ``ReportAlreadyApplied``
before its certificate is checked. A report with any other skip (unknown settlement,
terms mismatch, not prepared, wrong calldata terms, failed execution) is not marked: a
faulty transmitter's copy never blocks the honest one. The contract keeps the marks as
one bit per round in words of 256 rounds (``done_bit``).

Admission (``admission_floor`` > 0; the contract's ``admissionFloor``): the coordinator
counts the open settlements and those that became final per window of
``ADMISSION_WINDOW`` seconds of block time. While at least ``admission_floor`` are open, a
create is admitted only if, at the pace of the last whole window, the open ones would end
within half the time the new one has before its deadline; otherwise it records nothing
and returns a ``SettlementRefused`` event (``create_and_lock`` then locks nothing). A
refusal is not a revert: the transaction is mined, and everyone sees it.

This module must never do I/O: no web3, no clock (the block timestamp is a parameter), no
disk, no randomness. Every operation is atomic: when it raises :class:`EscrowRevert` the
model is exactly as before, like a reverted transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache
from typing import Any, ClassVar, Final

from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from consensus.crypto import REAL_CRYPTO, CryptoSuite
from consensus.report import (
    Action,
    Certificate,
    CertificateError,
    CommitteeConfig,
    Decision,
    Report,
    config_digest,
    report_hash,
    signer_indices,
    verify_certificate,
)

__all__ = [
    "DECISION_OUTCOMES",
    "LOCK_TRANSITIONS",
    "MAX_UINT256",
    "RECLAIMABLE",
    "ADMISSION_WINDOW",
    "ZERO_ADDRESS",
    "Approval",
    "DecisionSkipped",
    "EscrowEvent",
    "EscrowModel",
    "EscrowRevert",
    "FINAL_SKIPS",
    "Leg",
    "LegLocked",
    "Mode",
    "ReportApplied",
    "SettlementAborted",
    "SettlementCommitted",
    "SettlementCreated",
    "SettlementExpired",
    "SettlementRefused",
    "SkipReason",
    "State",
    "Terms",
    "TermsProblem",
    "TokenLedger",
    "Transfer",
    "checksum_address",
    "decision_pending",
    "decision_skip",
    "done_bit",
    "leg_token",
    "locked_legs",
    "terms_hash",
]

ZERO_ADDRESS: Final = "0x0000000000000000000000000000000000000000"
MAX_UINT256: Final = 2**256 - 1
_MAX_UINT64: Final = 2**64 - 1
TERMS_ABI_TYPES: Final = (
    "bytes32",  # settlementId
    "uint8",  # mode
    "address",  # seller
    "address",  # buyer
    "address",  # assetToken
    "uint256",  # assetAmount
    "address",  # paymentToken
    "uint256",  # paymentAmount
    "uint64",  # deadline
)


class Mode(IntEnum):
    """Which legs of a settlement a coordinator holds (module docstring table)."""

    SWAP = 1
    ASSET_ESCROW = 2
    PAYMENT_ESCROW = 3
    BRIDGE_SELLER_SIDE = 4
    BRIDGE_BUYER_SIDE = 5


class State(IntEnum):
    NONE = 0
    CREATED = 1
    ASSET_LOCKED = 2
    PAYMENT_LOCKED = 3
    PREPARED = 4
    COMMITTED = 5
    ABORTED = 6
    EXPIRED = 7  # refunded without a certificate: only in the unsafe variant


class Leg(IntEnum):
    ASSET = 1
    PAYMENT = 2


class SkipReason(IntEnum):
    """Why a decision of a report was not applied (``DecisionSkipped.reason``)."""

    UNSUPPORTED_ACTION = 1  # PREPARE (a bank action) or an unknown action value
    UNKNOWN_SETTLEMENT = 2
    TERMS_MISMATCH = 3  # the decision certifies other terms than the settlement was created with
    ALREADY_APPLIED = 4  # the same decision (or an ABORT after an unsafe expiry) again: no-op
    CONFLICT = 5  # COMMIT after ABORT/EXPIRED, or ABORT after COMMIT: never moves value
    NOT_PREPARED = 6  # COMMIT before every local leg is locked
    TERMS_CALLDATA_MISMATCH = 7  # the transmitter supplied terms that do not hash to the terms hash
    EXECUTION_FAILED = 8  # a token transfer or mint reverted: state unchanged, can be retried


class TermsProblem(IntEnum):
    """Argument of ``InvalidTerms``: the first rule the terms break, in checking order."""

    ZERO_SETTLEMENT_ID = 1
    ZERO_PARTY = 2
    SAME_PARTY = 3
    UNKNOWN_MODE = 4
    ASSET_LEG = 5  # asset token/amount present where the mode has no asset leg, or missing
    PAYMENT_LEG = 6
    DEADLINE_PASSED = 7


# Which legs are locked on this coordinator, per mode.
_LOCKS_ASSET: Final = frozenset({Mode.SWAP, Mode.ASSET_ESCROW, Mode.BRIDGE_SELLER_SIDE})
_LOCKS_PAYMENT: Final = frozenset({Mode.SWAP, Mode.PAYMENT_ESCROW, Mode.BRIDGE_BUYER_SIDE})

#: lock transitions: (mode group, leg, state before) -> state after. Any other lock reverts
#: with WrongState. "single" = modes that lock only one leg here.
LOCK_TRANSITIONS: Final[Mapping[tuple[bool, Leg, State], State]] = {
    # (is SWAP, leg, from) -> to
    (True, Leg.ASSET, State.CREATED): State.ASSET_LOCKED,
    (True, Leg.ASSET, State.PAYMENT_LOCKED): State.PREPARED,
    (True, Leg.PAYMENT, State.CREATED): State.PAYMENT_LOCKED,
    (True, Leg.PAYMENT, State.ASSET_LOCKED): State.PREPARED,
    (False, Leg.ASSET, State.CREATED): State.PREPARED,
    (False, Leg.PAYMENT, State.CREATED): State.PREPARED,
}

_APPLY: Final = None
#: decision outcomes: (action, state) -> None (apply) or the SkipReason. NONE is handled
#: before (UNKNOWN_SETTLEMENT), and so is the terms hash (TERMS_MISMATCH).
DECISION_OUTCOMES: Final[Mapping[tuple[Action, State], SkipReason | None]] = {
    (Action.COMMIT, State.CREATED): SkipReason.NOT_PREPARED,
    (Action.COMMIT, State.ASSET_LOCKED): SkipReason.NOT_PREPARED,
    (Action.COMMIT, State.PAYMENT_LOCKED): SkipReason.NOT_PREPARED,
    (Action.COMMIT, State.PREPARED): _APPLY,
    (Action.COMMIT, State.COMMITTED): SkipReason.ALREADY_APPLIED,
    (Action.COMMIT, State.ABORTED): SkipReason.CONFLICT,
    (Action.COMMIT, State.EXPIRED): SkipReason.CONFLICT,
    (Action.ABORT, State.CREATED): _APPLY,
    (Action.ABORT, State.ASSET_LOCKED): _APPLY,
    (Action.ABORT, State.PAYMENT_LOCKED): _APPLY,
    (Action.ABORT, State.PREPARED): _APPLY,
    (Action.ABORT, State.COMMITTED): SkipReason.CONFLICT,
    (Action.ABORT, State.ABORTED): SkipReason.ALREADY_APPLIED,
    (Action.ABORT, State.EXPIRED): SkipReason.ALREADY_APPLIED,
}


#: Skip reasons no later call can change for a report (the contract's ``_isFinal``): the
#: settlement is in a state it never leaves, or the action is one a coordinator never
#: applies. A report whose decisions all applied or were skipped for one of these is done.
FINAL_SKIPS: Final = frozenset(
    {SkipReason.ALREADY_APPLIED, SkipReason.CONFLICT, SkipReason.UNSUPPORTED_ACTION}
)


def done_bit(report: Report) -> tuple[tuple[bytes, int, int], int]:
    """Where the coordinator marks ``report`` done: the storage word of its config digest,
    epoch and round // 256 (the contract's ``keccak256(digest, epoch << 64 | round >> 8)``),
    and its bit in that word, ``1 << (round % 256)``: 256 consecutive rounds share a word."""
    return (report.config_digest, report.epoch, report.round >> 8), 1 << (report.round & 0xFF)


def decision_skip(
    action: int, state: State, stored_hash: bytes, certified_hash: bytes
) -> SkipReason | None:
    """Why the coordinator skips a decision for a settlement it holds with ``stored_hash``
    in ``state`` (NONE: not at all), before it reads the supplied terms; None: it applies
    it. ``applyReport``'s first four checks, in the contract's order."""
    if action not in (Action.COMMIT, Action.ABORT):
        return SkipReason.UNSUPPORTED_ACTION
    if state == State.NONE:
        return SkipReason.UNKNOWN_SETTLEMENT
    if stored_hash != certified_hash:
        return SkipReason.TERMS_MISMATCH
    return DECISION_OUTCOMES[(Action(action), state)]


def decision_pending(decision: Decision, stored_hash: bytes, state: State) -> bool:
    """Whether ``decision`` would still change a settlement the coordinator holds with
    ``stored_hash`` in ``state`` (the transmitters' last check before they send, on a
    chain's reads or on this model)."""
    return decision_skip(decision.action, state, stored_hash, decision.terms_hash) is None


#: states from which the unsafe variant lets a party reclaim after the deadline.
#: Seconds of block time per window of the admission count (the contract's ADMISSION_WINDOW).
ADMISSION_WINDOW: Final = 10

RECLAIMABLE: Final = frozenset({State.ASSET_LOCKED, State.PAYMENT_LOCKED, State.PREPARED})


@lru_cache(maxsize=4096)
def checksum_address(value: str) -> str:
    """``value`` in EIP-55 form (cached)."""
    # EIP-55 checksumming hashes the address; the model checksums the same few addresses
    # (parties, tokens, the coordinator) on every call.
    return to_checksum_address(value)


@dataclass(frozen=True, slots=True)
class Terms:
    """The terms of a settlement as one coordinator holds it (see the module docstring).

    Field order is the ABI order of the Solidity ``Terms`` struct; ``terms_hash`` is
    ``keccak256(abi.encode(terms))``. A leg that is not on this coordinator has token
    ``ZERO_ADDRESS`` and amount 0.
    """

    settlement_id: bytes
    mode: int
    seller: str
    buyer: str
    asset_token: str
    asset_amount: int
    payment_token: str
    payment_amount: int
    deadline: int

    def __post_init__(self) -> None:
        # Shape only (the contract's ABI decoder rejects the same); rules are in `create`.
        if not isinstance(self.settlement_id, bytes) or len(self.settlement_id) != 32:
            raise ValueError("Terms.settlement_id must be 32 bytes")
        if not isinstance(self.mode, int) or not 0 <= self.mode <= 255:
            raise ValueError("Terms.mode must be a uint8")
        for name in ("seller", "buyer", "asset_token", "payment_token"):
            object.__setattr__(self, name, checksum_address(getattr(self, name)))
        for name in ("asset_amount", "payment_amount"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= MAX_UINT256:
                raise ValueError(f"Terms.{name} must be a uint256")
        if not isinstance(self.deadline, int) or not 0 <= self.deadline <= _MAX_UINT64:
            raise ValueError("Terms.deadline must be a uint64")

    def as_abi(self) -> tuple[Any, ...]:
        """The tuple web3 takes for the Solidity ``Terms`` struct."""
        return (
            self.settlement_id,
            self.mode,
            self.seller,
            self.buyer,
            self.asset_token,
            self.asset_amount,
            self.payment_token,
            self.payment_amount,
            self.deadline,
        )

    @classmethod
    def from_abi(cls, value: Sequence[Any] | Mapping[str, Any]) -> Terms:
        if isinstance(value, Mapping):
            value = [
                value[k]
                for k in (
                    "settlementId",
                    "mode",
                    "seller",
                    "buyer",
                    "assetToken",
                    "assetAmount",
                    "paymentToken",
                    "paymentAmount",
                    "deadline",
                )
            ]
        return cls(*value)

    def terms_hash(self) -> bytes:
        return terms_hash(self)


@lru_cache(maxsize=65536)
def terms_hash(terms: Terms) -> bytes:
    """keccak256(abi.encode(bytes32 settlementId, uint8 mode, address seller, address buyer,
    address assetToken, uint256 assetAmount, address paymentToken, uint256 paymentAmount,
    uint64 deadline)): the value a Decision for this coordinator certifies."""
    return bytes(keccak(encode_terms(terms)))


def encode_terms(terms: Terms) -> bytes:
    """``abi.encode`` of the terms, word by word: every field is a static type, so the
    encoding is nine 32-byte words in field order (eth_abi gives the same bytes, about
    twenty times slower; a test holds the two together)."""

    def address(value: str) -> bytes:
        return bytes(12) + bytes.fromhex(value[2:])

    return b"".join(
        (
            terms.settlement_id,
            terms.mode.to_bytes(32, "big"),
            address(terms.seller),
            address(terms.buyer),
            address(terms.asset_token),
            terms.asset_amount.to_bytes(32, "big"),
            address(terms.payment_token),
            terms.payment_amount.to_bytes(32, "big"),
            terms.deadline.to_bytes(32, "big"),
        )
    )


def encode_terms_reference(terms: Terms) -> bytes:
    """``abi.encode`` of the terms by eth_abi: the reference ``encode_terms`` is held to."""
    return bytes(abi_encode(list(TERMS_ABI_TYPES), list(terms.as_abi())))


def locked_legs(mode: int, state: State) -> tuple[Leg, ...]:
    """The legs whose tokens the coordinator holds for a settlement in ``state``."""
    if state == State.ASSET_LOCKED:
        return (Leg.ASSET,)
    if state == State.PAYMENT_LOCKED:
        return (Leg.PAYMENT,)
    if state == State.PREPARED:
        legs = []
        if mode in _LOCKS_ASSET:
            legs.append(Leg.ASSET)
        if mode in _LOCKS_PAYMENT:
            legs.append(Leg.PAYMENT)
        return tuple(legs)
    return ()


# --------------------------------------------------------------------------- errors and events


class EscrowRevert(Exception):
    """A call reverted. ``error`` is the Solidity custom error's name, ``args`` its arguments
    (normalised: bytes32 as bytes, addresses checksummed, enums as int)."""

    def __init__(self, error: str, *args: Any) -> None:
        self.error = error
        self.args_ = tuple(int(a) if isinstance(a, IntEnum) else a for a in args)
        super().__init__(f"{error}{self.args_}")


@dataclass(frozen=True, slots=True)
class EscrowEvent:
    """Base of every event: ``emitter`` is the contract address that logs it."""

    NAME: ClassVar[str] = ""
    emitter: str

    def normalized(self) -> tuple[str, str, tuple[Any, ...]]:
        """(emitter, event name, arguments in ABI order), the form the differential test
        compares with decoded logs."""
        values = []
        for name in self.__dataclass_fields__:
            if name == "emitter":
                continue
            value = getattr(self, name)
            if isinstance(value, Terms):
                value = value.as_abi()
            elif isinstance(value, IntEnum):
                value = int(value)
            values.append(value)
        return (self.emitter, self.NAME, tuple(values))


@dataclass(frozen=True, slots=True)
class Transfer(EscrowEvent):
    NAME: ClassVar[str] = "Transfer"
    sender: str
    to: str
    value: int


@dataclass(frozen=True, slots=True)
class Approval(EscrowEvent):
    NAME: ClassVar[str] = "Approval"
    owner: str
    spender: str
    value: int


@dataclass(frozen=True, slots=True)
class SettlementCreated(EscrowEvent):
    NAME: ClassVar[str] = "SettlementCreated"
    settlement_id: bytes
    terms_hash: bytes
    creator: str
    terms: Terms


@dataclass(frozen=True, slots=True)
class LegLocked(EscrowEvent):
    NAME: ClassVar[str] = "LegLocked"
    settlement_id: bytes
    leg: Leg
    party: str
    token: str
    amount: int
    state: State


@dataclass(frozen=True, slots=True)
class SettlementCommitted(EscrowEvent):
    NAME: ClassVar[str] = "SettlementCommitted"
    settlement_id: bytes
    report_hash: bytes
    terms_hash: bytes


@dataclass(frozen=True, slots=True)
class SettlementAborted(EscrowEvent):
    NAME: ClassVar[str] = "SettlementAborted"
    settlement_id: bytes
    report_hash: bytes
    terms_hash: bytes
    previous_state: State


@dataclass(frozen=True, slots=True)
class SettlementExpired(EscrowEvent):
    NAME: ClassVar[str] = "SettlementExpired"
    settlement_id: bytes
    caller: str
    previous_state: State


@dataclass(frozen=True, slots=True)
class SettlementRefused(EscrowEvent):
    """Admission refused a create: nothing was recorded or locked (``EscrowModel._admit``)."""

    NAME: ClassVar[str] = "SettlementRefused"
    settlement_id: bytes
    creator: str
    open: int
    ended_last_window: int


@dataclass(frozen=True, slots=True)
class DecisionSkipped(EscrowEvent):
    NAME: ClassVar[str] = "DecisionSkipped"
    settlement_id: bytes
    report_hash: bytes
    action: int
    reason: SkipReason


@dataclass(frozen=True, slots=True)
class ReportApplied(EscrowEvent):
    NAME: ClassVar[str] = "ReportApplied"
    report_hash: bytes
    epoch: int
    round: int
    applied: int
    skipped: int


# --------------------------------------------------------------------------- state with undo


class _Journal:
    """Undo log: every write goes through ``set`` so a failed operation can be rolled back
    (the model's equivalent of a reverted call frame)."""

    def __init__(self) -> None:
        self._frames: list[list[tuple[dict[Any, Any], Any, Any, bool]]] = []

    def set(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        if self._frames:
            had = key in table
            self._frames[-1].append((table, key, table.get(key), had))
        table[key] = value

    @contextmanager
    def frame(self) -> Iterator[None]:
        self._frames.append([])
        try:
            yield
        except BaseException:
            for table, key, old, had in reversed(self._frames.pop()):
                if had:
                    table[key] = old
                else:
                    table.pop(key, None)
            raise
        else:
            done = self._frames.pop()
            if self._frames:  # keep the writes undoable by the enclosing frame
                self._frames[-1].extend(done)


@dataclass
class TokenLedger:
    """An ERC-20 token of dvpsim (``Tokens.sol``): balances, allowances, one minter.

    Mirrors ``DvPToken``: transfers to the zero address revert, an allowance of 2**256-1 is
    never decreased, only ``minter`` may mint.
    """

    address: str
    minter: str
    journal: _Journal
    balances: dict[str, int] = field(default_factory=dict)
    allowances: dict[tuple[str, str], int] = field(default_factory=dict)
    total_supply_box: dict[str, int] = field(default_factory=lambda: {"supply": 0})

    @property
    def total_supply(self) -> int:
        return self.total_supply_box["supply"]

    def balance_of(self, holder: str) -> int:
        return self.balances.get(checksum_address(holder), 0)

    def allowance(self, owner: str, spender: str) -> int:
        return self.allowances.get((checksum_address(owner), checksum_address(spender)), 0)

    def _move(self, sender: str, to: str, amount: int) -> list[EscrowEvent]:
        if to == ZERO_ADDRESS:
            raise EscrowRevert("ERC20InvalidReceiver", to)
        balance = self.balance_of(sender)
        if balance < amount:
            raise EscrowRevert("ERC20InsufficientBalance", sender, balance, amount)
        self.journal.set(self.balances, sender, balance - amount)
        self.journal.set(self.balances, to, self.balance_of(to) + amount)
        return [Transfer(self.address, sender, to, amount)]

    def mint(self, caller: str, to: str, amount: int) -> list[EscrowEvent]:
        caller, to = checksum_address(caller), checksum_address(to)
        if caller != self.minter:
            raise EscrowRevert("NotMinter", caller)
        if to == ZERO_ADDRESS:
            raise EscrowRevert("ERC20InvalidReceiver", to)
        if self.total_supply + amount > MAX_UINT256:
            raise EscrowRevert("Panic", 0x11)
        self.journal.set(self.total_supply_box, "supply", self.total_supply + amount)
        self.journal.set(self.balances, to, self.balance_of(to) + amount)
        return [Transfer(self.address, ZERO_ADDRESS, to, amount)]

    def transfer(self, caller: str, to: str, amount: int) -> list[EscrowEvent]:
        return self._move(checksum_address(caller), checksum_address(to), amount)

    def approve(self, caller: str, spender: str, amount: int) -> list[EscrowEvent]:
        caller, spender = checksum_address(caller), checksum_address(spender)
        self.journal.set(self.allowances, (caller, spender), amount)
        return [Approval(self.address, caller, spender, amount)]

    def transfer_from(self, caller: str, owner: str, to: str, amount: int) -> list[EscrowEvent]:
        caller, owner, to = checksum_address(caller), checksum_address(owner), checksum_address(to)
        allowed = self.allowance(owner, caller)
        if allowed < amount:
            raise EscrowRevert("ERC20InsufficientAllowance", caller, allowed, amount)
        if allowed != MAX_UINT256:
            self.journal.set(self.allowances, (owner, caller), allowed - amount)
        return self._move(owner, to, amount)


@dataclass(frozen=True, slots=True)
class _Record:
    terms_hash: bytes
    state: State


class EscrowModel:
    """One DvPCoordinator and the tokens it touches, on one chain."""

    def __init__(
        self,
        coordinator: str,
        *,
        unsafe_self_refund_after_deadline: bool = False,
        admission_floor: int = 0,
    ) -> None:
        if admission_floor < 0:
            raise ValueError(f"admission_floor must be >= 0, not {admission_floor}")
        self.coordinator = checksum_address(coordinator)
        self.unsafe_self_refund_after_deadline = unsafe_self_refund_after_deadline
        self.admission_floor = admission_floor
        # Admission counts (only with admission_floor > 0; the contract's s_open, s_ended).
        self._open: dict[str, int] = {"open": 0}
        self._ended: dict[int, int] = {}  # window -> settlements that became final in it
        # The block timestamp of the latest call that was given one (gas.py prices the
        # admission counts of that call's window).
        self.clock = 0
        self.tokens: dict[str, TokenLedger] = {}
        self._settlements: dict[bytes, _Record] = {}
        self._reports_done: dict[tuple[bytes, int, int], int] = {}  # done_bit's words
        self._journal = _Journal()

    # ------------------------------------------------------------------ tokens

    def add_token(self, address: str, minter: str) -> TokenLedger:
        ledger = TokenLedger(checksum_address(address), checksum_address(minter), self._journal)
        self.tokens[ledger.address] = ledger
        return ledger

    def token(self, address: str) -> TokenLedger:
        return self.tokens[checksum_address(address)]

    def _atomic(self, operation: Callable[[], list[EscrowEvent]]) -> list[EscrowEvent]:
        with self._journal.frame():
            return operation()

    def mint(self, token: str, caller: str, to: str, amount: int) -> list[EscrowEvent]:
        return self._atomic(lambda: self.token(token).mint(caller, to, amount))

    def approve(self, token: str, caller: str, spender: str, amount: int) -> list[EscrowEvent]:
        return self._atomic(lambda: self.token(token).approve(caller, spender, amount))

    def transfer(self, token: str, caller: str, to: str, amount: int) -> list[EscrowEvent]:
        return self._atomic(lambda: self.token(token).transfer(caller, to, amount))

    def _token_call(self, token: str) -> TokenLedger:
        ledger = self.tokens.get(checksum_address(token))
        if ledger is None:
            # A call to an address without code: the contract's safe-transfer check fails.
            raise EscrowRevert("TokenCallFailed", checksum_address(token))
        return ledger

    # ------------------------------------------------------------------ views

    def state_of(self, settlement_id: bytes) -> State:
        record = self._settlements.get(settlement_id)
        return record.state if record else State.NONE

    def terms_hash_of(self, settlement_id: bytes) -> bytes:
        record = self._settlements.get(settlement_id)
        return record.terms_hash if record else bytes(32)

    def settlement_ids(self) -> tuple[bytes, ...]:
        return tuple(self._settlements)

    @property
    def open_count(self) -> int:
        """Admission: settlements created and not yet final (0 without admission)."""
        return self._open["open"]

    def ended_in(self, window: int) -> int:
        """Admission: settlements that became final in ``window`` (timestamp // ADMISSION_WINDOW)."""
        return self._ended.get(window, 0)

    def report_done(self, report: Report) -> bool:
        """Whether ``report`` is marked done: a copy of it now reverts ReportAlreadyApplied."""
        word, bit = done_bit(report)
        return bool(self._reports_done.get(word, 0) & bit)

    def done_word(self, report: Report) -> int:
        """The storage word that holds ``report``'s done bit, as it is now."""
        return self._reports_done.get(done_bit(report)[0], 0)

    # ------------------------------------------------------------------ settlement calls

    @staticmethod
    def check_terms(terms: Terms, now: int) -> None:
        """Raise InvalidTerms for the first rule ``terms`` break (contract: ``_termsProblem``)."""
        problem = _terms_problem(terms, now)
        if problem is not None:
            raise EscrowRevert("InvalidTerms", terms.settlement_id, problem)

    def create(self, caller: str, terms: Terms, now: int) -> list[EscrowEvent]:
        self.clock = now
        return self._atomic(lambda: self._create(checksum_address(caller), terms, now))

    def _create(self, caller: str, terms: Terms, now: int) -> list[EscrowEvent]:
        self.check_terms(terms, now)
        if caller not in (terms.seller, terms.buyer):
            raise EscrowRevert("WrongCaller", terms.settlement_id, caller)
        if self.state_of(terms.settlement_id) != State.NONE:
            raise EscrowRevert("SettlementExists", terms.settlement_id)
        if self.admission_floor:
            refused = self._admit(caller, terms, now)
            if refused is not None:
                return [refused]
        digest = terms_hash(terms)
        self._set(terms.settlement_id, _Record(digest, State.CREATED))
        return [SettlementCreated(self.coordinator, terms.settlement_id, digest, caller, terms)]

    def create_and_lock(self, caller: str, terms: Terms, now: int) -> list[EscrowEvent]:
        """create, then lock the caller's leg (the seller's asset, else the buyer's payment);
        nothing is locked when admission refuses the settlement."""
        caller = checksum_address(caller)
        self.clock = now

        def run() -> list[EscrowEvent]:
            events = self._create(caller, terms, now)
            if isinstance(events[0], SettlementRefused):
                return events
            leg = Leg.ASSET if caller == terms.seller else Leg.PAYMENT
            return events + self._lock(leg, caller, terms, now)

        return self._atomic(run)

    def _admit(self, caller: str, terms: Terms, now: int) -> SettlementRefused | None:
        """Admission (contract: ``_admit``): count ``terms`` as open, or refuse it when at
        least ``admission_floor`` are open and, at the pace of the last whole window, they
        would not end within half the time before its deadline."""
        open_ = self.open_count
        if open_ >= self.admission_floor:
            window = now // ADMISSION_WINDOW
            ended = self.ended_in(window - 1) if window else 0
            # check_terms refused a deadline that passed: deadline - now >= 1.
            if open_ * 2 * ADMISSION_WINDOW >= ended * (terms.deadline - now):
                return SettlementRefused(
                    self.coordinator, terms.settlement_id, caller, open_, ended
                )
        self._journal.set(self._open, "open", open_ + 1)
        return None

    def _count_ended(self, count: int, now: int | None) -> None:
        """Admission (contract: ``_ended``): ``count`` open settlements became final now."""
        if now is None:
            raise ValueError("with admission, a call that ends settlements needs the block time")
        window = now // ADMISSION_WINDOW
        self._journal.set(self._open, "open", self.open_count - count)
        self._journal.set(self._ended, window, self.ended_in(window) + count)

    def lock_asset(self, caller: str, terms: Terms, now: int) -> list[EscrowEvent]:
        return self._atomic(lambda: self._lock(Leg.ASSET, checksum_address(caller), terms, now))

    def lock_payment(self, caller: str, terms: Terms, now: int) -> list[EscrowEvent]:
        return self._atomic(lambda: self._lock(Leg.PAYMENT, checksum_address(caller), terms, now))

    def _known(self, terms: Terms) -> _Record:
        record = self._settlements.get(terms.settlement_id)
        if record is None:
            raise EscrowRevert("UnknownSettlement", terms.settlement_id)
        if record.terms_hash != terms_hash(terms):
            raise EscrowRevert("TermsMismatch", terms.settlement_id)
        return record

    def _lock(self, leg: Leg, caller: str, terms: Terms, now: int) -> list[EscrowEvent]:
        record = self._known(terms)
        mode = Mode(terms.mode)  # valid: checked at creation, bound by the terms hash
        here = _LOCKS_ASSET if leg == Leg.ASSET else _LOCKS_PAYMENT
        if mode not in here:
            raise EscrowRevert("LegNotHere", terms.settlement_id, leg)
        party = terms.seller if leg == Leg.ASSET else terms.buyer
        if caller != party:
            raise EscrowRevert("WrongCaller", terms.settlement_id, caller)
        after = LOCK_TRANSITIONS.get((mode == Mode.SWAP, leg, record.state))
        if after is None:
            raise EscrowRevert("WrongState", terms.settlement_id, record.state)
        if now > terms.deadline:
            raise EscrowRevert("DeadlinePassed", terms.settlement_id, terms.deadline)
        self._set(terms.settlement_id, _Record(record.terms_hash, after))
        token, amount = leg_token(terms, leg)
        events = self._token_call(token).transfer_from(
            self.coordinator, party, self.coordinator, amount
        )
        events.append(
            LegLocked(self.coordinator, terms.settlement_id, leg, party, token, amount, after)
        )
        return events

    def reclaim_after_deadline(self, caller: str, terms: Terms, now: int) -> list[EscrowEvent]:
        """The unsafe research variant: a party takes back the locked legs after the deadline,
        without a certificate."""
        caller = checksum_address(caller)
        self.clock = now

        def run() -> list[EscrowEvent]:
            if not self.unsafe_self_refund_after_deadline:
                raise EscrowRevert("UnsafeSelfRefundDisabled")
            record = self._known(terms)
            if caller not in (terms.seller, terms.buyer):
                raise EscrowRevert("WrongCaller", terms.settlement_id, caller)
            if record.state not in RECLAIMABLE:
                raise EscrowRevert("WrongState", terms.settlement_id, record.state)
            if now <= terms.deadline:
                raise EscrowRevert("DeadlineNotPassed", terms.settlement_id, terms.deadline)
            self._set(terms.settlement_id, _Record(record.terms_hash, State.EXPIRED))
            if self.admission_floor:
                self._count_ended(1, now)
            events = self._refund(terms, record.state)
            events.append(
                SettlementExpired(self.coordinator, terms.settlement_id, caller, record.state)
            )
            return events

        return self._atomic(run)

    # ------------------------------------------------------------------ decisions

    def apply_certificate(
        self,
        certificate: Certificate,
        committee: CommitteeConfig,
        terms: Sequence[Terms],
        *,
        strict: bool = False,
        crypto: CryptoSuite = REAL_CRYPTO,
        now: int | None = None,
    ) -> list[EscrowEvent]:
        """``applyReport`` / ``applyReportStrict``: verify the certificate against the
        coordinator's committee (the contract's OracleVerifierBase checks, in the same
        order), then apply its report. ``crypto`` is the suite the signatures are checked
        with: the real one, as on chain, unless a simulation passes its own. ``now`` (the
        block time) is needed only with admission, to count the settlements it ends."""
        try:
            verify_certificate(certificate, committee, crypto=crypto)
        except CertificateError as exc:
            raise _certificate_revert(exc.reason, certificate, committee) from None
        return self.apply_report(certificate.report, terms, strict=strict, now=now)

    def apply_report(
        self,
        report: Report,
        terms: Sequence[Terms],
        *,
        strict: bool = False,
        now: int | None = None,
    ) -> list[EscrowEvent]:
        """Apply a report whose certificate has been verified (the contract verifies it first
        and reverts the whole call on a bad certificate). ``terms[i]`` are the transmitter's
        terms for ``report.decisions[i]``. A report done already reverts ReportAlreadyApplied;
        one whose every outcome is final is marked done. With admission, the settlements it
        ends are counted in ``now``'s window."""
        if now is not None:
            self.clock = now
        self._refuse_if_done(report)
        if len(terms) != len(report.decisions):
            raise EscrowRevert("BatchLengthMismatch", len(report.decisions), len(terms))
        digest = report_hash(report)

        def run() -> list[EscrowEvent]:
            events: list[EscrowEvent] = []
            applied = skipped = 0
            done = True
            for decision, supplied in zip(report.decisions, terms, strict=True):
                outcome = self._decide(decision.settlement_id, int(decision.action),
                                       decision.terms_hash, supplied, digest)  # fmt: skip
                if isinstance(outcome, SkipReason):
                    if strict and outcome != SkipReason.ALREADY_APPLIED:
                        raise _strict_error(decision.settlement_id, outcome,
                                            self.state_of(decision.settlement_id), decision.action)  # fmt: skip
                    done = done and outcome in FINAL_SKIPS
                    events.append(
                        DecisionSkipped(
                            self.coordinator,
                            decision.settlement_id,
                            digest,
                            int(decision.action),
                            outcome,
                        )  # fmt: skip
                    )
                    skipped += 1
                else:
                    events.extend(outcome)
                    applied += 1
            if self.admission_floor and applied:
                self._count_ended(applied, now)
            if done:
                word, bit = done_bit(report)
                self._journal.set(self._reports_done, word, self._reports_done.get(word, 0) | bit)
            events.append(
                ReportApplied(
                    self.coordinator, digest, report.epoch, report.round, applied, skipped
                )
            )
            return events

        return self._atomic(run)

    def _refuse_if_done(self, report: Report) -> None:
        if self.report_done(report):
            raise EscrowRevert("ReportAlreadyApplied", report.epoch, report.round)

    def _decide(
        self, settlement_id: bytes, action: int, certified_hash: bytes, supplied: Terms,
        digest: bytes,
    ) -> SkipReason | list[EscrowEvent]:  # fmt: skip
        record = self._settlements.get(settlement_id)
        state = State.NONE if record is None else record.state
        stored = b"" if record is None else record.terms_hash
        reason = decision_skip(action, state, stored, certified_hash)
        if reason is not None:
            return reason
        assert record is not None  # decision_skip refuses an unknown settlement
        # Only now are the terms needed (to know whom to pay); they must be the certified ones.
        if terms_hash(supplied) != record.terms_hash:
            return SkipReason.TERMS_CALLDATA_MISMATCH
        try:
            with self._journal.frame():  # the contract's try/catch around one execution
                return self._execute(supplied, Action(action), record, digest)
        except EscrowRevert:
            return SkipReason.EXECUTION_FAILED

    def _execute(
        self, terms: Terms, action: Action, record: _Record, digest: bytes
    ) -> list[EscrowEvent]:
        sid = terms.settlement_id
        if action == Action.COMMIT:
            self._set(sid, _Record(record.terms_hash, State.COMMITTED))
            events = self._release(terms)
            events.append(SettlementCommitted(self.coordinator, sid, digest, record.terms_hash))
            return events
        self._set(sid, _Record(record.terms_hash, State.ABORTED))
        events = self._refund(terms, record.state)
        events.append(
            SettlementAborted(self.coordinator, sid, digest, record.terms_hash, record.state)
        )
        return events

    def _release(self, terms: Terms) -> list[EscrowEvent]:
        mode, me = Mode(terms.mode), self.coordinator
        events: list[EscrowEvent] = []
        if mode in (Mode.SWAP, Mode.ASSET_ESCROW):
            events += self._token_call(terms.asset_token).transfer(
                me, terms.buyer, terms.asset_amount
            )
        if mode in (Mode.SWAP, Mode.PAYMENT_ESCROW):
            events += self._token_call(terms.payment_token).transfer(
                me, terms.seller, terms.payment_amount
            )
        if mode == Mode.BRIDGE_SELLER_SIDE:
            events += self._token_call(terms.payment_token).mint(
                me, terms.seller, terms.payment_amount
            )
        if mode == Mode.BRIDGE_BUYER_SIDE:
            events += self._token_call(terms.asset_token).mint(me, terms.buyer, terms.asset_amount)
        return events

    def _refund(self, terms: Terms, state: State) -> list[EscrowEvent]:
        events: list[EscrowEvent] = []
        for leg in locked_legs(terms.mode, state):
            token, amount = leg_token(terms, leg)
            party = terms.seller if leg == Leg.ASSET else terms.buyer
            events += self._token_call(token).transfer(self.coordinator, party, amount)
        return events

    def _set(self, settlement_id: bytes, record: _Record) -> None:
        self._journal.set(self._settlements, settlement_id, record)


def leg_token(terms: Terms, leg: Leg) -> tuple[str, int]:
    """The token and amount of one leg of ``terms``."""
    if leg == Leg.ASSET:
        return terms.asset_token, terms.asset_amount
    return terms.payment_token, terms.payment_amount


def _leg_ok(token: str, amount: int, present: bool) -> bool:
    if present:
        return token != ZERO_ADDRESS and amount > 0
    # A leg held elsewhere has no token here, but its amount may describe it (the bank
    # payment of an ASSET_ESCROW settlement), so the committee can certify exactly that.
    return token == ZERO_ADDRESS


def _terms_problem(terms: Terms, now: int) -> TermsProblem | None:
    if terms.settlement_id == bytes(32):
        return TermsProblem.ZERO_SETTLEMENT_ID
    if ZERO_ADDRESS in (terms.seller, terms.buyer):
        return TermsProblem.ZERO_PARTY
    if terms.seller == terms.buyer:
        return TermsProblem.SAME_PARTY
    if terms.mode not in {int(m) for m in Mode}:
        return TermsProblem.UNKNOWN_MODE
    mode = Mode(terms.mode)
    # Bridge modes hold one leg locked and credit (mint) the other, so both are present.
    has_asset = mode != Mode.PAYMENT_ESCROW
    has_payment = mode != Mode.ASSET_ESCROW
    if not _leg_ok(terms.asset_token, terms.asset_amount, has_asset):
        return TermsProblem.ASSET_LEG
    if not _leg_ok(terms.payment_token, terms.payment_amount, has_payment):
        return TermsProblem.PAYMENT_LEG
    if terms.deadline <= now:
        return TermsProblem.DEADLINE_PASSED
    return None


def _strict_error(
    settlement_id: bytes, reason: SkipReason, state: State, action: int
) -> EscrowRevert:
    if reason == SkipReason.CONFLICT:
        return EscrowRevert("ConflictingDecision", settlement_id, state, action)
    return EscrowRevert("DecisionRejected", settlement_id, reason)


def _certificate_revert(
    reason: str, certificate: Certificate, committee: CommitteeConfig
) -> EscrowRevert:
    """The OracleVerifierBase custom error for a certificate that consensus.report rejects
    (both check in the same order: digest, signer range, count, signature)."""
    if reason == CertificateError.CONFIG_DIGEST_MISMATCH:
        return EscrowRevert(
            "ConfigDigestMismatch", config_digest(committee), certificate.report.config_digest
        )
    if reason == CertificateError.SIGNER_BIT_OUT_OF_RANGE:
        return EscrowRevert("SignerOutOfRange", certificate.signers.bit_length() - 1, committee.n)
    if reason == CertificateError.TOO_FEW_SIGNERS:
        return EscrowRevert("TooFewSigners", len(signer_indices(certificate.signers)), committee.t)
    if reason == CertificateError.MALFORMED_SIGNATURE:
        return EscrowRevert("MalformedSignature")
    return EscrowRevert("InvalidSignature")
