from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_quant.rounding import round_half_away_from_zero, round_half_to_even, round_half_up


def test_modes_differ_only_at_ties():
    v = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 1.2], np.float32)
    assert round_half_away_from_zero(v).tolist() == [1, 2, 3, -1, -2, -3, 0, 1]
    assert round_half_to_even(v).tolist() == [0, 2, 2, -0, -2, -2, 0, 1]
    assert round_half_up(v).tolist() == [1, 2, 3, 0, -1, -2, 1, 1]  # floor(v+0.5) trap


@given(st.floats(-1e6, 1e6, width=32))
def test_half_away_matches_python_decimal_semantics(x):
    import decimal

    expected = float(decimal.Decimal(float(x)).quantize(0, rounding=decimal.ROUND_HALF_UP))
    assert float(round_half_away_from_zero(np.float32(x))) == expected


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.nan, r"v has 1 non-finite value\(s\) \(first: nan at index \(\)\)"),
        ([1.5, np.inf], r"v has 1 non-finite value\(s\) \(first: inf at index \(1,\)\)"),
        (np.array([], np.float32), r"v is empty \(shape \(0,\)\)"),
        ([], r"v is empty"),
    ],
)
def test_half_away_rejects_nan_and_empty_input(bad, match):
    with pytest.raises(ValueError, match=match):
        round_half_away_from_zero(bad)


def test_half_away_keeps_dtypes_and_integers():
    assert round_half_away_from_zero(np.float32(2.5)).dtype == np.float32
    assert round_half_away_from_zero(np.float16([0.5])).dtype == np.float16
    ints = np.array([-3, 7], np.int8)
    assert round_half_away_from_zero(ints).tolist() == [-3, 7]
    assert round_half_away_from_zero(ints).dtype == np.int8
