from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pytest_quant._intdiff import int_difference

INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]


@st.composite
def int_pairs(draw):
    shape = draw(hnp.array_shapes(max_dims=2, max_side=6))
    a = draw(hnp.arrays(draw(st.sampled_from(INT_DTYPES)), shape))
    b = draw(hnp.arrays(draw(st.sampled_from(INT_DTYPES)), shape))
    return a, b


@given(int_pairs())
@example((np.array([2**63 - 1]), np.array([-(2**63)])))
@example((np.array([2**64 - 1], np.uint64), np.array([-(2**63)])))
@example((np.array([-(2**63)]), np.array([2**64 - 1], np.uint64)))
@example((np.array([2**63], np.uint64), np.array([0], np.uint64)))
@example((np.array([2**64 - 1, 2**63], np.uint64), np.array([2**64 - 2, 2**63 + 5], np.uint64)))
def test_difference_is_exact_for_every_dtype_pair(pair):
    a, b = pair
    d = int_difference(a, b)
    expected = [
        int(x) - int(y) for x, y in zip(a.ravel().tolist(), b.ravel().tolist(), strict=True)
    ]
    assert d.shape == a.shape
    assert [int(v) for v in d.ravel()] == expected
    assert [int(v) for v in np.abs(d).ravel()] == [abs(v) for v in expected]


def test_small_dtypes_and_fitting_64_bit_values_stay_int64():
    small = int_difference(np.array([-128], np.int8), np.array([2**32 - 1], np.uint32))
    assert small.dtype == np.int64 and small.tolist() == [-(2**32) - 127]
    top = int_difference(np.array([2**64 - 1], np.uint64), np.array([2**63], np.uint64))
    assert top.dtype == np.int64 and top.tolist() == [2**63 - 1]
    # -2**63 fits int64, but its absolute value does not: exact Python ints instead
    edge = int_difference(np.array([-(2**63)]), np.array([0]))
    assert edge.dtype == object and np.abs(edge).tolist() == [2**63]


def test_misuse():
    with pytest.raises(TypeError, match="b must be an integer numpy array, got float64"):
        int_difference(np.zeros(2, np.int8), np.zeros(2))
    with pytest.raises(TypeError, match="a must be an integer numpy array, got list"):
        int_difference([1], np.zeros(1, np.int8))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shapes differ, a \(2,\) and b \(3,\)"):
        int_difference(np.zeros(2, np.int8), np.zeros(3, np.int8))
