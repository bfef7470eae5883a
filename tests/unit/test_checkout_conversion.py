"""billing.amounts.scale_amount: a plan priced in one token, paid in another of other decimals (a
network fallback). Exact to more decimals; to fewer, rounded up by less than one unit of the target (the
operator is never short); above 2^256 - 1 refused with AmountOverflow. Checked against Fraction arithmetic."""

from __future__ import annotations

from fractions import Fraction
from math import ceil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.amounts import AmountOverflow
from billing.amounts import scale_amount as _scale

UINT256_MAX = 2**256 - 1


def exact(amount: int, src: int, dst: int) -> Fraction:
    return Fraction(amount, 10**src) * 10**dst


def test_6_to_18_is_exact_and_18_to_6_rounds_up_by_less_than_one_unit():
    assert _scale(15_000_000, 6, 18) == 15 * 10**18
    assert _scale(15 * 10**18, 18, 6) == 15_000_000
    assert _scale(15 * 10**18 + 1, 18, 6) == 15_000_001  # 1 wei over: one micro-unit more, never less
    assert _scale(10**12 - 1, 18, 6) == 1  # less than a unit of the target is still charged one unit
    assert _scale(1, 18, 0) == 1 and _scale(0, 18, 6) == 0


def test_near_2_256_minus_1():
    top_6 = UINT256_MAX // 10**12  # the largest 6-decimal amount that fits at 18 decimals
    assert _scale(top_6, 6, 18) == top_6 * 10**12 <= UINT256_MAX
    with pytest.raises(AmountOverflow) as excinfo:
        _scale(top_6 + 1, 6, 18)
    assert excinfo.value.code == "amount_overflow" and excinfo.value.status == 400
    assert "2^256 - 1" in excinfo.value.message
    assert _scale(UINT256_MAX, 18, 6) == ceil(Fraction(UINT256_MAX, 10**12))
    assert _scale(UINT256_MAX, 18, 18) == UINT256_MAX
    with pytest.raises(AmountOverflow):
        _scale(UINT256_MAX, 0, 1)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    amount=st.one_of(st.integers(0, 10**30), st.integers(UINT256_MAX - 10**40, UINT256_MAX)),
    src=st.sampled_from([0, 2, 6, 8, 9, 18, 24]),
    dst=st.sampled_from([0, 2, 6, 8, 9, 18, 24]),
)
def test_conversion_is_exact_or_rounds_for_the_operator_by_under_one_unit(amount, src, dst):
    want = exact(amount, src, dst)
    if ceil(want) > UINT256_MAX:
        with pytest.raises(AmountOverflow):
            _scale(amount, src, dst)
        return
    got = _scale(amount, src, dst)
    assert isinstance(got, int) and 0 <= got <= UINT256_MAX
    assert want <= got < want + 1  # never under, over by less than one unit of the target token
    if dst >= src:
        assert got == want  # to more decimals: exact
