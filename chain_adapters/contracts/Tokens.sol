// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title DvPToken
/// @notice The minimal ERC-20 the dvpsim test tokens share: balances, allowances, Transfer
///         and Approval events, and a single minter fixed at construction. Errors follow
///         the ERC-6093 names so that tools decode them.
/// @dev    Model: chain_adapters/model.py TokenLedger (same rules, same errors, same
///         events). An allowance of 2**256-1 is never decreased. Transfers to the zero
///         address revert. There is no burn, no pause, no owner other than the minter.
abstract contract DvPToken {
    string public name;
    string public symbol;
    uint8 public immutable decimals;
    /// The only account allowed to mint: the deployer for AssetToken and PaymentToken,
    /// the destination chain's DvPCoordinator for BridgedToken.
    address public immutable minter;

    uint256 public totalSupply;
    mapping(address account => uint256) public balanceOf;
    mapping(address owner => mapping(address spender => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    error ERC20InsufficientBalance(address sender, uint256 balance, uint256 needed);
    error ERC20InsufficientAllowance(address spender, uint256 allowance, uint256 needed);
    error ERC20InvalidReceiver(address receiver);
    error NotMinter(address caller);

    constructor(string memory name_, string memory symbol_, uint8 decimals_, address minter_) {
        name = name_;
        symbol = symbol_;
        decimals = decimals_;
        minter = minter_;
    }

    function mint(address to, uint256 amount) external returns (bool) {
        if (msg.sender != minter) revert NotMinter(msg.sender);
        if (to == address(0)) revert ERC20InvalidReceiver(to);
        totalSupply += amount;
        unchecked {
            balanceOf[to] += amount; // cannot overflow: bounded by totalSupply
        }
        emit Transfer(address(0), to, amount);
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        _move(msg.sender, to, amount);
        return true;
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed < amount) revert ERC20InsufficientAllowance(msg.sender, allowed, amount);
        if (allowed != type(uint256).max) {
            unchecked {
                allowance[from][msg.sender] = allowed - amount;
            }
        }
        _move(from, to, amount);
        return true;
    }

    function _move(address from, address to, uint256 amount) private {
        if (to == address(0)) revert ERC20InvalidReceiver(to);
        uint256 balance = balanceOf[from];
        if (balance < amount) revert ERC20InsufficientBalance(from, balance, amount);
        unchecked {
            balanceOf[from] = balance - amount;
            balanceOf[to] += amount; // cannot overflow: bounded by totalSupply
        }
        emit Transfer(from, to, amount);
    }
}

/// @title AssetToken
/// @notice The asset leg's token in dvpsim runs: a tokenized fund share. Only the deployer
///         mints. Test token, not a product.
contract AssetToken is DvPToken {
    constructor() DvPToken("dvpsim Fund Share", "dvFUND", 18, msg.sender) {}
}

/// @title PaymentToken
/// @notice The on-chain payment leg's token in dvpsim runs: a deposit token / stablecoin in
///         minor units (2 decimals). Only the deployer mints. Test token, not a product.
contract PaymentToken is DvPToken {
    constructor() DvPToken("dvpsim Deposit Token", "dvDEP", 2, msg.sender) {}
}

/// @title BridgedToken
/// @notice The representation of a token of another chain in the token-transfer mode: the
///         destination chain's DvPCoordinator (its `minter`) mints it to the receiving party
///         on a certified COMMIT, while the original stays locked on the source chain.
contract BridgedToken is DvPToken {
    constructor(string memory name_, string memory symbol_, uint8 decimals_, address minter_)
        DvPToken(name_, symbol_, decimals_, minter_)
    {}
}
