"""What a contract holds now, read from the chain: eth_getBalance for the native coin, ERC-20 balanceOf
for tokens. One short attempt per endpoint, no retries and no health writes: the caller (the overview's
payouts) caches the answer with its read time and shows the last one, marked stale, when this fails."""

from __future__ import annotations

from billing.chain.rpc import AllEndpointsFailed, ChainClient, RetryPolicy, endpoint_specs

BALANCE_OF = "0x70a08231"  # balanceOf(address)


class BalanceUnavailable(Exception):
    """One token's balance could not be read although the network answered (e.g. no contract at its address)."""


def read_balances(*, network, holder: str, tokens: list, timeout: float = 2.0) -> dict[int, int | Exception]:
    """token pk -> balance in the token's smallest unit, or the exception that token's read raised.
    Raises (AllEndpointsFailed, RpcError) when the network itself cannot be reached."""
    specs = endpoint_specs(network, timeout_cap=timeout)
    if not specs:
        raise AllEndpointsFailed(f"Network {network.slug} has no enabled RPC endpoint.")
    client = ChainClient(
        chain_id=network.chain_id,
        endpoints=specs,
        policy=RetryPolicy(max_retries=0),
        record_health=False,
        network_label=network.slug,
    )
    out: dict[int, int | Exception] = {}
    for token in tokens:
        if token.is_native:
            out[token.pk] = int(client.call("eth_getBalance", [holder, "latest"]), 16)
            continue
        data = BALANCE_OF + holder[2:].lower().rjust(64, "0")
        answer = client.call("eth_call", [{"to": token.address, "data": data}, "latest"])
        if not answer or answer == "0x":
            out[token.pk] = BalanceUnavailable(f"{token.symbol} at {token.address} answered no balance")
        else:
            out[token.pk] = int(answer, 16)
    return out
