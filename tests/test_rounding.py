from __future__ import annotations

import numpy as np
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
