// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title PrecompileProbe
/// @notice Used by `dvpsim doctor` to check that a chain answers the EIP-2537
///         BLS12-381 pairing precompile. On chains without Prague the call succeeds
///         with empty output; that must read as "missing", never as "false".
contract PrecompileProbe {
    address internal constant BLS12_PAIRING_CHECK = address(0x0f);

    error PrecompileFailed(address precompile);

    function pairingCheck(bytes calldata input) external view returns (bool) {
        (bool ok, bytes memory out) = BLS12_PAIRING_CHECK.staticcall(input);
        if (!ok || out.length != 32) revert PrecompileFailed(BLS12_PAIRING_CHECK);
        return abi.decode(out, (bool));
    }
}
