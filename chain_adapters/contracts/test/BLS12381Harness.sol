// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import "../lib/BLS12381.sol";
import "../lib/ReportCodec.sol";
import "../OracleVerifier.sol";

/// @title BLS12381Harness
/// @notice Test-only: exposes the BLS12381 library with caller-given inputs (hash-to-G2
///         under any DST, for the RFC 9380 known-answer vectors; G1 negation) and the
///         report codec, so Python tests can hold them against py_ecc and
///         consensus/report.py. Never deployed outside tests and benchmarks.
contract BLS12381Harness {
    function expandMessageXmd(bytes calldata message, bytes calldata dst) external view returns (bytes memory) {
        return BLS12381.expandMessageXmd(message, dst);
    }

    function hashToFieldFp2(bytes calldata message, bytes calldata dst) external view returns (bytes memory) {
        return BLS12381.hashToFieldFp2(message, dst);
    }

    function hashToG2(bytes calldata message, bytes calldata dst) external view returns (bytes memory) {
        return BLS12381.hashToG2(message, dst);
    }

    event Hashed(bytes32 pointHash);

    /// A transaction that only hashes to G2, to measure its gas from a receipt.
    function hashToG2AndRecord(bytes calldata message, bytes calldata dst) external {
        emit Hashed(keccak256(BLS12381.hashToG2(message, dst)));
    }

    function negateG1(bytes calldata point) external pure returns (bytes memory negated) {
        negated = point;
        uint256 ptr;
        assembly ("memory-safe") {
            ptr := add(negated, 32)
        }
        BLS12381.g1NegateInPlace(ptr);
    }

    /// One pairing check on a caller-given 768-byte input (the out-of-gas test calls it
    /// with too little gas and checks that the call reverted instead of answering).
    function pairingTwo(bytes calldata input) external view returns (bool accepted, bool valid) {
        bytes memory copy = input;
        uint256 ptr;
        assembly ("memory-safe") {
            ptr := add(copy, 32)
        }
        return BLS12381.pairingTwoChecked(ptr);
    }

    function decodeReport(bytes calldata report)
        external
        pure
        returns (
            bytes32 configDigest,
            uint32 epoch,
            uint64 round,
            bytes32[] memory settlementIds,
            uint8[] memory actions,
            bytes32[] memory termsHashes
        )
    {
        uint256 count = ReportCodec.validate(report);
        configDigest = ReportCodec.configDigest(report);
        (epoch, round) = ReportCodec.epochAndRound(report);
        settlementIds = new bytes32[](count);
        actions = new uint8[](count);
        termsHashes = new bytes32[](count);
        for (uint256 i = 0; i < count; ++i) {
            (settlementIds[i], actions[i], termsHashes[i]) = ReportCodec.decisionAt(report, i);
        }
    }
}

/// @title OracleVerifierHarness
/// @notice Test-only: an OracleVerifier that also exposes its pure helpers (the config
///         digest for arbitrary inputs, popcount, the report hash).
contract OracleVerifierHarness is OracleVerifier {
    function configDigestOf(
        uint256 chainId,
        address verifier,
        uint64 configCount,
        bytes calldata publicKeys,
        uint8 f,
        uint8 t
    ) external pure returns (bytes32) {
        return _configDigest(chainId, verifier, configCount, keccak256(publicKeys), f, t);
    }

    function popcount(uint256 x) external pure returns (uint256) {
        return _popcount(x);
    }

    function hashReport(bytes calldata report) external pure returns (bytes32) {
        return _hashReport(report);
    }
}
