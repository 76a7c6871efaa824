"""Each kind of assert_quantizer_conforms: a correct function passes, each classic bug
is caught with the property it breaks and a shrunk input."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_quant import (
    QuantParams,
    assert_quantizer_conforms,
    choose_qparams,
    dequantize,
    fake_quant,
    qparams_for,
    quantize,
    round_half_away_from_zero,
)

F = np.float32


def _fails(fn, match, **kw):
    with pytest.raises(AssertionError, match=match) as info:
        assert_quantizer_conforms(fn, max_examples=200, **kw)
    assert "minimal failing input (shrunk by hypothesis)" in str(info.value)
    return str(info.value)


# --- kind="quantize" ------------------------------------------------------------


def numpy_quantize(x, scale, zero_point):  # ties to even: accepted unless demanded
    return np.clip(np.rint(x / F(scale)) + zero_point, -128, 127).astype(np.int8)


def tflite_quantize(x, scale, zero_point):
    return quantize(x, QuantParams(scale, zero_point, "int8"))


def test_quantize_correct_functions_pass():
    assert_quantizer_conforms(numpy_quantize, kind="quantize")
    assert_quantizer_conforms(tflite_quantize, kind="quantize", rounding="half_away_from_zero")


def test_quantize_rounding_demanded():
    msg = _fails(
        numpy_quantize,
        "rounds exact ties half_away_from_zero",
        kind="quantize",
        rounding="half_away_from_zero",
    )
    assert "got" in msg and "reference" in msg


def test_quantize_wrap_around_caught():
    def cast_before_clip(x, scale, zero_point):
        q = np.round(x / F(scale)) + zero_point
        return np.clip(q.astype(np.int64).astype(np.int8), -128, 127)

    _fails(cast_before_clip, "saturates, never wraps around", kind="quantize")


def test_quantize_floor_plus_half_caught():
    def floor_half(x, scale, zero_point):
        return np.clip(np.floor(x / F(scale) + 0.5) + zero_point, -128, 127).astype(np.int8)

    msg = _fails(floor_half, "rounds exact ties either way", kind="quantize")
    assert "x / scale = -" in msg  # floor(v + 0.5) rounds negative ties up


def test_quantize_zero_point_sign_and_inverted_scale_caught():
    def zp_sign(x, scale, zero_point):
        return np.clip(np.rint(x / F(scale)) - zero_point, -128, 127).astype(np.int8)

    def inverted(x, scale, zero_point):
        return np.clip(np.rint(x * F(scale)) + zero_point, -128, 127).astype(np.int8)

    _fails(zp_sign, "property", kind="quantize")
    _fails(inverted, "property", kind="quantize")


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda x, s, z: 1 / 0, r"'does not raise'.*\n  raised ZeroDivisionError"),
        (lambda x, s, z: np.rint(x / s), "returns dtype int8"),
        (lambda x, s, z: numpy_quantize(x, s, z)[:1], "keeps the input's shape"),
        (lambda x, s, z: "nope", "returns dtype int8"),
    ],
)
def test_quantize_bad_returns_are_failures_not_crashes(fn, match):
    _fails(fn, match, kind="quantize")


def test_quantize_per_channel():
    def per_channel(x, scale, zero_point):
        assert scale.shape == zero_point.shape == (x.shape[1],)
        return numpy_quantize(x, scale[None, :], zero_point[None, :])

    def first_scale_only(x, scale, zero_point):
        return numpy_quantize(x, scale[0], zero_point[0])

    assert_quantizer_conforms(per_channel, kind="quantize", per_channel_axis=1)
    _fails(first_scale_only, "property", kind="quantize", per_channel_axis=1)


def test_quantize_uint8_and_int16():
    def generic(dtype):
        info = np.iinfo(dtype)
        return lambda x, s, z: np.clip(np.rint(x / F(s)) + z, info.min, info.max).astype(dtype)

    assert_quantizer_conforms(generic(np.uint8), kind="quantize", dtype="uint8")
    assert_quantizer_conforms(generic(np.int16), kind="quantize", dtype="int16", symmetric=True)


# --- kind="dequantize" ------------------------------------------------------------


def test_dequantize():
    assert_quantizer_conforms(lambda q, s, z: (q.astype(np.float64) - z) * s, kind="dequantize")
    assert_quantizer_conforms(
        lambda q, s, z: dequantize(q, QuantParams(s, z, "int8", 0)),
        kind="dequantize",
        per_channel_axis=0,
    )
    _fails(lambda q, s, z: q * F(s), "matches the reference scale", kind="dequantize")
    _fails(lambda q, s, z: (q - z) * 1, "returns floats", kind="dequantize")
    _fails(lambda q, s, z: np.full(q.shape, np.nan), "returns finite values", kind="dequantize")


# --- kind="qparams" ----------------------------------------------------------------


def test_qparams():
    def reference(lo, hi):
        qp = choose_qparams(lo, hi)
        return qp.scale, qp.zero_point

    def no_widening(lo, hi):  # forgets to include 0 in the range
        scale = (hi - lo) / 255 or 1.0
        return scale, int(np.clip(np.round(-128 - lo / scale), -128, 127))

    def inverted(lo, hi):
        return 255 / ((max(hi, 0) - min(lo, 0)) or 1.0) * 0.1, 0

    assert_quantizer_conforms(reference, kind="qparams")
    _fails(no_widening, "scale = .*widened to include 0", kind="qparams")
    _fails(inverted, "property", kind="qparams")
    _fails(lambda lo, hi: (0.0, 0), "returns a finite scale > 0", kind="qparams")
    _fails(lambda lo, hi: 0.1, r"returns \(scale, zero_point\)", kind="qparams")


def test_qparams_symmetric():
    def sym(lo, hi):
        qp = choose_qparams(lo, hi, symmetric=True)
        return qp.scale, qp.zero_point

    assert_quantizer_conforms(sym, kind="qparams", symmetric=True)
    _fails(lambda lo, hi: (1.0, 3), "zero point 0", kind="qparams", symmetric=True)


# --- kind="fake_quant" ---------------------------------------------------------------


def textbook_fake_quant(x, x_min, x_max, zp_round=round_half_away_from_zero):
    """The kernel's formula as documented, evaluated step by step in float32."""
    scale = (F(x_max) - F(x_min)) / F(255)
    if scale == 0:
        return np.zeros_like(x)
    zp = np.clip(zp_round(F(0) - F(x_min) / scale), 0, 255)
    nmin, nmax = (F(0) - F(zp)) * scale, (F(255) - F(zp)) * scale
    return np.floor((np.clip(x, nmin, nmax) - nmin) / scale + F(0.5)) * scale + nmin


