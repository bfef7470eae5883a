"""Read a payment contract's live state for the console's contract cards: head block, follower lag, the
contract's balances (native coin and each enabled ERC-20 of its network) and whether the backend's quote
signer is one of the signers the contract accepts. Reads only; errors come back as masked text."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import ImproperlyConfigured
from eth_abi import decode, encode
from eth_utils import function_signature_to_4byte_selector

from billing.chain.rpc import ChainClient, RpcError
from billing_project.logging import mask_url

_BALANCE_OF = function_signature_to_4byte_selector("balanceOf(address)")
_IS_SIGNER = function_signature_to_4byte_selector("isSigner(address)")


@dataclass
class ContractChainState:
    head_block: int | None = None
    lag_blocks: int | None = None
    balances: list[dict] = field(default_factory=list)  # {token, symbol, decimals, amount}
    signer: str | None = None
    signer_accepted: bool | None = None
    errors: list[str] = field(default_factory=list)


def _call(client: ChainClient, to: str, data: bytes) -> bytes:
    result = client.call("eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"])
    return bytes.fromhex((result or "0x")[2:])


def contract_chain_state(contract, *, tokens, cursor_block: int | None) -> ContractChainState:
    state = ContractChainState()
    try:
        client = ChainClient.for_network(contract.network, contract=contract)
        state.head_block = client.block_number()
    except RpcError as exc:
        state.errors.append(f"chain unavailable: {mask_url(str(exc))[:300]}")
        return state
    except Exception as exc:  # a broken endpoint list must not break the page
        state.errors.append(mask_url(str(exc))[:300])
        return state
    if cursor_block is not None:
        state.lag_blocks = max(state.head_block - cursor_block, 0)
    try:
        native = int(client.call("eth_getBalance", [contract.address, "latest"]), 16)
        state.balances.append(
            {
                "symbol": contract.network.native_symbol,
                "decimals": contract.network.native_decimals,
                "amount": native,
            }
        )
        for token in tokens:
            if not token.address:
                continue
            raw = _call(client, token.address, _BALANCE_OF + encode(["address"], [contract.address]))
            amount = decode(["uint256"], raw)[0] if len(raw) >= 32 else None
            state.balances.append({"symbol": token.symbol, "decimals": token.decimals, "amount": amount})
    except RpcError as exc:
        state.errors.append(f"balance: {mask_url(str(exc))[:300]}")
    try:
        from billing.chain.quote import get_quote_signer

        state.signer = get_quote_signer().address
    except ImproperlyConfigured:
        state.signer = None
    if state.signer:  # the reference contract's isSigner(address); another contract may not answer
        try:
            raw = _call(client, contract.address, _IS_SIGNER + encode(["address"], [state.signer]))
            state.signer_accepted = bool(decode(["bool"], raw)[0]) if len(raw) >= 32 else None
        except RpcError as exc:
            state.errors.append(f"signer check: {mask_url(str(exc))[:200]}")
    return state
