"""Serializers of the customer's own API (/v1/billing/me/*): subscription, settings bundle, history."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing import selectors
from billing.api.serializers.admin import TransactionSerializer
from billing.api.serializers.fields import (
    AMOUNT_SCHEMA,
    DISPLAY_SCHEMA,
    LimitsField,
    SlugRelatedField,
    TokenAmountField,
    display_amount,
)
from billing.models import (
    PeriodKind,
    Subscription,
)


class HistoryItemSerializer(TransactionSerializer):
    """A user's own transaction: what a wallet user needs, none of the operator fields."""

    class Meta(TransactionSerializer.Meta):
        fields = [
            "id",
            "status",
            "plan_slug",
            "network",
            "chain_id",
            "token",
            "token_address",
            "amount",
            "amount_display",
            "periods",
            "tx_hash",
            "gas_used",
            "fee",
            "fee_display",
            "fee_token",
            "explorer_url",
            "failure_reason",
            "created_at",
            "confirmed_at",
        ]
        read_only_fields = fields


# --- the user's own view -----------------------------------------------------------------------------


class QueuedPeriodSerializer(serializers.Serializer):
    """One paid period that starts later (a renewal, a downgrade, an upgrade credit...)."""

    plan = serializers.CharField(source="plan.slug")
    plan_title = serializers.CharField(source="plan.title")
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    kind = serializers.ChoiceField(choices=PeriodKind.choices)
    transaction_id = serializers.UUIDField(
        source="transaction_public_id", allow_null=True, help_text="The payment that bought it, if any."
    )


class SubscriptionSerializer(serializers.ModelSerializer):
    plan = SlugRelatedField(slug_field="slug", read_only=True)
    plan_title = serializers.CharField(source="plan.title", read_only=True)
    interval = serializers.CharField(source="plan.interval", read_only=True)
    pending_plan = SlugRelatedField(slug_field="slug", read_only=True)
    debt = serializers.SerializerMethodField()
    paid_until = serializers.SerializerMethodField(help_text="End of all paid time, queued periods included.")
    queued_periods = serializers.SerializerMethodField(
        help_text="Paid periods that start after now, in the order they will be in force."
    )

    class Meta:
        model = Subscription
        fields = [
            "id",
            "plan",
            "plan_title",
            "interval",
            "status",
            "current_period_start",
            "current_period_end",
            "cancel_at_period_end",
            "canceled_at",
            "pending_plan",
            "grace_until",
            "debt",
            "paid_until",
            "queued_periods",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_paid_until(self, obj: Subscription):
        return serializers.DateTimeField().to_representation(selectors.subscription_paid_until(obj))

    @extend_schema_field(QueuedPeriodSerializer(many=True))
    def get_queued_periods(self, obj: Subscription) -> list[dict]:
        return QueuedPeriodSerializer(selectors.subscription_queued(obj), many=True).data

    @extend_schema_field(
        {
            "type": "object",
            "properties": {
                "amount": AMOUNT_SCHEMA,
                "token": {"type": "string", "nullable": True},
                "display": DISPLAY_SCHEMA,
            },
        }
    )
    def get_debt(self, obj: Subscription) -> dict:
        return debt_of(obj)


def debt_of(sub: Subscription | None) -> dict:
    if sub is None:
        return {"amount": "0", "token": None, "display": None}
    token = sub.debt_token or sub.plan.price_token
    amount = int(sub.debt_amount or 0)
    return {"amount": str(amount), "token": token.symbol, "display": display_amount(token.display(amount))}


class WalletBriefSerializer(serializers.Serializer):
    address = serializers.CharField()
    chain_id = serializers.IntegerField()
    verified_at = serializers.DateTimeField()


class PlanBriefSerializer(serializers.Serializer):
    slug = serializers.CharField()
    title = serializers.CharField()
    interval = serializers.CharField()
    limits = LimitsField()
    features = serializers.ListField(child=serializers.CharField())


class DebtSerializer(serializers.Serializer):
    amount = TokenAmountField()
    token = serializers.CharField(allow_null=True)
    display = serializers.CharField(allow_null=True)


class LastPaymentSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    tx_hash = serializers.CharField(allow_null=True)
    failure_reason = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    confirmed_at = serializers.DateTimeField(allow_null=True)


class MeSettingsSerializer(serializers.Serializer):
    plan = PlanBriefSerializer(allow_null=True)
    subscription_status = serializers.CharField(allow_null=True)
    current_period_end = serializers.DateTimeField(allow_null=True)
    paid_until = serializers.DateTimeField(allow_null=True, help_text="End of all paid time, queued periods included.")
    queued_periods = QueuedPeriodSerializer(many=True, help_text="Paid periods that start after now, in order.")
    cancel_at_period_end = serializers.BooleanField()
    wallet = WalletBriefSerializer(allow_null=True)
    debt = DebtSerializer()
    last_payment = LastPaymentSerializer(allow_null=True)
