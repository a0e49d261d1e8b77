// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title HostileToken
/// @notice Test-only token for the escrow's adversarial tests: it locks normally
///         (transferFrom works) and misbehaves on demand when the escrow pays out
///         (transfer) or mints: it reverts, burns all gas, re-enters a target with given
///         calldata, returns false, or reverts with a huge return-data bomb. It exists to
///         show that one such settlement fails alone and never blocks a batch.
/// @dev    Never deploy outside tests. Not a DvPToken on purpose: its transfer must be
///         able to misbehave.
contract HostileToken {
    uint8 public constant NORMAL = 0;
    uint8 public constant REVERT = 1;
    uint8 public constant BURN_GAS = 2;
    uint8 public constant REENTER = 3;
    uint8 public constant RETURN_FALSE = 4;
    uint8 public constant RETURN_BOMB = 5;

    address public immutable minter;
    uint8 public behaviour;
    address public reentryTarget;
    bytes public reentryData;
    bool public lastReentrySucceeded;
    bytes public lastReentryResult;

    mapping(address account => uint256) public balanceOf;
    mapping(address owner => mapping(address spender => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    error Hostile();

    constructor() {
        minter = msg.sender;
    }

    function setBehaviour(uint8 behaviour_, address target, bytes calldata data) external {
        behaviour = behaviour_;
        reentryTarget = target;
        reentryData = data;
    }

    function mint(address to, uint256 amount) external returns (bool) {
        if (msg.sender != minter) return _misbehave(to, amount);
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
        return true;
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        allowance[from][msg.sender] -= amount;
        balanceOf[from] -= amount;
        balanceOf[to] += amount;
        emit Transfer(from, to, amount);
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        if (behaviour != NORMAL) return _misbehave(to, amount);
        balanceOf[msg.sender] -= amount;
        balanceOf[to] += amount;
        emit Transfer(msg.sender, to, amount);
        return true;
    }

    function _misbehave(address to, uint256 amount) private returns (bool) {
        uint8 b = behaviour;
        if (b == REVERT) revert Hostile();
        if (b == BURN_GAS) {
            uint256 i;
            while (true) {
                unchecked {
                    ++i;
                }
            }
        }
        if (b == REENTER) {
            (bool ok, bytes memory result) = reentryTarget.call(reentryData);
            lastReentrySucceeded = ok;
            lastReentryResult = result;
            balanceOf[msg.sender] -= amount;
            balanceOf[to] += amount;
            emit Transfer(msg.sender, to, amount);
            return true;
        }
        if (b == RETURN_FALSE) return false;
        if (b == RETURN_BOMB) {
            assembly {
                revert(0, 1000000)
            }
        }
        revert Hostile();
    }
}
