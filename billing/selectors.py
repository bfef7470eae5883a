"""Reads for the API and console pages. Views and other apps (overview) read billing data through here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import F, Prefetch, QuerySet
from django.utils import timezone

from billing.amounts import AmountOverflow, scale_amount
from billing.models import (
    LIVE_SUBSCRIPTION_STATUSES,
    ChainEvent,
    CryptoConfig,
    InboundEvent,
    Network,
    OperatorTransaction,
    OutboxDelivery,
    PaymentContract,
    PaymentProvider,
    PaymentTransaction,
    PeriodStatus,
    Plan,
    RevenueRollup,
    RpcEndpoint,
    Subscription,
    SubscriptionPeriod,
    SubscriptionStatus,
    Token,
    TransactionStatusChange,
    TxStatus,
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
    token: Token
    contract: PaymentContract
    amount: int | None  # per period, smallest unit of `token`; None: the conversion overflows uint256


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
            amount = scale_amount(plan.price_amount, plan.price_token.decimals, token.decimals)
        except AmountOverflow:
            amount = None  # listed nowhere; checkout asked for it explicitly says why
        options.append(PaymentOption(token.network, token, contract, amount))
    return options


def network_is_healthy(network: Network) -> bool:
    return network.rpc_endpoints.filter(enabled=True, healthy=True).exists()


def plan_console_list(
    *, status: str = "", interval: str = "", token: str = "", experiment: str = "", q: str = ""
) -> QuerySet[Plan]:
    """The Tariffs page's plan cards: status active|inactive, interval, token symbol, experiment ('-' = none),
    a search over slug and title."""
    from django.db.models import Q

    plans = Plan.objects.select_related("price_token__network", "provider", "contract").order_by(
        "sort_order", "tier", "slug"
    )
    if status in ("active", "inactive"):
        plans = plans.filter(is_active=status == "active")
    if interval:
        plans = plans.filter(interval=interval)
    if token:
        plans = plans.filter(price_token__symbol=token)
    if experiment == "-":
        plans = plans.filter(experiment="")
    elif experiment:
        plans = plans.filter(experiment=experiment)
    if q:
        plans = plans.filter(Q(slug__icontains=q) | Q(title__icontains=q))
    return plans


def plan_audit_entries(*, plan: Plan, limit: int = 50):
    """django-auditlog's entries of one plan, newest first, with their actors."""
    from auditlog.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    return (
        LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(Plan), object_pk=str(plan.pk))
        .select_related("content_type", "actor")
        .order_by("-timestamp", "-id")[:limit]
    )


def plan_payment_options_grouped(plan: Plan) -> list[dict]:
    """Where a plan can be paid, grouped by network: exactly the options checkout accepts
    (`plan_payment_options`: the plan's own token first, then the same asset on the provider's other
    networks that have an enabled contract), with the amount per option."""
    grouped: dict[int, dict] = {}
    for option in plan_payment_options(plan):
        network = option.network
        if not network.enabled or not option.token.enabled or option.amount is None:
            continue
        entry = grouped.setdefault(
            network.pk,
            {
                "network": network.slug,
                "network_name": network.name,
                "chain_id": network.chain_id,
                "is_testnet": network.is_testnet,
                "contract_slug": option.contract.slug,
                "tokens": [],
            },
        )
        display = option.token.display(option.amount)
        entry["tokens"].append(
            {
                "symbol": option.token.symbol,
                "key": f"{option.token.symbol}@{network.slug}",
                "address": option.token.address or None,
                "decimals": option.token.decimals,
                "amount": str(option.amount),
                "amount_display": format(display, "f"),
            }
        )
    return list(grouped.values())


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
    # The related rows carry large columns no transaction view shows (a contract's ABI, a provider's config,
    # a user's password hash): leave them in the database.
    return (
        PaymentTransaction.objects.select_related("token", "network", "contract", "provider", "plan", "user")
        .defer(
            "contract__abi",
            "contract__webhook_secret",
            "contract__previous_webhook_secret",
            "contract__fallback_rpc",
            "provider__config",
            "user__password",
            "checkout_payload",
        )
        .order_by("-created_at", "-id")
    )


