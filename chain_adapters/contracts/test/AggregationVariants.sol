// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import "../lib/BLS12381.sol";
import "../OracleVerifier.sol";

/// @title AllKeysCalldataVerifier
/// @notice Benchmark-only variant of OracleVerifier: the caller passes all n member keys
///         (EIP-2537 G1) in calldata, checked against one stored keccak256 commitment, and
///         the contract adds the signers' keys (t - 1 G1ADDs). Same configuration, checks
///         and pairing as OracleVerifier; only the aggregation differs. Used by
///         `dvpsim bench verifier` to justify OracleVerifier's choice; never deployed
///         outside tests and benchmarks.
contract AllKeysCalldataVerifier is OracleVerifierBase {
    bytes32 internal s_keysCommitment;

    event ReportVerified(bytes32 indexed reportHash, bytes32 indexed configDigest, uint256 signers);

    error KeysCommitmentMismatch();

    /// Test set-up after setConfig: commit to the packed EIP-2537 keys of the committee.
    function commitKeys(bytes calldata publicKeysG1) external onlyOwner {
        if (publicKeysG1.length != uint256(s_committee.n) * BLS12381.G1_LENGTH) revert KeyListLengthMismatch();
        s_keysCommitment = keccak256(publicKeysG1);
    }

    function verifyAndRecord(
        bytes calldata report,
        uint256 signers,
        bytes calldata signature,
        bytes calldata publicKeysG1
    ) external returns (bytes32 reportHash) {
        _checkCertificateShape(report, signers, signature);
        bytes32 commitment;
        assembly ("memory-safe") {
            let buffer := mload(0x40)
            calldatacopy(buffer, publicKeysG1.offset, publicKeysG1.length)
            commitment := keccak256(buffer, publicKeysG1.length)
        }
        if (commitment != s_keysCommitment) revert KeysCommitmentMismatch();
        bytes memory input = new bytes(2 * (BLS12381.G1_LENGTH + BLS12381.G2_LENGTH));
        uint256 inputPtr;
        assembly ("memory-safe") {
            inputPtr := add(input, 32)
        }
        bool any;
        uint256 remaining = signers;
        for (uint256 i = 0; remaining != 0; ++i) {
            if (remaining & 1 != 0) {
                uint256 destination = any ? inputPtr + 128 : inputPtr;
                assembly ("memory-safe") {
                    calldatacopy(destination, add(publicKeysG1.offset, mul(i, 128)), 128)
                }
                if (any) BLS12381.g1AddInPlace(inputPtr);
                any = true;
            }
            remaining >>= 1;
        }
        reportHash = _hashReport(report);
        _checkAggregateSignature(reportHash, inputPtr, signature);
        emit ReportVerified(reportHash, ReportCodec.configDigest(report), signers);
    }
}

/// @title NonSignerKeysCalldataVerifier
/// @notice Benchmark-only variant of OracleVerifier: the aggregate of all keys and one
///         keccak256 hash per member are kept in storage; the caller passes the
///         non-signers' keys (ascending member index) in calldata, each checked against
///         its stored hash, and the contract subtracts them from the aggregate. Never
///         deployed outside tests and benchmarks.
contract NonSignerKeysCalldataVerifier is OracleVerifierBase {
    uint256[4] internal s_aggregate;
    mapping(uint256 => bytes32) internal s_keyHash;

    event ReportVerified(bytes32 indexed reportHash, bytes32 indexed configDigest, uint256 signers);

    error NonSignerKeyMismatch(uint256 index);
    error NonSignerCountMismatch();

    /// Test set-up after setConfig: store the per-member key hashes and their aggregate.
    function storeKeys(bytes calldata publicKeysG1) external onlyOwner {
        uint256 n = s_committee.n;
        if (publicKeysG1.length != n * BLS12381.G1_LENGTH) revert KeyListLengthMismatch();
        bytes memory pair = new bytes(256);
        uint256 pairPtr;
        assembly ("memory-safe") {
            pairPtr := add(pair, 32)
        }
        for (uint256 i = 0; i < n; ++i) {
            bytes32 keyHash;
            assembly ("memory-safe") {
                let at := add(pairPtr, mul(gt(i, 0), 128))
                calldatacopy(at, add(publicKeysG1.offset, mul(i, 128)), 128)
                keyHash := keccak256(at, 128)
            }
            s_keyHash[i] = keyHash;
            if (i > 0) BLS12381.g1AddInPlace(pairPtr);
        }
        uint256[4] memory aggregate;
        assembly ("memory-safe") {
            mcopy(aggregate, pairPtr, 128)
        }
        s_aggregate = aggregate;
    }

    function verifyAndRecord(
        bytes calldata report,
        uint256 signers,
        bytes calldata signature,
        bytes calldata nonSignerKeysG1
    ) external returns (bytes32 reportHash) {
        Committee memory committee = _checkCertificateShape(report, signers, signature);
        uint256 n = committee.n;
        uint256 missing = ~signers;
        if (n < 256) missing &= (1 << n) - 1;
        if (nonSignerKeysG1.length != _popcount(missing) * BLS12381.G1_LENGTH) revert NonSignerCountMismatch();
        bytes memory input = new bytes(2 * (BLS12381.G1_LENGTH + BLS12381.G2_LENGTH));
        uint256 inputPtr;
        assembly ("memory-safe") {
            inputPtr := add(input, 32)
        }
        uint256 position;
        for (uint256 i = 0; missing != 0; ++i) {
            if (missing & 1 != 0) {
                uint256 destination = position == 0 ? inputPtr : inputPtr + 128;
                bytes32 keyHash;
                assembly ("memory-safe") {
                    calldatacopy(destination, add(nonSignerKeysG1.offset, mul(position, 128)), 128)
                    keyHash := keccak256(destination, 128)
                }
                if (keyHash != s_keyHash[i]) revert NonSignerKeyMismatch(i);
                if (position > 0) BLS12381.g1AddInPlace(inputPtr);
                ++position;
            }
            missing >>= 1;
        }
        uint256[4] memory aggregate = s_aggregate;
        if (position > 0) {
            BLS12381.g1NegateInPlace(inputPtr);
            assembly ("memory-safe") {
                mcopy(add(inputPtr, 128), aggregate, 128)
            }
            BLS12381.g1AddInPlace(inputPtr);
        } else {
            assembly ("memory-safe") {
                mcopy(inputPtr, aggregate, 128)
            }
        }
        reportHash = _hashReport(report);
        _checkAggregateSignature(reportHash, inputPtr, signature);
        emit ReportVerified(reportHash, ReportCodec.configDigest(report), signers);
    }
}
