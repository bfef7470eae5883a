"""Serializers of the anonymous API: the plans catalog with where each plan can be paid."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.api.serializers.fields import (
    PLAN_FIELDS,
    LimitsField,
    PlanPriceDisplayMixin,
    TokenAmountField,
)
from billing.models import (
    Plan,
)


class PaymentOptionTokenSerializer(serializers.Serializer):
    symbol = serializers.CharField()
    key = serializers.CharField(help_text="SYMBOL@network")
    address = serializers.CharField(allow_null=True, help_text="null for the native coin")
    decimals = serializers.IntegerField()
    amount = TokenAmountField(help_text="Price per period in this token's smallest unit.")
    amount_display = serializers.CharField()


class PaymentOptionSerializer(serializers.Serializer):
    network = serializers.CharField(help_text="network slug")
    network_name = serializers.CharField()
    chain_id = serializers.IntegerField()
    is_testnet = serializers.BooleanField()
    contract_slug = serializers.CharField()
    tokens = PaymentOptionTokenSerializer(many=True)


class PublicPlanSerializer(PlanPriceDisplayMixin, serializers.ModelSerializer):
    """The anonymous plans catalog: the plan fields of docs/reference/api/contract.md plus where each plan
    can be paid."""

    price_token = serializers.CharField(source="price_token.symbol")
    price_token_network = serializers.CharField(source="price_token.network.slug")
    price_amount = TokenAmountField()
    price_display = serializers.SerializerMethodField()
    gateway_slug = serializers.CharField(source="provider.slug")
    contract_slug = serializers.CharField(source="contract.slug")
    limits = LimitsField()
    features = serializers.ListField(child=serializers.CharField())
    payment_options = serializers.SerializerMethodField()

    class Meta:
        model = Plan
        fields = [
            *PLAN_FIELDS,
            "is_active",
            "experiment",
            "variant",
            "payment_options",
        ]
        read_only_fields = fields

    @extend_schema_field(PaymentOptionSerializer(many=True))
    def get_payment_options(self, obj: Plan) -> list[dict]:
        from billing.selectors import plan_payment_options_grouped

        return plan_payment_options_grouped(obj)
