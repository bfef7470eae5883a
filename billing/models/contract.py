"""Payment contracts: where payments land on chain, and the webhook secret their indexer signs with."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from billing.models.network import Network
from billing.validators import abi_functions, validate_abi, validate_checksum_address


class PaymentContract(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=128, blank=True)
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="contracts")
    address = models.CharField(max_length=42, validators=[validate_checksum_address])
    abi = models.JSONField(validators=[validate_abi])
    mint_method = models.CharField(max_length=100, help_text="ABI function a payer calls (pays and mints/extends).")
    burn_method = models.CharField(max_length=100, help_text="ABI function the operator calls to refund.")
    withdraw_method = models.CharField(max_length=100, blank=True, default="withdraw")
    eip712_name = models.CharField(max_length=64, default="SubscriptionPass")
    eip712_version = models.CharField(max_length=16, default="1")
    # Write-only everywhere: never rendered by an API, a page or a log line.
    webhook_secret = models.CharField(max_length=256, blank=True)
    previous_webhook_secret = models.CharField(max_length=256, blank=True)
    secret_rotated_at = models.DateTimeField(null=True, blank=True)
    fallback_rpc = models.CharField(max_length=500, blank=True, help_text="Tried after the network's endpoints.")
    deployment_block = models.PositiveBigIntegerField(default=0)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.UniqueConstraint(fields=["network", "address"], name="contract_unique_address_per_network"),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def chain_id(self) -> int:
        return self.network.chain_id

    @property
    def has_webhook_secret(self) -> bool:
        return bool(self.webhook_secret)

    def abi_function(self, name: str) -> dict | None:
        return abi_functions(self.abi or []).get(name)

    def has_method(self, name: str) -> bool:
        return self.abi_function(name) is not None

    def rotate_webhook_secret(self, new_secret: str) -> None:
        """Keep the old secret as previous, so deliveries signed with it pass during the grace period."""
        if self.webhook_secret and self.webhook_secret != new_secret:
            self.previous_webhook_secret = self.webhook_secret
        self.webhook_secret = new_secret
        self.secret_rotated_at = timezone.now()

    def clean(self) -> None:
        errors: dict[str, str] = {}
        try:
            validate_abi(self.abi)
        except ValidationError as exc:
            errors["abi"] = exc.messages[0]
        else:
            functions = abi_functions(self.abi)
            for field in ("mint_method", "burn_method"):
                name = getattr(self, field)
                if not name:
                    errors[field] = "Required."
                elif name not in functions:
                    errors[field] = f"'{name}' is not a function in the ABI."
                elif not functions[name].get("inputs"):
                    errors[field] = f"'{name}' takes no inputs; it cannot carry a payment."
            if self.withdraw_method and self.withdraw_method not in functions:
                errors["withdraw_method"] = f"'{self.withdraw_method}' is not a function in the ABI."
        if self.fallback_rpc and not self.fallback_rpc.startswith(("http://", "https://", "ws://", "wss://")):
            errors["fallback_rpc"] = "An RPC URL starts with http(s):// or ws(s)://."
        if errors:
            raise ValidationError(errors)
