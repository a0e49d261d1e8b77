// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import "./OracleVerifier.sol";
import "./Tokens.sol";

/// @title DvPCoordinator
/// @notice The on-chain legs of dvpsim's Delivery-versus-Payment settlements. Parties lock
///         tokens here (PREPARE); the oracle committee's certified report (verified by the
///         inherited OracleVerifierBase, whose config digest binds this contract's address)
///         then COMMITs (release, swap or mint) or ABORTs (refund) each settlement.
///
///         A settlement's `mode` says which legs live on this chain:
///         SWAP                both legs here; COMMIT swaps them in one call
///         ASSET_ESCROW        asset locked here; payment at the bank or on another chain
///         PAYMENT_ESCROW      payment locked here; asset on another chain
///         BRIDGE_SELLER_SIDE  asset locked here (it stays, backing the asset minted on the
///                             buyer's chain); COMMIT mints the payment to the seller here
///         BRIDGE_BUYER_SIDE   payment locked here (it stays); COMMIT mints the asset to the
///                             buyer here
///
///         States: NONE -create-> CREATED -lock-> ASSET_LOCKED | PAYMENT_LOCKED -lock->
///         PREPARED -COMMIT-> COMMITTED; CREATED..PREPARED -ABORT-> ABORTED; in the unsafe
///         variant only, ASSET_LOCKED..PREPARED -reclaim after deadline-> EXPIRED.
///
///         Storage per settlement: the terms hash and the state. The terms themselves are
///         in the SettlementCreated event and are passed back in calldata by whoever acts
///         on the settlement; they must hash to the stored terms hash.
///
///         Decisions: `applyReport` applies every decision of a verified report it can and
///         skips the others with a DecisionSkipped event (unknown settlement, terms
///         mismatch, not prepared, conflict, ...); it never reverts because of one
///         decision, so one bad settlement cannot block a batch. `applyReportStrict` is the
///         same but reverts on any skip other than an identical replay (ConflictingDecision
///         for ABORT after COMMIT and COMMIT after ABORT). Each decision executes in its own
///         call frame with bounded gas: a token that reverts or burns gas fails that
///         decision only (EXECUTION_FAILED, state unchanged, retried by a later replay).
///
///         Admission (deployed with `admissionFloor` > 0): the coordinator refuses a new
///         settlement the committee cannot be expected to serve before its deadline,
///         instead of letting it wait and expire. It counts the open settlements (created,
///         not yet final) and the settlements that became final in each window of
///         ADMISSION_WINDOW seconds of block time. While at least `admissionFloor` are
///         open, a create is admitted only if, at the pace of the last whole window, the
///         open ones end within half the time the new one has before its deadline
///         (open * 2 * ADMISSION_WINDOW < endedLastWindow * (deadline - now)). A refused
///         create does not revert: it emits SettlementRefused and records nothing, and
///         createAndLock then locks nothing, so the refusal is on the chain for everyone to
///         see. With `admissionFloor` = 0 nothing is counted and everything is admitted.
///
///         Model: chain_adapters/model.py (EscrowModel), held to this contract by a
///         differential test. Terms hash: keccak256(abi.encode(Terms)).
/// @dev    Must never: move value on a decision that conflicts with the settlement's state;
///         refund a prepared leg without a certified ABORT unless deployed with
///         `unsafeSelfRefundAfterDeadline` (research only: it breaks atomicity); apply a
///         decision whose terms hash differs from the one stored at creation.
contract DvPCoordinator is OracleVerifierBase {
    // Modes (Terms.mode).
    uint8 internal constant SWAP = 1;
    uint8 internal constant ASSET_ESCROW = 2;
    uint8 internal constant PAYMENT_ESCROW = 3;
    uint8 internal constant BRIDGE_SELLER_SIDE = 4;
    uint8 internal constant BRIDGE_BUYER_SIDE = 5;

    // States.
    uint8 internal constant NONE = 0;
    uint8 internal constant CREATED = 1;
    uint8 internal constant ASSET_LOCKED = 2;
    uint8 internal constant PAYMENT_LOCKED = 3;
    uint8 internal constant PREPARED = 4;
    uint8 internal constant COMMITTED = 5;
    uint8 internal constant ABORTED = 6;
    uint8 internal constant EXPIRED = 7;

    // Legs.
    uint8 internal constant ASSET = 1;
    uint8 internal constant PAYMENT = 2;

    // Skip reasons (DecisionSkipped.reason, DecisionRejected.reason).
    uint8 internal constant UNSUPPORTED_ACTION = 1;
    uint8 internal constant UNKNOWN_SETTLEMENT = 2;
    uint8 internal constant TERMS_MISMATCH = 3;
    uint8 internal constant ALREADY_APPLIED = 4;
    uint8 internal constant CONFLICT = 5;
    uint8 internal constant NOT_PREPARED = 6;
    uint8 internal constant TERMS_CALLDATA_MISMATCH = 7;
    uint8 internal constant EXECUTION_FAILED = 8;

    // InvalidTerms problems, in checking order.
    uint8 internal constant ZERO_SETTLEMENT_ID = 1;
    uint8 internal constant ZERO_PARTY = 2;
    uint8 internal constant SAME_PARTY = 3;
    uint8 internal constant UNKNOWN_MODE = 4;
    uint8 internal constant ASSET_LEG = 5;
    uint8 internal constant PAYMENT_LEG = 6;
    uint8 internal constant DEADLINE_PASSED = 7;

    /// Gas each decision's execution may use: our tokens need under 60k for a swap; a
    /// token that burns more fails its own decision only.
    uint256 public constant DECISION_GAS_LIMIT = 200_000;
    /// gasleft() needed before a decision so that the full limit is forwarded (63/64 rule)
    /// with room to record the outcome: below it the transaction reverts instead, so a
    /// transmitter cannot make decisions fail by sending too little gas.
    uint256 internal constant DECISION_GAS_REQUIRED = DECISION_GAS_LIMIT * 64 / 63 + 20_000;

    uint256 private constant TERMS_LENGTH = 9 * 32;

    /// Seconds of block time per window of the admission count (see the notice).
    uint256 public constant ADMISSION_WINDOW = 10;

    struct Terms {
        bytes32 settlementId;
        uint8 mode;
        address seller;
        address buyer;
        address assetToken;
        uint256 assetAmount; // locked from the seller, or minted to the buyer (BRIDGE_BUYER_SIDE)
        address paymentToken;
        uint256 paymentAmount; // locked from the buyer, or minted to the seller (BRIDGE_SELLER_SIDE)
        uint64 deadline; // unix seconds: no lock after it; never a refund by itself
    }

    struct Settlement {
        bytes32 termsHash;
        uint8 state;
    }

    /// Research only: lets a party take its locked tokens back after the deadline without
    /// a certificate. Atomicity then fails whenever the other leg commits.
    bool public immutable unsafeSelfRefundAfterDeadline;
    /// Admission (see the notice): 0 admits everything and counts nothing.
    uint256 public immutable admissionFloor;

    mapping(bytes32 settlementId => Settlement) internal s_settlements;
    /// Reports done (see the contract notice): word keccak256(configDigest,
    /// epoch << 64 | round >> 8) holds bit round & 255, so 256 consecutive rounds share a
    /// storage word (the first mark of a word costs a zero-slot write, later ones ~5,000).
    mapping(bytes32 word => uint256 rounds) internal s_reportsDone;
    bool private transient s_entered;
    /// Admission counts (only with admissionFloor > 0): settlements created and not yet
    /// final, and settlements that became final per window (block.timestamp /
    /// ADMISSION_WINDOW).
    uint256 internal s_open;
    mapping(uint256 window => uint256 ended) internal s_ended;

    event SettlementCreated(bytes32 indexed settlementId, bytes32 termsHash, address creator, Terms terms);
    event LegLocked(
        bytes32 indexed settlementId, uint8 leg, address party, address token, uint256 amount, uint8 state
    );
    event SettlementCommitted(bytes32 indexed settlementId, bytes32 indexed reportHash, bytes32 termsHash);
    event SettlementAborted(
        bytes32 indexed settlementId, bytes32 indexed reportHash, bytes32 termsHash, uint8 previousState
    );
    event SettlementExpired(bytes32 indexed settlementId, address caller, uint8 previousState);
    event SettlementRefused(bytes32 indexed settlementId, address creator, uint256 open, uint256 endedLastWindow);
    event DecisionSkipped(bytes32 indexed settlementId, bytes32 indexed reportHash, uint8 action, uint8 reason);
    event ReportApplied(bytes32 indexed reportHash, uint32 epoch, uint64 round, uint32 applied, uint32 skipped);

    error InvalidTerms(bytes32 settlementId, uint8 problem);
    error WrongCaller(bytes32 settlementId, address caller);
    error SettlementExists(bytes32 settlementId);
    error UnknownSettlement(bytes32 settlementId);
    error TermsMismatch(bytes32 settlementId);
    error LegNotHere(bytes32 settlementId, uint8 leg);
    error WrongState(bytes32 settlementId, uint8 state);
    error DeadlinePassed(bytes32 settlementId, uint64 deadline);
    error DeadlineNotPassed(bytes32 settlementId, uint64 deadline);
    error UnsafeSelfRefundDisabled();
    error BatchLengthMismatch(uint256 decisions, uint256 terms);
    error ConflictingDecision(bytes32 settlementId, uint8 state, uint8 action);
    error DecisionRejected(bytes32 settlementId, uint8 reason);
    error InsufficientGasForDecision(uint256 index);
    error ReportAlreadyApplied(uint32 epoch, uint64 round);
    error Reentrancy();
    error OnlySelf();
    error TokenCallFailed(address token);

    modifier nonReentrant() {
        if (s_entered) revert Reentrancy();
        s_entered = true;
        _;
        s_entered = false;
    }

    constructor(bool unsafeSelfRefundAfterDeadline_, uint256 admissionFloor_) {
        unsafeSelfRefundAfterDeadline = unsafeSelfRefundAfterDeadline_;
        admissionFloor = admissionFloor_;
    }

    // ------------------------------------------------------------------ views

    function hashTerms(Terms calldata t) external pure returns (bytes32) {
        return _hashTerms(t);
    }

    function settlementOf(bytes32 settlementId) external view returns (bytes32 termsHash, uint8 state) {
        Settlement storage s = s_settlements[settlementId];
        return (s.termsHash, s.state);
    }

    /// States of many settlements in one call.
    function statesOf(bytes32[] calldata settlementIds) external view returns (uint8[] memory states) {
        states = new uint8[](settlementIds.length);
        for (uint256 i = 0; i < settlementIds.length; ++i) {
            states[i] = s_settlements[settlementIds[i]].state;
        }
    }

    /// Terms hashes and states of many settlements in one call (the transmitter's
    /// idempotency check: which decisions of a report would still apply).
    function settlementsOf(bytes32[] calldata settlementIds)
        external
        view
        returns (bytes32[] memory termsHashes, uint8[] memory states)
    {
        termsHashes = new bytes32[](settlementIds.length);
        states = new uint8[](settlementIds.length);
        for (uint256 i = 0; i < settlementIds.length; ++i) {
            Settlement storage s = s_settlements[settlementIds[i]];
            (termsHashes[i], states[i]) = (s.termsHash, s.state);
        }
    }

    // ------------------------------------------------------------------ parties

    /// Registers a settlement, unless admission refuses it (SettlementRefused). Either
    /// party may create it; the terms are checked here and bound by their hash from now on.
    function create(Terms calldata t) external nonReentrant {
        _create(t);
    }

    /// create + lock the caller's leg, in one transaction (nothing is locked when
    /// admission refuses the settlement).
    function createAndLock(Terms calldata t) external nonReentrant {
        if (!_create(t)) return;
        if (msg.sender == t.seller) _lock(ASSET, t);
        else _lock(PAYMENT, t);
    }

    /// The seller locks the asset (modes SWAP, ASSET_ESCROW, BRIDGE_SELLER_SIDE); needs an
    /// allowance of assetAmount.
    function lockAsset(Terms calldata t) external nonReentrant {
        _lock(ASSET, t);
    }

    /// The buyer locks the payment (modes SWAP, PAYMENT_ESCROW, BRIDGE_BUYER_SIDE).
    function lockPayment(Terms calldata t) external nonReentrant {
        _lock(PAYMENT, t);
    }

    /// UNSAFE research variant only: after the deadline either party takes back every
    /// locked leg without a certificate (state EXPIRED).
    function reclaimAfterDeadline(Terms calldata t) external nonReentrant {
        if (!unsafeSelfRefundAfterDeadline) revert UnsafeSelfRefundDisabled();
        Settlement storage s = _known(t);
        if (msg.sender != t.seller && msg.sender != t.buyer) revert WrongCaller(t.settlementId, msg.sender);
        uint8 state = s.state;
        if (state != ASSET_LOCKED && state != PAYMENT_LOCKED && state != PREPARED) {
            revert WrongState(t.settlementId, state);
        }
        if (block.timestamp <= t.deadline) revert DeadlineNotPassed(t.settlementId, t.deadline);
        s.state = EXPIRED;
        if (admissionFloor != 0) _ended(1);
        _refund(t, state);
        emit SettlementExpired(t.settlementId, msg.sender, state);
    }

    function _create(Terms calldata t) private returns (bool admitted) {
        uint8 problem = _termsProblem(t);
        if (problem != 0) revert InvalidTerms(t.settlementId, problem);
        if (msg.sender != t.seller && msg.sender != t.buyer) revert WrongCaller(t.settlementId, msg.sender);
        Settlement storage s = s_settlements[t.settlementId];
        if (s.state != NONE) revert SettlementExists(t.settlementId);
        if (admissionFloor != 0 && !_admit(t)) return false;
        bytes32 termsHash = _hashTerms(t);
        s.termsHash = termsHash;
        s.state = CREATED;
        emit SettlementCreated(t.settlementId, termsHash, msg.sender, t);
        return true;
    }

    /// Admission (see the notice; model: EscrowModel._admit): counts the settlement as
    /// open and returns true, or emits SettlementRefused and returns false.
    function _admit(Terms calldata t) private returns (bool) {
        uint256 open = s_open;
        if (open >= admissionFloor) {
            uint256 window = block.timestamp / ADMISSION_WINDOW;
            uint256 ended = window == 0 ? 0 : s_ended[window - 1];
            // _termsProblem refused a deadline that passed: deadline - now >= 1.
            if (open * 2 * ADMISSION_WINDOW >= ended * (t.deadline - block.timestamp)) {
                emit SettlementRefused(t.settlementId, msg.sender, open, ended);
                return false;
            }
        }
        s_open = open + 1;
        return true;
    }

    /// `count` open settlements became final now.
    function _ended(uint256 count) private {
        s_open -= count;
        s_ended[block.timestamp / ADMISSION_WINDOW] += count;
    }

    function _lock(uint8 leg, Terms calldata t) private {
        Settlement storage s = _known(t);
        uint8 mode = t.mode;
        bool here = leg == ASSET ? _locksAsset(mode) : _locksPayment(mode);
        if (!here) revert LegNotHere(t.settlementId, leg);
        address party = leg == ASSET ? t.seller : t.buyer;
        if (msg.sender != party) revert WrongCaller(t.settlementId, msg.sender);
        uint8 state = s.state;
        uint8 next = _afterLock(mode == SWAP, leg, state);
        if (next == NONE) revert WrongState(t.settlementId, state);
        if (block.timestamp > t.deadline) revert DeadlinePassed(t.settlementId, t.deadline);
        s.state = next;
        (address token, uint256 amount) = leg == ASSET ? (t.assetToken, t.assetAmount) : (t.paymentToken, t.paymentAmount);
        _callToken(token, abi.encodeWithSelector(DvPToken.transferFrom.selector, party, address(this), amount));
        emit LegLocked(t.settlementId, leg, party, token, amount, next);
    }

    /// The lock transition table (model: LOCK_TRANSITIONS); NONE = not allowed.
    function _afterLock(bool swap, uint8 leg, uint8 state) private pure returns (uint8) {
        if (swap) {
            if (state == CREATED) return leg == ASSET ? ASSET_LOCKED : PAYMENT_LOCKED;
            if (leg == ASSET && state == PAYMENT_LOCKED) return PREPARED;
            if (leg == PAYMENT && state == ASSET_LOCKED) return PREPARED;
            return NONE;
        }
        return state == CREATED ? PREPARED : NONE;
    }

    function _known(Terms calldata t) private view returns (Settlement storage s) {
        s = s_settlements[t.settlementId];
        if (s.state == NONE) revert UnknownSettlement(t.settlementId);
        if (s.termsHash != _hashTerms(t)) revert TermsMismatch(t.settlementId);
    }

    // ------------------------------------------------------------------ decisions

    /// Verifies the certificate (reverts on any certificate problem), then applies each
    /// decision with `terms[i]` (the settlement's terms, as in SettlementCreated), skipping
    /// and reporting the decisions that cannot apply. Never reverts for one decision. A
    /// copy of a report already done reverts ReportAlreadyApplied before verification.
    function applyReport(bytes calldata report, uint256 signers, bytes calldata signature, Terms[] calldata terms)
        external
        nonReentrant
    {
        _applyReport(report, signers, signature, terms, false);
    }

    /// Like applyReport, but reverts on the first decision that cannot apply, unless it
    /// was already applied (an identical replay is a no-op): ConflictingDecision for
    /// ABORT after COMMIT or COMMIT after ABORT, DecisionRejected(reason) otherwise.
    function applyReportStrict(
        bytes calldata report,
        uint256 signers,
        bytes calldata signature,
        Terms[] calldata terms
    ) external nonReentrant {
        _applyReport(report, signers, signature, terms, true);
    }

    function _applyReport(
        bytes calldata report,
        uint256 signers,
        bytes calldata signature,
        Terms[] calldata terms,
        bool strict
    ) private {
        _refuseIfDone(report); // before the costly verification
        bytes32 reportHash = _verifyReport(report, signers, signature);
        uint256 count = (report.length - 160) / 96; // canonical: checked by _verifyReport
        if (terms.length != count) revert BatchLengthMismatch(count, terms.length);
        (uint256 applied, bool done) = _applyDecisions(report, count, terms, reportHash, strict);
        // Every applied decision made an open settlement final (COMMITTED or ABORTED).
        if (admissionFloor != 0 && applied != 0) _ended(applied);
        if (done) {
            (bytes32 word, uint256 bit) = _doneBit(report);
            s_reportsDone[word] |= bit;
        }
        (uint32 epoch, uint64 round) = ReportCodec.epochAndRound(report);
        emit ReportApplied(reportHash, epoch, round, uint32(applied), uint32(count - applied));
    }

    /// Applies or skips each decision; returns how many applied and whether every
    /// outcome is final (the report is then done).
    function _applyDecisions(
        bytes calldata report,
        uint256 count,
        Terms[] calldata terms,
        bytes32 reportHash,
        bool strict
    ) private returns (uint256 applied, bool done) {
        done = true;
        for (uint256 i = 0; i < count; ++i) {
            (bytes32 settlementId, uint8 action, bytes32 termsHash) = ReportCodec.decisionAt(report, i);
            uint8 reason = _decide(i, settlementId, action, termsHash, terms[i], reportHash);
            if (reason == 0) {
                ++applied;
                continue;
            }
            if (strict && reason != ALREADY_APPLIED) {
                if (reason == CONFLICT) {
                    revert ConflictingDecision(settlementId, s_settlements[settlementId].state, action);
                }
                revert DecisionRejected(settlementId, reason);
            }
            if (!_isFinal(reason)) done = false;
            emit DecisionSkipped(settlementId, reportHash, action, reason);
        }
    }

    /// Reverts ReportAlreadyApplied if `report` is marked done.
    function _refuseIfDone(bytes calldata report) private view {
        (bytes32 word, uint256 bit) = _doneBit(report);
        if (s_reportsDone[word] & bit != 0) {
            (uint32 epoch, uint64 round) = ReportCodec.epochAndRound(report);
            revert ReportAlreadyApplied(epoch, round);
        }
    }

    /// The word and bit that mark `report` done (s_reportsDone), from its head words as
    /// they are (verification has not run yet). Only a verified, so canonical, report is
    /// ever marked, and for canonical values (epoch < 2^32, round < 2^64) the packing is
    /// one-to-one; a non-canonical report whose head equals a done one's is refused here
    /// instead of by verification: refused either way. A report too short to have a head
    /// gets no bit (verification refuses it).
    function _doneBit(bytes calldata report) private pure returns (bytes32 word, uint256 bit) {
        if (report.length < 160) return (bytes32(0), 0);
        assembly ("memory-safe") {
            let round := calldataload(add(report.offset, 64))
            mstore(0x00, calldataload(report.offset))
            mstore(0x20, or(shl(64, calldataload(add(report.offset, 32))), shr(8, round)))
            word := keccak256(0x00, 0x40)
            bit := shl(and(round, 0xff), 1)
        }
    }

    /// Skip reasons no later transaction can change for this report (model: FINAL_SKIPS):
    /// the settlement is in a state it never leaves (ALREADY_APPLIED, CONFLICT), or the
    /// action is one this contract never applies. The others can change: the settlement
    /// may be created or locked later, a transmitter may send the right terms, a token
    /// may work next time.
    function _isFinal(uint8 reason) private pure returns (bool) {
        return reason == ALREADY_APPLIED || reason == CONFLICT || reason == UNSUPPORTED_ACTION;
    }

    /// Applies one decision, or returns why not (model: EscrowModel._decide).
    function _decide(
        uint256 index,
        bytes32 settlementId,
        uint8 action,
        bytes32 certifiedTermsHash,
        Terms calldata t,
        bytes32 reportHash
    ) private returns (uint8 reason) {
        if (action != ReportCodec.COMMIT && action != ReportCodec.ABORT) return UNSUPPORTED_ACTION;
        Settlement storage s = s_settlements[settlementId];
        uint8 state = s.state;
        if (state == NONE) return UNKNOWN_SETTLEMENT;
        bytes32 stored = s.termsHash;
        if (stored != certifiedTermsHash) return TERMS_MISMATCH;
        reason = _outcome(action, state);
        if (reason != 0) return reason;
        // Only now are the terms needed (whom to pay, how much): they must be the stored ones.
        if (_hashTerms(t) != stored) return TERMS_CALLDATA_MISMATCH;
        if (gasleft() < DECISION_GAS_REQUIRED) revert InsufficientGasForDecision(index);
        try this.executeDecision{gas: DECISION_GAS_LIMIT}(t, action, state, reportHash, stored) {
            return 0;
        } catch {
            return EXECUTION_FAILED;
        }
    }

    /// The decision table (model: DECISION_OUTCOMES): 0 = apply.
    function _outcome(uint8 action, uint8 state) private pure returns (uint8) {
        if (action == ReportCodec.COMMIT) {
            if (state == PREPARED) return 0;
            if (state == COMMITTED) return ALREADY_APPLIED;
            if (state == ABORTED || state == EXPIRED) return CONFLICT;
            return NOT_PREPARED;
        }
        if (state == COMMITTED) return CONFLICT;
        if (state == ABORTED || state == EXPIRED) return ALREADY_APPLIED;
        return 0;
    }

    /// One decision's effects, in a call frame of its own so that a failing token undoes
    /// exactly this decision. Callable only by this contract (from _decide).
    function executeDecision(Terms calldata t, uint8 action, uint8 previous, bytes32 reportHash, bytes32 termsHash)
        external
    {
        if (msg.sender != address(this)) revert OnlySelf();
        bytes32 settlementId = t.settlementId;
        if (action == ReportCodec.COMMIT) {
            s_settlements[settlementId].state = COMMITTED;
            uint8 mode = t.mode;
            if (mode == SWAP || mode == ASSET_ESCROW) _transferOut(t.assetToken, t.buyer, t.assetAmount);
            if (mode == SWAP || mode == PAYMENT_ESCROW) _transferOut(t.paymentToken, t.seller, t.paymentAmount);
            if (mode == BRIDGE_SELLER_SIDE) _mintTo(t.paymentToken, t.seller, t.paymentAmount);
            if (mode == BRIDGE_BUYER_SIDE) _mintTo(t.assetToken, t.buyer, t.assetAmount);
            emit SettlementCommitted(settlementId, reportHash, termsHash);
        } else {
            s_settlements[settlementId].state = ABORTED;
            _refund(t, previous);
            emit SettlementAborted(settlementId, reportHash, termsHash, previous);
        }
    }

    // ------------------------------------------------------------------ value movement

    /// Gives back every leg locked in `state` (model: locked_legs): asset to the seller,
    /// then payment to the buyer.
    function _refund(Terms calldata t, uint8 state) private {
        uint8 mode = t.mode;
        bool asset = state == ASSET_LOCKED || (state == PREPARED && _locksAsset(mode));
        bool payment = state == PAYMENT_LOCKED || (state == PREPARED && _locksPayment(mode));
        if (asset) _transferOut(t.assetToken, t.seller, t.assetAmount);
        if (payment) _transferOut(t.paymentToken, t.buyer, t.paymentAmount);
    }

    function _transferOut(address token, address to, uint256 amount) private {
        _callToken(token, abi.encodeWithSelector(DvPToken.transfer.selector, to, amount));
    }

    function _mintTo(address token, address to, uint256 amount) private {
        _callToken(token, abi.encodeWithSelector(DvPToken.mint.selector, to, amount));
    }

    /// Calls a token; bubbles its revert; accepts no return data or `true` (ERC-20 style),
    /// and refuses addresses without code (a call to them "succeeds" with nothing done).
    function _callToken(address token, bytes memory data) private {
        if (token.code.length == 0) revert TokenCallFailed(token);
        (bool ok, bytes memory result) = token.call(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(result, 32), mload(result))
            }
        }
        if (result.length != 0 && (result.length != 32 || abi.decode(result, (uint256)) != 1)) {
            revert TokenCallFailed(token);
        }
    }

    // ------------------------------------------------------------------ terms

    function _locksAsset(uint8 mode) private pure returns (bool) {
        return mode == SWAP || mode == ASSET_ESCROW || mode == BRIDGE_SELLER_SIDE;
    }

    function _locksPayment(uint8 mode) private pure returns (bool) {
        return mode == SWAP || mode == PAYMENT_ESCROW || mode == BRIDGE_BUYER_SIDE;
    }

    /// keccak256(abi.encode(t)). Hashing the calldata words as they are is sound: words
    /// with dirty high bits cannot hash to a terms hash computed from clean ones.
    function _hashTerms(Terms calldata t) private pure returns (bytes32 h) {
        assembly ("memory-safe") {
            let buffer := mload(0x40)
            calldatacopy(buffer, t, TERMS_LENGTH)
            h := keccak256(buffer, TERMS_LENGTH)
        }
    }

    /// The first rule the terms break (model: _terms_problem), or 0.
    function _termsProblem(Terms calldata t) private view returns (uint8) {
        if (t.settlementId == bytes32(0)) return ZERO_SETTLEMENT_ID;
        if (t.seller == address(0) || t.buyer == address(0)) return ZERO_PARTY;
        if (t.seller == t.buyer) return SAME_PARTY;
        uint8 mode = t.mode;
        if (mode < SWAP || mode > BRIDGE_BUYER_SIDE) return UNKNOWN_MODE;
        if (!_legOk(t.assetToken, t.assetAmount, mode != PAYMENT_ESCROW)) return ASSET_LEG;
        if (!_legOk(t.paymentToken, t.paymentAmount, mode != ASSET_ESCROW)) return PAYMENT_LEG;
        if (t.deadline <= block.timestamp) return DEADLINE_PASSED;
        return 0;
    }

    /// A leg held here needs a token and an amount; a leg held elsewhere has no token here,
    /// but its amount may describe it (the bank payment of an ASSET_ESCROW settlement), so
    /// the committee can certify exactly what the escrow's terms promise.
    function _legOk(address token, uint256 amount, bool present) private pure returns (bool) {
        return present ? (token != address(0) && amount != 0) : token == address(0);
    }
}
