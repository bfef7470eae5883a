"""EVM provider adapter: builds what a wallet signs (native value or ERC-20 approve + call, an EIP-681
link, an EIP-712 quote signed by the backend's quote signer) and verifies indexer webhooks."""

from __future__ import annotations

from datetime import datetime

from billing import signing
from billing.adapters.base import CheckoutPayload, CheckoutRequest, PaymentProviderAdapter, WebhookVerification


class EvmProvider(PaymentProviderAdapter):
    slug = "evm"

    def checkout(self, request: CheckoutRequest) -> CheckoutPayload:
        raise NotImplementedError("EVM checkout payload is built in the on-chain layer (issue 3).")

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
        secrets = [secret]
        moment = now.timestamp() if now else None
        if previous_secret and (
            previous_valid_until is None or (now or datetime.now(previous_valid_until.tzinfo)) <= previous_valid_until
        ):
            secrets.append(previous_secret)
        ok, reason, index = signing.check(raw_body, signature_header, secrets, now=moment)
        timestamp, _ = signing.parse(signature_header)
        return WebhookVerification(ok=ok, reason=reason, used_previous_secret=index == 1, timestamp=timestamp)
