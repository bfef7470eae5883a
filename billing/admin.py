"""Django admin for billing: the catalog is edited here, the ledger and the chain mirror are only read.

Secrets never reach a page: webhook secrets are write-only (rotated through `rotate_webhook_secret`), RPC URLs
(which carry provider keys) are write-only and shown masked.
"""

from __future__ import annotations

import json
import re
import uuid

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.utils.html import format_html
from eth_utils import is_address, to_checksum_address
from unfold.admin import ModelAdmin, TabularInline

from billing.models import (
    ChainBlock,
    ChainCursor,
    ChainEvent,
    CryptoConfig,
    DeliveryAttempt,
    IdempotencyKey,
    InboundEvent,
    Network,
    NetworkFallback,
    OperatorTransaction,
    OutboxDelivery,
    OutboxEvent,
    PaymentContract,
    PaymentProvider,
    PaymentTransaction,
    Plan,
    RevenueRollup,
    RpcEndpoint,
    Subscription,
    SubscriptionPeriod,
    Token,
    TransactionStatusChange,
)
from billing.services import catalog
from billing_project.admin_site import (
    CappedCountPaginator,
    ReadOnlyAdminMixin,
    ReadOnlyTabularInline,
    WriteOnlyFieldsMixin,
    format_amount,
    mask_secret_url,
    write_only_field,
)
from billing_project.logging import mask_url

HASH_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")


def short_hex(value: str | None, head: int = 10, tail: int = 6) -> str:
    if not value:
        return "-"
    return value if len(value) <= head + tail + 1 else f"{value[:head]}…{value[-tail:]}"


def pretty_json(value) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, default=str))


def scrubbed(text: str | None, *secret_urls: str) -> str:
    """Error text written by RPC clients may quote the endpoint URL with its key."""
    if not text:
        return "-"
    for url in secret_urls:
        if url:
            text = text.replace(url, mask_secret_url(url))
    return mask_url(text)


def remap_errors(errors: ValidationError, mapping: dict[str, str]) -> ValidationError:
    """Model.clean() names model fields; the admin form may show them under a write-only field's name."""
    if not hasattr(errors, "error_dict"):
        return errors
    return ValidationError({mapping.get(field, field): messages for field, messages in errors.error_dict.items()})


class ExactSearchMixin:
    """Hashes, addresses and UUIDs are matched exactly (index-friendly) instead of an icontains scan."""

    hash_search_fields: tuple[str, ...] = ()
    address_search_fields: tuple[str, ...] = ()
    uuid_search_fields: tuple[str, ...] = ()
    int_search_fields: tuple[str, ...] = ()

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        lookups: list[tuple[str, str]] = []
        if term.isdigit() and len(term) <= 18 and self.int_search_fields:
            lookups = [(f, term) for f in self.int_search_fields]
        elif HASH_RE.match(term):
            lookups = [(f, v) for f in self.hash_search_fields for v in sorted({term, term.lower()})]
        elif self.address_search_fields and is_address(term):
            lookups = [(f, to_checksum_address(term)) for f in self.address_search_fields]
        elif self.uuid_search_fields:
            try:
                lookups = [(f, str(uuid.UUID(term))) for f in self.uuid_search_fields]
            except ValueError:
                lookups = []
        if not lookups:
            return super().get_search_results(request, queryset, search_term)
        condition = Q()
        for field, value in lookups:
            condition |= Q(**{field: value})
        return queryset.filter(condition), False


class LedgerAdmin(ExactSearchMixin, ReadOnlyAdminMixin, ModelAdmin):
    """A ledger, chain-mirror or outbox table: written only by services (read-only here), searched by exact
    keys, and large, so the changelist skips the full count."""

    show_full_result_count = False


class _DryRun(Exception):
    pass


def service_dry_run(write) -> None:
    """Run a catalog write inside a savepoint that is always rolled back: the service's own validation
    (guards included) answers, and nothing is kept. Raises the service's ValidationError."""
    try:
        with transaction.atomic():
            write()
            raise _DryRun
    except _DryRun:
        pass


def add_service_errors(form: forms.Form, exc: ValidationError, renames: dict[str, str] | None = None) -> None:
    """Put a service's errors (keyed by model or API field name) on the form fields that show them."""
    renames = renames or {}
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc)
        return
    for key, messages in exc.message_dict.items():
        target = renames.get(key, key)
        form.add_error(target if target in form.fields else None, messages)


