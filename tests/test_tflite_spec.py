from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed: pytest-quant[tf]")

from pytest_quant import assert_tflite_spec
from pytest_quant.tflite import (
    SCHEMES,
    TFLiteRunner,
    convert,
    detect_scheme,
    detect_weight_types,
    lint_tflite,
)
from pytest_quant.tflite.flatbuffer import decode, read_model, unpack_bits, write_model
from pytest_quant.tflite.spec import Violation, failure_message

from . import aeq_models, models

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "models"


def _golden(name):
    return (GOLDEN / f"{name}.tflite").read_bytes()


# --- models: converted by TensorFlow (cached), or quantized by ai-edge-quantizer ------


@pytest.fixture(scope="module")
def cnn_int8(tf, tflite_cache):
    return convert(models.cnn(), models.data((8, 8, 1), n=64), mode="int8", cache_dir=tflite_cache)


@pytest.fixture(scope="module")
def heads_int8(tf, tflite_cache):
    rep = {"a": models.data((4,), n=100), "b": models.data((6,), n=100, seed=1)}
    return convert(models.two_in_two_out(), rep, mode="int8", cache_dir=tflite_cache)


@pytest.fixture(scope="module")
def heads_int16x8(tf, tflite_cache):
    rep = {"a": models.data((4,), n=100), "b": models.data((6,), n=100, seed=1)}
    return convert(models.two_in_two_out(), rep, mode="int16x8", cache_dir=tflite_cache)


@pytest.fixture(scope="module")
def mlp_int8(tf, tflite_cache):
    return convert(models.mlp(), models.data((64,), n=200), mode="int8", cache_dir=tflite_cache)


@pytest.fixture(scope="module")
def convs_int16x8(tf, tflite_cache):
    model = aeq_models.convs_without_bias()
    return convert(model, models.data((8, 8, 3), n=32), mode="int16x8", cache_dir=tflite_cache)


@pytest.fixture(scope="module")
def mlp_float(tf, tflite_cache):
    return aeq_models.float_tflite(models.mlp(), tflite_cache)


@pytest.fixture(scope="module")
def aeq(request):
    """``aeq(recipe, regex=None)``: the float MLP quantized by an ai-edge-quantizer
    recipe (each built once per module)."""
    pytest.importorskip(
        "ai_edge_quantizer",
        reason="ai-edge-quantizer is not installed: pip install ai-edge-quantizer to run this",
    )
    mlp_float = request.getfixturevalue("mlp_float")
    built = {}
    samples = models.data((64,), n=50)

    def make(recipe, regex=None):
        if (recipe, regex) not in built:
            built[recipe, regex] = aeq_models.quantize(mlp_float, recipe, samples, regex=regex)
        return built[recipe, regex]

    return make


# --- editing a model through the object API -------------------------------------------


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


def _rules(content, **kw):
    return [v.rule for v in lint_tflite(content, **kw)]


