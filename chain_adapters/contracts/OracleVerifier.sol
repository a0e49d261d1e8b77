// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import "./lib/BLS12381.sol";
import "./lib/CommitteeKeyTable.sol";
import "./lib/ReportCodec.sol";

/// @title OracleVerifierBase
/// @notice Checks dvpsim committee certificates on chain: a report, the bitmap of the
///         members who signed it and their aggregate BLS signature (ciphersuite
///         BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_, keys in G1, signature in G2), with
///         the EIP-2537 precompiles. Contracts that act on reports (the DvP escrow) inherit
///         it so that one contract verifies and settles; the config digest then binds that
///         contract's address.
///
///         Committee set-up in two steps:
///         1. `admitKeys`: each key (48-byte compressed and 128-byte EIP-2537 form) with its
///            proof of possession, checked on chain (hash-to-G2 of the compressed key under
///            the POP tag, one pairing). Anyone may admit a key: admission records a fact
///            about the key, not a committee, and survives committee changes. Splitting
///            admission from configuration lets committees of any size be set up in
///            transactions of bounded gas (~210k gas per key).
///         2. `setConfig`: the members in bitmap order, f and t; every key must have been
///            admitted (this is what stops rogue keys), keys must be distinct.
///
///         Verification (`_verifyReport`): canonical report whose config digest is the
///         current one, signer bits only below n, at least t of them, aggregate public key
///         of the signers = stored aggregate of all keys minus the non-signers' keys (read
///         from the committee's key table, a code-only contract: cost grows with n - t),
///         RFC 9380 hash-to-G2 of keccak256(report) on chain, one pairing check
///         e(apk, H(m)) * e(-G1, sig) == 1. Why the key table: measured by
///         `dvpsim bench verifier` at n = 31, t = 21 (gas of a whole transaction), 217,954
///         with it, 262,739 with the non-signers' keys in calldata checked against stored
///         per-member hashes, 275,753 with all keys in calldata checked against one
///         commitment; at n = 128: 265,373 / 431,906 / 568,680. EXTCODECOPY of a warm table
///         costs ~100 gas per key where calldata costs ~1,700 and a cold slot 2,100.
/// @dev    Must never: accept a precomputed H(m); read a failed precompile call as a
///         negative answer (all failures revert, see BLS12381); accept a key into a
///         committee without a verified proof of possession; accept a threshold below
///         floor((n+f)/2)+1 unless `unsafeLowThreshold` was set explicitly (research only:
///         conflicting decisions can then both be certified).
abstract contract OracleVerifierBase {
    uint256 internal constant MAX_COMMITTEE_SIZE = 256;
    /// Keys per key table: 129 + 128 * 128 bytes stays below the 24,576-byte code limit.
    uint256 internal constant KEYS_PER_TABLE = 128;
    uint256 internal constant COMPRESSED_KEY_LENGTH = 48;
    uint256 internal constant CONFIG_DIGEST_PREFIX = 0x0d01;

    bytes internal constant DST_SIG = "BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
    bytes internal constant DST_POP = "BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

    /// Everything verification needs from storage but the digest, in one slot.
    struct Committee {
        address keyTable; // STOP || aggregate key || keys of members 0..127 (G1, 128 B each)
        uint64 configCount;
        uint16 n;
        uint8 f;
        uint8 t;
    }

    address public owner;
    Committee internal s_committee;
    bytes32 internal s_configDigest;
    /// Key table of members 128..255 (STOP || keys), zero when n <= 128.
    address internal s_keyTableHigh;
    /// keccak256(compressed key || EIP-2537 key) => proof of possession verified.
    mapping(bytes32 => bool) public keyAdmitted;

    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event KeyAdmitted(bytes32 indexed keyId, bytes publicKey);
    event ConfigSet(
        bytes32 configDigest, uint64 configCount, uint16 n, uint8 f, uint8 t, bool unsafeLowThreshold, bytes publicKeys
    );

    error NotOwner(address caller);
    error NotConfigured();
    error ConfigDigestMismatch(bytes32 expected, bytes32 actual);
    error SignerOutOfRange(uint256 index, uint256 n);
    error TooFewSigners(uint256 signers, uint256 threshold);
    error MalformedSignature();
    error SignatureAtInfinity();
    error InvalidSignature();
    error KeyListLengthMismatch();
    error CommitteeSizeOutOfRange(uint256 n);
    error TooManyFaults(uint256 n, uint256 f);
    error ThresholdOutOfRange(uint256 t, uint256 minimum, uint256 maximum);
    error MalformedPublicKey(uint256 index);
    error PublicKeyAtInfinity(uint256 index);
    error InvalidProofOfPossession(uint256 index);
    error KeyNotAdmitted(uint256 index);
    error DuplicatePublicKey(uint256 index);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    constructor() {
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
    }

    function transferOwnership(address newOwner) external onlyOwner {
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    // ------------------------------------------------------------------ key admission

    /// Admits keys after checking their encodings and proofs of possession. `publicKeys`
    /// packs the 48-byte compressed keys, `publicKeysG1` the same keys in the 128-byte
    /// EIP-2537 encoding, `proofs` the 256-byte EIP-2537 encodings of the proofs (BLS
    /// signatures of the compressed key under DST_POP). Reverts naming the first bad key.
    function admitKeys(bytes calldata publicKeys, bytes calldata publicKeysG1, bytes calldata proofs) external {
        uint256 count = publicKeys.length / COMPRESSED_KEY_LENGTH;
        if (
            publicKeys.length != count * COMPRESSED_KEY_LENGTH || publicKeysG1.length != count * BLS12381.G1_LENGTH
                || proofs.length != count * BLS12381.G2_LENGTH
        ) revert KeyListLengthMismatch();
        bytes memory pairing = new bytes(2 * (BLS12381.G1_LENGTH + BLS12381.G2_LENGTH));
        bytes memory scratch = new bytes(160);
        uint256 pairingPtr;
        uint256 scratchPtr;
        assembly ("memory-safe") {
            pairingPtr := add(pairing, 32)
            scratchPtr := add(scratch, 32)
        }
        for (uint256 i = 0; i < count; ++i) {
            uint256 compressed;
            assembly ("memory-safe") {
                compressed := add(publicKeys.offset, mul(i, COMPRESSED_KEY_LENGTH))
                calldatacopy(pairingPtr, add(publicKeysG1.offset, mul(i, 128)), 128)
            }
            _checkKeyEncoding(compressed, pairingPtr, i);
            if (!BLS12381.g1InSubgroupChecked(pairingPtr, scratchPtr)) revert MalformedPublicKey(i);

            bytes memory key = publicKeys[i * COMPRESSED_KEY_LENGTH:(i + 1) * COMPRESSED_KEY_LENGTH];
            uint256 freeMemory;
            assembly ("memory-safe") {
                freeMemory := mload(0x40)
            }
            bytes memory hashed = BLS12381.hashToG2(key, DST_POP);
            bytes32 keyId;
            assembly ("memory-safe") {
                mcopy(add(pairingPtr, 128), add(hashed, 32), 256)
                calldatacopy(add(pairingPtr, 512), add(proofs.offset, mul(i, 256)), 256)
                // keyId = keccak256(compressed || EIP-2537), hashed in scratch memory.
                calldatacopy(freeMemory, compressed, 48)
                mcopy(add(freeMemory, 48), pairingPtr, 128)
                keyId := keccak256(freeMemory, 176)
                // The hash-to-curve buffers of this key are not needed any more: reuse them.
                mstore(0x40, freeMemory)
            }
            BLS12381.writeNegatedGenerator(pairingPtr + 384);
            (bool accepted, bool valid) = BLS12381.pairingTwoChecked(pairingPtr);
            if (!accepted || !valid) revert InvalidProofOfPossession(i);
            if (!keyAdmitted[keyId]) {
                keyAdmitted[keyId] = true;
                emit KeyAdmitted(keyId, key);
            }
        }
    }

    /// Reverts unless the compressed key at calldata `compressed` (48 bytes, ZCash flags:
    /// bit 7 compressed, bit 6 infinity, bit 5 y is the larger root) encodes exactly the
    /// uncompressed point at memory `point`, and that point is not infinity and has
    /// coordinates below 2^384 in canonical 64-byte form. Curve and subgroup membership
    /// are the precompile's check (`g1InSubgroupChecked`).
    function _checkKeyEncoding(uint256 compressed, uint256 point, uint256 index) private pure {
        uint256 flags;
        uint256 xHi;
        uint256 xLo;
        uint256 pxHi;
        uint256 pxLo;
        uint256 pyHi;
        uint256 pyLo;
        assembly ("memory-safe") {
            let head := calldataload(compressed)
            flags := shr(253, head) // the top three bits
            xHi := and(shr(128, head), sub(shl(125, 1), 1))
            xLo := calldataload(add(compressed, 16))
            pxHi := mload(point)
            pxLo := mload(add(point, 32))
            pyHi := mload(add(point, 64))
            pyLo := mload(add(point, 96))
        }
        if (flags & 2 != 0 || (pxHi | pxLo | pyHi | pyLo) == 0) revert PublicKeyAtInfinity(index);
        if (flags & 4 == 0 || pxHi >> 128 != 0 || pyHi >> 128 != 0) revert MalformedPublicKey(index);
        if (pxHi != xHi || pxLo != xLo) revert MalformedPublicKey(index);
        bool yLarge = pyHi > BLS12381.HALF_P_HI || (pyHi == BLS12381.HALF_P_HI && pyLo > BLS12381.HALF_P_LO);
        if (yLarge != (flags & 1 != 0)) revert MalformedPublicKey(index);
    }

    // ------------------------------------------------------------------ configuration

    /// Sets a new committee: `publicKeys` (48-byte compressed keys, member i = bit i of the
    /// signer bitmap) and `publicKeysG1` (their 128-byte EIP-2537 encodings), every key
    /// admitted before; n >= 3f+1, n <= 256; floor((n+f)/2)+1 <= t <= n, or f+1 <= t when
    /// `unsafeLowThreshold` (research only). Returns the new config digest; reports signed
    /// for any earlier configuration stop verifying.
    function setConfig(
        bytes calldata publicKeys,
        bytes calldata publicKeysG1,
        uint8 f,
        uint8 t,
        bool unsafeLowThreshold
    ) external onlyOwner returns (bytes32 digest) {
        uint256 n = publicKeys.length / COMPRESSED_KEY_LENGTH;
        if (publicKeys.length != n * COMPRESSED_KEY_LENGTH || publicKeysG1.length != n * BLS12381.G1_LENGTH) {
            revert KeyListLengthMismatch();
        }
        _checkCommitteeShape(n, f, t, unsafeLowThreshold);
        uint64 configCount = s_committee.configCount + 1;
        {
            (bytes memory low, bytes memory high) = _keyTables(publicKeys, publicKeysG1, configCount);
            address lowTable = address(new CommitteeKeyTable(low));
            s_keyTableHigh = high.length > 0 ? address(new CommitteeKeyTable(high)) : address(0);
            s_committee = Committee({keyTable: lowTable, configCount: configCount, n: uint16(n), f: f, t: t});
        }
        digest = _configDigest(block.chainid, address(this), configCount, keccak256(publicKeys), f, t);
        s_configDigest = digest;
        _announceConfig(publicKeys, unsafeLowThreshold);
    }

    /// Emits ConfigSet for the configuration just stored (a function of its own: the
    /// event's arguments do not fit on setConfig's stack).
    function _announceConfig(bytes calldata publicKeys, bool unsafeLowThreshold) private {
        Committee memory committee = s_committee;
        emit ConfigSet(
            s_configDigest,
            committee.configCount,
            committee.n,
            committee.f,
            committee.t,
            unsafeLowThreshold,
            publicKeys
        );
    }

    /// n in [1, 256], n >= 3f+1, and t in [floor((n+f)/2)+1, n] (or [f+1, n] when unsafe).
    function _checkCommitteeShape(uint256 n, uint8 f, uint8 t, bool unsafeLowThreshold) private pure {
        if (n == 0 || n > MAX_COMMITTEE_SIZE) revert CommitteeSizeOutOfRange(n);
        if (n < 3 * uint256(f) + 1) revert TooManyFaults(n, f);
        uint256 minimum = unsafeLowThreshold ? uint256(f) + 1 : (n + f) / 2 + 1;
        if (t < minimum || t > n) revert ThresholdOutOfRange(t, minimum, n);
    }

    /// The key tables' contents for a new committee, after checking that every key was
    /// admitted and appears once: low = STOP || aggregate of all keys || keys 0..127,
    /// high = STOP || keys 128..255 (empty when n <= 128).
    function _keyTables(bytes calldata publicKeys, bytes calldata publicKeysG1, uint64 configCount)
        private
        returns (bytes memory low, bytes memory high)
    {
        uint256 n = publicKeys.length / COMPRESSED_KEY_LENGTH;
        low = new bytes(1 + BLS12381.G1_LENGTH * (1 + (n < KEYS_PER_TABLE ? n : KEYS_PER_TABLE)));
        high = new bytes(n > KEYS_PER_TABLE ? 1 + BLS12381.G1_LENGTH * (n - KEYS_PER_TABLE) : 0);
        uint256 pair; // 256 bytes: aggregate so far || next key
        assembly ("memory-safe") {
            pair := mload(0x40)
            mstore(0x40, add(pair, 256))
        }
        for (uint256 i = 0; i < n; ++i) {
            uint256 slot;
            bytes32 keyId;
            assembly ("memory-safe") {
                switch lt(i, KEYS_PER_TABLE)
                case 1 { slot := add(add(low, 161), mul(i, 128)) } // after STOP and the aggregate
                default { slot := add(add(high, 33), mul(sub(i, KEYS_PER_TABLE), 128)) } // after STOP
                calldatacopy(slot, add(publicKeysG1.offset, mul(i, 128)), 128)
                let scratch := mload(0x40)
                calldatacopy(scratch, add(publicKeys.offset, mul(i, 48)), 48)
                mcopy(add(scratch, 48), slot, 128)
                keyId := keccak256(scratch, 176)
            }
            if (!keyAdmitted[keyId]) revert KeyNotAdmitted(i);
            if (_seenBefore(keyId, configCount)) revert DuplicatePublicKey(i);
            assembly ("memory-safe") {
                mcopy(add(pair, mul(gt(i, 0), 128)), slot, 128)
            }
            if (i > 0) BLS12381.g1AddInPlace(pair);
        }
        assembly ("memory-safe") {
            mcopy(add(low, 33), pair, 128) // the aggregate of all keys
        }
    }

    /// Duplicate detection in O(1) per key: a transient mark per (key, configuration), so
    /// marks left by an earlier setConfig in the same transaction never collide.
    function _seenBefore(bytes32 keyId, uint64 configCount) private returns (bool seen) {
        assembly ("memory-safe") {
            mstore(0x00, keyId)
            mstore(0x20, configCount)
            let mark := keccak256(0x00, 0x40)
            seen := tload(mark)
            tstore(mark, 1)
        }
    }

    /// OCR-style config digest, identical to consensus/report.py's config_digest:
    /// keccak256(abi.encode(chainId, verifier, configCount, keccak256(packed compressed
    /// keys), f, t)) with its first two bytes replaced by 0x0d01.
    function _configDigest(uint256 chainId, address verifier, uint64 configCount, bytes32 keysHash, uint8 f, uint8 t)
        internal
        pure
        returns (bytes32)
    {
        uint256 h = uint256(keccak256(abi.encode(chainId, verifier, configCount, keysHash, f, t)));
        return bytes32((h & (type(uint256).max >> 16)) | (CONFIG_DIGEST_PREFIX << 240));
    }

    /// The current configuration (all zero before the first `setConfig`).
    function latestConfigDetails()
        external
        view
        returns (uint64 configCount, bytes32 configDigest, uint16 n, uint8 f, uint8 t)
    {
        Committee memory committee = s_committee;
        return (committee.configCount, s_configDigest, committee.n, committee.f, committee.t);
    }

    /// Addresses of the current key tables (code-only contracts; see CommitteeKeyTable).
    function keyTables() external view returns (address low, address high) {
        return (s_committee.keyTable, s_keyTableHigh);
    }

    // ------------------------------------------------------------------ verification

    /// Reverts with the reason unless `signature` (256-byte EIP-2537 G2) is the aggregate
    /// signature of keccak256(report) by the members in the `signers` bitmap, at least t
    /// of them, and `report` is canonical and addressed to the current config digest.
    /// Returns keccak256(report).
    function _verifyReport(bytes calldata report, uint256 signers, bytes calldata signature)
        internal
        view
        returns (bytes32 reportHash)
    {
        Committee memory committee = _checkCertificateShape(report, signers, signature);
        bytes memory input = new bytes(2 * (BLS12381.G1_LENGTH + BLS12381.G2_LENGTH));
        uint256 inputPtr;
        assembly ("memory-safe") {
            inputPtr := add(input, 32)
        }
        _signersPublicKey(committee.keyTable, committee.n, signers, inputPtr);
        reportHash = _hashReport(report);
        _checkAggregateSignature(reportHash, inputPtr, signature);
    }

    /// Every check that needs no elliptic-curve arithmetic, in the order the Python
    /// verify_certificate uses: configured, canonical report, config digest, signer bits
    /// below n, at least t signers, signature encoding. Returns the committee.
    function _checkCertificateShape(bytes calldata report, uint256 signers, bytes calldata signature)
        internal
        view
        returns (Committee memory committee)
    {
        committee = s_committee;
        uint256 n = committee.n;
        if (n == 0) revert NotConfigured();
        ReportCodec.validate(report);
        bytes32 expected = s_configDigest;
        bytes32 actual = ReportCodec.configDigest(report);
        if (actual != expected) revert ConfigDigestMismatch(expected, actual);
        if (n < 256 && signers >> n != 0) revert SignerOutOfRange(_highestBit(signers), n);
        uint256 count = _popcount(signers);
        if (count < committee.t) revert TooFewSigners(count, committee.t);
        _checkSignatureEncoding(signature);
    }

    function _hashReport(bytes calldata report) internal pure returns (bytes32 reportHash) {
        assembly ("memory-safe") {
            let buffer := mload(0x40)
            calldatacopy(buffer, report.offset, report.length)
            reportHash := keccak256(buffer, report.length)
        }
    }

    /// The pairing check e(apk, H(reportHash)) * e(-G1, signature) == 1, where `input`
    /// points to a 768-byte buffer whose first 128 bytes hold the signers' aggregate key.
    /// H is RFC 9380 hash-to-G2 of the 32-byte report hash under DST_SIG, computed here.
    function _checkAggregateSignature(bytes32 reportHash, uint256 input, bytes calldata signature) internal view {
        bytes memory hashed = BLS12381.hashToG2(abi.encodePacked(reportHash), DST_SIG);
        assembly ("memory-safe") {
            mcopy(add(input, 128), add(hashed, 32), 256)
            calldatacopy(add(input, 512), signature.offset, 256)
        }
        BLS12381.writeNegatedGenerator(input + 384);
        (bool accepted, bool valid) = BLS12381.pairingTwoChecked(input);
        // The only input point the caller chose is the signature: a rejected input is it
        // being off the curve, outside the subgroup or not reduced mod p.
        if (!accepted) revert MalformedSignature();
        if (!valid) revert InvalidSignature();
    }

    /// Length 256, every coordinate in canonical 64-byte form (16 zero bytes first), not
    /// the point at infinity. Range, curve and subgroup are checked by the pairing.
    function _checkSignatureEncoding(bytes calldata signature) internal pure {
        if (signature.length != BLS12381.G2_LENGTH) revert MalformedSignature();
        uint256 highWords;
        uint256 allWords;
        assembly ("memory-safe") {
            for { let i := 0 } lt(i, 4) { i := add(i, 1) } {
                let hi := calldataload(add(signature.offset, mul(i, 64)))
                let lo := calldataload(add(signature.offset, add(mul(i, 64), 32)))
                highWords := or(highWords, hi)
                allWords := or(allWords, or(hi, lo))
            }
        }
        if (highWords >> 128 != 0) revert MalformedSignature();
        if (allWords == 0) revert SignatureAtInfinity();
    }

    /// Writes the aggregate public key of the signers at `out` (using out[128:256] as
    /// scratch): the stored aggregate of all n keys minus the sum of the non-signers' keys.
    function _signersPublicKey(address table, uint256 n, uint256 signers, uint256 out) private view {
        uint256 missing = ~signers;
        if (n < 256) missing &= (1 << n) - 1;
        address highTable;
        bool any;
        for (uint256 i = 0; missing != 0; ++i) {
            if (missing & 1 != 0) {
                if (i >= KEYS_PER_TABLE && highTable == address(0)) highTable = s_keyTableHigh;
                uint256 destination = any ? out + 128 : out;
                assembly ("memory-safe") {
                    switch lt(i, KEYS_PER_TABLE)
                    case 1 { extcodecopy(table, destination, add(129, mul(i, 128)), 128) }
                    default { extcodecopy(highTable, destination, add(1, mul(sub(i, KEYS_PER_TABLE), 128)), 128) }
                }
                if (any) BLS12381.g1AddInPlace(out);
                any = true;
            }
            missing >>= 1;
        }
        if (any) {
            BLS12381.g1NegateInPlace(out);
            assembly ("memory-safe") {
                extcodecopy(table, add(out, 128), 1, 128)
            }
            BLS12381.g1AddInPlace(out);
        } else {
            assembly ("memory-safe") {
                extcodecopy(table, out, 1, 128)
            }
        }
    }

    function _popcount(uint256 x) internal pure returns (uint256) {
        unchecked {
            x = x - ((x >> 1) & 0x5555555555555555555555555555555555555555555555555555555555555555);
            x = (x & 0x3333333333333333333333333333333333333333333333333333333333333333)
                + ((x >> 2) & 0x3333333333333333333333333333333333333333333333333333333333333333);
            x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f;
            // 16-bit lanes: a byte lane could overflow when all 256 bits are set.
            x = (x + (x >> 8)) & 0x00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff;
            return (x * 0x0001000100010001000100010001000100010001000100010001000100010001) >> 240;
        }
    }

    function _highestBit(uint256 x) private pure returns (uint256 index) {
        while (x > 1) {
            x >>= 1;
            ++index;
        }
    }
}

/// @title OracleVerifier
/// @notice The deployable certificate verifier: `verify` (a view, for off-chain checks
///         and eth_call) and `verifyAndRecord` (a transaction that emits ReportVerified;
///         used to measure gas from real transactions and by targets that only need a
///         record). Targets that move value inherit OracleVerifierBase instead.
contract OracleVerifier is OracleVerifierBase {
    event ReportVerified(bytes32 indexed reportHash, bytes32 indexed configDigest, uint256 signers);

    function verify(bytes calldata report, uint256 signers, bytes calldata signature)
        external
        view
        returns (bytes32 reportHash)
    {
        return _verifyReport(report, signers, signature);
    }

    function verifyAndRecord(bytes calldata report, uint256 signers, bytes calldata signature)
        external
        returns (bytes32 reportHash)
    {
        reportHash = _verifyReport(report, signers, signature);
        emit ReportVerified(reportHash, ReportCodec.configDigest(report), signers);
    }
}
