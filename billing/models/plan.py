"""Subscription plans: what is sold, for how much, through which provider and contract."""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import models

from billing.fields import UINT256_MAX, TokenAmountField, to_display
from billing.models.contract import PaymentContract
from billing.models.network import Token
from billing.models.provider import PaymentProvider


class Interval(models.TextChoices):
    DAY = "day", "Daily"
    WEEK = "week", "Weekly"
    MONTH = "month", "Monthly"
    YEAR = "year", "Yearly"


INTERVAL_DAYS = {Interval.DAY: 1, Interval.WEEK: 7, Interval.MONTH: 30, Interval.YEAR: 365}


def validate_limits(value) -> None:
    if not isinstance(value, dict):
        raise ValidationError("Limits are a JSON object of quota key to a whole number (null = unlimited).")
    for key, amount in value.items():
        if not isinstance(key, str) or not key.strip():
            raise ValidationError("Quota keys are non-empty strings.")
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int) or amount < 0):
            raise ValidationError("Quota %(key)s must be a whole number >= 0 or null.", params={"key": key})


def validate_features(value) -> None:
    if not isinstance(value, list) or not all(isinstance(f, str) and f.strip() for f in value):
        raise ValidationError("Features are a JSON list of non-empty strings.")
    if len(set(value)) != len(value):
        raise ValidationError("Features repeat.")


class Plan(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=128)
    description = models.TextField(blank=True)
    interval = models.CharField(max_length=8, choices=Interval.choices, default=Interval.MONTH)
    price_token = models.ForeignKey(Token, on_delete=models.PROTECT, related_name="plans")
    price_amount = TokenAmountField(help_text="In the token's smallest unit.")
    price_usd_estimate = models.DecimalField(max_digits=18, decimal_places=2, default=0)
    provider = models.ForeignKey(PaymentProvider, on_delete=models.PROTECT, related_name="plans")
    contract = models.ForeignKey(PaymentContract, on_delete=models.PROTECT, related_name="plans")
    limits = models.JSONField(default=dict, blank=True, validators=[validate_limits])
    features = models.JSONField(default=list, blank=True, validators=[validate_features])
    tier = models.PositiveSmallIntegerField(default=0, help_text="Higher is an upgrade; lower is a downgrade.")
    grace_period_days = models.PositiveSmallIntegerField(default=3)
    is_active = models.BooleanField(default=True)
    experiment = models.CharField(max_length=64, blank=True)
    variant = models.CharField(max_length=32, blank=True)
    sort_order = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sort_order", "tier", "slug"]
        constraints = [
            models.CheckConstraint(condition=models.Q(price_amount__gt=0), name="plan_price_positive"),
            models.CheckConstraint(condition=models.Q(price_amount__lte=UINT256_MAX), name="plan_price_uint256"),
            models.CheckConstraint(
                condition=models.Q(interval__in=[c.value for c in Interval]), name="plan_interval_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(variant="") | ~models.Q(experiment=""), name="plan_variant_needs_experiment"
            ),
        ]
        indexes = [models.Index(fields=["is_active", "sort_order"], name="plan_active_idx")]

    def __str__(self) -> str:
        return self.slug

    @property
    def period(self) -> timedelta:
        return timedelta(days=INTERVAL_DAYS[Interval(self.interval)])

    @property
    def price_display(self):
        return to_display(self.price_amount, self.price_token.decimals) if self.price_token_id else None

    @property
    def onchain_plan_id(self) -> int:
        return self.pk

    def clean(self) -> None:
        errors: dict[str, str] = {}
        token = self.price_token if self.price_token_id else None
        provider = self.provider if self.provider_id else None
        contract = self.contract if self.contract_id else None
        if token and not token.enabled:
            errors["price_token"] = "The token is disabled."
        if token and provider and provider.pk:
            network_ids = set(provider.networks.values_list("pk", flat=True))
            if token.network_id not in network_ids:
                errors["price_token"] = f"{token} lives on a network the provider '{provider.slug}' does not support."
        if token and contract and token.network_id != contract.network_id:
            errors["contract"] = "The contract and the price token are on different networks."
        if provider and contract and provider.contract_id and provider.contract_id != contract.pk:
            errors["contract"] = f"The provider '{provider.slug}' is bound to another contract."
        if self.variant and not self.experiment:
            errors["variant"] = "A variant needs an experiment."
        if errors:
            raise ValidationError(errors)
