"""Confidence intervals for conversion rates, in Decimal arithmetic (no floats in the project's numbers).

- One proportion x/n: the Wilson score interval (Wilson 1927), which stays inside [0, 1] and behaves at
  small n and at 0 % or 100 %, unlike the Wald interval.
- A difference of two independent proportions p1 - p2: Newcombe's hybrid score interval ("method 10",
  Newcombe 1998, Statistics in Medicine 17:873-890), built from the two Wilson intervals:
      L = (p1 - p2) - sqrt((p1 - l1)^2 + (u2 - p2)^2)
      U = (p1 - p2) + sqrt((u1 - p1)^2 + (p2 - l2)^2)
An interval that excludes 0 means the variants differ at that confidence level.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext

Z_95 = Decimal("1.959963984540054")  # two-sided 95 %: the 0.975 quantile of the standard normal


@dataclass(frozen=True)
class Interval:
    low: Decimal
    high: Decimal


def wilson(successes: int, trials: int, z: Decimal = Z_95) -> Interval | None:
    if trials <= 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError("successes must be within 0..trials")
    with localcontext() as ctx:
        ctx.prec = 40
        n = Decimal(trials)
        p = Decimal(successes) / n
        z2 = z * z
        denominator = 1 + z2 / n
        center = (p + z2 / (2 * n)) / denominator
        half = z / denominator * (p * (1 - p) / n + z2 / (4 * n * n)).sqrt()
        return Interval(max(Decimal(0), center - half), min(Decimal(1), center + half))


def newcombe_difference(
    successes_1: int, trials_1: int, successes_2: int, trials_2: int, z: Decimal = Z_95
) -> Interval | None:
    """Interval for p1 - p2 (e.g. variant minus control)."""
    first, second = wilson(successes_1, trials_1, z), wilson(successes_2, trials_2, z)
    if first is None or second is None:
        return None
    with localcontext() as ctx:
        ctx.prec = 40
        p1 = Decimal(successes_1) / Decimal(trials_1)
        p2 = Decimal(successes_2) / Decimal(trials_2)
        diff = p1 - p2
        low = diff - ((p1 - first.low) ** 2 + (second.high - p2) ** 2).sqrt()
        high = diff + ((first.high - p1) ** 2 + (p2 - second.low) ** 2).sqrt()
        return Interval(low, high)