def transaction_history_for_user(*, user) -> QuerySet[PaymentTransaction]:
    return transaction_queryset().filter(user=user)


def transaction_last_for_user(*, user) -> PaymentTransaction | None:
    return transaction_history_for_user(user=user).first()


def subscription_current(*, user) -> Subscription | None:
    """The live (active or past due) subscription; at most one exists per user (a DB constraint). Its active
    periods, in time order, are on `active_periods` (see `subscription_paid_until`, `subscription_queued`)."""
    return (
        Subscription.objects.select_related("plan__price_token__network", "debt_token", "pending_plan")
        .prefetch_related(
            Prefetch(
                "periods",
                queryset=SubscriptionPeriod.objects.filter(status=PeriodStatus.ACTIVE)
                .select_related("plan")
                .annotate(transaction_public_id=F("transaction__public_id"))
                .order_by("starts_at", "id"),
                to_attr="active_periods",
            )
        )
        .filter(user=user, status__in=LIVE_SUBSCRIPTION_STATUSES)
        .first()
    )


def _active_periods(sub: Subscription) -> list[SubscriptionPeriod]:
    periods = getattr(sub, "active_periods", None)
    if periods is None:
        periods = list(
            sub.periods.filter(status=PeriodStatus.ACTIVE)
            .select_related("plan")
            .annotate(transaction_public_id=F("transaction__public_id"))
            .order_by("starts_at", "id")
        )
    return periods


def subscription_paid_until(sub: Subscription) -> datetime | None:
    """The end of all paid time, queued periods included."""
    return max((p.ends_at for p in _active_periods(sub)), default=None)


def subscription_queued(sub: Subscription, *, now: datetime | None = None) -> list[SubscriptionPeriod]:
    """Paid periods that start after now, in the order they will be in force."""
    now = now or timezone.now()
    return [p for p in _active_periods(sub) if p.starts_at > now]


def contract_events(*, contract: PaymentContract) -> QuerySet[ChainEvent]:
    return ChainEvent.objects.filter(contract=contract).select_related("contract__network", "transaction")


def outbox_deliveries() -> QuerySet[OutboxDelivery]:
    return OutboxDelivery.objects.select_related("event")


# --- console reads (billing/console) ---------------------------------------------------------------


def transaction_search(
    *,
    status: str = "",
    provider: str = "",
    contract: str = "",
    network: str = "",
    token: str = "",
    created_from=None,
    created_to=None,
    amount_min: int | None = None,
    amount_max: int | None = None,
    wallet: str = "",
    tx_hash: str = "",
) -> QuerySet[PaymentTransaction]:
    """The console's transaction filters, each an equality or a range an index serves (exact hashes and
    addresses, slugs resolved to ids first), ordered newest first like every ledger list."""
    qs = transaction_queryset()
    if status:
        qs = qs.filter(status=status)
    if provider:
        qs = qs.filter(provider_id__in=PaymentProvider.objects.filter(slug=provider).values("pk"))
    if contract:
        qs = qs.filter(contract_id__in=PaymentContract.objects.filter(slug=contract).values("pk"))
    if network:
        qs = qs.filter(network_id__in=Network.objects.filter(slug=network).values("pk"))
    if token:
        qs = qs.filter(token_id__in=list(Token.objects.filter(symbol=token).values_list("pk", flat=True)))
    if created_from is not None:
        qs = qs.filter(created_at__gte=created_from)
    if created_to is not None:
        qs = qs.filter(created_at__lt=created_to)
    if amount_min is not None:
        qs = qs.filter(amount__gte=amount_min)
    if amount_max is not None:
        qs = qs.filter(amount__lte=amount_max)
    if wallet:
        qs = qs.filter(payer_address=wallet)
    if tx_hash:
        qs = qs.filter(tx_hash__in=sorted({tx_hash, tx_hash.lower()}))
    return qs


