"""Field types, schema helpers and the write mixin every billing API serializer shares: token amounts as
strings of digits, masked RPC URLs, token keys, JSON fields that refuse NUL, the mapping of model errors to
API field errors."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.fields import UINT256_MAX
from billing.models import Plan, Token
from billing_project.logging import mask_url

AMOUNT_SCHEMA = {"type": "string", "pattern": "^[0-9]{1,78}$", "example": "10000000"}
DISPLAY_SCHEMA = {"type": "string", "example": "10.000000", "nullable": True}
MASK = "****"


def display_amount(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


@extend_schema_field(AMOUNT_SCHEMA)
class TokenAmountField(serializers.Field):
    """An integer in the token's smallest unit, as a JSON string (it exceeds 2^53). Numbers are accepted
    on input when they are integers; floats are refused (they cannot carry a uint256 exactly)."""

    default_error_messages = {
        "invalid": "An amount is a string of digits in the token's smallest unit.",
        "range": "An amount is between 0 and 2^256 - 1.",
    }

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, (bool, float)):
            self.fail("invalid")
        if isinstance(data, int):
            value = data
        elif isinstance(data, str) and data.isascii() and data.isdigit() and len(data) <= 78:
            value = int(data)
        else:
            self.fail("invalid")
        if not 0 <= value <= UINT256_MAX:
            self.fail("range")
        return value

    def to_representation(self, value: int) -> str:
        return str(int(value))


@extend_schema_field({"type": "string", "description": "Masked on read: https://host/****"})
class MaskedUrlField(serializers.CharField):
    """A URL that may carry a provider key: writable, read back masked."""

    def to_representation(self, value: str) -> str:
        return mask_url(value) if value else ""


def is_masked_echo(value: str | None, current: str | None) -> bool:
    """A client sent back the masked value it read: keep the stored URL."""
    return bool(value and current and MASK in value and value == mask_url(current))


@extend_schema_field({"type": "string", "example": "USDC@sepolia"})
class TokenKeyField(serializers.RelatedField):
    """A token named `SYMBOL@network-slug` (symbols repeat across networks)."""

    default_error_messages = {
        "format": "Name a token as SYMBOL@network-slug.",
        "missing": "No token {name}.",
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("queryset", Token.objects.select_related("network"))
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Token:
        refuse_nul(data)
        if not isinstance(data, str) or data.count("@") != 1:
            self.fail("format")
        symbol, network = data.split("@")
        token = self.get_queryset().filter(symbol=symbol, network__slug=network).first()
        if token is None:
            self.fail("missing", name=data)
        return token

    def to_representation(self, value: Token) -> str:
        return f"{value.symbol}@{value.network.slug}"


def refuse_nul(value: Any) -> None:
    if isinstance(value, str) and "\x00" in value:
        raise serializers.ValidationError("Text may not contain NUL characters.")


class SlugRelatedField(serializers.SlugRelatedField):
    """PostgreSQL refuses NUL in a query parameter; answer 400 before the lookup."""

    def to_internal_value(self, data: Any):
        refuse_nul(data)
        return super().to_internal_value(data)


class SafeJSONField(serializers.JSONField):
    """PostgreSQL jsonb cannot store U+0000; refuse it as a field error instead of a database error."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if "\\u0000" in json.dumps(value):
            raise serializers.ValidationError("Text may not contain NUL (\\u0000) characters.")
        return value


@extend_schema_field(
    {"type": "object", "additionalProperties": {"type": "integer", "nullable": True, "minimum": 0}, "example": {}}
)
class LimitsField(SafeJSONField):
    pass


@extend_schema_field({"type": "array", "items": {"type": "object", "additionalProperties": True}})
class AbiField(SafeJSONField):
    pass


@extend_schema_field({"type": "object", "additionalProperties": True})
class ObjectField(SafeJSONField):
    pass


def raise_as_api_errors(exc: DjangoValidationError, renames: dict[str, str] | None = None) -> None:
    renames = renames or {}
    if hasattr(exc, "error_dict"):
        fields = {renames.get(k, k) if k != "__all__" else "non_field_errors": v for k, v in exc.message_dict.items()}
    else:
        fields = {"non_field_errors": exc.messages}
    raise serializers.ValidationError(fields)


class CatalogWriteMixin:
    """create()/update() delegate to a catalog service and surface model validation as field errors."""

    error_renames: dict[str, str] = {}

    def _call(self, fn, **kwargs):
        try:
            return fn(**kwargs)
        except DjangoValidationError as exc:
            raise_as_api_errors(exc, self.error_renames)


# The plan fields of docs/reference/api/contract.md, in the order both plan serializers (public, admin) show.
PLAN_FIELDS = [
    "slug",
    "title",
    "description",
    "interval",
    "price_token",
    "price_token_network",
    "price_amount",
    "price_display",
    "price_usd_estimate",
    "gateway_slug",
    "contract_slug",
    "limits",
    "features",
    "tier",
]


class PlanPriceDisplayMixin:
    """`price_display` of a plan: the price in whole tokens, a decimal string (display only)."""

    @extend_schema_field(DISPLAY_SCHEMA)
    def get_price_display(self, obj: Plan) -> str | None:
        return display_amount(obj.price_display)
