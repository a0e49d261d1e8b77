// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title CommitteeKeyTable
/// @notice Immutable storage of a committee's public keys as contract code, read back
///         with EXTCODECOPY: a cold read of the whole table costs 2,600 gas plus 3 per
///         word, against 2,100 per cold storage slot. The verifier deploys one table per
///         committee configuration.
/// @dev    The constructor returns `data` as the runtime code. `data` must start with a
///         zero byte (STOP), so that calling the table does nothing. The table has no
///         functions, no owner and cannot change.
contract CommitteeKeyTable {
    constructor(bytes memory data) {
        assembly ("memory-safe") {
            return(add(data, 32), mload(data))
        }
    }
}
