from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pytest_quant import QuantParams, dequantize, quantize, quantize_bias
from pytest_quant.strategies import qparams, quantization_cases, ties

from .tflite_models import one_op_model, run_model


@given(quantization_cases())
def test_round_trip_within_half_step_inside_and_saturates_outside(case):
    x, qp = case
    q = quantize(x, qp)
    assert q.dtype == np.dtype(qp.dtype)
    scale, zero = qp.broadcast(x.ndim)
    lo = scale.astype(np.float64) * (qp.qmin - zero)
    hi = scale.astype(np.float64) * (qp.qmax - zero)
    x64 = x.astype(np.float64)
    err = np.abs(dequantize(q, qp).astype(np.float64) - x64)
    inside = (x64 >= lo) & (x64 <= hi)
    # half a step, plus the float32 rounding of x/scale and of the dequantized value
    slack = scale * 0.5 * (1 + 1e-6) + np.abs(x64) * 2e-7
    assert np.all(err[inside] <= np.broadcast_to(slack, x.shape)[inside])
    assert np.all(q[x64 > hi] == qp.qmax)
    assert np.all(q[x64 < lo] == qp.qmin)


@given(qparams())
def test_zero_is_exactly_representable(qp):
    zeros = np.zeros((qp.scale.shape[0], 2) if qp.is_per_channel else (3,), np.float32)
    if qp.is_per_channel and qp.axis != 0:
        qp = qp.with_axis(0)
    z = quantize(zeros, qp)
    assert np.all(z == np.broadcast_to(qp.broadcast(zeros.ndim)[1], zeros.shape))
    assert np.all(dequantize(z, qp) == 0.0)


@given(quantization_cases(per_channel=False), st.sampled_from(["reference", "xnnpack"]))
def test_quantize_is_monotonic(case, kernel):
    x, qp = case
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(quantize(x[order], qp, kernel=kernel).astype(np.int64)) >= 0)


@given(quantization_cases(per_channel=True))
def test_per_channel_equals_per_tensor_channel_by_channel(case):
    x, qp = case
    q = quantize(x, qp)
    for c in range(qp.scale.shape[0]):
        one = qp.channel(c)
        assert np.array_equal(
            np.take(q, c, axis=qp.axis), quantize(np.take(x, c, axis=qp.axis), one)
        )


@given(qparams(per_channel=False).flatmap(lambda qp: st.tuples(st.just(qp), ties(qp))))
def test_reference_ties_round_away_from_zero(args):
    qp, x = args
    steps = (x / np.float32(qp.scale)).astype(np.float64)
    exact = steps == np.floor(steps) + 0.5
    expected = np.clip(
        np.where(steps > 0, np.ceil(steps), np.floor(steps)) + qp.zero_point, qp.qmin, qp.qmax
    )
    assert np.array_equal(quantize(x, qp)[exact], expected[exact].astype(qp.dtype))


def test_saturates_instead_of_wrapping():
    # The source article casts to int8 before clipping: 200 becomes -56.
    qp = QuantParams(1.0, 0, "int8")
    assert quantize([200.0, -200.0, 127.4, -128.6], qp).tolist() == [127, -128, 127, -128]
    wrapped = np.array([200.0]).astype(np.int64).astype(np.int8)
    assert wrapped.tolist() == [-56]  # what the bug produces, for contrast


def test_floor_plus_half_trap_is_not_used():
    # floor(|v| + 0.5) rounds 0.49999997 up to 1 in float32; std::round gives 0.
    qp = QuantParams(1.0, 0, "int8")
    assert quantize([np.float32(0.49999997), np.float32(-0.49999997)], qp).tolist() == [0, 0]


def test_int32_uses_float64():
    # 1000 / 2**-20 needs 31 bits: float32 division would lose the low ones.
    qp = QuantParams(2.0**-20, 0, "int32")
    assert quantize([1000.0 + 2.0**-20, 1e9], qp).tolist() == [1000 * 2**20 + 1, 2**31 - 1]


