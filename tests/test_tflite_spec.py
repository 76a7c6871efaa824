from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras", reason="Keras/TensorFlow not installed: pytest-quant[tf]")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed: pytest-quant[tf]")

from pytest_quant import assert_tflite_spec
from pytest_quant.tflite import TFLiteRunner, convert, lint_tflite
from pytest_quant.tflite.flatbuffer import decode, read_model, write_model

from . import models


@pytest.fixture(scope="module")
def cnn_int8(tflite_cache):
    return convert(models.cnn(), models.data((8, 8, 1), n=64), mode="int8", cache_dir=tflite_cache)


@pytest.fixture(scope="module")
def heads_int8(tflite_cache):
    rep = {"a": models.data((4,), n=100), "b": models.data((6,), n=100, seed=1)}
    return convert(models.two_in_two_out(), rep, mode="int8", cache_dir=tflite_cache)


@pytest.fixture(scope="module")
def mlp_int8(tflite_cache):
    return convert(models.mlp(), models.data((64,), n=200), mode="int8", cache_dir=tflite_cache)


def test_converted_models_pass(cnn_int8, heads_int8, mlp_int8, tflite_cache):
    for content in (cnn_int8, heads_int8, mlp_int8):
        assert_tflite_spec(content)
    assert_tflite_spec(TFLiteRunner(mlp_int8))  # a runner works too
    dynamic = convert(models.mlp(), None, mode="dynamic", cache_dir=tflite_cache)
    assert lint_tflite(dynamic) == []


def _edit(content, op_name, edit):
    """Apply ``edit(tensors, op, model)`` to the first ``op_name`` op (one with a bias when
    there is one) and return the new bytes."""
    model = read_model(content)
    ops = [o for o in decode(model) if o.name == op_name]
    op = next((o for o in ops if len(o.inputs) > 2 and o.inputs[2] is not None), ops[0])
    edit(model.subgraphs[0].tensors, op, model)
    return write_model(model)


def _quant(tensors, t):
    return tensors[t.index].quantization


def _set(q, field, index, value):
    arr = np.array(getattr(q, field))  # the object API's arrays are read-only
    arr[index] = value
    setattr(q, field, arr)


def test_weight_zero_point_caught(cnn_int8):
    def edit(ts, op, model):
        _set(_quant(ts, op.inputs[1]), "zeroPoint", 0, 3)

    with pytest.raises(AssertionError) as info:
        assert_tflite_spec(_edit(cnn_int8, "CONV_2D", edit))
    msg = str(info.value)
    assert "op 0 CONV_2D, tensor '" in msg
    assert "weights must be symmetric: zero point 0 (found zero_point[0] = 3)" in msg


def test_weight_minus_128_caught(mlp_int8):
    def edit(ts, op, model):
        buf = model.buffers[ts[op.inputs[1].index].buffer]
        data = np.array(buf.data, np.uint8)
        data[5] = np.uint8(128)  # int8 -128
        buf.data = data

    with pytest.raises(AssertionError, match=r"narrow range, -128 unused\) \(found -128 at index"):
        assert_tflite_spec(_edit(mlp_int8, "FULLY_CONNECTED", edit))


def test_per_axis_dimension_caught(cnn_int8):
    def edit(ts, op, model):
        _quant(ts, op.inputs[1]).quantizedDimension = 0

    with pytest.raises(AssertionError, match=r"DEPTHWISE_CONV_2D are quantized on dimension 3"):
        assert_tflite_spec(_edit(cnn_int8, "DEPTHWISE_CONV_2D", edit))


def test_bias_scale_and_zero_point_caught(mlp_int8):
    def scale(ts, op, model):
        q = _quant(ts, op.inputs[2])
        q.scale = [s * 2 for s in q.scale]

    def zero(ts, op, model):
        q = _quant(ts, op.inputs[2])
        q.zeroPoint = [1 for _ in q.zeroPoint]

    with pytest.raises(AssertionError, match="bias scale must be input scale x weight scale"):
        assert_tflite_spec(_edit(mlp_int8, "FULLY_CONNECTED", scale))
    with pytest.raises(AssertionError, match="bias zero point must be 0"):
        assert_tflite_spec(_edit(mlp_int8, "FULLY_CONNECTED", zero))


def test_bias_dtype_caught(mlp_int8):
    from ai_edge_litert import schema_py_generated as s

    def edit(ts, op, model):
        ts[op.inputs[2].index].type = s.TensorType.INT8

    with pytest.raises(AssertionError, match=r"bias must be int32 \(found INT8\)"):
        assert_tflite_spec(_edit(mlp_int8, "FULLY_CONNECTED", edit))


@pytest.mark.parametrize(
    "op, expected",
    [
        ("LOGISTIC", "scale 0.00390625 and zero point -128"),
        ("TANH", "scale 0.0078125 and zero point 0"),
    ],
)
def test_fixed_output_params_caught(heads_int8, op, expected):
    def edit(ts, o, model):
        _quant(ts, o.outputs[0]).scale = [0.01]

    with pytest.raises(AssertionError, match=f"{op} output must have {expected}"):
        assert_tflite_spec(_edit(heads_int8, op, edit))


@pytest.mark.parametrize(
    "op, fixture", [("AVERAGE_POOL_2D", "cnn_int8"), ("CONCATENATION", "heads_int8")]
)
def test_same_params_caught(request, op, fixture):
    content = request.getfixturevalue(fixture)

    def edit(ts, o, model):
        q = _quant(ts, o.outputs[0])
        q.scale = [q.scale[0] * 1.5]

    with pytest.raises(AssertionError, match=f"{op} keeps its input's scale and zero point"):
        assert_tflite_spec(_edit(content, op, edit))


def test_several_violations_all_listed(cnn_int8):
    def edit(ts, op, model):
        _set(_quant(ts, op.inputs[1]), "zeroPoint", 0, 3)
        _set(_quant(ts, op.inputs[2]), "zeroPoint", 0, 1)

    violations = lint_tflite(_edit(cnn_int8, "CONV_2D", edit))
    assert [v.rule for v in violations] == [
        "weights must be symmetric: zero point 0",
        "bias zero point must be 0",
    ]


def test_float_model_and_corrupt_bytes(tflite_cache):
    f16 = convert(models.mlp(), None, mode="float16", cache_dir=tflite_cache)
    assert [v.rule for v in lint_tflite(f16)] == ["the model must be quantized"]
    with pytest.raises(ValueError, match="not a TFLite model"):
        lint_tflite(b"0123456789")