def transaction_page(qs: QuerySet[PaymentTransaction], limit: int) -> list[PaymentTransaction]:
    """The first `limit` rows of a ledger list (`qs`: transaction_search() with its order and keyset filter),
    with the related rows a list shows attached: user, token and network joined; contract, provider and plan
    read by primary key, each table once.

    With all six joins of transaction_queryset() PostgreSQL spent 20-60 ms planning a page (the join orders
    times the ledger's indexes on each foreign key) and about 1 ms running it; with three it plans in about
    1 ms (EXPLAIN (ANALYZE, SUMMARY) at 1,000,000 payments, docs/performance.md, Console)."""
    rows = list(qs.select_related(None).select_related("user", "token", "network")[:limit])
    apart = {
        "contract": PaymentContract.objects.defer("abi", "webhook_secret", "previous_webhook_secret", "fallback_rpc"),
        "provider": PaymentProvider.objects.defer("config"),
        "plan": Plan.objects.all(),
    }
    for name, related in apart.items():
        field = PaymentTransaction._meta.get_field(name)
        ids = {getattr(row, field.attname) for row in rows} - {None}
        found = related.order_by().in_bulk(ids) if ids else {}
        for row in rows:
            pk = getattr(row, field.attname)
            field.set_cached_value(row, found.get(pk) if pk is not None else None)
    return rows


def transaction_detail(*, public_id) -> PaymentTransaction | None:
    return (
        transaction_queryset()
        .prefetch_related("status_history", "operator_transactions")
        .filter(public_id=public_id)
        .first()
    )


def transaction_chain_events(*, tx: PaymentTransaction) -> QuerySet[ChainEvent]:
    return (
        ChainEvent.objects.filter(transaction=tx)
        .select_related("contract__network")
        .order_by("block_number", "log_index")
    )


def contract_cards() -> QuerySet[PaymentContract]:
    return (
        PaymentContract.objects.select_related("network", "cursor")
        .defer("abi", "webhook_secret", "previous_webhook_secret")
        .order_by("slug")
    )


def inbound_events_unprocessed(*, limit: int = 50) -> list[InboundEvent]:
    """Deliveries that did not apply (failed, or still waiting), newest first."""
    return list(
        InboundEvent.objects.select_related("contract")
        .defer("raw_body", "contract__abi", "contract__webhook_secret", "contract__previous_webhook_secret")
        .exclude(status__in=[InboundEvent.Status.PROCESSED, InboundEvent.Status.IGNORED])
        .order_by("-received_at", "-id")[:limit]
    )


def outbox_dead_letters(*, limit: int = 50) -> list[OutboxDelivery]:
    return list(outbox_deliveries().filter(status=OutboxDelivery.Status.DEAD).order_by("-created_at", "-id")[:limit])


def operator_transactions_recent(*, kind: str = "", limit: int = 20) -> list[OperatorTransaction]:
    qs = OperatorTransaction.objects.select_related("network").order_by("-created_at", "-id")
    if kind:
        qs = qs.filter(kind=kind)
    return list(qs[:limit])


# --- analytics (the overview app reads billing through these) -------------------------------------------
# Base querysets without joins: the overview aggregates them in SQL (docs/overview.md). Enums are re-exported
# so the overview never imports billing.models.

TX_STATUS = TxStatus
SUBSCRIPTION_STATUS = SubscriptionStatus
OPERATOR_TX_KIND = OperatorTransaction.Kind
OPERATOR_TX_STATUS = OperatorTransaction.Status
OUTBOX_STATUS = OutboxDelivery.Status


def analytics_payments() -> QuerySet[PaymentTransaction]:
    return PaymentTransaction.objects.order_by()


def analytics_revenue_rollup() -> QuerySet[RevenueRollup]:
    """The daily revenue rollup (billing.models.rollup): a key may span a few rows, so always sum them."""
    return RevenueRollup.objects.order_by()


def analytics_status_changes() -> QuerySet[TransactionStatusChange]:
    return TransactionStatusChange.objects.order_by()


def analytics_subscriptions() -> QuerySet[Subscription]:
    return Subscription.objects.order_by()


def analytics_operator_transactions() -> QuerySet[OperatorTransaction]:
    return OperatorTransaction.objects.order_by()


def analytics_chain_events() -> QuerySet[ChainEvent]:
    return ChainEvent.objects.order_by()