class ServiceAdminMixin:
    """Admin saves go through billing.services.catalog, like the API's: a form is valid only when the
    service accepts the write (a dry run in a rolled-back savepoint, so its guards and messages show at the
    fields), and save_model calls the service for real. No admin save writes a row the service refuses.

    Subclasses implement `service_write(form, *, change) -> instance` from the form's cleaned data.
    """

    service_error_renames: dict[str, str] = {}

    def service_write(self, form, *, change: bool):
        raise NotImplementedError

    def model_data(self, form) -> dict:
        """The cleaned values of the form's fields that are concrete model fields."""
        return model_data(self.model, form)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change=change, **kwargs)
        model_admin = self

        class ServiceForm(form_class):
            def _post_clean(self):
                super()._post_clean()
                if self.errors:
                    return  # the model's own validation already said what is wrong
                try:
                    service_dry_run(lambda: model_admin.service_write(self, change=self.instance.pk is not None))
                except ValidationError as exc:
                    add_service_errors(self, exc, model_admin.service_error_renames)

        ServiceForm.__name__ = form_class.__name__
        return ServiceForm

    def save_model(self, request, obj, form, change):
        from billing.services.operator import acting_user

        with acting_user(request.user):
            saved = self.service_write(form, change=change)
        # The admin keeps using `obj` (redirects, inline formsets' parent): give it the saved row's values.
        for field in self.model._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))
        obj._state.adding = False

    def delete_model(self, request, obj):
        from billing.services.operator import acting_user

        with acting_user(request.user):
            catalog.catalog_delete(instance=obj)

    def delete_queryset(self, request, queryset):
        from billing.services.operator import acting_user

        with acting_user(request.user):
            for obj in queryset:
                catalog.catalog_delete(instance=obj)

    def save_related(self, request, form, formsets, change):
        # Many-to-many links were written by the service; inline rows go through their own services.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def save_formset(self, request, form, formset, change):
        """An inline with a `service_row_write(row_form, data)` writes each changed row through it (a catalog
        service) and deletes through catalog_delete; the rows' own model validation already ran on their forms.
        The formset's new/changed/deleted lists are filled as `formset.save()` would, for the change message."""
        inline = next((i for i in self.inlines if i.model is formset.model and hasattr(i, "service_row_write")), None)
        if inline is None:
            super().save_formset(request, form, formset, change)
            return
        from billing.services.operator import acting_user

        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        with acting_user(request.user):
            for row in formset.deleted_forms:
                if row.instance.pk:
                    catalog.catalog_delete(instance=row.instance)
                    formset.deleted_objects.append(row.instance)
            for row in formset.forms:
                if row in formset.deleted_forms or not row.has_changed():
                    continue
                adding = row.instance.pk is None
                data = {**model_data(formset.model, row), formset.fk.name: formset.instance}
                row.instance = inline.service_row_write(row, data)
                if adding:
                    formset.new_objects.append(row.instance)
                else:
                    formset.changed_objects.append((row.instance, row.changed_data))


def model_data(model, form) -> dict:
    """The cleaned values of a form's fields that are concrete model fields (not the primary key)."""
    names = {f.name for f in model._meta.concrete_fields if not f.primary_key}
    return {name: value for name, value in form.cleaned_data.items() if name in names}


def rpc_endpoint_write(form, data: dict) -> RpcEndpoint:
    """The form's instance carries the URL (write-only `new_url`, or the stored one)."""
    data = {**data, "url": form.instance.url}
    if form.instance.pk:
        return catalog.rpc_endpoint_update(endpoint=form.instance, data=data)
    return catalog.rpc_endpoint_create(data=data)


def network_fallback_write(form, data: dict) -> NetworkFallback:
    if form.instance.pk:
        return catalog.network_fallback_update(fallback=form.instance, data=data)
    return catalog.network_fallback_create(data=data)


# --- Catalog: networks, endpoints, tokens, crypto config -------------------------------------------------------


class RpcEndpointForm(forms.ModelForm):
    """The URL is write-only: left blank on a change it keeps the stored value; the masked form is the hint."""

    new_url = write_only_field("URL")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.url:
            self.fields[
                "new_url"
            ].help_text = (
                f"Current: {mask_secret_url(self.instance.url)}. Leave blank to keep it; it may carry a provider key."
            )
        else:
            self.fields["new_url"].help_text = "http(s):// or ws(s)://; may carry a provider key (never shown again)."

    def clean(self):
        cleaned = super().clean()
        new_url = (cleaned.get("new_url") or "").strip()
        if new_url:
            self.instance.url = new_url
        elif not self.instance.url:
            self.add_error("new_url", "Required.")
        return cleaned

    def _update_errors(self, errors):
        super()._update_errors(remap_errors(errors, {"url": "new_url"}))