def _no_warnings(fn, *args, **kw):
    """``fn(*args, **kw)`` with every warning an error (numpy RuntimeWarnings included)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kw)


# --- the int8 spec (full integer) ------------------------------------------------------


def test_converted_models_pass(cnn_int8, heads_int8, mlp_int8, tflite_cache):
    for content in (cnn_int8, heads_int8, mlp_int8):
        assert_tflite_spec(content)
        assert_tflite_spec(content, scheme="int8")
    assert_tflite_spec(TFLiteRunner(mlp_int8))  # a runner works too
    dynamic = convert(models.mlp(), None, mode="dynamic", cache_dir=tflite_cache)
    assert lint_tflite(dynamic) == []


def test_weight_zero_point_caught(cnn_int8):
    def edit(ts, op, model):
        _set(_quant(ts, op.inputs[1]), "zeroPoint", 0, 3)

    with pytest.raises(AssertionError) as info:
        assert_tflite_spec(_edit(cnn_int8, "CONV_2D", edit))
    msg = str(info.value)
    assert msg.startswith("the model breaks the TFLite int8 quantization spec in 1 place(s):")
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


def test_float_model_and_corrupt_bytes(tflite_cache, tf):
    f16 = convert(models.mlp(), None, mode="float16", cache_dir=tflite_cache)
    assert lint_tflite(f16) == []  # float16 is a scheme of its own now
    assert _rules(f16, scheme="int8") == ["the model must be int8 (full integer)"]
    with pytest.raises(ValueError, match="not a TFLite model"):
        lint_tflite(b"0123456789")


def test_int64_bias_under_int8_activations_caught():
    def edit(ts, op, model):
        _to_int_bias(ts, op, model, np.int64)

    assert _rules(_edit(_golden("mlp_int8"), "FULLY_CONNECTED", edit)) == ["bias must be int32"]


# --- detection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, scheme",
    [
        ("cnn_int8", "int8"),
        ("heads_int8", "int8"),
        ("mlp_dynamic", "dynamic"),  # two of its three layers are too small and stay float
        ("mlp_float16", "float16"),
        ("mlp_int16x8", "int16x8"),
        ("mlp_int8", "int8"),
        ("qat_mlp_int8", "int8"),
    ],
)
def test_golden_models_detected_and_pass(name, scheme):
    content = _golden(name)
    assert detect_scheme(content) == scheme
    assert detect_weight_types(content) == (() if scheme == "float16" else ("int8",))
    assert_tflite_spec(content)  # the project's own float16 and dynamic models pass
    assert_tflite_spec(content, scheme=scheme)


@pytest.mark.parametrize(
    "recipe, regex, scheme, weights",
    [
        ("static_wi8_ai8", None, "int8", "int8"),
        ("static_wi8_ai8", "dense", "int8", "int8"),  # selective: the logits stay float
        ("static_wi8_ai16", None, "int16x8", "int8"),
        ("dynamic_wi8_afp32", None, "dynamic", "int8"),
        ("dynamic_wi4_afp32", None, "dynamic", "int4"),
        ("dynamic_wi2c_afp32", None, "dynamic", "int2"),
        ("dynamic_wi4b32_afp32", "dense", "dynamic", "int4"),  # blockwise, logits float
        ("weight_only_wi8_afp32", None, "weight_only", "int8"),
        ("weight_only_wi4_afp32", None, "weight_only", "int4"),
    ],
)
def test_aeq_models_detected_and_pass(aeq, recipe, regex, scheme, weights):
    content = aeq(recipe, regex)
    assert detect_scheme(content) == scheme
    assert detect_weight_types(content) == (weights,)
    assert_tflite_spec(content, weights=weights)
    assert_tflite_spec(content, scheme=scheme, weights=weights)


def test_float_model_detected_and_passes(mlp_float):
    assert detect_scheme(mlp_float) == "float"
    assert detect_weight_types(mlp_float) == ()
    assert_tflite_spec(mlp_float)
    assert_tflite_spec(mlp_float, scheme="float")


def test_dominant_scheme_wins(aeq):
    # two int8 FULLY_CONNECTED ops, one float: int8, and the float op is no violation
    ops = decode(read_model(aeq("static_wi8_ai8", "dense")))
    assert [o.outputs[0].dtype for o in ops if o.name == "FULLY_CONNECTED"] == [
        "INT8",
        "INT8",
        "FLOAT32",
    ]
    assert detect_scheme(aeq("static_wi8_ai8", "dense")) == "int8"


# --- demanding a scheme, and the arguments ------------------------------------------------


def test_demanded_scheme_names_both():
    with pytest.raises(AssertionError) as info:
        assert_tflite_spec(_golden("mlp_float16"), scheme="int8")
    assert str(info.value) == (
        "the model breaks the TFLite int8 quantization spec in 1 place(s):\n"
        "  op -1 -, tensor '-': the model must be int8 (full integer) but is float16 "
        "(float16 weights, float activations)"
    )
    found = lint_tflite(_golden("mlp_int8"), scheme="int16x8")
    assert [str(v) for v in found] == [
        "op -1 -, tensor '-': the model must be int16x8 (int16 activations, int8 weights) "
        "but is int8 (full integer)"
    ]


def test_demanded_scheme_with_weight_types(aeq, mlp_float):
    with pytest.raises(AssertionError) as info:
        assert_tflite_spec(aeq("dynamic_wi4_afp32"), scheme="int8", weights="int4")
    assert "the model must be int8 (full integer) but is dynamic (int4 weights, float " in str(
        info.value
    )
    with pytest.raises(AssertionError, match=r"must be weight_only .* but is float \(no quant"):
        assert_tflite_spec(mlp_float, scheme="weight_only")


def test_int4_weights_need_weights_option(aeq):
    content = aeq("dynamic_wi4_afp32")
    with pytest.raises(AssertionError) as info:
        assert_tflite_spec(content)
    msg = str(info.value)
    assert msg.startswith("the model breaks the TFLite dynamic quantization spec in 3 place(s):")
    assert re.search(
        r"\n  op 0 FULLY_CONNECTED, tensor '[^']+': weights must be int8 \(option "
        r"weights=\) \(found INT4\)\n",
        msg,
    )
    assert lint_tflite(content, weights="int4") == []
    assert lint_tflite(content, weights=("int8", "int4")) == []
    assert (
        _rules(aeq("dynamic_wi8_afp32"), weights="int4")[0]
        == "weights must be int4 (option weights=)"
    )


def test_bad_arguments():
    content = _golden("mlp_int8")
    with pytest.raises(ValueError, match=r"scheme='int9': use one of 'int8', 'int16x8', 'dyn"):
        assert_tflite_spec(content, scheme="int9")
    with pytest.raises(ValueError, match=r"int4 is a weight type: pass weights='int4'"):
        lint_tflite(content, scheme="int4")
    with pytest.raises(ValueError, match=r"weights='int3': use one of 'int8', 'int4', 'int2'"):
        lint_tflite(content, weights="int3")
    with pytest.raises(ValueError, match=re.escape("weights=(): use one of")):
        lint_tflite(content, weights=())
    assert set(SCHEMES) == {"int8", "int16x8", "dynamic", "weight_only", "float16", "float"}


# --- int16x8 --------------------------------------------------------------------------------


def test_int16x8_models_pass(heads_int16x8):
    # LOGISTIC and TANH at 1/32768, a CONCATENATION fed through a requantize
    assert detect_scheme(heads_int16x8) == "int16x8"
    assert_tflite_spec(heads_int16x8, scheme="int16x8")


def test_shared_all_zero_bias_is_no_violation(convs_int16x8):
    assert_tflite_spec(convs_int16x8, scheme="int16x8")
    convs = [o for o in decode(read_model(convs_int16x8)) if o.name == "CONV_2D"]
    biases = {o.inputs[2].index for o in convs if o.inputs[2] is not None}
    if len(convs) != 2 or len(biases) != 1:
        pytest.skip("this TensorFlow gives each convolution a bias of its own")
    bias = convs[0].inputs[2]
    assert bias.dtype == "INT64" and not np.any(bias.data)
    assert not np.allclose(bias.scale, convs[1].inputs[0].scale[0] * convs[1].inputs[1].scale)


def test_shared_zero_bias_with_nan_scale_caught(convs_int16x8):
    def edit(ts, op, model):
        _set(_quant(ts, op.inputs[2]), "scale", 2, np.nan)

    violations = _no_warnings(lint_tflite, _edit(convs_int16x8, "CONV_2D", edit))
    assert {str(v).split(": ", 1)[1] for v in violations} == {
        "bias scales must be finite and > 0 (found 8 scales, first nan at [2])"
    }


def test_int16_activation_zero_point_caught():
    def edit(ts, op, model):
        _quant(ts, op.outputs[0]).zeroPoint = [3]

    found = lint_tflite(_edit(_golden("mlp_int16x8"), "FULLY_CONNECTED", edit))
    assert [(v.op, v.rule, v.found) for v in found] == [
        (
            "FULLY_CONNECTED",
            "int16 activations must be symmetric: zero point 0",
            "zero_point[0] = 3",
        )
    ]


def test_int16_weight_scale_inf_caught():
    def edit(ts, op, model):
        q = _quant(ts, op.inputs[1])
        q.scale = [np.inf] * len(q.scale)

    with pytest.raises(AssertionError) as info:
        _no_warnings(assert_tflite_spec, _edit(_golden("mlp_int16x8"), "FULLY_CONNECTED", edit))
    msg = str(info.value)
    assert msg.startswith("the model breaks the TFLite int16x8 quantization spec in 1 place(s):")
    assert "weight scales must be finite and > 0 (found 32 scales, first inf at [0])" in msg


def test_int16_fixed_output_caught(heads_int16x8):
    def edit(ts, o, model):
        _quant(ts, o.outputs[0]).scale = [1 / 256]

    with pytest.raises(AssertionError, match=r"LOGISTIC output must have scale 3.05176e-05 and"):
        assert_tflite_spec(_edit(heads_int16x8, "LOGISTIC", edit))


def _to_int_bias(ts, op, model, dtype):
    from ai_edge_litert import schema_py_generated as s

    b = ts[op.inputs[2].index]
    buf = model.buffers[b.buffer]
    values = op.inputs[2].data.astype(dtype)
    buf.data = np.frombuffer(values.tobytes(), np.uint8)
    b.type = s.TensorType.INT32 if dtype == np.int32 else s.TensorType.INT64


def test_int16x8_with_int32_bias_passes():
    # the converter's _experimental_full_integer_quantization_bias_type=tf.int32
    def edit(ts, op, model):
        _to_int_bias(ts, op, model, np.int32)

    content = _edit(_golden("mlp_int16x8"), "FULLY_CONNECTED", edit)
    assert lint_tflite(content) == []


# --- dynamic range, weight-only, int4 ---------------------------------------------------------


def test_dynamic_weight_zero_point_caught():
    def edit(ts, op, model):
        _set(_quant(ts, op.inputs[1]), "zeroPoint", 4, 2)

    with pytest.raises(AssertionError) as info:
        assert_tflite_spec(_edit(_golden("mlp_dynamic"), "FULLY_CONNECTED", edit))
    msg = str(info.value)
    assert msg.startswith("the model breaks the TFLite dynamic quantization spec in 1 place(s):")
    assert "weights must be symmetric: zero point 0 (found zero_point[4] = 2)" in msg


@pytest.mark.parametrize("recipe", ["dynamic_wi4_afp32", "weight_only_wi4_afp32"])
def test_int4_per_axis_dimension_caught(aeq, recipe):
    def edit(ts, op, model):
        w = op.inputs[1] if op.name == "FULLY_CONNECTED" else op.inputs[0]
        _quant(ts, w).quantizedDimension = 1

    op_name = "FULLY_CONNECTED" if recipe.startswith("dynamic") else "DEQUANTIZE"
    found = lint_tflite(_edit(aeq(recipe), op_name, edit), weights="int4")
    assert [(v.op, v.rule, v.found) for v in found] == [
        (
            op_name,
            "per-axis weights of FULLY_CONNECTED are quantized on dimension 0",
            "quantized_dimension = 1",
        )
    ]


def test_int4_zero_point_and_scale_caught(aeq):
    def dynamic(ts, op, model):
        _set(_quant(ts, op.inputs[1]), "zeroPoint", 1, 1)

    def weight_only(ts, op, model):
        _set(_quant(ts, op.inputs[0]), "scale", 3, np.nan)
        _set(_quant(ts, op.inputs[0]), "zeroPoint", 0, 9)  # outside int4

    broken = _edit(aeq("dynamic_wi4_afp32"), "FULLY_CONNECTED", dynamic)
    assert _rules(broken, weights="int4") == ["weights must be symmetric: zero point 0"]
    broken = _edit(aeq("weight_only_wi4_afp32"), "DEQUANTIZE", weight_only)
    assert [str(v).split(": ", 1)[1] for v in lint_tflite(broken, weights="int4")] == [
        "weight zero points must be in [-8, 7] (found zero_point[0] = 9)",
        "weight scales must be finite and > 0 (found 32 scales, first nan at [3])",
    ]


def test_truncated_int4_buffer_caught_not_crashing(aeq):
    def edit(ts, op, model):
        buf = model.buffers[ts[op.inputs[1].index].buffer]
        buf.data = np.array(buf.data, np.uint8)[:-1]

    found = lint_tflite(_edit(aeq("dynamic_wi4_afp32"), "FULLY_CONNECTED", edit), weights="int4")
    assert [(v.rule, v.found) for v in found] == [
        ("packed int4 weights hold 2 values a byte: 1024 bytes", "1023 bytes")
    ]


def test_blockwise_scale_caught(aeq):
    def edit(ts, op, model):
        q = ts[op.inputs[1].index].quantization
        scales = ts[q.details.scales]
        buf = model.buffers[scales.buffer]
        data = np.array(buf.data, np.uint8)
        data[2:4] = 0  # float16 0.0
        buf.data = data

    found = lint_tflite(
        _edit(aeq("dynamic_wi4b32_afp32", "dense"), "FULLY_CONNECTED", edit), weights="int4"
    )
    assert [(v.rule, v.found) for v in found] == [
        ("int4 block scales must be finite and > 0", "64 block scales, first 0 at [1]")
    ]


def test_int4_values_unpacked_low_nibble_first(aeq, mlp_float):
    assert unpack_bits(bytes([0x8F]), 4, 2).tolist() == [-1, -8]
    assert unpack_bits(bytes([0b11100100]), 2, 4).tolist() == [0, 1, -2, -1]
    assert unpack_bits(bytes([0x21, 0x03]), 4, 3).tolist() == [1, 2, 3]  # odd count
    floats = {op.inputs[1].name: op.inputs[1].data for op in decode(read_model(mlp_float))}
    model = read_model(aeq("dynamic_wi4_afp32"))
    for op in decode(model):
        w = op.inputs[1]
        raw = bytes(np.asarray(model.buffers[model.subgraphs[0].tensors[w.index].buffer].data))
        q = unpack_bits(raw, 4, int(np.prod(w.shape))).reshape(w.shape)
        assert q.min() >= -7 and q.max() <= 7  # AEQ: scale = max|w| / 7
        err = np.abs(q * w.scale[:, None] - floats[w.name]) / w.scale[:, None]
        assert err.max() <= 0.5 + 1e-4  # the right order: every value within half a step


# --- float16 -------------------------------------------------------------------------------


def test_float16_overflow_caught():
    def edit(ts, op, model):
        buf = model.buffers[ts[op.inputs[0].index].buffer]
        data = np.array(buf.data, np.uint8)
        data[0:2] = (0x00, 0x7C)  # float16 +inf
        buf.data = data

    with pytest.raises(AssertionError) as info:
        assert_tflite_spec(_edit(_golden("mlp_float16"), "DEQUANTIZE", edit))
    msg = str(info.value)
    assert msg.startswith("the model breaks the TFLite float16 quantization spec in 1 place(s):")
    assert "op 0 DEQUANTIZE, tensor '" in msg
    assert "float16 constants must be finite (found 16 values, first inf at [0])" in msg


# --- message hygiene -------------------------------------------------------------------------


def test_found_values_are_capped_and_no_runtime_warnings():
    def edit(ts, op, model):
        q = _quant(ts, op.inputs[1])
        q.scale = [0.0] + [np.inf] * (len(q.scale) - 1)  # 0: a bias check would divide by it
        _quant(ts, op.inputs[0]).scale = [0.0]

    with pytest.raises(AssertionError) as info:
        _no_warnings(assert_tflite_spec, _edit(_golden("mlp_int8"), "FULLY_CONNECTED", edit))
    msg = str(info.value)
    assert "weight scales must be finite and > 0 (found 32 scales, first 0 at [0])" in msg
    assert "inf inf" not in msg and "nan" not in msg and "[0. " not in msg
    assert len(msg.splitlines()) == 2


def test_bias_scale_zero_without_warnings():
    def edit(ts, op, model):
        _set(_quant(ts, op.inputs[2]), "scale", 0, 0.0)

    found = _no_warnings(lint_tflite, _edit(_golden("mlp_int8"), "FULLY_CONNECTED", edit))
    assert [str(v).split(": ", 1)[1] for v in found] == [
        "bias scales must be finite and > 0 (found 32 scales, first 0 at [0])"
    ]


def test_failure_message_is_capped():
    violations = [Violation(i, "ADD", f"t{i}", "a rule", "x") for i in range(25)]
    lines = failure_message("int8", violations).splitlines()
    assert lines[0] == "the model breaks the TFLite int8 quantization spec in 25 place(s):"
    assert len(lines) == 22 and lines[-1] == "  ... and 5 more"


# --- malformed bytes are an error, not a violation ----------------------------------------


def test_malformed_model_is_an_error_not_a_violation(tmp_path):
    from pytest_quant.tflite import MalformedModelError

    model = read_model(_golden("mlp_int8"))
    model.subgraphs[0].tensors[3].name = b"dense\xff"
    path = tmp_path / "corrupt.tflite"
    path.write_bytes(write_model(model))
    for check in (assert_tflite_spec, detect_weight_types):
        with pytest.raises(
            MalformedModelError, match=rf"^{path}: malformed TFLite model: tensor 3"
        ):
            check(path)


def test_ops_without_outputs_do_not_crash_the_rules():
    """An op with no outputs (ASSIGN_VARIABLE has none) is read and checked like any
    other: the rules that look at an output skip it."""
    for name, ops, scheme in [
        ("heads_int8", ("SOFTMAX", "LOGISTIC"), "int8"),  # fixed output parameters
        ("cnn_int8", ("AVERAGE_POOL_2D",), "int8"),  # keeps its input's parameters
        ("mlp_float16", ("DEQUANTIZE",), "float16"),  # the consumers of its output
    ]:
        model = read_model(_golden(name))
        g = model.subgraphs[0]
        for op in decode(model):
            if op.name in ops:
                g.operators[op.index].outputs = []
                dropped = {t.index for t in op.outputs}  # no longer written by anything
                g.outputs = [i for i in g.outputs if i not in dropped]
        content = write_model(model)
        assert lint_tflite(content) == [], name
        assert detect_scheme(content) == scheme, name
