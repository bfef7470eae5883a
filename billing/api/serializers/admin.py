"""Serializers of the admin API (/v1/billing/admin/*): catalog writes through billing.services.catalog
(model `ValidationError`s come back keyed by model field name and are renamed to the API's names:
provider -> gateway_slug, contract -> contract_slug), the ledger, chain events, outbox and the audit timeline.
RPC URLs and fallback_rpc read back masked; webhook secrets are write-only."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.api.serializers.fields import (
    DISPLAY_SCHEMA,
    MASK,
    PLAN_FIELDS,
    AbiField,
    CatalogWriteMixin,
    LimitsField,
    MaskedUrlField,
    ObjectField,
    PlanPriceDisplayMixin,
    SlugRelatedField,
    TokenAmountField,
    TokenKeyField,
    display_amount,
    is_masked_echo,
    refuse_nul,
)
from billing.models import (
    ChainEvent,
    CryptoConfig,
    Network,
    OperatorTransaction,
    OutboxDelivery,
    PaymentContract,
    PaymentProvider,
    PaymentTransaction,
    Plan,
    RpcEndpoint,
    Token,
    TransactionStatusChange,
)
from billing.services import catalog
from billing_project.logging import mask_url

# --- plans -----------------------------------------------------------------------------------------


@extend_schema_field(
    {"type": "string", "example": "USDC", "description": "SYMBOL (on the contract's network) or SYMBOL@network"}
)
class PriceTokenField(serializers.Field):
    """Read: the token symbol. Write: `SYMBOL` (resolved on the plan contract's network) or
    `SYMBOL@network-slug`; resolution needs the contract, so it happens in PlanSerializer.validate."""

    def to_internal_value(self, data: Any) -> str:
        refuse_nul(data)
        if not isinstance(data, str) or not data.strip() or data.count("@") > 1:
            raise serializers.ValidationError("A token symbol, or SYMBOL@network-slug.")
        return data.strip()

    def to_representation(self, value: Token) -> str:
        return value.symbol


class PlanSerializer(PlanPriceDisplayMixin, CatalogWriteMixin, serializers.ModelSerializer):
    price_token = PriceTokenField()
    price_token_network = SlugRelatedField(source="price_token.network", slug_field="slug", read_only=True)
    price_amount = TokenAmountField()
    price_display = serializers.SerializerMethodField()
    gateway_slug = SlugRelatedField(source="provider", slug_field="slug", queryset=PaymentProvider.objects.all())
    contract_slug = SlugRelatedField(
        source="contract", slug_field="slug", queryset=PaymentContract.objects.select_related("network")
    )
    limits = LimitsField(required=False)
    features = serializers.ListField(child=serializers.CharField(max_length=200), required=False)

    error_renames = {"provider": "gateway_slug", "contract": "contract_slug"}

    class Meta:
        model = Plan
        fields = [
            "id",
            *PLAN_FIELDS,
            "grace_period_days",
            "is_active",
            "experiment",
            "variant",
            "sort_order",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate(self, attrs: dict) -> dict:
        raw = attrs.get("price_token")
        if isinstance(raw, str):
            contract = attrs.get("contract") or (self.instance.contract if self.instance else None)
            if "@" in raw:
                symbol, network = raw.split("@")
                token = Token.objects.filter(symbol=symbol, network__slug=network).first()
            elif contract is not None:
                token = Token.objects.filter(symbol=raw, network=contract.network).first()
            else:
                token = None
            if token is None:
                where = f"on {contract.network.slug}" if contract is not None and "@" not in raw else ""
                raise serializers.ValidationError({"price_token": [f"No token {raw} {where}".strip() + "."]})
            attrs["price_token"] = token
        return attrs

    def create(self, validated_data: dict) -> Plan:
        return self._call(catalog.plan_create, data=validated_data)

    def update(self, instance: Plan, validated_data: dict) -> Plan:
        return self._call(catalog.plan_update, plan=instance, data=validated_data)


# --- providers -------------------------------------------------------------------------------------


class ProviderSerializer(CatalogWriteMixin, serializers.ModelSerializer):
    networks = SlugRelatedField(many=True, slug_field="slug", queryset=Network.objects.all(), required=False)
    supported_tokens = TokenKeyField(many=True, required=False)
    default_network = SlugRelatedField(
        slug_field="slug", queryset=Network.objects.all(), allow_null=True, required=False
    )
    contract_slug = SlugRelatedField(
        source="contract", slug_field="slug", queryset=PaymentContract.objects.all(), allow_null=True, required=False
    )
    config = ObjectField(read_only=True, help_text="Built by the backend from the fields above.")

    error_renames = {"contract": "contract_slug"}

    class Meta:
        model = PaymentProvider
        fields = [
            "id",
            "slug",
            "title",
            "type",
            "enabled",
            "priority",
            "networks",
            "supported_tokens",
            "default_network",
            "contract_slug",
            "config",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "config", "created_at", "updated_at"]

    def validate_type(self, value: str) -> str:
        if value not in settings.BILLING_PROVIDERS:
            raise serializers.ValidationError(
                f"Unknown provider type; known: {', '.join(sorted(settings.BILLING_PROVIDERS))}."
            )
        return value

    def _split(self, validated_data: dict) -> tuple[dict, list | None, list | None]:
        data = dict(validated_data)
        networks = data.pop("networks", None)
        tokens = data.pop("supported_tokens", None)
        return data, networks, tokens

    def create(self, validated_data: dict) -> PaymentProvider:
        data, networks, tokens = self._split(validated_data)
        return self._call(catalog.provider_create, data=data, networks=networks, supported_tokens=tokens)

    def update(self, instance: PaymentProvider, validated_data: dict) -> PaymentProvider:
        data, networks, tokens = self._split(validated_data)
        return self._call(
            catalog.provider_update, provider=instance, data=data, networks=networks, supported_tokens=tokens
        )


# --- contracts -------------------------------------------------------------------------------------


class ContractSerializer(CatalogWriteMixin, serializers.ModelSerializer):
    network = SlugRelatedField(slug_field="slug", queryset=Network.objects.all())
    chain_id = serializers.IntegerField(source="network.chain_id", read_only=True)
    abi = AbiField()
    fallback_rpc = MaskedUrlField(required=False, allow_blank=True, max_length=500)
    webhook_secret = serializers.CharField(
        write_only=True,
        required=False,
        min_length=16,
        max_length=256,
        help_text="Write-only. Setting it rotates the secret; the previous one stays valid for the grace period.",
    )
    has_webhook_secret = serializers.BooleanField(read_only=True)
    explorer_url = serializers.SerializerMethodField()

    class Meta:
        model = PaymentContract
        fields = [
            "id",
            "slug",
            "title",
            "network",
            "chain_id",
            "address",
            "explorer_url",
            "abi",
            "mint_method",
            "burn_method",
            "withdraw_method",
            "eip712_name",
            "eip712_version",
            "fallback_rpc",
            "webhook_secret",
            "has_webhook_secret",
            "secret_rotated_at",
            "deployment_block",
            "enabled",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "secret_rotated_at", "created_at", "updated_at"]

    def get_explorer_url(self, obj: PaymentContract) -> str:
        return obj.network.address_url(obj.address)

    def validate(self, attrs: dict) -> dict:
        if self.instance is not None and is_masked_echo(attrs.get("fallback_rpc"), self.instance.fallback_rpc):
            attrs.pop("fallback_rpc")
        return attrs

    def create(self, validated_data: dict) -> PaymentContract:
        return self._call(catalog.contract_create, data=validated_data)

    def update(self, instance: PaymentContract, validated_data: dict) -> PaymentContract:
        return self._call(catalog.contract_update, contract=instance, data=validated_data)


# --- networks and tokens ---------------------------------------------------------------------------


class RpcEndpointSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(required=False, help_text="Send it back to keep (and reorder) an endpoint.")
    url = MaskedUrlField(required=False, max_length=500, help_text="Write-only in effect: read back masked.")
    timeout_seconds = serializers.DecimalField(
        max_digits=5, decimal_places=2, min_value=Decimal("0.1"), max_value=Decimal("999"), required=False
    )
    last_error = serializers.SerializerMethodField()

    class Meta:
        model = RpcEndpoint
        fields = ["id", "position", "url", "timeout_seconds", "enabled", *RpcEndpoint.HEALTH_FIELDS]
        # last_error is a method field (masked).
        read_only_fields = ["position", *(f for f in RpcEndpoint.HEALTH_FIELDS if f != "last_error")]

    def get_last_error(self, obj: RpcEndpoint) -> str:
        # Client errors can quote the URL (and so its key).
        return mask_url(obj.last_error or "")


class NetworkSerializer(CatalogWriteMixin, serializers.ModelSerializer):
    rpc_endpoints = RpcEndpointSerializer(
        many=True, required=False, help_text="Ordered: the first is tried first. Replaces the list when sent."
    )

    class Meta:
        model = Network
        fields = [
            "id",
            "slug",
            "name",
            "chain_id",
            "is_testnet",
            "enabled",
            "confirmation_depth",
            "confirmation_policy",
            "native_symbol",
            "native_decimals",
            "block_time_seconds",
            "explorer_tx_url",
            "explorer_address_url",
            "explorer_block_url",
            "rpc_endpoints",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_rpc_endpoints(self, value: list[dict]) -> list[dict]:
        current = {e.pk: e.url for e in self.instance.rpc_endpoints.all()} if self.instance else {}
        for item in value:
            if item.get("id") and is_masked_echo(item.get("url"), current.get(item["id"])):
                item.pop("url")
        return value

    def create(self, validated_data: dict) -> Network:
        data = dict(validated_data)
        endpoints = data.pop("rpc_endpoints", None)
        return self._call(catalog.network_create, data=data, rpc_endpoints=endpoints)

    def update(self, instance: Network, validated_data: dict) -> Network:
        data = dict(validated_data)
        endpoints = data.pop("rpc_endpoints", None)
        return self._call(catalog.network_update, network=instance, data=data, rpc_endpoints=endpoints)


class TokenSerializer(CatalogWriteMixin, serializers.ModelSerializer):
    network = SlugRelatedField(slug_field="slug", queryset=Network.objects.all())
    key = serializers.SerializerMethodField(help_text="SYMBOL@network, as providers' supported_tokens name it")
    is_native = serializers.BooleanField(read_only=True)

    class Meta:
        model = Token
        fields = [
            "id",
            "key",
            "network",
            "symbol",
            "name",
            "address",
            "is_native",
            "decimals",
            "usd_estimate",
            "enabled",
        ]
        read_only_fields = ["id"]

    def get_key(self, obj: Token) -> str:
        return f"{obj.symbol}@{obj.network.slug}"

    def create(self, validated_data: dict) -> Token:
        return self._call(catalog.token_create, data=validated_data)

    def update(self, instance: Token, validated_data: dict) -> Token:
        return self._call(catalog.token_update, token=instance, data=validated_data)


class FallbackNetworksField(serializers.ListField):
    def get_attribute(self, instance: CryptoConfig) -> list[str]:
        return [n.slug for n in instance.fallback_order()]


class CryptoConfigSerializer(CatalogWriteMixin, serializers.ModelSerializer):
    gas_cap_wei = TokenAmountField(required=False, help_text="Highest max fee per gas the sender pays (wei).")
    fallback_networks = FallbackNetworksField(
        child=serializers.SlugField(),
        required=False,
        help_text="Network slugs in the order checkout falls back to them.",
    )

    class Meta:
        model = CryptoConfig
        fields = [
            "max_retries",
            "backoff_base_ms",
            "backoff_max_ms",
            "request_timeout_seconds",
            "gas_cap_wei",
            "stuck_tx_seconds",
            "fee_bump_percent",
            "get_logs_max_range",
            "fallback_networks",
            "updated_at",
        ]
        read_only_fields = ["updated_at"]

    def validate_fallback_networks(self, value: list[str]) -> list[Network]:
        found = {n.slug: n for n in Network.objects.filter(slug__in=value)}
        missing = [s for s in value if s not in found]
        if missing:
            raise serializers.ValidationError(f"Unknown network(s): {', '.join(missing)}.")
        return [found[s] for s in value]

    def update(self, instance: CryptoConfig, validated_data: dict) -> CryptoConfig:
        data = dict(validated_data)
        fallbacks = data.pop("fallback_networks", None)
        return self._call(catalog.crypto_config_update, data=data, fallback_networks=fallbacks)


# --- transactions, events ---------------------------------------------------------------------------


class TransactionStatusChangeSerializer(serializers.ModelSerializer):
    class Meta:
        model = TransactionStatusChange
        fields = ["from_status", "to_status", "actor", "reason", "details", "created_at"]


class TransactionSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    user_id = serializers.IntegerField(read_only=True, allow_null=True)
    plan_slug = SlugRelatedField(source="plan", slug_field="slug", read_only=True)
    provider_slug = SlugRelatedField(source="provider", slug_field="slug", read_only=True)
    contract_slug = SlugRelatedField(source="contract", slug_field="slug", read_only=True)
    network = SlugRelatedField(slug_field="slug", read_only=True)
    token = serializers.CharField(source="token.symbol", read_only=True)
    token_address = serializers.SerializerMethodField()
    amount = TokenAmountField(read_only=True)
    amount_display = serializers.SerializerMethodField()
    effective_gas_price = TokenAmountField(read_only=True, allow_null=True)
    fee = TokenAmountField(read_only=True, allow_null=True)
    fee_display = serializers.SerializerMethodField()
    fee_token = serializers.CharField(source="network.native_symbol", read_only=True)
    explorer_url = serializers.CharField(read_only=True)

    class Meta:
        model = PaymentTransaction
        fields = [
            "id",
            "status",
            "user_id",
            "product_type",
            "plan_slug",
            "provider_slug",
            "contract_slug",
            "network",
            "chain_id",
            "token",
            "token_address",
            "amount",
            "amount_display",
            "periods",
            "order_id",
            "payer_address",
            "tx_hash",
            "block_number",
            "log_index",
            "gas_used",
            "effective_gas_price",
            "fee",
            "fee_display",
            "fee_token",
            "explorer_url",
            "failure_reason",
            "usd_rate_at_checkout",
            "usd_rate_at_confirmation",
            "expires_at",
            "submitted_at",
            "confirmed_at",
            "refunded_at",
            "refund_tx_hash",
            "refund_status",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_token_address(self, obj: PaymentTransaction) -> str | None:
        return obj.token.address or None

    @extend_schema_field(DISPLAY_SCHEMA)
    def get_amount_display(self, obj: PaymentTransaction) -> str | None:
        return display_amount(obj.amount_display)

    @extend_schema_field(DISPLAY_SCHEMA)
    def get_fee_display(self, obj: PaymentTransaction) -> str | None:
        return display_amount(obj.fee_display)


class TransactionDetailSerializer(TransactionSerializer):
    status_history = TransactionStatusChangeSerializer(many=True, read_only=True)

    class Meta(TransactionSerializer.Meta):
        fields = [*TransactionSerializer.Meta.fields, "status_history"]
        read_only_fields = fields


class OperatorActionSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, help_text="Why; kept in the status history and audit log.")


class OperatorActionResultSerializer(serializers.Serializer):
    result = serializers.CharField(help_text="What happened: refund_sent, refund_requested, reprocessed, ...")
    detail = serializers.CharField(allow_blank=True)
    transaction = TransactionDetailSerializer()


class WithdrawSerializer(serializers.Serializer):
    token = serializers.CharField(
        max_length=66, help_text="Symbol (e.g. dUSD, or the network's native symbol) or token address."
    )
    amount = TokenAmountField(
        required=False, allow_null=True, help_text="Smallest unit; omitted or null: the whole available balance."
    )
    reason = serializers.CharField(max_length=500, help_text="Why; kept in the audit log.")


class OperatorTransactionSerializer(serializers.ModelSerializer):
    network = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    value = TokenAmountField()
    fee = TokenAmountField(allow_null=True)

    class Meta:
        model = OperatorTransaction
        fields = [
            "id",
            "kind",
            "status",
            "network",
            "chain_id",
            "sender",
            "to",
            "value",
            "nonce",
            "tx_hashes",
            "mined_tx_hash",
            "block_number",
            "fee",
            "replacements",
            "retry_of",
            "requested_by",
            "reason",
            "error",
            "created_at",
            "mined_at",
        ]
        read_only_fields = fields


class WithdrawResultSerializer(serializers.Serializer):
    result = serializers.CharField(help_text="withdraw_sent")
    detail = serializers.CharField()
    withdrawal = serializers.DictField(
        help_text="contract_slug, network, token (SYMBOL@network), token_address, treasury, amount, balance, "
        "reserved (in-flight refunds left in the contract), to, data"
    )
    operator_transaction = OperatorTransactionSerializer()


class ChainEventSerializer(serializers.ModelSerializer):
    amount = TokenAmountField(allow_null=True)
    transaction_id = serializers.SerializerMethodField()
    explorer_tx_url = serializers.SerializerMethodField()
    explorer_block_url = serializers.SerializerMethodField()
    args = ObjectField()

    class Meta:
        model = ChainEvent
        fields = [
            "id",
            "name",
            "chain_id",
            "block_number",
            "block_hash",
            "tx_hash",
            "log_index",
            "args",
            "amount",
            "token_address",
            "removed",
            "transaction_id",
            "explorer_tx_url",
            "explorer_block_url",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field({"type": "string", "format": "uuid", "nullable": True})
    def get_transaction_id(self, obj: ChainEvent) -> str | None:
        return str(obj.transaction.public_id) if obj.transaction_id else None

    def get_explorer_tx_url(self, obj: ChainEvent) -> str:
        return obj.contract.network.tx_url(obj.tx_hash)

    def get_explorer_block_url(self, obj: ChainEvent) -> str:
        template = obj.contract.network.explorer_block_url
        return template.format(block=obj.block_number) if template else ""


class OutboxDeliverySerializer(serializers.ModelSerializer):
    event_id = serializers.UUIDField(source="event.event_id", read_only=True)
    topic = serializers.CharField(source="event.topic", read_only=True)
    payload = ObjectField(source="event.payload", read_only=True)

    class Meta:
        model = OutboxDelivery
        fields = [
            "id",
            "event_id",
            "topic",
            "subscriber",
            "status",
            "attempts",
            "max_attempts",
            "next_attempt_at",
            "last_error",
            "delivered_at",
            "payload",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ProbeResultSerializer(serializers.Serializer):
    network = serializers.CharField()
    results = serializers.ListField(child=ObjectField(), help_text="One entry per endpoint (URL masked).")
    error = serializers.CharField(required=False)


class TestConnectionResultSerializer(serializers.Serializer):
    networks = ProbeResultSerializer(many=True)


# --- audit ---------------------------------------------------------------------------------------

# Excluded from auditlog registration already (billing/audit.py); masked here again as a second line.
SECRET_FIELDS = frozenset({"webhook_secret", "previous_webhook_secret", "fallback_rpc", "url", "signer_key"})


def mask_changes(changes: Any) -> Any:
    if isinstance(changes, dict):
        return {k: (MASK if k in SECRET_FIELDS else mask_changes(v)) for k, v in changes.items()}
    if isinstance(changes, list):
        return [mask_changes(v) for v in changes]
    if isinstance(changes, str):
        return mask_url(changes)
    return changes


class AuditEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    timestamp = serializers.DateTimeField()
    action = serializers.SerializerMethodField()
    model = serializers.SerializerMethodField()
    object_id = serializers.CharField(source="object_pk")
    object_repr = serializers.SerializerMethodField()
    actor = serializers.SerializerMethodField()
    changes = serializers.SerializerMethodField()

    def get_action(self, obj) -> str:
        return {0: "create", 1: "update", 2: "delete", 3: "access"}.get(obj.action, str(obj.action))

    def get_model(self, obj) -> str:
        return f"{obj.content_type.app_label}.{obj.content_type.model}"

    def get_object_repr(self, obj) -> str:
        return mask_url(obj.object_repr or "")

    @extend_schema_field({"type": "string", "nullable": True})
    def get_actor(self, obj) -> str | None:
        return obj.actor.get_username() if obj.actor_id else None

    @extend_schema_field(
        {
            "type": "object",
            "additionalProperties": True,
            "description": "field -> [old, new] (or an m2m operation); secret fields masked",
        }
    )
    def get_changes(self, obj) -> dict:
        changes = obj.changes
        if isinstance(changes, str):
            import json

            try:
                changes = json.loads(changes)
            except ValueError:
                changes = {}
        return mask_changes(changes or {})
