"""Reads for the API and console pages. Views and other apps (overview) read billing data through here."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Prefetch, QuerySet

from billing.models import (
    LIVE_SUBSCRIPTION_STATUSES,
    ChainEvent,
    CryptoConfig,
    Network,
    OutboxDelivery,
    PaymentContract,
    PaymentProvider,
    PaymentTransaction,
    Plan,
    RpcEndpoint,
    Subscription,
    Token,
)


def plan_queryset() -> QuerySet[Plan]:
    return Plan.objects.select_related(
        "price_token__network", "provider", "contract__network", "provider__default_network"
    ).prefetch_related(
        Prefetch("provider__networks", queryset=Network.objects.order_by("slug")),
        Prefetch("provider__supported_tokens", queryset=Token.objects.select_related("network")),
    )


def plan_list_active() -> QuerySet[Plan]:
    return plan_queryset().filter(is_active=True)


@dataclass(frozen=True)
class PaymentOption:
    network: Network
    tokens: tuple[Token, ...]


def plan_payment_options(plan: Plan) -> list[PaymentOption]:
    """Networks and tokens a plan can be paid in: the provider's enabled networks and supported tokens,
    plus the plan's own price token (always payable on its network)."""
    networks = [n for n in plan.provider.networks.all() if n.enabled]
    tokens = [t for t in plan.provider.supported_tokens.all() if t.enabled]
    if plan.price_token.enabled and all(t.pk != plan.price_token_id for t in tokens):
        tokens.append(plan.price_token)
    options = []
    for network in networks:
        on_network = sorted((t for t in tokens if t.network_id == network.pk), key=lambda t: t.symbol)
        if on_network:
            options.append(PaymentOption(network=network, tokens=tuple(on_network)))
    return options


def provider_queryset() -> QuerySet[PaymentProvider]:
    return PaymentProvider.objects.select_related("default_network", "contract").prefetch_related(
        Prefetch("networks", queryset=Network.objects.order_by("slug")),
        Prefetch("supported_tokens", queryset=Token.objects.select_related("network")),
    )


def contract_queryset() -> QuerySet[PaymentContract]:
    return PaymentContract.objects.select_related("network")


def network_queryset() -> QuerySet[Network]:
    return Network.objects.prefetch_related(
        Prefetch("rpc_endpoints", queryset=RpcEndpoint.objects.order_by("position", "id"))
    )


def token_queryset() -> QuerySet[Token]:
    return Token.objects.select_related("network")


def crypto_config_get() -> CryptoConfig:
    return CryptoConfig.load()


def transaction_queryset() -> QuerySet[PaymentTransaction]:
    return PaymentTransaction.objects.select_related(
        "token", "network", "contract", "provider", "plan", "user"
    ).order_by("-created_at", "-id")


def transaction_history_for_user(*, user) -> QuerySet[PaymentTransaction]:
    return transaction_queryset().filter(user=user)


def transaction_last_for_user(*, user) -> PaymentTransaction | None:
    return transaction_history_for_user(user=user).first()


def subscription_current(*, user) -> Subscription | None:
    """The live (active or past due) subscription; at most one exists per user (a DB constraint)."""
    return (
        Subscription.objects.select_related("plan__price_token__network", "debt_token", "pending_plan")
        .filter(user=user, status__in=LIVE_SUBSCRIPTION_STATUSES)
        .first()
    )


def contract_events(*, contract: PaymentContract) -> QuerySet[ChainEvent]:
    return ChainEvent.objects.filter(contract=contract).select_related("contract__network", "transaction")


def outbox_deliveries() -> QuerySet[OutboxDelivery]:
    return OutboxDelivery.objects.select_related("event")
