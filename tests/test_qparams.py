from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from pytest_quant import QuantParams, choose_qparams, qparams_for
from pytest_quant.strategies import qparams, ranges


def test_tflite_int8_activation_example():
    qp = choose_qparams(-1.0, 1.0)
    assert qp.scale == np.float32(2.0 / 255) and qp.zero_point == -1
    assert (qp.qmin, qp.qmax, qp.dtype) == (-128, 127, "int8")


def test_range_is_widened_to_include_zero():
    qp = choose_qparams(2.0, 6.0, dtype="uint8")
    assert qp.zero_point == 0 and qp.scale == np.float32(6.0 / 255)
    neg = choose_qparams(-6.0, -2.0, dtype="int8")
    assert neg.zero_point == 127


def test_zero_point_ties_round_away_from_zero():
    # qmin - rmin/scale = -128 + 127.5 = -0.5 exactly -> -1 (away from zero), not 0 (even).
    s = 1.0  # range [-127.5, 127.5] has width 255
    qp = choose_qparams(-127.5 * s, 127.5 * s)
    assert qp.zero_point == -1


def test_symmetric_weights_are_narrow_and_zero_centred():
    qp = choose_qparams(
        [-0.5, -2.0, 0.0], [1.0, 0.5, 0.0], symmetric=True, narrow_range=True, axis=0
    )
    np.testing.assert_array_equal(qp.scale, np.float32([1 / 127, 2 / 127, 1.0]))
    assert qp.zero_point.tolist() == [0, 0, 0] and (qp.qmin, qp.qmax) == (-127, 127)


@pytest.mark.parametrize("lo, hi", [(0.0, 0.0), (3.0, 3.0), (-1e-300, 1e-300)])
def test_degenerate_ranges_give_valid_params(lo, hi):
    for sym in (False, True):
        qp = choose_qparams(lo, hi, symmetric=sym)
        assert qp.scale > 0 and np.isfinite(qp.scale)


def test_one_element_tensor():
    qp = qparams_for(np.array([0.25]))
    assert qp.scale > 0 and qp.qmin <= qp.zero_point <= qp.qmax


@given(ranges(), qparams(per_channel=False))
def test_choose_qparams_always_valid_and_covers_range(rng, proto):
    lo, hi = rng
    sym = proto.symmetric
    qp = choose_qparams(lo, hi, dtype=proto.dtype, symmetric=sym, narrow_range=proto.narrow_range)
    rlo, rhi = qp.real_range
    span = max(hi - lo, abs(lo), abs(hi))
    assert (
        rlo <= min(lo, 0.0) + 1e-6 * span + qp.scale
        and rhi >= max(hi, 0.0) - 1e-6 * span - qp.scale
    )
    assert qp.qmin <= qp.zero_point <= qp.qmax


def test_per_channel_qparams_for_axis():
    w = np.array([[[-1.0, 2.0]], [[0.5, 4.0]]])  # shape (2, 1, 2)
    qp = qparams_for(w, axis=-1, symmetric=True, narrow_range=True)
    assert qp.axis == 2
    np.testing.assert_array_equal(qp.scale, np.float32([1 / 127, 4 / 127]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scale": 0.0, "zero_point": 0}, r"scale=0.0 must be finite and > 0"),
        ({"scale": float("nan"), "zero_point": 0}, r"scale=nan"),
        ({"scale": 1e-50, "zero_point": 0}, r"scale=1e-50"),
        ({"scale": 0.1, "zero_point": 200}, r"zero_point=200 is outside int8's range"),
        ({"scale": 0.1, "zero_point": 1.5}, r"zero_point=1.5 must be an integer"),
        ({"scale": 0.1, "zero_point": 3, "symmetric": True}, r"must be 0 in a symmetric"),
        ({"scale": [0.1, 0.2], "zero_point": 0}, r"per-channel scales need axis"),
        ({"scale": [0.1, -0.2], "zero_point": 0, "axis": 0}, r"scale\[1\]=-0.2"),
        ({"scale": 0.1, "zero_point": 0, "dtype": "float32"}, r"not a quantized storage type"),
    ],
)
def test_quant_params_validation_names_field_and_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantParams(**kwargs)


def test_quant_params_immutable_hashable_and_equal():
    a = QuantParams(np.float32([0.1, 0.2]), [0, 1], "int8", 0)
    b = QuantParams(np.float32([0.1, 0.2]), [0, 1], "int8", 0)
    assert a == b and hash(a) == hash(b) and a != QuantParams(0.1, 0)
    with pytest.raises(AttributeError, match="immutable"):
        a.scale = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        a.scale[0] = 1.0
    assert "axis=0" in repr(a)


@pytest.mark.parametrize(
    "args, match",
    [
        ((float("nan"), 1.0), "x_min must be finite"),
        ((0.0, float("inf")), "x_max must be finite"),
        ((2.0, 1.0), "x_min > x_max"),
    ],
)
def test_choose_qparams_rejects_bad_bounds(args, match):
    with pytest.raises(ValueError, match=match):
        choose_qparams(*args)


def test_symmetric_uint8_rejected():
    with pytest.raises(ValueError, match="signed dtype"):
        choose_qparams(-1, 1, dtype="uint8", symmetric=True)


def test_inverted_scale_bug_is_visible():
    # The source article computes levels / range (x 0.1): the inverse of a scale.
    x_min, x_max = -2.0, 6.0
    good = choose_qparams(x_min, x_max)
    inverted = 255 / (x_max - x_min) * 0.1
    assert not np.isclose(inverted, good.scale, rtol=0.5)
    assert good.real_range[1] >= x_max - good.scale  # the real one covers the range


def test_channel_and_with_axis():
    qp = QuantParams(np.float32([0.5, 0.25]), [0, 0], "int8", 0, narrow_range=True, symmetric=True)
    one = qp.channel(1)
    assert one == QuantParams(0.25, 0, "int8", narrow_range=True, symmetric=True)
    assert qp.with_axis(3).axis == 3 and qp.with_axis(3).channel(0).scale == 0.5
    with pytest.raises(ValueError, match="per-channel"):
        one.channel(0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"scale": 1e40, "zero_point": 0},
            r"scale=1e\+40 overflows float32 \(max 3\.4028235e\+38\)",
        ),
        ({"scale": 3.5e38, "zero_point": 0}, r"scale=3\.5e\+38 overflows float32"),
        ({"scale": 1e-50, "zero_point": 0}, r"scale=1e-50 underflows float32 to 0"),
        (
            {"scale": [0.1, 1e40], "zero_point": 0, "axis": 0},
            r"scale\[1\]=1e\+40 overflows float32 \(max 3\.4028235e\+38\)",
        ),
    ],
)
def test_scales_float32_cannot_hold_are_rejected(kwargs, match):
    """A .tflite file stores scales as float32: 1e40 would become inf, 1e-50 zero."""
    with pytest.raises(ValueError, match=match) as info:
        QuantParams(**kwargs)
    assert "pass a scale in float32's positive range [1.4e-45, 3.4028235e+38]" in str(info.value)


def test_float32_extremes_are_valid_scales():
    assert QuantParams(float(np.finfo(np.float32).max), 0).scale == np.finfo(np.float32).max
    assert QuantParams(1e-45, 0).scale > 0  # the smallest subnormal float32