def analytics_networks() -> list[Network]:
    return list(Network.objects.order_by("slug"))


def analytics_tokens() -> list[Token]:
    return list(Token.objects.select_related("network").order_by("network__slug", "symbol"))


def analytics_plans() -> list[Plan]:
    return list(Plan.objects.order_by("sort_order", "tier", "slug"))


def analytics_contracts() -> list[PaymentContract]:
    """Contracts with their network and follower cursor (no ABI or secrets loaded)."""
    return list(
        PaymentContract.objects.select_related("network", "cursor")
        .defer("abi", "webhook_secret", "previous_webhook_secret", "fallback_rpc")
        .order_by("slug")
    )


def rpc_endpoints_health() -> list[dict]:
    """Every RPC endpoint's health as the chain client last recorded it; URLs and errors masked."""
    from billing_project.logging import mask_url

    return [
        {
            "id": e.pk,
            "network_id": e.network_id,
            "position": e.position,
            "url": e.masked_url,
            "enabled": e.enabled,
            "healthy": e.healthy,
            "last_checked_at": e.last_checked_at,
            "last_ok_at": e.last_ok_at,
            "last_latency_ms": e.last_latency_ms,
            "last_head_block": e.last_head_block,
            "consecutive_failures": e.consecutive_failures,
            "last_error": mask_url(e.last_error) if e.last_error else "",
        }
        for e in RpcEndpoint.objects.order_by("network_id", "position", "id")
    ]


def dead_letters() -> QuerySet[OutboxDelivery]:
    return OutboxDelivery.objects.filter(status=OutboxDelivery.Status.DEAD).select_related("event")


def contract_balances_read(*, contract: PaymentContract, tokens: list[Token], timeout: float) -> dict[int, int]:
    """The contract's balance of each token, read from the chain now (eth_getBalance / ERC-20 balanceOf).
    Raises when the network cannot be reached; a token whose contract answers nothing maps to an error."""
    from billing.chain.balances import read_balances

    return read_balances(network=contract.network, holder=contract.address, tokens=tokens, timeout=timeout)


def user_can_read_overview(user) -> bool:
    """support or billing_admin (billing/roles.py)."""
    from billing.roles import is_support

    return is_support(user)


def analytics_plans_queryset() -> QuerySet[Plan]:
    return Plan.objects.order_by()


def analytics_tokens_queryset() -> QuerySet[Token]:
    return Token.objects.order_by()


def rpc_endpoints_for_readiness() -> dict[str, list[RpcEndpoint]]:
    """Enabled networks (by slug) with their enabled endpoints by position: what /readyz judges."""
    networks = Network.objects.filter(enabled=True).prefetch_related(
        Prefetch(
            "rpc_endpoints",
            queryset=RpcEndpoint.objects.filter(enabled=True)
            .order_by("position", "id")
            .only("id", "network_id", "position", "healthy", "consecutive_failures"),
        )
    )
    return {n.slug: list(n.rpc_endpoints.all()) for n in networks.order_by("slug")}


# --- scrape-time gauges (billing.metrics_db.DatabaseCollector) ---------------------------------------------

METRICS_STATEMENT_TIMEOUT_MS = 2000
METRICS_OPEN_STATUSES = (TxStatus.PENDING, TxStatus.SUBMITTED, TxStatus.NEEDS_REVIEW, TxStatus.UNMATCHED)
METRICS_OPERATOR_STATES = (
    OperatorTransaction.Status.NEW,
    OperatorTransaction.Status.PENDING,
    OperatorTransaction.Status.REVERTED,
    OperatorTransaction.Status.FAILED,
    OperatorTransaction.Status.STUCK,  # at the gas cap: still out there, counted apart from pending
)


def _age(now: datetime, since: datetime | None) -> float:
    return max((now - since).total_seconds(), 0.0) if since else 0.0


def _earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None or (b is not None and b < a) else a


