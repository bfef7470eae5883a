"""The provider contract every payment adapter implements. Adapters never touch the ORM: they take
plain frozen dataclasses in and return frozen dataclasses out."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class CheckoutRequest:
    order_id: str  # 0x + 64 hex
    chain_id: int
    contract_address: str
    contract_abi: list
    mint_method: str
    eip712_name: str
    eip712_version: str
    payer: str
    plan_id: int
    token_address: str | None  # None for native
    token_symbol: str
    token_decimals: int
    amount: int
    periods: int
    deadline: datetime


@dataclass(frozen=True)
class WalletStep:
    kind: str  # "approve" | "pay"
    description: str
    to: str
    data: str
    value: int
    chain_id: int
    function: str
    args: dict = field(default_factory=dict)
    eip681: str = ""  # EIP-681 link for this step (a pay step's link cannot carry the calldata: see evm.py)


@dataclass(frozen=True)
class CheckoutPayload:
    chain_id: int
    contract_address: str
    steps: tuple[WalletStep, ...]
    eip681: str
    quote: dict
    signature: str
    signer: str
    expires_at: datetime
    typed_data: dict = field(default_factory=dict)  # full EIP-712 document of the quote (eth_signTypedData_v4 shape)


@dataclass(frozen=True)
class WebhookVerification:
    ok: bool
    reason: str = ""
    used_previous_secret: bool = False
    timestamp: int | None = None


class PaymentProviderAdapter(abc.ABC):
    """One payment gateway kind (registry key = `type` of a PaymentProvider row)."""

    slug: str = ""

    @abc.abstractmethod
    def checkout(self, request: CheckoutRequest) -> CheckoutPayload:
        """Build what the payer's wallet signs and sends."""

    @abc.abstractmethod
    def verify_webhook(
        self,
        *,
        raw_body: bytes,
        signature_header: str,
        secret: str,
        previous_secret: str = "",
        previous_valid_until: datetime | None = None,
        now: datetime | None = None,
    ) -> WebhookVerification:
        """Check the indexer's HMAC signature over the raw body."""
