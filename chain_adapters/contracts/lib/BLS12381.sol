// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title BLS12381
/// @notice BLS12-381 building blocks for dvpsim's certificate verifier, on top of the
///         EIP-2537 precompiles (Prague): RFC 9380 hash-to-G2 (suite
///         BLS12381G2_XMD:SHA-256_SSWU_RO_), G1 point negation and addition, and the
///         pairing check, all on the precompiles' uncompressed encodings (a base-field
///         element is 64 bytes: 16 zero bytes then 48 bytes big-endian; G1 = x || y,
///         128 bytes; G2 = x.c0 || x.c1 || y.c0 || y.c1, 256 bytes; infinity = zeros).
/// @dev    This library must never turn a failed precompile call into a "false": every
///         call gets all remaining gas, and a failure reverts PrecompileFailed(address),
///         unless the caller asked to tell a rejected input apart (`*Checked` functions),
///         which they do only when the call had at least twice its Prague price, so the
///         failure cannot have been an out-of-gas. It never accepts a precomputed H(m).
library BLS12381 {
    address internal constant SHA256 = address(0x02);
    address internal constant MODEXP = address(0x05);
    address internal constant G1ADD = address(0x0b);
    address internal constant G1MSM = address(0x0c);
    address internal constant G2ADD = address(0x0d);
    address internal constant PAIRING_CHECK = address(0x0f);
    address internal constant MAP_FP2_TO_G2 = address(0x11);

    uint256 internal constant FP_LENGTH = 64;
    uint256 internal constant G1_LENGTH = 128;
    uint256 internal constant G2_LENGTH = 256;

    /// p, the base field modulus, split as the two words of its 64-byte encoding.
    uint256 internal constant P_HI = 0x1a0111ea397fe69a4b1ba7b6434bacd7;
    uint256 internal constant P_LO = 0x64774b84f38512bf6730d2a0f6b0f6241eabfffeb153ffffb9feffffffffaaab;
    /// (p - 1) / 2: a y above it is "lexicographically largest" (ZCash sign flag).
    uint256 internal constant HALF_P_HI = 0x0d0088f51cbff34d258dd3db21a5d66b;
    uint256 internal constant HALF_P_LO = 0xb23ba5c279c2895fb39869507b587b120f55ffff58a9ffffdcff7fffffffd555;
    /// -G1: the negated generator of G1, the fixed second pair of every pairing check.
    uint256 internal constant NEG_G1_X_HI = 0x17f1d3a73197d7942695638c4fa9ac0f;
    uint256 internal constant NEG_G1_X_LO = 0xc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb;
    uint256 internal constant NEG_G1_Y_HI = 0x114d1d6855d545a8aa7d76c8cf2e21f2;
    uint256 internal constant NEG_G1_Y_LO = 0x67816aef1db507c96655b9d5caac42364e6f38ba0ecb751bad54dcd6b939c2ca;

    /// Twice the Prague prices of the calls whose input may be rejected. A call that
    /// failed with at least this much gas rejected its input; below it, it may have run
    /// out of gas, and the whole transaction reverts instead.
    uint256 internal constant G1MSM_ONE_GAS_BOUND = 2 * 12_000;
    uint256 internal constant PAIRING_TWO_GAS_BOUND = 2 * (2 * 32_600 + 37_700);

    /// len_in_bytes of expand_message_xmd: two Fp2 elements of two 64-byte integers.
    uint256 private constant UNIFORM_LENGTH = 256;

    /// A precompile call failed (out of gas, or an input that should have been valid):
    /// the chain may lack EIP-2537 (Prague), or the transaction needs more gas.
    error PrecompileFailed(address precompile);
    /// A hash-to-curve domain separation tag must be 1 to 255 bytes (RFC 9380, 5.3.1).
    error InvalidDomainSeparationTag(uint256 length);

    // ------------------------------------------------------------------ precompile calls

    /// Calls `precompile` with all remaining gas; reverts PrecompileFailed on any failure
    /// or on an output of the wrong length (a chain without EIP-2537 answers empty).
    function _mustCall(address precompile, uint256 input, uint256 inputLength, uint256 output, uint256 outputLength)
        private
        view
    {
        bool ok;
        assembly ("memory-safe") {
            ok := staticcall(gas(), precompile, input, inputLength, output, outputLength)
            ok := and(ok, eq(returndatasize(), outputLength))
        }
        if (!ok) revert PrecompileFailed(precompile);
    }

    /// Like `_mustCall`, but returns false when the precompile rejected its input while it
    /// had at least `gasBound` gas, i.e. when the failure cannot be an out-of-gas.
    function _checkedCall(
        address precompile,
        uint256 input,
        uint256 inputLength,
        uint256 output,
        uint256 outputLength,
        uint256 gasBound
    ) private view returns (bool accepted) {
        uint256 before = gasleft();
        bool ok;
        uint256 returned;
        assembly ("memory-safe") {
            ok := staticcall(gas(), precompile, input, inputLength, output, outputLength)
            returned := returndatasize()
        }
        if (ok) {
            if (returned != outputLength) revert PrecompileFailed(precompile);
            return true;
        }
        // The call received at least 63/64 of what was left after its own cost (EIP-150).
        uint256 forwarded = before > 1000 ? (before - 1000) - (before - 1000) / 64 : 0;
        if (forwarded < gasBound) revert PrecompileFailed(precompile);
        return false;
    }

    function _sha256(uint256 input, uint256 length) private view returns (bytes32 digest) {
        _mustCall(SHA256, input, length, 0x00, 32);
        assembly ("memory-safe") {
            digest := mload(0x00)
        }
    }

    // ------------------------------------------------------------------ hash to G2

    /// RFC 9380 expand_message_xmd with SHA-256, len_in_bytes = 256.
    function expandMessageXmd(bytes memory message, bytes memory dst) internal view returns (bytes memory uniform) {
        if (dst.length == 0 || dst.length > 255) revert InvalidDomainSeparationTag(dst.length);
        bytes memory dstPrime = abi.encodePacked(dst, uint8(dst.length));
        // msg_prime = Z_pad (64 zero bytes) || msg || I2OSP(256, 2) || I2OSP(0, 1) || DST_prime
        bytes memory msgPrime =
            abi.encodePacked(bytes32(0), bytes32(0), message, uint16(UNIFORM_LENGTH), uint8(0), dstPrime);
        uint256 msgPrimePtr;
        assembly ("memory-safe") {
            msgPrimePtr := add(msgPrime, 32)
        }
        bytes32 b0 = _sha256(msgPrimePtr, msgPrime.length);

        // One buffer for every b_i input: (b_0 xor b_(i-1)) || I2OSP(i, 1) || DST_prime.
        bytes memory block_ = abi.encodePacked(bytes32(0), uint8(0), dstPrime);
        uint256 blockPtr;
        assembly ("memory-safe") {
            blockPtr := add(block_, 32)
        }
        uint256 blockLength = block_.length;
        uniform = new bytes(UNIFORM_LENGTH);
        bytes32 previous = bytes32(0); // b_1 hashes b_0 itself: b_0 xor 0
        for (uint256 i = 1; i <= UNIFORM_LENGTH / 32; ++i) {
            assembly ("memory-safe") {
                mstore(blockPtr, xor(b0, previous))
                mstore8(add(blockPtr, 32), i)
            }
            previous = _sha256(blockPtr, blockLength);
            assembly ("memory-safe") {
                mstore(add(add(uniform, 32), mul(sub(i, 1), 32)), previous)
            }
        }
    }

    /// RFC 9380 hash_to_field for Fp2, count = 2: four 64-byte big-endian integers, each
    /// reduced mod p (MODEXP with exponent 1), laid out as two 128-byte Fp2 encodings.
    function hashToFieldFp2(bytes memory message, bytes memory dst) internal view returns (bytes memory elements) {
        bytes memory uniform = expandMessageXmd(message, dst);
        elements = new bytes(4 * FP_LENGTH);
        // MODEXP input: len(B)=64, len(E)=1, len(M)=48, B, E=1, M=p.
        bytes memory modexp = abi.encodePacked(
            uint256(64), uint256(1), uint256(48), bytes32(0), bytes32(0), uint8(1), uint128(P_HI), P_LO
        );
        for (uint256 i = 0; i < 4; ++i) {
            uint256 basePtr;
            uint256 outPtr;
            assembly ("memory-safe") {
                basePtr := add(modexp, 128)
                let source := add(add(uniform, 32), mul(i, 64))
                mstore(basePtr, mload(source))
                mstore(add(basePtr, 32), mload(add(source, 32)))
                // 48-byte result goes after the 16 zero bytes of the Fp encoding.
                outPtr := add(add(add(elements, 32), mul(i, 64)), 16)
            }
            _mustCall(MODEXP, basePtr - 96, modexp.length, outPtr, 48);
        }
    }

    /// RFC 9380 hash_to_curve onto G2 (BLS12381G2_XMD:SHA-256_SSWU_RO_): the 256-byte
    /// EIP-2537 encoding of H(message). MAP_FP2_TO_G2 maps and clears the cofactor.
    function hashToG2(bytes memory message, bytes memory dst) internal view returns (bytes memory point) {
        bytes memory u = hashToFieldFp2(message, dst);
        bytes memory q = new bytes(2 * G2_LENGTH);
        uint256 uPtr;
        uint256 qPtr;
        assembly ("memory-safe") {
            uPtr := add(u, 32)
            qPtr := add(q, 32)
        }
        _mustCall(MAP_FP2_TO_G2, uPtr, 2 * FP_LENGTH, qPtr, G2_LENGTH);
        _mustCall(MAP_FP2_TO_G2, uPtr + 2 * FP_LENGTH, 2 * FP_LENGTH, qPtr + G2_LENGTH, G2_LENGTH);
        point = new bytes(G2_LENGTH);
        uint256 pointPtr;
        assembly ("memory-safe") {
            pointPtr := add(point, 32)
        }
        _mustCall(G2ADD, qPtr, 2 * G2_LENGTH, pointPtr, G2_LENGTH);
    }

    // ------------------------------------------------------------------ G1 arithmetic

    /// Adds the two G1 points at `pair` (a 256-byte region: a || b) and writes a + b over a.
    /// Both must be valid points (the caller validated them when they were admitted).
    function g1AddInPlace(uint256 pair) internal view {
        _mustCall(G1ADD, pair, 2 * G1_LENGTH, pair, G1_LENGTH);
    }

    /// Negates the G1 point at `point` in place: y -> p - y on the 384-bit value. The
    /// point at infinity (all zeros) stays as it is.
    function g1NegateInPlace(uint256 point) internal pure {
        assembly ("memory-safe") {
            let yHi := mload(add(point, 64))
            let yLo := mload(add(point, 96))
            if or(yHi, yLo) {
                let borrow := gt(yLo, P_LO)
                mstore(add(point, 96), sub(P_LO, yLo))
                mstore(add(point, 64), sub(sub(P_HI, yHi), borrow))
            }
        }
    }

    /// True iff the G1 point in memory at `point` lies in the prime-order subgroup (and on
    /// the curve, canonically encoded): G1MSM with scalar 1 runs those checks. False only
    /// for a rejected input; an out-of-gas reverts.
    function g1InSubgroupChecked(uint256 point, uint256 scratch) internal view returns (bool) {
        // scratch: 160 bytes for the MSM input (point || scalar 1), reused for the output.
        assembly ("memory-safe") {
            mcopy(scratch, point, 128)
            mstore(add(scratch, 128), 1)
        }
        return _checkedCall(G1MSM, scratch, 160, scratch, G1_LENGTH, G1MSM_ONE_GAS_BOUND);
    }

    // ------------------------------------------------------------------ pairing

    /// Writes -G1 (128 bytes) at `output`.
    function writeNegatedGenerator(uint256 output) internal pure {
        assembly ("memory-safe") {
            mstore(output, NEG_G1_X_HI)
            mstore(add(output, 32), NEG_G1_X_LO)
            mstore(add(output, 64), NEG_G1_Y_HI)
            mstore(add(output, 96), NEG_G1_Y_LO)
        }
    }

    /// The two-pair pairing check on the 768 bytes at `input` (g1a || g2a || g1b || g2b).
    /// `accepted` is false when the precompile rejected an input point (not on the curve,
    /// not in the subgroup, not canonical); `valid` is the result e(..)e(..) == 1.
    function pairingTwoChecked(uint256 input) internal view returns (bool accepted, bool valid) {
        accepted = _checkedCall(PAIRING_CHECK, input, 2 * (G1_LENGTH + G2_LENGTH), 0x00, 32, PAIRING_TWO_GAS_BOUND);
        if (accepted) {
            assembly ("memory-safe") {
                valid := eq(mload(0x00), 1)
            }
        }
    }
}
