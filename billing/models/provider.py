"""Payment providers (gateways): which networks and tokens a provider takes, and its derived config."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from billing.models.contract import PaymentContract
from billing.models.network import Network, Token


class PaymentProvider(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=128, blank=True)
    type = models.CharField(max_length=32, default="evm", help_text="Registry key of the adapter class.")
    enabled = models.BooleanField(default=True)
    priority = models.PositiveSmallIntegerField(default=100, help_text="Lower is preferred.")
    networks = models.ManyToManyField(Network, related_name="providers", blank=True)
    supported_tokens = models.ManyToManyField(Token, related_name="providers", blank=True)
    default_network = models.ForeignKey(
        Network, on_delete=models.PROTECT, null=True, blank=True, related_name="default_for_providers"
    )
    contract = models.ForeignKey(
        PaymentContract, on_delete=models.PROTECT, null=True, blank=True, related_name="providers"
    )
    # Derived from the fields above by `provider_build_config`; never edited by hand.
    config = models.JSONField(default=dict, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "slug"]

    def __str__(self) -> str:
        return self.slug

    def build_config(self) -> dict:
        """The adapter's view of this provider, built from the normalized fields (needs a pk)."""
        networks = sorted(self.networks.all(), key=lambda n: n.slug)
        tokens = sorted(self.supported_tokens.select_related("network"), key=lambda t: (t.network.slug, t.symbol))
        return {
            "type": self.type,
            "default_network": self.default_network.slug if self.default_network_id else None,
            "contract": self.contract.slug if self.contract_id else None,
            "networks": [
                {
                    "slug": n.slug,
                    "chain_id": n.chain_id,
                    "confirmation_depth": n.confirmation_depth,
                    "tokens": [
                        {"symbol": t.symbol, "address": t.address or None, "decimals": t.decimals}
                        for t in tokens
                        if t.network_id == n.id
                    ],
                }
                for n in networks
            ],
        }

    def validate_links(self, networks: list[Network], tokens: list[Token], default_network: Network | None) -> None:
        """Cross-field rules that need the many-to-many values (checked by serializers and forms)."""
        errors: dict[str, str] = {}
        network_ids = {n.pk for n in networks}
        if default_network is not None and default_network.pk not in network_ids:
            errors["default_network"] = "The default network must be one of the provider's networks."
        strays = [str(t) for t in tokens if t.network_id not in network_ids]
        if strays:
            errors["supported_tokens"] = f"Tokens on networks the provider does not use: {', '.join(strays)}."
        if self.contract_id and self.contract.network_id not in network_ids:
            errors["contract_slug"] = "The contract lives on a network the provider does not use."
        if errors:
            raise ValidationError(errors)
