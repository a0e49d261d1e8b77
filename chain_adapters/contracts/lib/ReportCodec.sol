// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title ReportCodec
/// @notice Reads dvpsim reports straight from calldata. A report is exactly
///         `abi.encode(bytes32 configDigest, uint64 epoch, uint64 round,
///         (bytes32 settlementId, uint8 action, bytes32 termsHash)[] decisions)`, the bytes
///         consensus/report.py's encode_report produces; its keccak256 is the message the
///         committee signs.
/// @dev    `validate` accepts only the canonical encoding Python's decode_report accepts
///         (offset 0x80, exact length, epoch below 2^32, round below 2^64, action 1..3),
///         so a verified report has exactly one meaning. It does not look for a settlement
///         named twice (honest members never sign such a report, and targets apply
///         decisions idempotently). This library never reads storage or calls out.
library ReportCodec {
    uint8 internal constant COMMIT = 1;
    uint8 internal constant ABORT = 2;
    uint8 internal constant PREPARE = 3;

    uint256 private constant HEAD_LENGTH = 160; // digest, epoch, round, offset, count
    uint256 private constant DECISION_LENGTH = 96; // settlementId, action, termsHash

    /// The report bytes are not a canonical encoding of a dvpsim report.
    error MalformedReport();

    /// Reverts MalformedReport unless `report` is canonical; returns the number of decisions.
    function validate(bytes calldata report) internal pure returns (uint256 count) {
        uint256 length = report.length;
        if (length < HEAD_LENGTH || (length - HEAD_LENGTH) % DECISION_LENGTH != 0) revert MalformedReport();
        count = (length - HEAD_LENGTH) / DECISION_LENGTH;
        bool bad;
        assembly ("memory-safe") {
            let base := report.offset
            bad := or(gt(calldataload(add(base, 32)), 0xffffffff), gt(calldataload(add(base, 64)), 0xffffffffffffffff))
            bad := or(bad, iszero(eq(calldataload(add(base, 96)), 0x80)))
            bad := or(bad, iszero(eq(calldataload(add(base, 128)), count)))
            for { let i := 0 } lt(i, count) { i := add(i, 1) } {
                let action := calldataload(add(add(base, 192), mul(i, 96)))
                bad := or(bad, or(iszero(action), gt(action, 3)))
            }
        }
        if (bad) revert MalformedReport();
    }

    /// The config digest a report is addressed to (its first word).
    function configDigest(bytes calldata report) internal pure returns (bytes32 digest) {
        if (report.length < 32) revert MalformedReport();
        assembly ("memory-safe") {
            digest := calldataload(report.offset)
        }
    }

    /// Epoch and round of a validated report.
    function epochAndRound(bytes calldata report) internal pure returns (uint32 epoch, uint64 round) {
        assembly ("memory-safe") {
            epoch := calldataload(add(report.offset, 32))
            round := calldataload(add(report.offset, 64))
        }
    }

    /// Decision `index` of a validated report (index < the count `validate` returned).
    function decisionAt(bytes calldata report, uint256 index)
        internal
        pure
        returns (bytes32 settlementId, uint8 action, bytes32 termsHash)
    {
        if (HEAD_LENGTH + (index + 1) * DECISION_LENGTH > report.length) revert MalformedReport();
        assembly ("memory-safe") {
            let at := add(add(report.offset, HEAD_LENGTH), mul(index, DECISION_LENGTH))
            settlementId := calldataload(at)
            action := calldataload(add(at, 32))
            termsHash := calldataload(add(at, 64))
        }
    }
}
