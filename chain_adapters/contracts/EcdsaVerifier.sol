// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import "./lib/ReportCodec.sol";

/// @title EcdsaVerifier
/// @notice An OCR2-style report verifier, kept beside OracleVerifier to compare gas: each
///         committee member signs keccak256(report) with its Ethereum key (secp256k1, no
///         message prefix), and a report carries exactly `requiredSignatures` signatures
///         (OCR2 uses f+1), each recovered with ecrecover, each signer a distinct member
///         (a bitmask of member indices rejects repeats). The report format and the config
///         digest scheme are the BLS verifier's (digest prefix 0x0d02 instead of 0x0d01:
///         the committee is a list of addresses, not BLS keys).
/// @dev    With requiredSignatures = f+1 (OCR2) a certificate proves only that one honest
///         member agreed, enough for a price but not for DvP decisions that can conflict;
///         setConfig allows up to n so the comparison can also be made at t. This contract
///         never accepts a signature count other than requiredSignatures, nor a signer
///         outside the current committee.
contract EcdsaVerifier {
    uint256 internal constant MAX_COMMITTEE_SIZE = 256;
    uint256 internal constant CONFIG_DIGEST_PREFIX = 0x0d02;

    struct Member {
        uint8 index;
        bool active;
    }

    address public owner;
    bytes32 internal s_configDigest;
    uint64 internal s_configCount;
    uint8 internal s_f;
    uint8 internal s_requiredSignatures;
    address[] internal s_signers;
    mapping(address => Member) internal s_members;

    event ConfigSet(bytes32 configDigest, uint64 configCount, address[] signers, uint8 f, uint8 requiredSignatures);
    event ReportVerified(bytes32 indexed reportHash, bytes32 indexed configDigest);

    error NotOwner(address caller);
    error NotConfigured();
    error CommitteeSizeOutOfRange(uint256 n);
    error TooManyFaults(uint256 n, uint256 f);
    error ThresholdOutOfRange(uint256 requiredSignatures, uint256 minimum, uint256 maximum);
    error InvalidSignerAddress(uint256 index);
    error DuplicateSignerAddress(uint256 index);
    error ConfigDigestMismatch(bytes32 expected, bytes32 actual);
    error WrongNumberOfSignatures(uint256 expected, uint256 actual);
    error SignatureArraysMismatch();
    error UnauthorizedSigner(address signer);
    error DuplicateSigner(address signer);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    constructor() {
        owner = msg.sender;
    }

    /// Replaces the committee: `signers[i]` is member i; n >= 3f+1; f+1 <= required <= n.
    function setConfig(address[] calldata signers, uint8 f, uint8 requiredSignatures)
        external
        onlyOwner
        returns (bytes32 digest)
    {
        uint256 n = signers.length;
        if (n == 0 || n > MAX_COMMITTEE_SIZE) revert CommitteeSizeOutOfRange(n);
        if (n < 3 * uint256(f) + 1) revert TooManyFaults(n, f);
        if (requiredSignatures < uint256(f) + 1 || requiredSignatures > n) {
            revert ThresholdOutOfRange(requiredSignatures, uint256(f) + 1, n);
        }
        for (uint256 i = 0; i < s_signers.length; ++i) {
            delete s_members[s_signers[i]];
        }
        for (uint256 i = 0; i < n; ++i) {
            address signer = signers[i];
            if (signer == address(0)) revert InvalidSignerAddress(i);
            if (s_members[signer].active) revert DuplicateSignerAddress(i);
            s_members[signer] = Member({index: uint8(i), active: true});
        }
        s_signers = signers;
        uint64 configCount = s_configCount + 1;
        uint256 h = uint256(
            keccak256(
                abi.encode(
                    block.chainid, address(this), configCount, keccak256(abi.encodePacked(signers)), f, requiredSignatures
                )
            )
        );
        digest = bytes32((h & (type(uint256).max >> 16)) | (CONFIG_DIGEST_PREFIX << 240));
        s_configDigest = digest;
        s_configCount = configCount;
        s_f = f;
        s_requiredSignatures = requiredSignatures;
        emit ConfigSet(digest, configCount, signers, f, requiredSignatures);
    }

    function latestConfigDetails()
        external
        view
        returns (uint64 configCount, bytes32 configDigest, uint8 f, uint8 requiredSignatures, address[] memory signers)
    {
        return (s_configCount, s_configDigest, s_f, s_requiredSignatures, s_signers);
    }

    /// Reverts with the reason unless `report` is canonical, addressed to the current
    /// digest, and signed by exactly requiredSignatures distinct members: signature i is
    /// (rs[i], ss[i], v = 27 + uint8(vs[i])). Returns keccak256(report).
    function _verifyReport(bytes calldata report, bytes32[] calldata rs, bytes32[] calldata ss, bytes calldata vs)
        internal
        view
        returns (bytes32 reportHash)
    {
        uint256 required = s_requiredSignatures;
        if (required == 0) revert NotConfigured();
        ReportCodec.validate(report);
        bytes32 expected = s_configDigest;
        bytes32 actual = ReportCodec.configDigest(report);
        if (actual != expected) revert ConfigDigestMismatch(expected, actual);
        if (rs.length != required) revert WrongNumberOfSignatures(required, rs.length);
        if (ss.length != rs.length || vs.length != rs.length) revert SignatureArraysMismatch();
        reportHash = keccak256(report);
        uint256 signed;
        for (uint256 i = 0; i < rs.length; ++i) {
            signed = _addSigner(signed, _recover(reportHash, rs[i], ss[i], vs[i]));
        }
    }

    /// ecrecover with OCR2's compact v (0 or 1); a malformed signature gives address(0).
    function _recover(bytes32 digest, bytes32 r, bytes32 s, bytes1 rawV) private pure returns (address) {
        uint8 v;
        unchecked {
            v = uint8(rawV) + 27; // a wrapped v is not 27/28: ecrecover answers address(0)
        }
        return ecrecover(digest, v, r, s);
    }

    /// Marks `signer`'s member bit in `signed`; reverts for non-members and repeats.
    function _addSigner(uint256 signed, address signer) private view returns (uint256) {
        Member memory member = s_members[signer];
        if (!member.active) revert UnauthorizedSigner(signer);
        uint256 bit = 1 << member.index;
        if (signed & bit != 0) revert DuplicateSigner(signer);
        return signed | bit;
    }

    function verify(bytes calldata report, bytes32[] calldata rs, bytes32[] calldata ss, bytes calldata vs)
        external
        view
        returns (bytes32 reportHash)
    {
        return _verifyReport(report, rs, ss, vs);
    }

    function verifyAndRecord(bytes calldata report, bytes32[] calldata rs, bytes32[] calldata ss, bytes calldata vs)
        external
        returns (bytes32 reportHash)
    {
        reportHash = _verifyReport(report, rs, ss, vs);
        emit ReportVerified(reportHash, ReportCodec.configDigest(report));
    }
}