@pytest.mark.parametrize(
    "bad, match",
    [([np.nan], "non-finite"), ([np.inf], "non-finite"), ([], "empty"), (["a"], "real numbers")],
)
def test_quantize_rejects_bad_input(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        quantize(bad, QuantParams(0.1, 0))


def test_quantize_rejects_channel_mismatch():
    qp = QuantParams(np.ones(3, np.float32), 0, "int8", 1)
    with pytest.raises(ValueError, match=r"has 2 channels on axis 1 .* QuantParams have 3"):
        quantize(np.zeros((4, 2)), qp)


def test_dequantize_rejects_floats_and_wrapped_codes():
    with pytest.raises(TypeError, match="integer"):
        dequantize([0.5], QuantParams(0.1, 0))
    with pytest.raises(ValueError, match="outside int8"):
        dequantize(np.array([200]), QuantParams(0.1, 0, "int8"))


def test_dequantize_rounds_once_from_float64():
    qp = QuantParams(np.float32(0.1), 0, "int32")
    q = np.array([2**24 + 1, -(2**30) + 3], np.int32)
    expected = (np.float64(np.float32(0.1)) * q.astype(np.float64)).astype(np.float32)
    assert np.array_equal(dequantize(q, qp), expected)


def test_quantize_bias_per_channel():
    q, qp = quantize_bias([0.5, -0.25, 0.0], 0.05, [0.01, 0.02, 0.5])
    assert q.dtype == np.int32 and q.tolist() == [1000, -250, 0]
    assert qp.dtype == "int32" and qp.axis == 0 and qp.zero_point.tolist() == [0, 0, 0]
    q1, qp1 = quantize_bias(np.array([0.125]), 0.5, 0.25)
    assert q1.tolist() == [1] and qp1.scale == 0.125


def test_quantize_bias_overflow_names_channel():
    with pytest.raises(ValueError, match=r"bias\[1\].*overflows int32"):
        quantize_bias([0.0, 1e6], 1e-4, [1e-4, 1e-4])


def test_quantize_bias_shape_mismatch():
    with pytest.raises(ValueError, match="one weight scale per output channel"):
        quantize_bias([1.0, 2.0], 0.1, [0.1, 0.1, 0.1])


# --- differential: the LiteRT interpreter's QUANTIZE / DEQUANTIZE --------------------

_KERNELS = {"reference": True, "xnnpack": False}


@pytest.mark.parametrize("kernel", sorted(_KERNELS))
@given(
    case=quantization_cases(per_channel=False, dtype="int8", symmetric=False)
    | quantization_cases(per_channel=False, dtype="uint8")
)
@example(case=(np.array([0.049999997, -0.049999997, 0.15, 1e6], np.float32), QuantParams(0.1, 3)))
def test_quantize_matches_litert(litert, kernel, case):
    x, qp = case
    model = one_op_model("QUANTIZE", "float32", qp.dtype, x.shape, out_qp=qp)
    got = run_model(model, x.astype(np.float32), reference_kernels=_KERNELS[kernel])
    np.testing.assert_array_equal(quantize(x, qp, kernel=kernel), got)


@given(case=quantization_cases(per_channel=False, dtype="int16", symmetric=True))
def test_quantize_int16_matches_litert_reference(litert, case):
    x, qp = case
    model = one_op_model("QUANTIZE", "float32", "int16", x.shape, out_qp=qp)
    np.testing.assert_array_equal(quantize(x, qp), run_model(model, x, reference_kernels=True))


@pytest.mark.parametrize("kernel", sorted(_KERNELS))
@given(qp=qparams(per_channel=False, dtype="int8") | qparams(per_channel=False, dtype="uint8"))
def test_dequantize_matches_litert(litert, kernel, qp):
    info = np.iinfo(qp.dtype)
    q = np.arange(info.min, info.max + 1).astype(qp.dtype)
    model = one_op_model("DEQUANTIZE", qp.dtype, "float32", q.shape, in_qp=qp)
    got = run_model(model, q, reference_kernels=_KERNELS[kernel])
    np.testing.assert_array_equal(dequantize(q, qp), got)


def test_kernels_really_differ_at_ties(litert):
    # Keeps the two modes honest: if the interpreter stopped differing, the
    # xnnpack mode would be dead weight.
    qp = QuantParams(0.1, 0)
    x = np.array([0.25, -0.25, 0.35, 0.05], np.float32)
    model = one_op_model("QUANTIZE", "float32", "int8", x.shape, out_qp=qp)
    ref = run_model(model, x, reference_kernels=True)
    xnn = run_model(model, x, reference_kernels=False)
    assert not np.array_equal(ref, xnn)
    np.testing.assert_array_equal(quantize(x, qp), ref)
    np.testing.assert_array_equal(quantize(x, qp, kernel="xnnpack"), xnn)


@pytest.mark.parametrize("bad", [None, 0.1, (0.1, 0), "int8"])
def test_quantize_and_dequantize_want_quant_params(bad):
    for call in (lambda: quantize([0.5], bad), lambda: dequantize([1], bad)):
        with pytest.raises(TypeError) as info:
            call()
        msg = str(info.value)
        assert msg.startswith(f"qp must be a QuantParams, got {type(bad).__name__}")
        assert "qparams_for(x)" in msg and "choose_qparams(x_min, x_max)" in msg
