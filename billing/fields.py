"""Exact token amounts: numeric(78,0) in PostgreSQL, int in Python, a string in JSON."""

from __future__ import annotations

from decimal import Decimal

from django.core import validators
from django.core.exceptions import ValidationError
from django.db import models

# The EVM's limits and its zero address (a native-coin "token"), defined once for models, chain code and
# services alike.
UINT256_MAX = 2**256 - 1
UINT64_MAX = 2**64 - 1
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


class TokenAmountField(models.DecimalField):
    """An unsigned 256-bit integer amount in the token's smallest unit.

    Stored as numeric(78,0) (78 digits hold 2^256 - 1) and handed to Python as `int`, so no code path
    can mix it with floats or lose digits; serializers render it as a string.
    """

    description = "Token amount in the smallest unit (uint256)"

    def __init__(self, *args, **kwargs):
        kwargs["max_digits"] = 78
        kwargs["decimal_places"] = 0
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("max_digits", None)
        kwargs.pop("decimal_places", None)
        return name, path, args, kwargs

    @property
    def validators(self):
        return [validators.MinValueValidator(0), validators.MaxValueValidator(UINT256_MAX)]

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        return int(value)

    def to_python(self, value):
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            raise ValidationError("Amount must be an integer.", code="invalid")
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            raise ValidationError("Amounts are integers in the token's smallest unit, not floats.", code="invalid")
        try:
            dec = Decimal(str(value).strip())
        except Exception as exc:  # decimal.InvalidOperation and friends
            raise ValidationError("Amount must be an integer.", code="invalid") from exc
        if dec != dec.to_integral_value():
            raise ValidationError("Amount must be a whole number of the smallest unit.", code="invalid")
        return int(dec)

    def get_db_prep_value(self, value, connection, prepared=False):
        if value is None:
            return None
        return Decimal(int(self.to_python(value)))

    def get_prep_value(self, value):
        value = super(models.DecimalField, self).get_prep_value(value)
        return None if value is None else Decimal(int(self.to_python(value)))

    def formfield(self, **kwargs):
        from django import forms

        defaults = {"form_class": forms.IntegerField, "min_value": 0, "max_value": UINT256_MAX}
        defaults.update(kwargs)
        return models.Field.formfield(self, **defaults)


def to_display(amount: int | None, decimals: int) -> Decimal | None:
    """Exact decimal view of a smallest-unit amount."""
    if amount is None:
        return None
    return Decimal(amount).scaleb(-decimals)


def from_display(value: Decimal | str, decimals: int) -> int:
    dec = Decimal(str(value)).scaleb(decimals)
    if dec != dec.to_integral_value():
        raise ValueError(f"{value} has more than {decimals} decimals")
    return int(dec)
