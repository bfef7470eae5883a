// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title SubscriptionPass
/// @notice Reference payment contract of the billing backend. A payer sends a price quote signed by the
/// backend's quote signer (EIP-712) together with the funds (native coin or an ERC-20). The contract keeps one
/// non-transferable ERC-721 pass per payer: minted on the first payment, its expiry extended on later ones,
/// shortened (or burned) when the owner refunds an order.
/// @dev The struct, function, event and error names are a fixed interface the backend depends on.
contract SubscriptionPass is ERC721, EIP712, Ownable, Pausable, ReentrancyGuard {
    using SafeERC20 for IERC20;

    struct Quote {
        bytes32 orderId;
        address payer;
        uint256 planId;
        address token; // address(0) = native coin
        uint256 amount;
        uint64 periods;
        uint64 deadline;
    }

    struct Order {
        address payer;
        address token;
        uint256 amount;
        uint256 tokenId;
        uint256 planId;
        uint64 periods;
        bool refunded;
    }

    bytes32 public constant QUOTE_TYPEHASH = keccak256(
        "Quote(bytes32 orderId,address payer,uint256 planId,address token,uint256 amount,uint64 periods,uint64 deadline)"
    );
    uint64 public constant DEFAULT_PERIOD_SECONDS = 30 days;

    mapping(address signer => bool allowed) public isSigner;
    mapping(bytes32 orderId => Order order) public orders;
    mapping(uint256 tokenId => uint64 timestamp) public expiresAt;
    mapping(address payer => uint256 tokenId) public tokenOfOwner;

    /// Plan id -> seconds per period; 0 means "not set" (DEFAULT_PERIOD_SECONDS applies).
    mapping(uint256 planId => uint64 seconds_) private _planPeriod;
    /// Seconds an order added to the pass, so a refund takes back exactly that even if the plan period changed.
    mapping(bytes32 orderId => uint64 seconds_) private _orderSeconds;
    uint256 private _nextTokenId = 1;

    event Paid(
        bytes32 indexed orderId,
        address indexed payer,
        uint256 indexed tokenId,
        uint256 planId,
        address token,
        uint256 amount,
        uint64 periods,
        uint64 expiresAt
    );
    event Refunded(
        bytes32 indexed orderId,
        address indexed payer,
        uint256 indexed tokenId,
        address token,
        uint256 amount,
        uint64 expiresAt
    );
    event Withdrawn(address indexed token, address indexed to, uint256 amount);
    event SignerUpdated(address indexed signer, bool allowed);
    event PlanPeriodSet(uint256 indexed planId, uint64 periodSeconds);

    error InvalidSigner();
    error QuoteExpired();
    error WrongPayer();
    error OrderUsed();
    error WrongValue();
    error ZeroPeriods();
    error ZeroAmount();
    error UnknownOrder();
    error AlreadyRefunded();
    error NativeTransferFailed();
    error ZeroAddress();
    error NonTransferable();
    error ExpiryOverflow();

    constructor(address initialOwner, address initialSigner)
        ERC721("Subscription Pass", "SPASS")
        EIP712("SubscriptionPass", "1")
        Ownable(initialOwner)
    {
        _setSigner(initialSigner, true);
    }

    // ---------------------------------------------------------------- payer

    function pay(Quote calldata quote, bytes calldata signature) external payable whenNotPaused nonReentrant {
        if (msg.sender != quote.payer) revert WrongPayer();
        if (block.timestamp > quote.deadline) revert QuoteExpired();
        if (quote.periods == 0) revert ZeroPeriods();
        if (quote.amount == 0) revert ZeroAmount();
        if (orders[quote.orderId].payer != address(0)) revert OrderUsed();
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(quoteDigest(quote), signature);
        if (err != ECDSA.RecoverError.NoError || !isSigner[signer]) revert InvalidSigner();

        if (quote.token == address(0)) {
            if (msg.value != quote.amount) revert WrongValue();
        } else {
            if (msg.value != 0) revert WrongValue();
            IERC20 token = IERC20(quote.token);
            uint256 before = token.balanceOf(address(this));
            token.safeTransferFrom(quote.payer, address(this), quote.amount);
            // A fee-on-transfer or rebasing token would credit less than quoted: refuse it.
            if (token.balanceOf(address(this)) - before != quote.amount) revert WrongValue();
        }

        uint256 tokenId = tokenOfOwner[quote.payer];
        if (tokenId == 0) {
            tokenId = _nextTokenId++;
            tokenOfOwner[quote.payer] = tokenId;
            // _mint, not _safeMint: a contract payer that is no ERC721Receiver still gets the pass it paid
            // for, and no outside callback runs in the middle of a payment.
            _mint(quote.payer, tokenId);
        }
        uint256 added = uint256(quote.periods) * periodSeconds(quote.planId);
        uint256 start = expiresAt[tokenId] > block.timestamp ? expiresAt[tokenId] : block.timestamp;
        uint256 newExpiry = start + added;
        if (newExpiry > type(uint64).max) revert ExpiryOverflow();
        expiresAt[tokenId] = uint64(newExpiry);
        _orderSeconds[quote.orderId] = uint64(added);

        orders[quote.orderId] = Order({
            payer: quote.payer,
            token: quote.token,
            amount: quote.amount,
            tokenId: tokenId,
            planId: quote.planId,
            periods: quote.periods,
            refunded: false
        });
        emit Paid(
            quote.orderId,
            quote.payer,
            tokenId,
            quote.planId,
            quote.token,
            quote.amount,
            quote.periods,
            uint64(newExpiry)
        );
    }

    // ---------------------------------------------------------------- owner

    function refund(bytes32 orderId) external onlyOwner nonReentrant {
        Order storage order = orders[orderId];
        if (order.payer == address(0)) revert UnknownOrder();
        if (order.refunded) revert AlreadyRefunded();
        order.refunded = true;

        uint256 tokenId = order.tokenId;
        uint64 newExpiry = 0;
        // The pass may already be gone (burned by an earlier refund); then only the funds go back.
        if (_ownerOf(tokenId) != address(0)) {
            uint64 current = expiresAt[tokenId];
            uint64 taken = _orderSeconds[orderId];
            newExpiry = current > taken ? current - taken : 0;
            if (newExpiry <= block.timestamp) {
                newExpiry = 0;
                expiresAt[tokenId] = 0;
                delete tokenOfOwner[order.payer];
                _burn(tokenId);
            } else {
                expiresAt[tokenId] = newExpiry;
            }
        }

        _send(order.token, order.payer, order.amount);
        emit Refunded(orderId, order.payer, tokenId, order.token, order.amount, newExpiry);
    }

    function withdraw(address token, address to, uint256 amount) external onlyOwner nonReentrant {
        if (to == address(0)) revert ZeroAddress();
        _send(token, to, amount);
        emit Withdrawn(token, to, amount);
    }

    function setSigner(address signer, bool allowed) external onlyOwner {
        _setSigner(signer, allowed);
    }

    function setPlanPeriod(uint256 planId, uint64 seconds_) external onlyOwner {
        _planPeriod[planId] = seconds_;
        emit PlanPeriodSet(planId, periodSeconds(planId));
    }

    function pause() external onlyOwner {
        _pause();
    }

    function unpause() external onlyOwner {
        _unpause();
    }

    // ---------------------------------------------------------------- views

    /// @notice The EIP-712 typed-data hash the quote signer signs.
    function quoteDigest(Quote calldata quote) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    QUOTE_TYPEHASH,
                    quote.orderId,
                    quote.payer,
                    quote.planId,
                    quote.token,
                    quote.amount,
                    quote.periods,
                    quote.deadline
                )
            )
        );
    }

    function passOf(address payer) external view returns (uint256) {
        return tokenOfOwner[payer];
    }

    function periodSeconds(uint256 planId) public view returns (uint64) {
        uint64 value = _planPeriod[planId];
        return value == 0 ? DEFAULT_PERIOD_SECONDS : value;
    }

    function hasActivePass(address payer) external view returns (bool) {
        uint256 tokenId = tokenOfOwner[payer];
        return tokenId != 0 && expiresAt[tokenId] > block.timestamp;
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ---------------------------------------------------------------- internals

    function _setSigner(address signer, bool allowed) private {
        if (signer == address(0)) revert ZeroAddress();
        isSigner[signer] = allowed;
        emit SignerUpdated(signer, allowed);
    }

    function _send(address token, address to, uint256 amount) private {
        if (token == address(0)) {
            (bool ok,) = payable(to).call{value: amount}("");
            if (!ok) revert NativeTransferFailed();
        } else {
            IERC20(token).safeTransfer(to, amount);
        }
    }

    /// The pass belongs to the payer who paid for it: mint and burn only, no transfers (one pass per payer).
    function _update(address to, uint256 tokenId, address auth) internal override returns (address) {
        address from = _ownerOf(tokenId);
        if (from != address(0) && to != address(0)) revert NonTransferable();
        return super._update(to, tokenId, auth);
    }
}
