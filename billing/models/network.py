"""Crypto configuration in normalized form: networks, ordered RPC endpoints, tokens, retry policy."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from billing.fields import TokenAmountField, to_display
from billing.validators import validate_checksum_address


class ConfirmationPolicy(models.TextChoices):
    """When a payment counts (billing.chain.confirmation.applicable_block)."""

    DEPTH = "depth", "head minus confirmation_depth"
    SAFE = "safe", "the node's safe block (and the depth)"
    FINALIZED = "finalized", "the node's finalized block (and the depth)"


class Network(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=128)
    chain_id = models.PositiveBigIntegerField(unique=True)
    is_testnet = models.BooleanField(default=True)
    enabled = models.BooleanField(default=True)
    confirmation_depth = models.PositiveIntegerField(default=12, help_text="Blocks on top before a payment counts.")
    confirmation_policy = models.CharField(
        max_length=16,
        choices=ConfirmationPolicy.choices,
        default=ConfirmationPolicy.DEPTH,
        help_text="depth: head minus confirmation_depth; safe / finalized: the node's block tag, and never above "
        "head minus confirmation_depth.",
    )
    native_symbol = models.CharField(max_length=16, default="ETH")
    native_decimals = models.PositiveSmallIntegerField(default=18)
    block_time_seconds = models.PositiveIntegerField(default=12)
    explorer_tx_url = models.CharField(
        max_length=255, blank=True, help_text="Template with {tx_hash}, e.g. https://etherscan.io/tx/{tx_hash}"
    )
    explorer_address_url = models.CharField(max_length=255, blank=True, help_text="Template with {address}")
    explorer_block_url = models.CharField(max_length=255, blank=True, help_text="Template with {block}")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(confirmation_policy__in=[c.value for c in ConfirmationPolicy]),
                name="network_confirmation_policy_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.chain_id})"

    def clean(self) -> None:
        errors = {}
        if self.explorer_tx_url and "{tx_hash}" not in self.explorer_tx_url:
            errors["explorer_tx_url"] = "The template must contain {tx_hash}."
        if self.explorer_address_url and "{address}" not in self.explorer_address_url:
            errors["explorer_address_url"] = "The template must contain {address}."
        if self.explorer_block_url and "{block}" not in self.explorer_block_url:
            errors["explorer_block_url"] = "The template must contain {block}."
        if errors:
            raise ValidationError(errors)

    def tx_url(self, tx_hash: str | None) -> str:
        return self.explorer_tx_url.format(tx_hash=tx_hash) if tx_hash and self.explorer_tx_url else ""

    def address_url(self, address: str | None) -> str:
        return self.explorer_address_url.format(address=address) if address and self.explorer_address_url else ""


class RpcEndpoint(models.Model):
    """One JSON-RPC endpoint of a network; lower position is tried first. The URL may carry a key."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="rpc_endpoints")
    position = models.PositiveSmallIntegerField(default=0)
    url = models.CharField(max_length=500, help_text="May carry a provider key; shown masked.")
    timeout_seconds = models.DecimalField(
        max_digits=5, decimal_places=2, default=5, validators=[MinValueValidator(0.1)]
    )
    enabled = models.BooleanField(default=True)
    # Health, written by the RPC client (not audited: it changes on every call).
    healthy = models.BooleanField(default=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_ok_at = models.DateTimeField(null=True, blank=True)
    last_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    last_head_block = models.PositiveBigIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    # The columns above the RPC client writes: read-only in the admin and the API, not audited.
    HEALTH_FIELDS = (
        "healthy",
        "last_checked_at",
        "last_ok_at",
        "last_latency_ms",
        "last_head_block",
        "last_error",
        "consecutive_failures",
    )

    class Meta:
        ordering = ["network", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["network", "position"], name="rpc_endpoint_unique_position"),
            models.CheckConstraint(condition=models.Q(timeout_seconds__gt=0), name="rpc_endpoint_timeout_positive"),
        ]

    def __str__(self) -> str:
        from billing_project.logging import mask_url

        return f"{self.network.slug}#{self.position} {mask_url(self.url)}"

    @property
    def masked_url(self) -> str:
        from billing_project.logging import mask_url

        return mask_url(self.url)

    def clean(self) -> None:
        if self.url and not self.url.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValidationError({"url": "An RPC URL starts with http(s):// or ws(s)://."})


