"""A transaction's receipt as both ledger paths read it (the webhook's verification and the receipt tracker):
mined or not, reverted or not, and whether its block is inside what the network's confirmation policy
applies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class MinedReceipt:
    receipt: dict
    block_number: int
    applicable: int  # the newest block the network's confirmation policy applies now

    @property
    def reverted(self) -> bool:
        return int(self.receipt.get("status", "0x1"), 16) != 1

    @property
    def deep_enough(self) -> bool:
        return self.block_number <= self.applicable


def mined_receipt(client, tx_hash: str, applicable: Callable[[int], int]) -> MinedReceipt | None:
    """The receipt of `tx_hash` and where it stands against the confirmation policy (`applicable(block)`:
    the newest applicable block, asked only once the transaction is mined); None while it is not mined.
    RPC errors propagate: the caller decides what an unavailable chain means."""
    receipt = client.get_transaction_receipt(tx_hash)
    if receipt is None:
        return None
    block_number = int(receipt["blockNumber"], 16)
    return MinedReceipt(receipt, block_number, applicable(block_number))
