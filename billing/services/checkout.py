"""Checkout: validate the request at the edge, ask the plan's provider adapter for what the wallet signs, and
write a `pending` ledger row (order id, expiry, USD rate, payload) with its first status-history row. One
transaction, and nothing is written when the adapter cannot build the payload.

The request path touches the database only to write: the plan with its payment options (tokens, contracts,
fallback order) comes from a per-process cache (`BILLING_CHECKOUT_CATALOG_CACHE_SECONDS`, 5 s by default) and
the networks' RPC health from another (`BILLING_CHECKOUT_HEALTH_CACHE_SECONDS`, 2 s); both are dropped at once
in the process that saves a catalog row (signals, billing/apps.py), so an operator's change shows at the next
checkout there and within seconds everywhere else. No RPC call: health is what the RPC client and the probes
recorded. The ledger row (with its payload), its history row and the idempotency key's row are written by ONE
statement (`checkout_write`), without an audit-log row (the history row records who created it and why)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import structlog
from django.conf import settings
from django.utils import timezone
from eth_utils import is_address

from billing.adapters.base import CheckoutPayload, CheckoutRequest
from billing.adapters.registry import get_adapter
from billing.amounts import AmountOverflow
from billing.chain.abi import checksum as to_checksum_address
from billing.fields import UINT256_MAX
from billing.models import CryptoConfig, PaymentTransaction, Plan, TransactionStatusChange, TxStatus
from billing.selectors import PaymentOption, network_is_healthy, plan_payment_options
from billing.services.ledger import transaction_count_on_commit
from billing_project.errors import ServiceError
from profiles.selectors import wallet_is_verified_for_user, wallet_is_verified_sql

log = structlog.get_logger(__name__)


class CheckoutError(ServiceError):
    """A checkout request refused (code, message, HTTP status, field)."""


# --- per-process caches of the request path -------------------------------------------------------------


@dataclass(frozen=True)
class _PlanEntry:
    plan: Plan
    options: tuple[PaymentOption, ...]
    fallback_rank: dict[int, int]  # network pk -> position in the configured fallback order
    loaded_at: float


_PLANS: dict[str, _PlanEntry] = {}
_HEALTH: dict[int, tuple[bool, float]] = {}


def checkout_caches_forget(**_kwargs) -> None:
    """Drop this process's cached plans and health (receiver of catalog saves and deletes)."""
    _PLANS.clear()
    _HEALTH.clear()


def _plan_entry(slug: str) -> _PlanEntry | None:
    now = time.monotonic()
    entry = _PLANS.get(slug)
    if entry is not None and now - entry.loaded_at < settings.BILLING_CHECKOUT_CATALOG_CACHE_SECONDS:
        return entry
    plan = (
        Plan.objects.select_related("price_token__network", "provider", "contract__network").filter(slug=slug).first()
    )
    if plan is None:
        _PLANS.pop(slug, None)  # unknown slugs are not cached: the cache stays as small as the catalog
        return None
    entry = _PlanEntry(
        plan=plan,
        options=tuple(plan_payment_options(plan)),
        fallback_rank={n.pk: i for i, n in enumerate(CryptoConfig.load().fallback_order())},
        loaded_at=now,
    )
    _PLANS[slug] = entry
    return entry


def _healthy(network) -> bool:
    """network_is_healthy (an enabled endpoint the RPC client last found healthy), cached per process for
    BILLING_CHECKOUT_HEALTH_CACHE_SECONDS: no query, and no RPC call, on the request path."""
    now = time.monotonic()
    cached = _HEALTH.get(network.pk)
    if cached is not None and now - cached[1] < settings.BILLING_CHECKOUT_HEALTH_CACHE_SECONDS:
        return cached[0]
    healthy = network_is_healthy(network)
    _HEALTH[network.pk] = (healthy, now)
    return healthy