def metrics_snapshot() -> dict:
    """Everything the scrape-time gauges show, in ten small statements inside one read-only transaction
    with a statement timeout. Each one filters on an indexed status (open payments, live subscriptions,
    undelivered outbox rows, unprocessed webhooks, unmined operator transactions) or reads a table of
    configuration size (cursors, endpoints, networks); none scans the ledger. Every known status/kind gets
    a series, zeros included, so alert expressions never see a series appear out of nothing."""
    from django.db import connection, transaction

    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('statement_timeout'), set_config('statement_timeout', %s, true)",
            [str(METRICS_STATEMENT_TIMEOUT_MS)],
        )
        previous_timeout = cursor.fetchone()[0]
        # Grouped by id (index-only scans), named afterwards from the small catalog tables.
        network_slugs = dict(Network.objects.values_list("id", "slug"))
        snapshot = {
            "subscriptions": _metrics_subscriptions(),
            **_metrics_open_transactions(now, network_slugs),
            **_metrics_outbox(now),
            **_metrics_inbound(now),
            **_metrics_operator_txs(now),
            "cursors": _metrics_cursors(now),
            "endpoints": _metrics_endpoints(),
        }
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous_timeout])
    return snapshot


def _metrics_subscriptions() -> list[tuple[str, str, int]]:
    """Live subscriptions by plan slug and status."""
    from django.db.models import Count

    plan_slugs = dict(Plan.objects.values_list("id", "slug"))
    return sorted(
        (plan_slugs.get(plan_id, str(plan_id)), status, count)
        for plan_id, status, count in Subscription.objects.filter(status__in=LIVE_SUBSCRIPTION_STATUSES)
        .values_list("plan_id", "status")
        .annotate(n=Count("*"))
        .order_by()
    )


def _metrics_open_transactions(now: datetime, network_slugs: dict[int, str]) -> dict:
    """Open payments by status and network, and how long the oldest of each status has waited."""
    from django.db.models import Count, Min

    counts = {(s, n): 0 for s in METRICS_OPEN_STATUSES for n in sorted(network_slugs.values())}
    oldest: dict[str, datetime | None] = dict.fromkeys(METRICS_OPEN_STATUSES)
    for status, network_id, count, created, submitted, updated in (
        PaymentTransaction.objects.filter(status__in=METRICS_OPEN_STATUSES)
        .values_list("status", "network_id")
        .annotate(n=Count("*"), created=Min("created_at"), submitted=Min("submitted_at"), updated=Min("updated_at"))
        .order_by()
    ):
        counts[(status, network_slugs.get(network_id, str(network_id)))] = count
        since = {TxStatus.PENDING: created, TxStatus.SUBMITTED: submitted or created}.get(status, updated)
        oldest[status] = _earlier(oldest[status], since)
    return {
        "open_transactions": [(s, n, c) for (s, n), c in sorted(counts.items())],
        "oldest_transactions": [(s, _age(now, oldest[s])) for s in METRICS_OPEN_STATUSES],
    }


def _metrics_outbox(now: datetime) -> dict:
    """Pending and dead deliveries per configured subscriber, and the oldest pending one's due time."""
    from django.conf import settings
    from django.db.models import Count, Min

    subscribers = {name for topic in settings.BILLING_OUTBOX_INTERNAL_SUBSCRIBERS.values() for name in topic}
    subscribers |= {s.get("name", "") for s in settings.BILLING_EXTERNAL_SUBSCRIBERS if s.get("name")}
    outbox = {(status, name): 0 for status in ("pending", "dead") for name in subscribers}
    oldest_due: datetime | None = None
    for status, subscriber, count, due in (
        OutboxDelivery.objects.filter(status__in=[OutboxDelivery.Status.PENDING, OutboxDelivery.Status.DEAD])
        .values_list("status", "subscriber")
        .annotate(n=Count("id"), due=Min("next_attempt_at"))
        .order_by()
    ):
        outbox[(status, subscriber)] = count
        if status == OutboxDelivery.Status.PENDING:
            oldest_due = _earlier(oldest_due, due)
    return {"outbox": [(s, n, c) for (s, n), c in sorted(outbox.items())], "outbox_oldest_due": _age(now, oldest_due)}


