"""Checkout: validate the request at the edge, write a `pending` ledger row with an order id, an expiry
and the USD rate, and ask the plan's provider adapter for what the wallet signs. One transaction: if
the adapter cannot build the payload, nothing is written."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from decimal import Decimal

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from eth_utils import is_address, is_checksum_address, to_checksum_address

from billing.adapters.base import CheckoutPayload, CheckoutRequest
from billing.adapters.registry import get_adapter
from billing.amounts import AmountOverflow
from billing.fields import UINT256_MAX
from billing.models import CryptoConfig, PaymentTransaction, Plan, TxStatus
from billing.selectors import PaymentOption, network_is_healthy, plan_payment_options
from billing.services.ledger import transaction_record_created
from billing_project.errors import ServiceError

log = structlog.get_logger(__name__)


class CheckoutError(ServiceError):
    """A checkout request refused (code, message, HTTP status, field)."""


def _choose_option(
    options: list[PaymentOption], network_slug: str | None, token_symbol: str | None
) -> tuple[PaymentOption, dict | None]:
    candidates = options
    if token_symbol or network_slug:
        wanted = [
            o
            for o in options
            if (not token_symbol or o.token.symbol.lower() == token_symbol.lower())
            and (not network_slug or o.network.slug == network_slug)
        ]
        if wanted and all(o.amount is None for o in wanted):
            raise AmountOverflow(
                f"The plan's price does not fit a uint256 in {wanted[0].token.symbol} on {wanted[0].network.slug}.",
                field="network" if network_slug else "token",
            )
    candidates = [o for o in candidates if o.amount is not None]
    if token_symbol:
        candidates = [o for o in candidates if o.token.symbol.lower() == token_symbol.lower()]
        if not candidates:
            raise CheckoutError("token_not_offered", f"The plan cannot be paid in {token_symbol}.", field="token")
    preferred = candidates[0]
    if network_slug:
        matching = [o for o in candidates if o.network.slug == network_slug]
        if not matching:
            raise CheckoutError("network_not_offered", f"The plan cannot be paid on {network_slug}.", field="network")
        preferred = matching[0]
    if network_is_healthy(preferred.network):
        return preferred, None
    # Fallback: the next network in the configured order that the plan supports and that answers.
    fallback_order = CryptoConfig.load().fallback_order()
    ranked = sorted(
        (o for o in candidates if o is not preferred),
        key=lambda o: next((i for i, n in enumerate(fallback_order) if n.pk == o.network.pk), 10**6),
    )
    for option in ranked:
        if network_is_healthy(option.network):
            return option, {
                "from": preferred.network.slug,
                "to": option.network.slug,
                "reason": "no healthy RPC endpoint",
            }
    raise CheckoutError(
        "network_unavailable",
        f"{preferred.network.slug} has no healthy RPC endpoint and no fallback network is available.",
        field="network",
        status=503,
    )


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)  # amounts and values exceed 2^53: strings in JSON
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


def payload_to_json(payload: CheckoutPayload) -> dict:
    data = _jsonable(payload)
    data["chain_id"] = payload.chain_id  # chain ids are small: numbers, as wallets expect
    for step, original in zip(data["steps"], payload.steps, strict=True):
        step["chain_id"] = original.chain_id
    return data


@transaction.atomic
def checkout_create(
    *,
    user,
    plan_slug: str,
    payer_address: str,
    network_slug: str | None = None,
    token_symbol: str | None = None,
    periods: int = 1,
    now: datetime | None = None,
) -> PaymentTransaction:
    from billing.chain.quote import new_order_id

    now = now or timezone.now()
    plan = (
        Plan.objects.select_related("price_token__network", "provider", "contract__network")
        .filter(slug=plan_slug)
        .first()
    )
    if plan is None:
        raise CheckoutError("plan_not_found", f"No plan '{plan_slug}'.", field="plan", status=404)
    if not plan.is_active:
        raise CheckoutError("plan_inactive", f"The plan '{plan_slug}' is not on sale.", field="plan")
    if not plan.provider.enabled:
        raise CheckoutError("provider_disabled", "The plan's payment provider is disabled.", field="plan")
    if not isinstance(payer_address, str) or not is_address(payer_address):
        raise CheckoutError("invalid_wallet", "The wallet is not an EVM address.", field="wallet")
    digits = payer_address[2:]
    if digits not in (digits.lower(), digits.upper()) and not is_checksum_address(payer_address):
        # eth_utils 6 no longer checks EIP-55 in is_address: mixed case that fails it is a typo.
        raise CheckoutError("invalid_wallet", "The wallet's EIP-55 checksum does not match.", field="wallet")
    payer = to_checksum_address(payer_address)
    if not 1 <= periods <= 36:
        raise CheckoutError("invalid_periods", "Periods must be between 1 and 36.", field="periods")

    option, fallback = _choose_option(plan_payment_options(plan), network_slug, token_symbol)
    amount = option.amount * periods
    if amount > UINT256_MAX:
        raise AmountOverflow(f"{periods} periods of {option.amount} do not fit a uint256.", field="periods")
    expires_at = now + settings.BILLING_CHECKOUT_TTL
    tx = PaymentTransaction.objects.create(
        user=user,
        product_id=plan.pk,
        plan=plan,
        provider=plan.provider,
        contract=option.contract,
        network=option.network,
        chain_id=option.network.chain_id,
        token=option.token,
        amount=amount,
        periods=periods,
        status=TxStatus.PENDING,
        order_id=new_order_id(),
        payer_address=payer,
        usd_rate_at_checkout=option.token.usd_estimate,
        expires_at=expires_at,
    )
    adapter = get_adapter(plan.provider.type)
    try:
        payload = adapter.checkout(
            CheckoutRequest(
                order_id=tx.order_id,
                chain_id=option.network.chain_id,
                contract_address=option.contract.address,
                contract_abi=option.contract.abi,
                mint_method=option.contract.mint_method,
                eip712_name=option.contract.eip712_name,
                eip712_version=option.contract.eip712_version,
                payer=payer,
                plan_id=plan.onchain_plan_id,
                token_address=option.token.address or None,
                token_symbol=option.token.symbol,
                token_decimals=option.token.decimals,
                amount=amount,
                periods=periods,
                deadline=expires_at,
            )
        )
    except Exception as exc:
        log.error("checkout.adapter_failed", plan=plan.slug, error=type(exc).__name__)
        raise CheckoutError(
            "provider_unavailable", f"The payment provider could not build the payment: {exc}", status=503
        ) from exc
    data = payload_to_json(payload)
    if fallback:
        data["network_fallback"] = fallback
    tx.checkout_payload = data
    tx.save(update_fields=["checkout_payload"])
    transaction_record_created(tx=tx, actor=f"user:{user.pk}", reason="checkout")
    log.info(
        "checkout.created",
        transaction_id=tx.pk,
        user_id=user.pk,
        contract_slug=option.contract.slug,
        plan=plan.slug,
        network=option.network.slug,
        token=option.token.symbol,
    )
    return tx
