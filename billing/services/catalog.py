"""Catalog writes (plans, providers, contracts, networks and their RPC endpoints, tokens, crypto config and
its fallback networks).

Every write validates through the model (`full_clean`, plus `PaymentProvider.validate_links` for the
many-to-many rules), saves row by row (django-auditlog records `save()`, not `QuerySet.update`), and
rebuilds the derived provider `config` of every provider the change touches. Errors are Django
`ValidationError`s keyed by model field name; the API layer renames them to its field names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from billing.models import (
    CryptoConfig,
    Network,
    NetworkFallback,
    PaymentContract,
    PaymentProvider,
    Plan,
    RpcEndpoint,
    Token,
)

# RpcEndpoint positions are unique per network; renumbering goes through a parking range first.
_PARKING_OFFSET = 30000


def _assign(instance, data: dict[str, Any]) -> None:
    for name, value in data.items():
        setattr(instance, name, value)


def _row_write(instance, data: dict[str, Any]):
    """Assign, validate through the model (`full_clean`), save (row by row: django-auditlog records it)."""
    _assign(instance, data)
    instance.full_clean()
    instance.save()
    return instance


def providers_rebuild_config(*, providers: Iterable[PaymentProvider]) -> None:
    for provider in providers:
        config = provider.build_config()
        if config != provider.config:
            provider.config = config
            provider.save(update_fields=["config", "updated_at"])


def _providers_touching(*, network_ids: Iterable[int] = (), token_ids: Iterable[int] = (), contract_id=None):
    q = (
        Q(networks__in=list(network_ids))
        | Q(supported_tokens__in=list(token_ids))
        | Q(default_network__in=list(network_ids))
    )
    if contract_id is not None:
        q |= Q(contract_id=contract_id)
    return PaymentProvider.objects.filter(q).distinct()


# --- plans -----------------------------------------------------------------------------------------


@transaction.atomic
def plan_create(*, data: dict[str, Any]) -> Plan:
    return _row_write(Plan(), data)


@transaction.atomic
def plan_update(*, plan: Plan, data: dict[str, Any]) -> Plan:
    return _row_write(Plan.objects.select_for_update().get(pk=plan.pk), data)


REMOVE_LIMIT = object()  # a matrix cell emptied: the plan no longer has this quota key


@transaction.atomic
def plans_limits_update(
    *, changes: dict[str, dict[str, int | None | object]], expected_updated_at: dict[str, Any] | None = None
) -> list[Plan]:
    """Set limits of several plans at once (the console's limits matrix): one transaction, all or nothing.

    `changes`: plan slug -> {quota key -> whole number >= 0, None (unlimited) or REMOVE_LIMIT (drop the key)}.
    Each plan is locked, validated (`full_clean`) and saved once, so django-auditlog writes one entry per plan
    whose limits changed; a plan whose limits come out the same is not saved. `expected_updated_at` (slug ->
    the `updated_at` the editor read) refuses the whole save when a plan changed meanwhile. Errors are one
    ValidationError keyed by plan slug."""
    plans = {p.slug: p for p in Plan.objects.select_for_update().filter(slug__in=list(changes)).order_by("pk")}
    errors: dict[str, list[str]] = {}
    for slug in changes:
        if slug not in plans:
            errors[slug] = [f"No plan {slug}."]
    for slug, expected in (expected_updated_at or {}).items():
        plan = plans.get(slug)
        if plan is not None and expected is not None and plan.updated_at != expected:
            errors.setdefault(slug, []).append("Changed by someone else since you opened the matrix; reload.")
    if errors:
        raise ValidationError(errors)
    saved = []
    for slug, cells in changes.items():
        plan = plans[slug]
        limits = dict(plan.limits or {})
        for key, value in cells.items():
            if value is REMOVE_LIMIT:
                limits.pop(key, None)
            else:
                limits[key] = value
        if limits == (plan.limits or {}):
            continue
        plan.limits = limits
        try:
            plan.full_clean()
        except ValidationError as exc:
            errors[slug] = exc.messages
            continue
        plan.save()
        saved.append(plan)
    if errors:
        raise ValidationError(errors)  # the transaction rolls back the plans already saved
    return saved


# --- providers -------------------------------------------------------------------------------------


def _provider_write(
    provider: PaymentProvider,
    data: dict[str, Any],
    networks: list[Network] | None,
    supported_tokens: list[Token] | None,
) -> PaymentProvider:
    _assign(provider, data)
    if networks is None:
        networks = list(provider.networks.all()) if provider.pk else []
    if supported_tokens is None:
        supported_tokens = list(provider.supported_tokens.all()) if provider.pk else []
    errors: dict[str, list[str]] = {}
    try:
        provider.full_clean(exclude=["config"])
    except ValidationError as exc:
        errors.update(exc.message_dict)
    try:
        provider.validate_links(networks, supported_tokens, provider.default_network)
    except ValidationError as exc:
        for key, messages in exc.message_dict.items():
            errors.setdefault(key, []).extend(messages)
    if provider.pk:
        # A plan sold through this provider must stay payable: its token's network must remain listed.
        network_ids = {n.pk for n in networks}
        stranded = [
            p.slug for p in provider.plans.select_related("price_token") if p.price_token.network_id not in network_ids
        ]
        if stranded:
            errors.setdefault("networks", []).append(
                f"Plans {', '.join(sorted(stranded))} are priced in a token on a network this would drop."
            )
        # Payments made through this provider name their network: dropping it would orphan that history
        # (refunds and reprocessing look the provider's network up).
        dropped = [n for n in provider.networks.all() if n.pk not in network_ids]
        paid_on = [n.slug for n in dropped if provider.transactions.filter(network=n).exists()]
        if paid_on:
            errors.setdefault("networks", []).append(
                f"Payments were made through this provider on {', '.join(sorted(paid_on))}; "
                "its networks cannot drop them."
            )
    if errors:
        raise ValidationError(errors)
    provider.save()
    provider.networks.set(networks)
    provider.supported_tokens.set(supported_tokens)
    providers_rebuild_config(providers=[provider])
    return provider


@transaction.atomic
def provider_create(
    *, data: dict[str, Any], networks: list[Network] | None = None, supported_tokens: list[Token] | None = None
) -> PaymentProvider:
    return _provider_write(PaymentProvider(), data, networks or [], supported_tokens or [])


@transaction.atomic
def provider_update(
    *,
    provider: PaymentProvider,
    data: dict[str, Any],
    networks: list[Network] | None = None,
    supported_tokens: list[Token] | None = None,
) -> PaymentProvider:
    provider = PaymentProvider.objects.select_for_update().get(pk=provider.pk)
    return _provider_write(provider, data, networks, supported_tokens)


# --- contracts -------------------------------------------------------------------------------------


def _contract_write(contract: PaymentContract, data: dict[str, Any]) -> PaymentContract:
    data = dict(data)
    new_secret = data.pop("webhook_secret", None)
    _assign(contract, data)
    if new_secret:
        # Keeps the previous secret for the grace period, so in-flight deliveries still verify.
        contract.rotate_webhook_secret(new_secret)
    contract.full_clean()
    contract.save()
    providers_rebuild_config(providers=_providers_touching(contract_id=contract.pk))
    return contract


@transaction.atomic
def contract_create(*, data: dict[str, Any]) -> PaymentContract:
    return _contract_write(PaymentContract(), data)


@transaction.atomic
def contract_update(*, contract: PaymentContract, data: dict[str, Any]) -> PaymentContract:
    contract = PaymentContract.objects.select_for_update().get(pk=contract.pk)
    moving = "network" in data and data["network"].pk != contract.network_id
    if moving and (contract.plans.exists() or contract.transactions.exists()):
        raise ValidationError({"network": "The contract has plans or transactions; its network cannot change."})
    return _contract_write(contract, data)


# --- networks --------------------------------------------------------------------------------------


def _network_set_endpoints(network: Network, endpoints: list[dict[str, Any]]) -> None:
    """Replace the ordered endpoint list. Entries with an `id` update that endpoint (keeping its URL when
    none is given, so a client can send back what it read without knowing the masked key)."""
    existing = {e.pk: e for e in network.rpc_endpoints.all()}
    errors: dict[str, list[str]] = {}
    keep_ids = {item["id"] for item in endpoints if item.get("id")}
    unknown = keep_ids - set(existing)
    if unknown:
        raise ValidationError({"rpc_endpoints": [f"Unknown endpoint id(s) for this network: {sorted(unknown)}."]})
    for endpoint in existing.values():
        if endpoint.pk not in keep_ids:
            endpoint.delete()
    kept = [existing[i] for i in keep_ids]
    for index, endpoint in enumerate(kept):
        endpoint.position = _PARKING_OFFSET + index
        endpoint.save(update_fields=["position"])
    for position, item in enumerate(endpoints):
        endpoint = existing[item["id"]] if item.get("id") else RpcEndpoint(network=network)
        endpoint.position = position
        if item.get("url"):
            endpoint.url = item["url"]
        elif not endpoint.pk:
            errors.setdefault("rpc_endpoints", []).append(f"Endpoint {position}: a new endpoint needs a url.")
            continue
        for name in ("timeout_seconds", "enabled"):
            if name in item:
                setattr(endpoint, name, item[name])
        try:
            endpoint.full_clean(exclude=["network"])
        except ValidationError as exc:
            for key, messages in exc.message_dict.items():
                errors.setdefault("rpc_endpoints", []).extend(f"Endpoint {position} {key}: {m}" for m in messages)
            continue
        endpoint.save()
    if errors:
        raise ValidationError(errors)


def _network_write(network: Network, data: dict[str, Any], endpoints: list[dict[str, Any]] | None) -> Network:
    _row_write(network, data)
    if endpoints is not None:
        _network_set_endpoints(network, endpoints)
    providers_rebuild_config(providers=_providers_touching(network_ids=[network.pk]))
    return network


@transaction.atomic
def network_create(*, data: dict[str, Any], rpc_endpoints: list[dict[str, Any]] | None = None) -> Network:
    return _network_write(Network(), data, rpc_endpoints or [])


@transaction.atomic
def network_update(
    *, network: Network, data: dict[str, Any], rpc_endpoints: list[dict[str, Any]] | None = None
) -> Network:
    network = Network.objects.select_for_update().get(pk=network.pk)
    if "chain_id" in data and data["chain_id"] != network.chain_id and network.contracts.exists():
        # Contracts, transactions and chain events copy the chain id; changing it would split history.
        raise ValidationError({"chain_id": "Contracts are deployed on this network; its chain id cannot change."})
    return _network_write(network, data, rpc_endpoints)


@transaction.atomic
def rpc_endpoint_create(*, data: dict[str, Any]) -> RpcEndpoint:
    """One endpoint added to `data["network"]` (the admin; the API and the console replace a network's whole
    list through `network_update(rpc_endpoints=...)`). Provider configs do not list endpoints: none rebuilt."""
    return _row_write(RpcEndpoint(), data)


@transaction.atomic
def rpc_endpoint_update(*, endpoint: RpcEndpoint, data: dict[str, Any]) -> RpcEndpoint:
    """Change one endpoint (position, URL, timeout, enabled); its health columns are the RPC client's."""
    endpoint = RpcEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    return _row_write(endpoint, data)


# --- tokens ----------------------------------------------------------------------------------------


def _token_write(token: Token, data: dict[str, Any]) -> Token:
    _row_write(token, data)
    providers_rebuild_config(providers=_providers_touching(network_ids=[token.network_id], token_ids=[token.pk]))
    return token


@transaction.atomic
def token_create(*, data: dict[str, Any]) -> Token:
    return _token_write(Token(), data)


@transaction.atomic
def token_update(*, token: Token, data: dict[str, Any]) -> Token:
    token = Token.objects.select_for_update().get(pk=token.pk)
    if "network" in data and data["network"].pk != token.network_id and token.transactions.exists():
        raise ValidationError({"network": "The token has transactions; its network cannot change."})
    return _token_write(token, data)


# --- crypto config ---------------------------------------------------------------------------------


@transaction.atomic
def crypto_config_update(*, data: dict[str, Any], fallback_networks: list[Network] | None = None) -> CryptoConfig:
    config = CryptoConfig.load()
    config = CryptoConfig.objects.select_for_update().get(pk=config.pk)
    _assign(config, data)
    errors: dict[str, list[str]] = {}
    try:
        config.full_clean()
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if config.backoff_max_ms < config.backoff_base_ms:
        errors.setdefault("backoff_max_ms", []).append("Must be at least backoff_base_ms.")
    if config.fee_bump_percent < 10:
        errors.setdefault("fee_bump_percent", []).append("Nodes refuse a replacement below a 10% bump.")
    if fallback_networks is not None and len({n.pk for n in fallback_networks}) != len(fallback_networks):
        errors.setdefault("fallback_networks", []).append("A network appears twice.")
    if errors:
        raise ValidationError(errors)
    config.save()
    if fallback_networks is not None:
        current = [f.network_id for f in config.fallbacks.order_by("position")]
        if current != [n.pk for n in fallback_networks]:
            for row in config.fallbacks.all():
                row.delete()
            for position, network in enumerate(fallback_networks):
                NetworkFallback.objects.create(config=config, network=network, position=position)
    return config


@transaction.atomic
def network_fallback_create(*, data: dict[str, Any]) -> NetworkFallback:
    """One network added to the checkout's fallback order (`data`: config, network, position); the API and the
    console set the whole order through `crypto_config_update(fallback_networks=...)`."""
    return _row_write(NetworkFallback(), data)


@transaction.atomic
def network_fallback_update(*, fallback: NetworkFallback, data: dict[str, Any]) -> NetworkFallback:
    fallback = NetworkFallback.objects.select_for_update().get(pk=fallback.pk)
    return _row_write(fallback, data)


# --- deletes ---------------------------------------------------------------------------------------


@transaction.atomic
def catalog_delete(
    *, instance: Plan | PaymentProvider | PaymentContract | Network | Token | RpcEndpoint | NetworkFallback
) -> None:
    """Delete one catalog row, as the admin and the API do. Raises ProtectedError while other rows (plans,
    transactions, ...) refer to it. Providers that listed a deleted network, token or contract get their
    config rebuilt in the same transaction."""
    touching: list[PaymentProvider] = []
    if isinstance(instance, Network):
        touching = list(_providers_touching(network_ids=[instance.pk]))
    elif isinstance(instance, Token):
        touching = list(_providers_touching(token_ids=[instance.pk]))
    elif isinstance(instance, PaymentContract):
        touching = list(_providers_touching(contract_id=instance.pk))
    instance.delete()
    remaining = set(PaymentProvider.objects.filter(pk__in=[p.pk for p in touching]).values_list("pk", flat=True))
    providers_rebuild_config(providers=[p for p in touching if p.pk in remaining])