def test_fake_quant():
    assert_quantizer_conforms(fake_quant, kind="fake_quant", rounding="half_away_from_zero")
    assert_quantizer_conforms(textbook_fake_quant, kind="fake_quant")  # close enough
    _fails(textbook_fake_quant, "bit for bit", kind="fake_quant", rounding="half_away_from_zero")

    def no_nudge(x, x_min, x_max):  # quantizes on [min, max] without moving zero on the grid
        scale = (x_max - x_min) / 255 if x_max > x_min else 1.0
        return np.round((np.clip(x, x_min, x_max) - x_min) / scale) * scale + x_min

    _fails(no_nudge, "matches tf.quantization.fake_quant_with_min_max_vars", kind="fake_quant")


def test_fake_quant_floor_plus_half_zero_point_caught():
    # floor(v + 0.5) rounds a float32 zero point of 0.49999997 up to 1: the grid shifts.
    def floor_half(x, x_min, x_max):
        return textbook_fake_quant(x, x_min, x_max, zp_round=lambda v: np.floor(v + F(0.5)))

    _fails(floor_half, "matches tf.quantization.fake_quant_with_min_max_vars", kind="fake_quant")


# --- kind="tensor" -------------------------------------------------------------------


def test_tensor():
    def good(x):
        qp = qparams_for(x)
        return quantize(x, qp), qp.scale, qp.zero_point

    def article(x):  # inverted scale, float zero point, cast before clip
        scale = 255 / ((x.max() - x.min()) or 1.0) * 0.1
        q = np.round(x / scale).astype(np.int64).astype(np.int8)
        return np.clip(q, -128, 127), scale, 0

    def per_channel(x):
        qp = qparams_for(x, axis=1, symmetric=True, narrow_range=True)
        return quantize(x, qp), qp.scale, qp.zero_point

    def wasteful(x):
        qp = qparams_for(x * 4)
        return quantize(x, qp), qp.scale, qp.zero_point

    assert_quantizer_conforms(good, kind="tensor")
    assert_quantizer_conforms(per_channel, kind="tensor", per_channel_axis=1, symmetric=True)
    _fails(article, "property", kind="tensor")
    _fails(wasteful, "uses the integer range", kind="tensor")
    _fails(
        good, "returns one scale per channel|returns valid scale", kind="tensor", per_channel_axis=1
    )


@pytest.mark.parametrize(
    "kw, err",
    [
        ({"kind": "round"}, "kind='round'"),
        ({"kind": "quantize", "dtype": "int4"}, "dtype='int4'"),
        ({"kind": "quantize", "rounding": "up"}, "rounding='up'"),
        ({"kind": "qparams", "per_channel_axis": 0}, "not supported for kind='qparams'"),
        ({"kind": "quantize", "dtype": "uint8", "symmetric": True}, "signed dtype"),
    ],
)
def test_misuse(kw, err):
    with pytest.raises(ValueError, match=err):
        assert_quantizer_conforms(numpy_quantize, **kw)


def test_conformance_is_recorded():
    from pytest_quant import _settings

    seen = []
    token = _settings.activate(_settings.QuantSettings(sink=seen.append))
    try:
        assert_quantizer_conforms(numpy_quantize, kind="quantize", max_examples=10)
        with pytest.raises(AssertionError):
            assert_quantizer_conforms(lambda x, s, z: 1 / 0, kind="quantize", max_examples=10)
    finally:
        _settings.deactivate(token)
    assert [(r["metric"], r["passed"]) for r in seen] == [
        ("quantize_broken_properties", True),
        ("quantize_broken_properties", False),
    ]