def _metrics_inbound(now: datetime) -> dict:
    """Webhook deliveries not yet processed, per contract, and the oldest one's due time."""
    from django.db.models import Count, Min
    from django.db.models.functions import Coalesce

    contracts = list(PaymentContract.objects.order_by("slug").values_list("slug", flat=True))
    inbound = dict.fromkeys(contracts, 0)
    oldest_due: datetime | None = None
    for slug, count, due in (
        InboundEvent.objects.filter(status=InboundEvent.Status.RECEIVED)
        .values_list("contract__slug")
        .annotate(n=Count("id"), due=Min(Coalesce("next_attempt_at", "received_at")))
        .order_by()
    ):
        inbound[slug] = count
        oldest_due = _earlier(oldest_due, due)
    return {"inbound_backlog": sorted(inbound.items()), "inbound_oldest_due": _age(now, oldest_due)}


def _metrics_operator_txs(now: datetime) -> dict:
    """Unsettled operator transactions by kind and state, and how long the oldest pending one has waited."""
    from django.db.models import Count, Min
    from django.db.models.functions import Coalesce

    operator = {(k, s): 0 for k in OperatorTransaction.Kind.values for s in METRICS_OPERATOR_STATES}
    oldest_pending: datetime | None = None
    for kind, status, count, sent in (
        OperatorTransaction.objects.filter(status__in=METRICS_OPERATOR_STATES)
        .values_list("kind", "status")
        .annotate(n=Count("id"), sent=Min(Coalesce("last_sent_at", "created_at")))
        .order_by()
    ):
        operator[(kind, status)] = count
        if status == OperatorTransaction.Status.PENDING:
            oldest_pending = _earlier(oldest_pending, sent)
    return {
        "operator_txs": [(k, s, c) for (k, s), c in sorted(operator.items())],
        "operator_oldest_pending": _age(now, oldest_pending),
    }


def _metrics_cursors(now: datetime) -> list[dict]:
    """Each chain follower's cursor: how far it has read, when it last ran, whether it is failing."""
    from django.db.models import BooleanField, ExpressionWrapper, Q

    from billing.models import ChainCursor

    return [
        {
            "contract": slug,
            "last_block": last_block,
            "age": _age(now, run_at) if run_at else None,
            "failing": failing,
        }
        for slug, last_block, run_at, failing in ChainCursor.objects.annotate(
            failing=ExpressionWrapper(~Q(last_error=""), output_field=BooleanField())
        )
        .values_list("contract__slug", "last_block", "last_run_at", "failing")
        .order_by("contract__slug")
    ]


def _metrics_endpoints() -> list[dict]:
    """The health of the enabled RPC endpoints of enabled networks."""
    return [
        {"network": network, "endpoint": str(pk), "healthy": healthy}
        for network, pk, healthy in RpcEndpoint.objects.filter(enabled=True, network__enabled=True)
        .values_list("network__slug", "pk", "healthy")
        .order_by("network__slug", "position", "pk")
    ]


def subscriptions_renewal_due(*, now: datetime, within) -> list[dict]:
    """Active subscriptions that end within `within` with nothing paid after that (no queued period) and
    not canceled: the payers to remind. Uses the (status, current_period_end) index."""
    from django.db.models import Exists, OuterRef

    queued = SubscriptionPeriod.objects.filter(
        subscription=OuterRef("pk"), status=PeriodStatus.ACTIVE, starts_at__gte=OuterRef("current_period_end")
    )
    rows = (
        Subscription.objects.filter(
            status=SubscriptionStatus.ACTIVE,
            cancel_at_period_end=False,
            current_period_end__gt=now,
            current_period_end__lte=now + within,
        )
        .exclude(Exists(queued))
        .select_related("plan__price_token")
        .order_by("current_period_end")
    )
    return [
        {
            "subscription_id": sub.pk,
            "user_id": sub.user_id,
            "plan": sub.plan.slug,
            "plan_title": sub.plan.title,
            "period_end": sub.current_period_end,
            "price_amount": sub.plan.price_amount,
            "price_token": sub.plan.price_token.symbol,
            "price_decimals": sub.plan.price_token.decimals,
        }
        for sub in rows
    ]
