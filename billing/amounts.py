"""Token amounts in integers of the smallest unit: conversion between tokens of other decimals, within what
the contract takes (a uint256)."""

from __future__ import annotations

from billing.fields import UINT256_MAX
from billing_project.errors import ServiceError


class AmountOverflow(ServiceError):
    """The amount does not fit the contract's uint256 (a conversion to more decimals, or many periods)."""

    def __init__(self, message: str, *, field: str | None = "plan"):
        super().__init__("amount_overflow", message, field=field, status=400)


def scale_amount(amount: int, from_decimals: int, to_decimals: int) -> int:
    """`amount` in a token of `from_decimals` expressed in one of `to_decimals`, in integers only.

    To more decimals: exact (amount * 10^k). To fewer: rounded up, so the operator is never short, by less
    than one unit of the target token (the quotient, plus one when there is a remainder). A result above
    2^256 - 1 (what the contract takes) raises AmountOverflow instead of reaching the quote."""
    if amount < 0 or from_decimals < 0 or to_decimals < 0:
        raise ValueError("amounts and decimals are never negative")
    if to_decimals >= from_decimals:
        scaled = amount * 10 ** (to_decimals - from_decimals)
    else:
        q, r = divmod(amount, 10 ** (from_decimals - to_decimals))
        scaled = q + (1 if r else 0)  # never undercharge
    if scaled > UINT256_MAX:
        raise AmountOverflow(
            f"{amount} at {from_decimals} decimals is more than a uint256 at {to_decimals} decimals (2^256 - 1)."
        )
    return scaled