# The stored error may quote the URL with its key: shown scrubbed.
RPC_HEALTH_FIELDS = tuple("last_error_masked" if f == "last_error" else f for f in RpcEndpoint.HEALTH_FIELDS)


class RpcEndpointDisplayMixin:
    @admin.display(description="URL")
    def masked_url(self, obj: RpcEndpoint) -> str:
        return mask_secret_url(obj.url)

    @admin.display(description="Last error")
    def last_error_masked(self, obj: RpcEndpoint) -> str:
        return scrubbed(obj.last_error, obj.url)


class RpcEndpointInline(WriteOnlyFieldsMixin, RpcEndpointDisplayMixin, TabularInline):
    model = RpcEndpoint
    form = RpcEndpointForm
    extra = 0
    fields = ("position", "masked_url", "new_url", "timeout_seconds", "enabled", "healthy", "last_latency_ms")
    readonly_fields = ("masked_url", "healthy", "last_latency_ms")
    write_only_fields = ("new_url",)
    ordering = ("position", "id")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("network")

    service_row_write = staticmethod(rpc_endpoint_write)  # NetworkAdmin saves the rows through it


@admin.register(Network)
class NetworkAdmin(ServiceAdminMixin, ModelAdmin):
    list_display = (
        "slug",
        "name",
        "chain_id",
        "is_testnet",
        "enabled",
        "confirmation_depth",
        "confirmation_policy",
        "native_symbol",
        "endpoint_count",
    )
    list_filter = ("enabled", "is_testnet")
    search_fields = ("slug", "name", "=chain_id")
    readonly_fields = ("created_at", "updated_at")
    inlines = (RpcEndpointInline,)
    fieldsets = (
        (None, {"fields": ("slug", "name", "chain_id", "is_testnet", "enabled")}),
        (
            "Chain",
            {
                "fields": (
                    "confirmation_policy",
                    "confirmation_depth",
                    "block_time_seconds",
                    "native_symbol",
                    "native_decimals",
                )
            },
        ),
        ("Explorer", {"fields": ("explorer_tx_url", "explorer_address_url", "explorer_block_url")}),
        ("Record", {"fields": ("created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_endpoints=Count("rpc_endpoints"))

    def service_write(self, form, *, change: bool) -> Network:
        # Endpoints are left to the inline (rpc_endpoints=None on update; none yet on create).
        data = self.model_data(form)
        if change:
            return catalog.network_update(network=form.instance, data=data)
        return catalog.network_create(data=data)

    @admin.display(description="RPC endpoints", ordering="_endpoints")
    def endpoint_count(self, obj: Network) -> int:
        return obj._endpoints


@admin.register(RpcEndpoint)
class RpcEndpointAdmin(ServiceAdminMixin, WriteOnlyFieldsMixin, RpcEndpointDisplayMixin, ModelAdmin):
    form = RpcEndpointForm
    service_error_renames = {"url": "new_url"}
    list_display = ("__str__", "network", "position", "masked_url", "enabled", "healthy", "last_latency_ms")
    list_filter = ("enabled", "healthy", "network")
    list_select_related = ("network",)
    # Never `url`: a search box would be an oracle for the key.
    search_fields = ("network__slug",)
    readonly_fields = ("masked_url", *RPC_HEALTH_FIELDS)
    write_only_fields = ("new_url",)
    fieldsets = (
        (None, {"fields": ("network", "position", "masked_url", "new_url", "timeout_seconds", "enabled")}),
        ("Health (written by the RPC client)", {"fields": RPC_HEALTH_FIELDS}),
    )

    def service_write(self, form, *, change: bool) -> RpcEndpoint:
        return rpc_endpoint_write(form, self.model_data(form))


@admin.register(Token)
class TokenAdmin(ServiceAdminMixin, ModelAdmin):
    list_display = ("symbol", "name", "network", "address_or_native", "decimals", "usd_estimate", "enabled")
    list_filter = ("enabled", "network", "decimals")
    list_select_related = ("network",)
    search_fields = ("symbol", "name", "address", "network__slug")

    @admin.display(description="Address", ordering="address")
    def address_or_native(self, obj: Token) -> str:
        return obj.address or "native"

    def service_write(self, form, *, change: bool) -> Token:
        data = self.model_data(form)
        return catalog.token_update(token=form.instance, data=data) if change else catalog.token_create(data=data)


class NetworkFallbackInline(TabularInline):
    model = NetworkFallback
    extra = 0
    fields = ("position", "network")
    ordering = ("position",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("network")

    service_row_write = staticmethod(network_fallback_write)  # CryptoConfigAdmin saves the rows through it


@admin.register(CryptoConfig)
class CryptoConfigAdmin(ServiceAdminMixin, ModelAdmin):
    list_display = ("__str__", "max_retries", "backoff_base_ms", "backoff_max_ms", "gas_cap_gwei", "updated_at")
    readonly_fields = ("gas_cap_gwei", "updated_at")
    inlines = (NetworkFallbackInline,)
    fieldsets = (
        ("Retries", {"fields": ("max_retries", "backoff_base_ms", "backoff_max_ms", "request_timeout_seconds")}),
        ("Gas", {"fields": ("gas_cap_wei", "gas_cap_gwei", "stuck_tx_seconds", "fee_bump_percent")}),
        ("Chain reads", {"fields": ("get_logs_max_range", "updated_at")}),
    )

    # A singleton (pk=1, enforced by a constraint): one row to add, none to delete.
    def has_add_permission(self, request):
        return super().has_add_permission(request) and not CryptoConfig.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def service_write(self, form, *, change: bool) -> CryptoConfig:
        # The fallback order is edited by the inline below (fallback_networks=None leaves it).
        return catalog.crypto_config_update(data=self.model_data(form))

    @admin.display(description="Gas cap")
    def gas_cap_gwei(self, obj: CryptoConfig) -> str:
        from billing.fields import to_display

        return format_amount(to_display(obj.gas_cap_wei, 9), "gwei")


@admin.register(NetworkFallback)
class NetworkFallbackAdmin(ServiceAdminMixin, ModelAdmin):
    list_display = ("position", "network", "config")
    list_select_related = ("network", "config")
    ordering = ("position",)

    def service_write(self, form, *, change: bool) -> NetworkFallback:
        return network_fallback_write(form, self.model_data(form))


# --- Catalog: contracts, providers, plans ------------------------------------------------------------------------


class PaymentContractForm(forms.ModelForm):
    """Webhook secret and fallback RPC are write-only; the secret changes only through rotation."""

    new_webhook_secret = write_only_field(
        "New webhook secret",
        max_length=256,
        password=True,
        min_length=16,
        help_text="Write-only. Setting it rotates the secret; the old one stays valid as previous during the grace.",
    )
    new_fallback_rpc = write_only_field("Fallback RPC URL")
    clear_fallback_rpc = forms.BooleanField(label="Remove the fallback RPC", required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        current = mask_secret_url(self.instance.fallback_rpc)
        self.fields["new_fallback_rpc"].help_text = (
            f"Current: {current}. Leave blank to keep it." if current else "Tried after the network's endpoints."
        )

    def clean(self):
        cleaned = super().clean()
        new_rpc = (cleaned.get("new_fallback_rpc") or "").strip()
        if new_rpc and cleaned.get("clear_fallback_rpc"):
            self.add_error("clear_fallback_rpc", "Either set a new fallback RPC or remove it, not both.")
        elif new_rpc:
            self.instance.fallback_rpc = new_rpc
        elif cleaned.get("clear_fallback_rpc"):
            self.instance.fallback_rpc = ""
        return cleaned

    def _update_errors(self, errors):
        super()._update_errors(remap_errors(errors, {"fallback_rpc": "new_fallback_rpc"}))


@admin.register(PaymentContract)
class PaymentContractAdmin(ServiceAdminMixin, WriteOnlyFieldsMixin, ModelAdmin):
    form = PaymentContractForm
    service_error_renames = {"fallback_rpc": "new_fallback_rpc", "webhook_secret": "new_webhook_secret"}
    list_display = (
        "slug",
        "title",
        "network",
        "address_link",
        "mint_method",
        "burn_method",
        "has_webhook_secret",
        "secret_rotated_at",
        "fallback_rpc_masked",
        "enabled",
    )
    list_filter = ("enabled", "network")
    list_select_related = ("network",)
    search_fields = ("slug", "title", "address")
    exclude = ("webhook_secret", "previous_webhook_secret", "fallback_rpc")
    readonly_fields = (
        "address_link",
        "has_webhook_secret",
        "has_previous_webhook_secret",
        "secret_rotated_at",
        "fallback_rpc_masked",
        "created_at",
        "updated_at",
    )
    write_only_fields = ("new_webhook_secret", "new_fallback_rpc", "clear_fallback_rpc")
    fieldsets = (
        (None, {"fields": ("slug", "title", "network", "address", "address_link", "enabled", "deployment_block")}),
        ("ABI", {"fields": ("abi", "mint_method", "burn_method", "withdraw_method", "eip712_name", "eip712_version")}),
        (
            "Webhook secret",
            {
                "fields": (
                    "has_webhook_secret",
                    "has_previous_webhook_secret",
                    "secret_rotated_at",
                    "new_webhook_secret",
                )
            },
        ),
        ("Fallback RPC", {"fields": ("fallback_rpc_masked", "new_fallback_rpc", "clear_fallback_rpc")}),
        ("Record", {"fields": ("created_at", "updated_at")}),
    )

    def service_write(self, form, *, change: bool) -> PaymentContract:
        data = self.model_data(form)
        cleaned = form.cleaned_data
        if (cleaned.get("new_fallback_rpc") or "").strip():
            data["fallback_rpc"] = cleaned["new_fallback_rpc"].strip()
        elif cleaned.get("clear_fallback_rpc"):
            data["fallback_rpc"] = ""
        if cleaned.get("new_webhook_secret"):
            data["webhook_secret"] = cleaned["new_webhook_secret"]  # the service rotates it
        if change:
            return catalog.contract_update(contract=form.instance, data=data)
        return catalog.contract_create(data=data)

    @admin.display(description="Webhook secret set", boolean=True)
    def has_webhook_secret(self, obj: PaymentContract) -> bool:
        return obj.has_webhook_secret

    @admin.display(description="Previous secret still accepted", boolean=True)
    def has_previous_webhook_secret(self, obj: PaymentContract) -> bool:
        return bool(obj.previous_webhook_secret)

    @admin.display(description="Fallback RPC")
    def fallback_rpc_masked(self, obj: PaymentContract) -> str:
        return mask_secret_url(obj.fallback_rpc) or "-"

    @admin.display(description="Address on explorer", ordering="address")
    def address_link(self, obj: PaymentContract) -> str:
        url = obj.network.address_url(obj.address) if obj.network_id else ""
        return format_html('<a href="{}" rel="noopener" target="_blank">{}</a>', url, obj.address) if url else "-"


class PaymentProviderForm(forms.ModelForm):
    # validate_links() names the contract by its API name.
    _error_fields = {"contract_slug": "contract"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "supported_tokens" in self.fields:
            self.fields["supported_tokens"].queryset = Token.objects.select_related("network")

    def clean(self):
        cleaned = super().clean()
        linked = ("networks", "supported_tokens", "default_network", "contract")
        if any(name in self.errors for name in linked):
            return cleaned
        probe = PaymentProvider(contract=cleaned.get("contract"))
        try:
            probe.validate_links(
                list(cleaned.get("networks") or []),
                list(cleaned.get("supported_tokens") or []),
                cleaned.get("default_network"),
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                target = self._error_fields.get(field, field)
                self.add_error(target if target in self.fields else None, messages)
        return cleaned


@admin.register(PaymentProvider)
class PaymentProviderAdmin(ServiceAdminMixin, ModelAdmin):
    form = PaymentProviderForm
    service_error_renames = {"contract_slug": "contract"}
    list_display = ("slug", "title", "type", "enabled", "priority", "default_network", "contract", "network_list")
    list_filter = ("enabled", "type", "networks")
    list_select_related = ("default_network", "contract")
    search_fields = ("slug", "title")
    filter_horizontal = ("networks", "supported_tokens")
    readonly_fields = ("config_json", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("slug", "title", "type", "enabled", "priority")}),
        ("Links", {"fields": ("networks", "supported_tokens", "default_network", "contract")}),
        ("Derived config (built on save)", {"fields": ("config_json",)}),
        ("Record", {"fields": ("created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("networks")

    @admin.display(description="Networks")
    def network_list(self, obj: PaymentProvider) -> str:
        return ", ".join(sorted(n.slug for n in obj.networks.all())) or "-"

    @admin.display(description="Config")
    def config_json(self, obj: PaymentProvider) -> str:
        return pretty_json(obj.config)

    def service_write(self, form, *, change: bool) -> PaymentProvider:
        # The service sets the links and rebuilds the derived config.
        data = self.model_data(form)
        links = {
            "networks": list(form.cleaned_data.get("networks") or []),
            "supported_tokens": list(form.cleaned_data.get("supported_tokens") or []),
        }
        if change:
            return catalog.provider_update(provider=form.instance, data=data, **links)
        return catalog.provider_create(data=data, **links)


@admin.register(Plan)
class PlanAdmin(ServiceAdminMixin, ModelAdmin):
    list_display = (
        "slug",
        "title",
        "token_symbol",
        "price",
        "interval",
        "provider",
        "contract",
        "tier",
        "is_active",
        "experiment",
        "variant",
    )
    list_filter = ("is_active", "interval", "price_token__symbol", "provider", "contract", "experiment")
    list_select_related = ("price_token", "provider", "contract")
    search_fields = ("slug", "title", "experiment", "variant")
    readonly_fields = ("price", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("slug", "title", "description", "is_active", "tier", "sort_order")}),
        ("Price", {"fields": ("price_token", "price_amount", "price", "price_usd_estimate", "interval")}),
        ("Gateway", {"fields": ("provider", "contract", "grace_period_days")}),
        ("Entitlements", {"fields": ("limits", "features")}),
        ("Experiment", {"fields": ("experiment", "variant")}),
        ("Record", {"fields": ("created_at", "updated_at")}),
    )

    def service_write(self, form, *, change: bool) -> Plan:
        data = self.model_data(form)
        return catalog.plan_update(plan=form.instance, data=data) if change else catalog.plan_create(data=data)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "price_token":
            kwargs["queryset"] = Token.objects.select_related("network")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="Token", ordering="price_token__symbol")
    def token_symbol(self, obj: Plan) -> str:
        return obj.price_token.symbol

    @admin.display(description="Price", ordering="price_amount")
    def price(self, obj: Plan) -> str:
        if not obj.price_token_id or obj.price_amount is None:
            return "-"
        return format_amount(obj.price_display, obj.price_token.symbol)


# --- Subscriptions and the ledger (read-only) ------------------------------------------------------------------


class PeriodInline(ReadOnlyTabularInline):
    """The paid periods the subscription's plan and dates are derived from (docs/subscriptions.md)."""

    model = SubscriptionPeriod
    fk_name = "subscription"
    fields = ("starts_at", "ends_at", "plan", "kind", "status", "transaction", "credit_for", "note")
    raw_id_fields = ("transaction", "credit_for")
    ordering = ("starts_at", "id")


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdminMixin, ModelAdmin):
    """State moves only through the billing services (payments, renewals, cancellations); plan, status and
    dates are derived from the periods listed below."""

    inlines = [PeriodInline]

    list_display = (
        "id",
        "user",
        "plan",
        "status",
        "current_period_start",
        "current_period_end",
        "cancel_at_period_end",
        "pending_plan",
        "debt",
    )
    list_filter = ("status", "cancel_at_period_end", "plan")
    list_select_related = ("user", "plan", "pending_plan", "debt_token")
    search_fields = ("user__username", "user__email", "plan__slug")
    raw_id_fields = ("user", "last_transaction")
    date_hierarchy = "created_at"
    fields = (
        "user",
        "plan",
        "status",
        "current_period_start",
        "current_period_end",
        "cancel_at_period_end",
        "canceled_at",
        "pending_plan",
        "grace_until",
        "debt",
        "last_transaction",
        "ended_at",
        "created_at",
        "updated_at",
    )

    @admin.display(description="Debt")
    def debt(self, obj: Subscription) -> str:
        if not obj.debt_amount or not obj.debt_token_id:
            return "-"
        return format_amount(obj.debt_token.display(obj.debt_amount), obj.debt_token.symbol)


@admin.register(SubscriptionPeriod)
class SubscriptionPeriodAdmin(ReadOnlyAdminMixin, ModelAdmin):
    """Paid periods: written only by the subscription rules (billing.services.subscriptions)."""

    list_display = ("id", "subscription", "plan", "starts_at", "ends_at", "kind", "status", "transaction")
    list_filter = ("status", "kind", "plan")
    list_select_related = ("subscription", "plan", "transaction")
    search_fields = ("subscription__user__username", "plan__slug")
    raw_id_fields = ("subscription", "transaction", "credit_for")
    fields = (
        "subscription",
        "plan",
        "starts_at",
        "ends_at",
        "kind",
        "status",
        "transaction",
        "credit_for",
        "suspended_at",
        "removed_at",
        "note",
        "created_at",
        "updated_at",
    )


class StatusHistoryInline(ReadOnlyTabularInline):
    model = TransactionStatusChange
    fields = ("created_at", "from_status", "to_status", "actor", "reason", "details")
    ordering = ("created_at", "id")


@admin.register(PaymentTransaction)
class PaymentTransactionAdmin(LedgerAdmin):
    list_display = (
        "id",
        "created_at",
        "status",
        "user",
        "plan",
        "provider",
        "network",
        "amount_shown",
        "tx_link",
        "confirmed_at",
    )
    list_filter = (
        "status",
        ("created_at", admin.DateFieldListFilter),
        "network",
        "provider",
        "contract",
        "token__symbol",
        "product_type",
    )
    # Not the contract: its ABI is a large JSON column that no list column shows.
    list_select_related = ("user", "plan", "provider", "network", "token")
    search_fields = ("user__username", "user__email", "=external_id")
    search_help_text = "Username, e-mail, external id; or an exact tx hash, order id, payer address or public id."
    hash_search_fields = ("tx_hash", "order_id", "block_hash", "refund_tx_hash")
    address_search_fields = ("payer_address",)
    uuid_search_fields = ("public_id",)
    int_search_fields = ("id",)
    # No date_hierarchy: it runs SELECT DISTINCT date_trunc(...) over the whole ledger on every page.
    paginator = CappedCountPaginator
    raw_id_fields = ("user", "plan")
    inlines = (StatusHistoryInline,)
    fieldsets = (
        (
            None,
            {"fields": ("public_id", "status", "user", "product_type", "product_id", "plan", "periods", "order_id")},
        ),
        ("Payment", {"fields": ("provider", "contract", "network", "chain_id", "token", "amount_shown", "amount")}),
        (
            "Chain",
            {
                "fields": (
                    "payer_address",
                    "tx_link",
                    "block_number",
                    "block_hash",
                    "log_index",
                    "gas_used",
                    "effective_gas_price",
                    "fee_shown",
                    "external_id",
                )
            },
        ),
        ("Rates (USD per token)", {"fields": ("usd_rate_at_checkout", "usd_rate_at_confirmation")}),
        (
            "Timeline",
            {
                "fields": (
                    "created_at",
                    "expires_at",
                    "submitted_at",
                    "confirmed_at",
                    "refunded_at",
                    "refund_tx_hash",
                    "failure_reason",
                    "updated_at",
                )
            },
        ),
        ("Checkout", {"fields": ("checkout_json",)}),
    )

    @admin.display(description="Amount", ordering="amount")
    def amount_shown(self, obj: PaymentTransaction) -> str:
        return format_amount(obj.amount_display, obj.token.symbol)

    @admin.display(description="Fee")
    def fee_shown(self, obj: PaymentTransaction) -> str:
        return format_amount(obj.fee_display, obj.network.native_symbol) if obj.fee is not None else "-"

    @admin.display(description="Tx hash", ordering="tx_hash")
    def tx_link(self, obj: PaymentTransaction) -> str:
        if not obj.tx_hash:
            return "-"
        url = obj.network.tx_url(obj.tx_hash)
        if not url:
            return obj.tx_hash
        return format_html('<a href="{}" rel="noopener" target="_blank">{}</a>', url, short_hex(obj.tx_hash))

    @admin.display(description="Checkout payload")
    def checkout_json(self, obj: PaymentTransaction) -> str:
        return pretty_json(obj.checkout_payload)


@admin.register(TransactionStatusChange)
class TransactionStatusChangeAdmin(LedgerAdmin):
    list_display = ("id", "transaction", "from_status", "to_status", "actor", "reason", "created_at")
    list_filter = ("to_status", "from_status")
    list_select_related = ("transaction",)
    search_fields = ("actor",)
    int_search_fields = ("transaction_id",)
    date_hierarchy = "created_at"
    raw_id_fields = ("transaction",)


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdminMixin, ModelAdmin):
    list_display = ("key", "user", "scope", "state", "response_status", "replay_count", "created_at", "expires_at")
    list_filter = ("state", "scope")
    list_select_related = ("user",)
    search_fields = ("=key", "user__username")
    show_full_result_count = False
    raw_id_fields = ("user", "transaction")


@admin.register(InboundEvent)
class InboundEventAdmin(LedgerAdmin):
    list_display = (
        "id",
        "received_at",
        "contract",
        "event_type",
        "delivery_id",
        "status",
        "attempts",
        "tx_short",
        "processed_at",
    )
    list_filter = ("status", "event_type", "contract")
    list_select_related = ("contract",)
    search_fields = ("=delivery_id", "event_type")
    hash_search_fields = ("tx_hash",)
    date_hierarchy = "received_at"
    raw_id_fields = ("transaction",)

    @admin.display(description="Tx hash", ordering="tx_hash")
    def tx_short(self, obj: InboundEvent) -> str:
        return short_hex(obj.tx_hash)


@admin.register(ChainCursor)
class ChainCursorAdmin(ReadOnlyAdminMixin, ModelAdmin):
    list_display = ("contract", "last_block", "last_run_at", "has_error", "updated_at")
    list_select_related = ("contract",)
    search_fields = ("contract__slug",)
    fields = ("contract", "last_block", "last_block_hash", "last_run_at", "last_error_masked", "updated_at")

    @admin.display(description="Error", boolean=True)
    def has_error(self, obj: ChainCursor) -> bool:
        return bool(obj.last_error)

    @admin.display(description="Last error")
    def last_error_masked(self, obj: ChainCursor) -> str:
        return scrubbed(obj.last_error, obj.contract.fallback_rpc)


@admin.register(RevenueRollup)
class RevenueRollupAdmin(LedgerAdmin):
    """The overview's daily revenue rollup: written only by the ledger's triggers (migration 0018); a key may
    span a few rows (one per writer in flight), the overview sums them."""

    list_display = ("day", "kind", "network_id", "token_id", "plan_id", "amount", "usd", "unrated", "n")
    list_filter = ("kind",)
    int_search_fields = ("network_id", "token_id", "plan_id")
    search_fields = ("kind",)


@admin.register(ChainBlock)
class ChainBlockAdmin(LedgerAdmin):
    list_display = ("number", "hash", "contract")
    list_filter = ("contract",)
    list_select_related = ("contract",)
    search_fields = ("contract__slug",)
    int_search_fields = ("number",)
    hash_search_fields = ("hash",)


@admin.register(ChainEvent)
class ChainEventAdmin(LedgerAdmin):
    list_display = ("id", "name", "contract", "block_number", "log_index", "tx_short", "amount", "removed")
    list_filter = ("name", "removed", "contract")
    list_select_related = ("contract",)
    search_fields = ("name",)
    int_search_fields = ("block_number",)
    hash_search_fields = ("tx_hash", "block_hash")
    date_hierarchy = "created_at"
    raw_id_fields = ("transaction",)

    @admin.display(description="Tx hash", ordering="tx_hash")
    def tx_short(self, obj: ChainEvent) -> str:
        return short_hex(obj.tx_hash)


class DeliveryInline(ReadOnlyTabularInline):
    model = OutboxDelivery
    fields = ("subscriber", "status", "attempts", "max_attempts", "next_attempt_at", "delivered_at", "last_error")
    show_change_link = True


@admin.register(OutboxEvent)
class OutboxEventAdmin(LedgerAdmin):
    list_display = ("event_id", "topic", "aggregate_type", "aggregate_id", "created_at")
    list_filter = ("topic", "aggregate_type")
    search_fields = ("=aggregate_id", "topic")
    uuid_search_fields = ("event_id",)
    date_hierarchy = "created_at"
    inlines = (DeliveryInline,)


class AttemptInline(ReadOnlyTabularInline):
    model = DeliveryAttempt
    fields = ("attempted_at", "ok", "status_code", "duration_ms", "error")


@admin.register(OutboxDelivery)
class OutboxDeliveryAdmin(LedgerAdmin):
    list_display = ("id", "event", "subscriber", "status", "attempts", "max_attempts", "next_attempt_at", "created_at")
    list_filter = ("status", "subscriber", "event__topic")
    list_select_related = ("event",)
    search_fields = ("subscriber",)
    uuid_search_fields = ("event__event_id",)
    date_hierarchy = "created_at"
    raw_id_fields = ("event",)
    inlines = (AttemptInline,)


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(LedgerAdmin):
    list_display = ("id", "delivery", "attempted_at", "ok", "status_code", "duration_ms")
    list_filter = ("ok", "status_code")
    list_select_related = ("delivery",)
    search_fields = ("error",)
    int_search_fields = ("delivery_id",)
    date_hierarchy = "attempted_at"
    raw_id_fields = ("delivery",)


@admin.register(OperatorTransaction)
class OperatorTransactionAdmin(LedgerAdmin):
    list_display = (
        "id",
        "kind",
        "status",
        "network",
        "nonce",
        "replacements",
        "mined_tx_hash",
        "requested_by",
        "created_at",
    )
    list_filter = ("kind", "status", "network")
    list_select_related = ("network",)
    search_fields = ("requested_by",)
    hash_search_fields = ("mined_tx_hash",)
    int_search_fields = ("nonce",)
    date_hierarchy = "created_at"
    raw_id_fields = ("payment",)


# The Payments workspace and Tariffs (billing/console), mounted at /admin/payments/ and /admin/tariffs/.
from billing.console.urls import tariffs_urlpatterns as _tariffs_urls  # noqa: E402
from billing.console.urls import urlpatterns as _payments_urls  # noqa: E402

admin.site.register_console_urls("payments/", _payments_urls)
admin.site.register_console_urls("tariffs/", _tariffs_urls)
