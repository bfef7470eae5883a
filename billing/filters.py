"""django-filter FilterSets for the billing lists."""

from __future__ import annotations

from datetime import UTC

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField

from billing.fields import UINT256_MAX
from billing.models import OutboxDelivery, PaymentTransaction, TxStatus


class AmountFilter(django_filters.NumberFilter):
    """Amounts are uint256 in the smallest unit: compare as integers, never floats."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", UINT256_MAX)
        super().__init__(*args, **kwargs)

    def get_max_validator(self):
        # django-filter caps numbers at 1e50; uint256 amounts go up to ~1.2e77 (max_value above bounds them).
        return None


class UtcDateTimeField(IsoDateTimeField):
    """Normalize to UTC: PostgreSQL refuses offsets beyond +-15:59 that ISO 8601 parsers accept."""

    def clean(self, value):
        parsed = super().clean(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError("The date is out of range.")


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class TransactionFilter(django_filters.FilterSet):
    # distinct=False: no join can repeat a row, and DISTINCT over the ledger's wide rows costs a hash of each.
    status = django_filters.MultipleChoiceFilter(choices=TxStatus.choices, distinct=False)
    provider = django_filters.CharFilter(field_name="provider__slug", help_text="provider (gateway) slug")
    contract = django_filters.CharFilter(field_name="contract__slug", help_text="contract slug")
    network = django_filters.CharFilter(field_name="network__slug", help_text="network slug")
    token = django_filters.CharFilter(field_name="token__symbol", help_text="token symbol")
    plan = django_filters.CharFilter(field_name="plan__slug")
    user = django_filters.NumberFilter(field_name="user_id")
    tx_hash = django_filters.CharFilter(field_name="tx_hash", lookup_expr="iexact")
    created_after = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")
    amount_min = AmountFilter(field_name="amount", lookup_expr="gte", help_text="smallest unit, inclusive")
    amount_max = AmountFilter(field_name="amount", lookup_expr="lte", help_text="smallest unit, inclusive")

    class Meta:
        model = PaymentTransaction
        fields: list[str] = []


class OutboxDeliveryFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=OutboxDelivery.Status.choices, help_text="dead = dead letters (retries exhausted)"
    )
    subscriber = django_filters.CharFilter()
    topic = django_filters.CharFilter(field_name="event__topic")

    class Meta:
        model = OutboxDelivery
        fields: list[str] = []