class Token(models.Model):
    """A payable asset on one network: the native coin (no address) or an ERC-20."""

    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="tokens")
    symbol = models.CharField(max_length=16)
    name = models.CharField(max_length=64, blank=True)
    address = models.CharField(
        max_length=42, blank=True, default="", validators=[validate_checksum_address], help_text="Empty for native."
    )
    decimals = models.PositiveSmallIntegerField(default=18)
    usd_estimate = models.DecimalField(max_digits=24, decimal_places=8, default=0, help_text="USD per whole token.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["network__slug", "symbol"]
        constraints = [
            models.UniqueConstraint(fields=["network", "symbol"], name="token_unique_symbol_per_network"),
            models.UniqueConstraint(
                fields=["network", "address"], condition=~models.Q(address=""), name="token_unique_address_per_network"
            ),
            models.UniqueConstraint(
                fields=["network"], condition=models.Q(address=""), name="token_one_native_per_network"
            ),
            models.CheckConstraint(condition=models.Q(decimals__lte=77), name="token_decimals_range"),
        ]

    def __str__(self) -> str:
        return f"{self.symbol}@{self.network.slug}"

    @property
    def is_native(self) -> bool:
        return not self.address

    def display(self, amount: int | None):
        return to_display(amount, self.decimals)


class CryptoConfig(models.Model):
    """Retry, backoff, gas and fallback policy. One row (pk=1); `CryptoConfig.load()` returns it."""

    max_retries = models.PositiveSmallIntegerField(default=3)
    backoff_base_ms = models.PositiveIntegerField(default=200)
    backoff_max_ms = models.PositiveIntegerField(default=5000)
    request_timeout_seconds = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=5,
        validators=[
            MinValueValidator(Decimal("0.1"), message="Must be at least 0.1 s: every RPC call needs a deadline.")
        ],
        help_text="Deadline of one RPC request to a contract's fallback_rpc (seconds, > 0).",
    )
    gas_cap_wei = TokenAmountField(default=200 * 10**9, help_text="Highest max fee per gas the sender will pay (wei).")
    stuck_tx_seconds = models.PositiveIntegerField(default=120, help_text="Replace an operator tx pending this long.")
    fee_bump_percent = models.PositiveSmallIntegerField(default=20)
    get_logs_max_range = models.PositiveIntegerField(
        default=2000,
        validators=[MinValueValidator(1, message="Must be at least 1: a range of 0 blocks would stop the follower.")],
        help_text="Most blocks one eth_getLogs asks for (>= 1).",
    )
    fallback_networks = models.ManyToManyField(Network, through="NetworkFallback", related_name="+", blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "crypto config"
        verbose_name_plural = "crypto config"
        constraints = [
            models.CheckConstraint(condition=models.Q(pk=1), name="crypto_config_singleton"),
            models.CheckConstraint(
                condition=models.Q(backoff_max_ms__gte=models.F("backoff_base_ms")), name="crypto_config_backoff_order"
            ),
            models.CheckConstraint(condition=models.Q(fee_bump_percent__gte=10), name="crypto_config_fee_bump_min"),
            models.CheckConstraint(condition=models.Q(get_logs_max_range__gte=1), name="crypto_config_log_range_min"),
            models.CheckConstraint(
                condition=models.Q(request_timeout_seconds__gt=0), name="crypto_config_timeout_positive"
            ),
        ]

    def __str__(self) -> str:
        return "Crypto config"

    def save(self, *args, **kwargs):
        self.pk = 1
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> CryptoConfig:
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj

    def fallback_order(self) -> list[Network]:
        return [f.network for f in self.fallbacks.select_related("network").order_by("position")]


class NetworkFallback(models.Model):
    """At checkout, when the preferred network has no healthy endpoint, networks are tried in this order."""

    config = models.ForeignKey(CryptoConfig, on_delete=models.CASCADE, related_name="fallbacks")
    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="fallback_positions")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["config", "network"], name="fallback_unique_network"),
            models.UniqueConstraint(fields=["config", "position"], name="fallback_unique_position"),
        ]

    def __str__(self) -> str:
        return f"{self.position}: {self.network.slug}"


__all__ = [
    "ConfirmationPolicy",
    "Network",
    "RpcEndpoint",
    "Token",
    "CryptoConfig",
    "NetworkFallback",
    "TokenAmountField",
]
