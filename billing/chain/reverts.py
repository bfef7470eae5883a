"""Why a mined transaction reverted, read from the chain: the custom error (the contract's own, or the
token's ERC-6093 / SafeERC20 error it bubbled up) and whether a reverted call was this contract's pay
method for a given order at all. Used by the webhook and the receipt paths alike."""

from __future__ import annotations

from billing.chain.abi import decode_call, decode_error
from billing.chain.rpc import RpcError
from billing.models import PaymentContract


def _error_item(name: str, *types: str) -> dict:
    return {"type": "error", "name": name, "inputs": [{"name": f"a{i}", "type": t} for i, t in enumerate(types)]}


# A payment that pulls an ERC-20 bubbles up the token's own error (no approve, too little balance): the
# standard ERC-6093 errors and SafeERC20's, so the reason names them instead of showing raw hex.
TOKEN_ERRORS = [
    _error_item("ERC20InsufficientAllowance", "address", "uint256", "uint256"),
    _error_item("ERC20InsufficientBalance", "address", "uint256", "uint256"),
    _error_item("ERC20InvalidSender", "address"),
    _error_item("ERC20InvalidReceiver", "address"),
    _error_item("ERC20InvalidSpender", "address"),
    _error_item("ERC20InvalidApprover", "address"),
    _error_item("SafeERC20FailedOperation", "address"),
]


def revert_reason(client, contract: PaymentContract, tx_hash: str) -> str | None:
    """Replay a reverted transaction with eth_call at its block to read the custom error."""
    try:
        original = client.get_transaction(tx_hash)
        if not original:
            return None
        call = {"from": original["from"], "to": original["to"], "data": original["input"], "value": original["value"]}
        client.call("eth_call", [call, original["blockNumber"]])
    except RpcError as exc:
        data = getattr(exc, "data", None)
        name = decode_error([*contract.abi, *TOKEN_ERRORS], data) if data else None
        return name or str(exc)[:200]
    return None


def reverted_call_mismatch(client, contract: PaymentContract, tx_hash: str, order_id: str) -> str:
    """Empty when the transaction is a call to `contract`'s pay method (`mint_method`) whose quote names
    `order_id`, read from the chain (eth_getTransactionByHash: `to`, the input's selector, the decoded
    orderId); otherwise why not. A reverted transaction that is anything else (another contract, another
    method, another order) says nothing about this order and must not fail it."""
    original = client.get_transaction(tx_hash)
    if not original:
        return "the transaction is not on chain"
    if (original.get("to") or "").lower() != contract.address.lower():
        return "the reverted transaction is not a call to this contract"
    try:
        _, args = decode_call(contract.abi, original.get("input") or "0x", function=contract.mint_method)
    except (ValueError, KeyError) as exc:
        return f"the reverted transaction is not a call to {contract.mint_method}: {str(exc)[:120]}"
    quote = args.get("quote") if isinstance(args.get("quote"), dict) else args
    if str(quote.get("orderId", "")).lower() != order_id.lower():
        return f"the reverted {contract.mint_method} call is for another order"
    return ""
