"""Chain logs and receipts as the ledger reads them: one decoded log (`ObservedLog`, always read from the
chain, never from a webhook body), the gas a mined transaction paid (`GasFacts`), and the decoding of a raw
eth_getLogs / receipt log into an ObservedLog."""

from __future__ import annotations

from dataclasses import dataclass, field

from eth_utils import to_checksum_address

from billing.chain.abi import LogDecoder, checksum, decode_log


@dataclass(frozen=True)
class ObservedLog:
    """One decoded log, read from the chain (never from a webhook body)."""

    name: str  # Paid | Refunded | Withdrawn | Transfer
    chain_id: int
    address: str  # emitting contract
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    args: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GasFacts:
    gas_used: int | None = None
    effective_gas_price: int | None = None

    @property
    def fee(self) -> int | None:
        if self.gas_used is None or self.effective_gas_price is None:
            return None
        return self.gas_used * self.effective_gas_price

    @classmethod
    def from_receipt(cls, receipt: dict | None) -> GasFacts:
        if not receipt:
            return cls()
        gas = receipt.get("gasUsed")
        price = receipt.get("effectiveGasPrice")
        return cls(int(gas, 16) if gas else None, int(price, 16) if price else None)


def hex_int(value) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def observed_from_raw(chain_id: int, abi: list, raw: dict, decoder: LogDecoder | None = None) -> ObservedLog | None:
    decoded = decoder.decode(raw) if decoder is not None else decode_log(abi, raw)
    if decoded is None:
        return None
    name, args = decoded
    return ObservedLog(
        name=name,
        chain_id=chain_id,
        address=checksum(raw["address"]) if decoder is not None else to_checksum_address(raw["address"]),
        tx_hash=raw["transactionHash"].lower(),
        log_index=hex_int(raw["logIndex"]),
        block_number=hex_int(raw["blockNumber"]),
        block_hash=raw["blockHash"].lower(),
        args=args,
    )