def _choose_option(
    options: tuple[PaymentOption, ...] | list[PaymentOption],
    network_slug: str | None,
    token_symbol: str | None,
    fallback_rank: dict[int, int],
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
    if _healthy(preferred.network):
        return preferred, None
    # Fallback: the next network in the configured order that the plan supports and that answers.
    ranked = sorted((o for o in candidates if o is not preferred), key=lambda o: fallback_rank.get(o.network.pk, 10**6))
    for option in ranked:
        if _healthy(option.network):
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
    kind = type(value)  # the common exact types first (a checkout's payload is ~100 values); subclasses below
    if kind is str or kind is bool or value is None:
        return value
    if kind is dict:
        return {k: _jsonable(v) for k, v in value.items()}
    if kind is int:
        return str(value)  # amounts and values exceed 2^53: strings in JSON
    if kind is list or kind is tuple:
        return [_jsonable(v) for v in value]
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


def checkout_payer_check_sql(*, user, wallet) -> tuple[str, list] | None:
    """The payer check of `checkout_prepare` (BILLING_REQUIRE_VERIFIED_PAYER) as an SQL expression a caller can
    read in a statement it sends anyway, for the wallet of the request's body; None when there is nothing to read."""
    if not settings.BILLING_REQUIRE_VERIFIED_PAYER or not isinstance(wallet, str) or not is_address(wallet):
        return None  # not an address: the request's validation refuses it (nothing unchecked reaches SQL)
    return wallet_is_verified_sql(user_id=user.pk, address=wallet)


def _payer_verified(user, payer: str, already: tuple[str, bool] | None) -> bool:
    if already is not None and isinstance(already[0], str) and already[0].lower() == payer.lower():
        return bool(already[1])
    return wallet_is_verified_for_user(user=user, address=payer)


def checkout_prepare(
    *,
    user,
    plan_slug: str,
    payer_address: str,
    network_slug: str | None = None,
    token_symbol: str | None = None,
    periods: int = 1,
    now: datetime | None = None,
    payer_verified: tuple[str, bool] | None = None,
) -> PreparedCheckout:
    """Validate, choose the network, sign: everything of a checkout but the write (`checkout_write`).

    The returned rows are complete in memory (times included) and the ledger row carries its plan, network,
    contract and token, so the answer can be rendered before the write and stored with it, at no query."""
    from billing.chain.quote import new_order_id

    now = now or timezone.now()
    entry = _plan_entry(plan_slug)
    if entry is None:
        raise CheckoutError("plan_not_found", f"No plan '{plan_slug}'.", field="plan", status=404)
    plan = entry.plan
    if not plan.is_active:
        raise CheckoutError("plan_inactive", f"The plan '{plan_slug}' is not on sale.", field="plan")
    if not plan.provider.enabled:
        raise CheckoutError("provider_disabled", "The plan's payment provider is disabled.", field="plan")
    if not isinstance(payer_address, str) or not is_address(payer_address):
        raise CheckoutError("invalid_wallet", "The wallet is not an EVM address.", field="wallet")
    digits = payer_address[2:]
    if digits not in (digits.lower(), digits.upper()) and to_checksum_address(payer_address) != payer_address:
        # eth_utils 6 no longer checks EIP-55 in is_address: mixed case that fails it is a typo.
        raise CheckoutError("invalid_wallet", "The wallet's EIP-55 checksum does not match.", field="wallet")
    payer = to_checksum_address(payer_address)
    if settings.BILLING_REQUIRE_VERIFIED_PAYER and not _payer_verified(user, payer, payer_verified):
        # Otherwise a "pay this link" phish gives the plan to the link's creator while the victim pays.
        raise CheckoutError(
            "payer_not_verified",
            "The wallet is not one of your verified wallets: link it by signing in with it "
            "(/v1/profile/wallets/siwe/nonce, then /v1/profile/wallets/siwe/verify) and try again.",
            field="wallet",
            status=409,
        )
    if not 1 <= periods <= 36:
        raise CheckoutError("invalid_periods", "Periods must be between 1 and 36.", field="periods")

    option, fallback = _choose_option(entry.options, network_slug, token_symbol, entry.fallback_rank)
    amount = option.amount * periods
    if amount > UINT256_MAX:
        raise AmountOverflow(f"{periods} periods of {option.amount} do not fit a uint256.", field="periods")
    expires_at = now + settings.BILLING_CHECKOUT_TTL
    order_id = new_order_id()
    adapter = get_adapter(plan.provider.type)
    try:
        payload = adapter.checkout(
            CheckoutRequest(
                order_id=order_id,
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
    tx = PaymentTransaction(
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
        order_id=order_id,
        payer_address=payer,
        usd_rate_at_checkout=option.token.usd_estimate,
        expires_at=expires_at,
        checkout_payload=data,
    )
    history = TransactionStatusChange(from_status="", to_status=tx.status, actor=f"user:{user.pk}", reason="checkout")
    sql, params = _insert_sql(tx)  # sets created_at/updated_at as the INSERT will write them
    history.created_at = tx.created_at
    return PreparedCheckout(tx=tx, history=history, insert_sql=sql, insert_params=params)


@dataclass
class PreparedCheckout:
    tx: PaymentTransaction
    history: TransactionStatusChange
    insert_sql: str
    insert_params: list


_INSERT_FIELDS: dict[tuple[type, str], tuple[str, list]] = {}


def _insert_sql(obj) -> tuple[str, list]:
    """Django's own INSERT of one row (as bulk_create writes it: no primary key, auto_now fields set now).

    The SQL text of a model's INSERT is the same every time: Django's compiler writes it once per model and
    process; the parameters are then what that compiler takes for them (each field's `pre_save` and
    `get_db_prep_save`). A value that is an expression, or a field with its own placeholder, goes through the
    compiler every time."""
    from django.db import connection
    from django.db.models import AutoField
    from django.db.models.sql import InsertQuery

    cached = _INSERT_FIELDS.get((type(obj), connection.alias))
    if cached is not None:
        sql, fields = cached
        values = [f.pre_save(obj, True) for f in fields]
        if not any(hasattr(v, "resolve_expression") for v in values):
            return sql, [f.get_db_prep_save(v, connection=connection) for f, v in zip(fields, values, strict=True)]
    fields = [f for f in obj._meta.local_concrete_fields if not isinstance(f, AutoField)]
    query = InsertQuery(type(obj))
    query.insert_values(fields, [obj])
    ((sql, params),) = query.get_compiler(connection=connection).as_sql()
    if not any(hasattr(f, "get_placeholder") for f in fields) and len(params) == len(fields):
        _INSERT_FIELDS[(type(obj), connection.alias)] = (sql, fields)
    return sql, list(params)


_HISTORY_SQL = (
    'INSERT INTO "billing_transactionstatuschange" '
    "(transaction_id, from_status, to_status, actor, reason, details, created_at) "
    "SELECT id, %s, %s, %s, %s, '{}'::jsonb, %s FROM tx RETURNING id"
)


def checkout_write(
    prepared: PreparedCheckout, *, also_sql: str = "", also_params=(), tail: str = "", tail_params=()
) -> int:
    """Write a prepared checkout in ONE statement (autocommit: its own transaction): the ledger row with its
    payload, its first history row and, from the caller, more rows that reference it (`also_sql`: a CTE body
    reading `tx.id`, e.g. the idempotency key's row) and extra result columns (`tail`, e.g. releasing the key's
    lock). All or nothing: a failing part (a unique violation) fails the statement. No audit-log row: the history
    row records who created the checkout and why. Returns the ledger row's id."""
    from django.db import connection

    tx, history = prepared.tx, prepared.history
    sql = f"WITH tx AS ({prepared.insert_sql} RETURNING id), h AS ({_HISTORY_SQL})"
    params = [*prepared.insert_params, history.from_status, history.to_status, history.actor, history.reason]
    params.append(history.created_at)
    if also_sql:
        sql += f", k AS ({also_sql})"
        params += list(also_params)
    # The SQL text is constants of this code base; every value is a parameter.
    sql += f" SELECT tx.id, h.id{', ' + tail if tail else ''} FROM tx, h"  # noqa: S608
    params += list(tail_params)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        tx_id, history_id = cursor.fetchone()[:2]
    tx.pk, history.pk = tx_id, history_id
    history.transaction = tx
    tx._state.adding = history._state.adding = False
    tx._state.db = history._state.db = connection.alias
    transaction_count_on_commit(tx, tx.status, confirmed=False)  # billing_transactions_total{status="pending"}
    log.info(
        "checkout.created",
        transaction_id=tx.pk,
        user_id=tx.user_id,
        contract_slug=tx.contract.slug,
        plan=tx.plan.slug,
        network=tx.network.slug,
        token=tx.token.symbol,
    )
    return tx_id
