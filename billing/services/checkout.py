"""Checkout: validate the request at the edge, write a `pending` ledger row with an order id, an expiry
and the USD rate, and ask the plan's provider adapter for what the wallet signs. One transaction: if
the adapter cannot build the payload, nothing is written."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from eth_utils import is_address, is_checksum_address, to_checksum_address

from billing.adapters.base import CheckoutPayload, CheckoutRequest
from billing.adapters.registry import get_adapter
from billing.fields import UINT256_MAX
from billing.models import CryptoConfig, Network, PaymentContract, PaymentTransaction, Plan, Token, TxStatus
from billing.services.ledger import transaction_record_created

log = structlog.get_logger(__name__)


class CheckoutError(Exception):
    def __init__(self, code: str, message: str, *, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status


@dataclass(frozen=True)
class PaymentOption:
    network: Network
    token: Token
    contract: PaymentContract
    amount: int | None  # per period, smallest unit of `token`; None: the conversion overflows uint256


class AmountOverflow(CheckoutError):
    """The amount does not fit the contract's uint256 (a conversion to more decimals, or many periods)."""

    def __init__(self, message: str, *, field: str | None = "plan"):
        super().__init__("amount_overflow", message, field=field, status=400)


def _scale(amount: int, from_decimals: int, to_decimals: int) -> int:
    """`amount` in a token of `from_decimals` expressed in one of `to_decimals`, in integers only.

    To more decimals: exact (amount * 10^k). To fewer: rounded up, so the operator is never short, by less
    than one unit of the target token (the quotient, plus one when there is a remainder). A result above
    2^256 - 1 (what the contract takes) raises AmountOverflow instead of reaching the quote."""
    if amount < 0 or from_decimals < 0 or to_decimals < 0:
        raise ValueError("amounts and decimals are never negative")
    if to_decimals >= from_decimals:
        scaled = amount * 10 ** (to_decimals - from_decimals)
    else:
        q, r = divmod(amount, 10 ** (from_decimals - to_decimals))
        scaled = q + (1 if r else 0)  # never undercharge
    if scaled > UINT256_MAX:
        raise AmountOverflow(
            f"{amount} at {from_decimals} decimals is more than a uint256 at {to_decimals} decimals (2^256 - 1)."
        )
    return scaled


def plan_payment_options(plan: Plan) -> list[PaymentOption]:
    """Where a plan can be paid: its own token on its contract first, then the same asset (same symbol)
    on the other networks of its provider that have an enabled contract, in fallback order."""
    options = [PaymentOption(plan.contract.network, plan.price_token, plan.contract, plan.price_amount)]
    provider = plan.provider
    fallback = {n.pk: i for i, n in enumerate(CryptoConfig.load().fallback_order())}
    tokens = (
        provider.supported_tokens.filter(symbol=plan.price_token.symbol, enabled=True, network__enabled=True)
        .exclude(pk=plan.price_token_id)
        .select_related("network")
    )
    provider_networks = set(provider.networks.values_list("pk", flat=True))
    for token in sorted(tokens, key=lambda t: (fallback.get(t.network_id, 10**6), t.network.slug)):
        if token.network_id not in provider_networks:
            continue
        contract = (
            PaymentContract.objects.filter(network=token.network, enabled=True)
            .exclude(address="")
            .order_by("pk")
            .first()
        )
        if contract is None:
            continue
        try:
            amount = _scale(plan.price_amount, plan.price_token.decimals, token.decimals)
        except AmountOverflow:
            amount = None  # listed nowhere; checkout asked for it explicitly says why
        options.append(PaymentOption(token.network, token, contract, amount))
    return options


def network_is_healthy(network: Network) -> bool:
    return network.rpc_endpoints.filter(enabled=True, healthy=True).exists()


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
