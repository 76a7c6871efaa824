from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_quant import QuantParams
from pytest_quant.requant import (
    fully_connected_int8,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
)

from .tflite_models import fully_connected_model, run_model


@given(st.floats(1e-9, 1e3))
def test_quantize_multiplier_represents_the_real_multiplier(real):
    m, shift = quantize_multiplier(real)
    assert 2**30 <= m < 2**31 or (m, shift) == (0, 0)
    if m:
        assert abs(m * 2.0 ** (shift - 31) - real) <= real * 2**-30


def test_known_values():
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    assert quantize_multiplier(1.0) == (1 << 30, 1)
    assert quantize_multiplier(0.0) == (0, 0)
    # x * 0.5: with no right shift both modes round ties up (towards +inf)
    for mode in ("double", "single"):
        got = multiply_by_quantized_multiplier([5, -5, 3, -3], 1 << 30, 0, rounding=mode)
        assert got.tolist() == [3, -2, 2, -1]
    # -465 * 0.0376259657 = -17.496: double rounding goes -279.94 -> -280 -> -17.5 -> -18
    assert multiply_by_quantized_multiplier(-465, 1292818338, -4, rounding="double") == -18
    assert multiply_by_quantized_multiplier(-465, 1292818338, -4, rounding="single") == -17


@given(st.integers(-(2**24), 2**24), st.floats(1e-6, 0.99))
def test_requantization_is_within_one_step_of_the_real_product(x, real):
    m, shift = quantize_multiplier(real)
    for rounding in ("double", "single"):
        got = int(multiply_by_quantized_multiplier(x, m, shift, rounding=rounding))
        assert abs(got - x * real) <= 1.0


@st.composite
def fc_layers(draw):
    in_dim = draw(st.integers(1, 24))
    out_dim = draw(st.integers(1, 12))
    batch = draw(st.integers(1, 6))
    per_channel = draw(st.booleans())
    in_qp = QuantParams(draw(st.floats(1e-3, 0.5)), draw(st.integers(-128, 127)), "int8")
    n_w = out_dim if per_channel else 1
    w_scales = np.array([draw(st.floats(1e-4, 0.05)) for _ in range(n_w)], np.float32)
    w_qp = (
        QuantParams(w_scales, 0, "int8", 0, symmetric=True)
        if per_channel
        else QuantParams(float(w_scales[0]), 0, "int8", symmetric=True)
    )
    b_scale = np.float32(in_qp.scale) * w_scales
    b_qp = (
        QuantParams(b_scale, 0, "int32", 0, symmetric=True)
        if per_channel
        else QuantParams(float(b_scale[0]), 0, "int32", symmetric=True)
    )
    out_qp = QuantParams(draw(st.floats(1e-3, 1.0)), draw(st.integers(-128, 127)), "int8")
    w = draw(hnp.arrays(np.int8, (out_dim, in_dim), elements=st.integers(-127, 127)))
    bias = draw(st.none() | hnp.arrays(np.int32, (out_dim,), elements=st.integers(-(2**16), 2**16)))
    x = draw(hnp.arrays(np.int8, (batch, in_dim), elements=st.integers(-128, 127)))
    activation = draw(st.sampled_from(["NONE", "RELU", "RELU6"]))
    return x, w, bias, in_qp, w_qp, b_qp, out_qp, activation


def _litert_rounding():
    """Which requantization the installed LiteRT's reference kernels use, probed on the
    -465 x 0.0376 case where the two modes differ (measured: ai-edge-litert 1.2.0 double,
    2.3.0 single)."""
    from importlib.metadata import version

    in_qp = QuantParams(0.376259685, 1, "int8")
    w_qp = QuantParams(1e-4, 0, "int8", symmetric=True)
    b_qp = QuantParams(float(np.float32(0.376259685) * np.float32(1e-4)), 0, "int32")
    out_qp = QuantParams(0.001, 0, "int8")
    x, w = np.array([[-14]], np.int8), np.array([[31]], np.int8)
    model = fully_connected_model(
        w, None, batch=1, in_qp=in_qp, w_qp=w_qp, b_qp=b_qp, out_qp=out_qp
    )
    got = int(run_model(model, x, reference_kernels=True)[0, 0])
    mode = {-18: "double", -17: "single"}[got]
    known = {"1.2.0": "double", "2.3.0": "single"}.get(version("ai-edge-litert"))
    assert known in (None, mode), f"ai-edge-litert {version('ai-edge-litert')} changed rounding"
    return mode


@pytest.fixture(scope="module")
def litert_rounding(litert):
    return _litert_rounding()


@settings(max_examples=150)
@given(fc_layers())
def test_fully_connected_bit_exact_with_litert_reference_kernel(litert_rounding, layer):
    x, w, bias, in_qp, w_qp, b_qp, out_qp, activation = layer
    model = fully_connected_model(
        w,
        bias,
        batch=x.shape[0],
        in_qp=in_qp,
        w_qp=w_qp,
        b_qp=b_qp,
        out_qp=out_qp,
        activation=activation,
    )
    got = run_model(model, x, reference_kernels=True)
    ours = fully_connected_int8(
        x,
        w,
        bias,
        input_qparams=in_qp,
        weight_qparams=w_qp,
        output_qparams=out_qp,
        activation=activation,
        rounding=litert_rounding,
    )
    np.testing.assert_array_equal(ours, got)


def test_other_rounding_and_xnnpack_measured(litert_rounding):
    """Measured, not assumed: how often the other rounding mode and the XNNPACK path
    differ from the reference kernel, on 64 seeded layers."""
    other = "double" if litert_rounding == "single" else "single"
    rng = np.random.default_rng(0)
    total = single_diff = xnn_diff = 0
    for _ in range(64):
        in_dim, out_dim, batch = 32, 16, 16
        in_qp = QuantParams(float(rng.uniform(0.01, 0.2)), int(rng.integers(-20, 20)), "int8")
        w_scale = float(np.float32(rng.uniform(0.002, 0.02)))
        w_qp = QuantParams(w_scale, 0, "int8", symmetric=True)
        b_qp = QuantParams(float(np.float32(in_qp.scale) * np.float32(w_scale)), 0, "int32")
        out_qp = QuantParams(float(rng.uniform(0.05, 0.5)), int(rng.integers(-20, 20)), "int8")
        w = rng.integers(-127, 128, (out_dim, in_dim)).astype(np.int8)
        bias = rng.integers(-1000, 1000, out_dim).astype(np.int32)
        x = rng.integers(-128, 128, (batch, in_dim)).astype(np.int8)
        model = fully_connected_model(
            w, bias, batch=batch, in_qp=in_qp, w_qp=w_qp, b_qp=b_qp, out_qp=out_qp
        )
        ref = run_model(model, x, reference_kernels=True)
        xnn = run_model(model, x, reference_kernels=False)
        kw = dict(input_qparams=in_qp, weight_qparams=w_qp, output_qparams=out_qp)
        np.testing.assert_array_equal(
            fully_connected_int8(x, w, bias, rounding=litert_rounding, **kw), ref
        )
        single = fully_connected_int8(x, w, bias, rounding=other, **kw)
        assert np.abs(single.astype(int) - ref).max() <= 1
        assert np.abs(xnn.astype(int) - ref).max() <= 1
        total += ref.size
        single_diff += int(np.sum(single != ref))
        xnn_diff += int(np.sum(xnn != ref))
    print(f"{other} rounding differs on {single_diff}/{total}; XNNPACK on {xnn_diff}/{total}")
    assert total == 64 * 16 * 16
