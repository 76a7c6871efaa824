from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras", reason="Keras/TensorFlow not installed: pytest-quant[tf]")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed: pytest-quant[tf]")

from pytest_quant import QuantParams, assert_quant_close, dequantize, quantize
from pytest_quant.tflite import MalformedModelError, Outputs, TFLiteRunner, convert

from . import models


@pytest.fixture(scope="module")
def cache(tflite_cache):
    return tflite_cache


@pytest.fixture(scope="module")
def mlp_int8(cache):
    model = models.mlp()
    return model, convert(model, models.data((64,), n=200), mode="int8", cache_dir=cache)


def test_qparams_and_dequantized_outputs(mlp_int8):
    _, content = mlp_int8
    runner = TFLiteRunner(content)
    assert isinstance(runner.input_qparams, QuantParams) and runner.input_qparams.dtype == "int8"
    assert isinstance(runner.output_qparams, QuantParams)
    x = models.data((64,), n=50, seed=3)
    q = runner.quantized(x)
    assert q.dtype == np.int8
    np.testing.assert_array_equal(runner(x), dequantize(q, runner.output_qparams))
    assert runner.content == content and runner.options == {"kernels": "xnnpack", "num_threads": 1}


def test_inputs_quantized_with_the_reference_and_saturating(mlp_int8):
    _, content = mlp_int8
    runner = TFLiteRunner(content)
    qp = runner.input_qparams
    lo, hi = qp.real_range
    x = models.data((64,), n=20, seed=4) * 50  # far outside the calibrated range
    assert (x > hi).any() and (x < lo).any()
    codes = quantize(x, qp)  # saturates: never wraps
    np.testing.assert_array_equal(runner.quantized(x), runner.quantized(codes))
    np.testing.assert_array_equal(
        runner.quantized(x), runner.quantized(np.clip(x, lo, hi).astype(np.float32))
    )


def test_batch_equals_per_sample(mlp_int8):
    _, content = mlp_int8
    runner = TFLiteRunner(content)
    x = models.data((64,), n=64, seed=5)
    batched = runner.quantized(x)
    single = np.concatenate([runner.quantized(x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_array_equal(batched, single)


def test_kernels_are_explicit_and_agree_within_one_lsb(mlp_int8):
    _, content = mlp_int8
    x = models.data((64,), n=256, seed=6)
    outs = {
        k: TFLiteRunner(content, kernels=k).quantized(x)
        for k in ("xnnpack", "builtin", "reference")
    }
    for k in ("builtin", "reference"):
        diff = np.abs(outs[k].astype(int) - outs["xnnpack"].astype(int))
        assert diff.max() <= 1, k
    runner = TFLiteRunner(content, kernels="reference", num_threads=2)
    assert runner.options == {"kernels": "reference", "num_threads": 2}


def test_multi_input_multi_output_by_name_and_position(cache):
    model = models.two_in_two_out()
    rep = {"a": models.data((4,), n=100), "b": models.data((6,), n=100, seed=1)}
    runner = TFLiteRunner(convert(model, rep, mode="int8", cache_dir=cache))
    x = {"a": models.data((4,), n=30, seed=2), "b": models.data((6,), n=30, seed=3)}
    by_name = runner(x)
    assert isinstance(by_name, Outputs) and set(by_name) == {"head_sigmoid", "head_tanh"}
    assert sorted(runner.input_names) == ["a", "b"]
    assert isinstance(runner.output_qparams, tuple) and len(runner.output_qparams) == 2
    ref = model.predict(x, verbose=0)
    for qp, name in zip(runner.output_qparams, runner.output_names, strict=True):
        assert_quant_close(by_name[name], ref[name], tolerance=0.02, qparams=qp)
    # by position: a list in the model's input order, outputs by index
    by_pos = runner([x[name] for name in runner.input_names])
    np.testing.assert_array_equal(by_pos[0], by_name[runner.output_names[0]])
    np.testing.assert_array_equal(by_pos[1], by_name[runner.output_names[1]])


def test_fixed_output_params_of_sigmoid_and_tanh(cache):
    model = models.two_in_two_out()
    rep = {"a": models.data((4,), n=100), "b": models.data((6,), n=100, seed=1)}
    runner = TFLiteRunner(convert(model, rep, mode="int8", cache_dir=cache))
    by_name = dict(zip(runner.output_names, runner.output_qparams, strict=True))
    sig, tanh = by_name["head_sigmoid"], by_name["head_tanh"]
    assert (sig.scale, sig.zero_point) == (1 / 256, -128)
    assert (tanh.scale, tanh.zero_point) == (1 / 128, 0)


def test_bad_inputs(mlp_int8):
    _, content = mlp_int8
    runner = TFLiteRunner(content)
    with pytest.raises(ValueError, match=r"expects samples of shape \(64,\)"):
        runner(np.zeros((2, 63), np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        runner(np.full((2, 64), np.nan, np.float32))
    with pytest.raises(ValueError, match="kernels='gpu'"):
        TFLiteRunner(content, kernels="gpu")
    with pytest.raises(ValueError, match="not a TFLite model"):
        TFLiteRunner(b"garbage!")
    truncated = content[: len(content) // 2]
    with pytest.raises(MalformedModelError, match="the model bytes: malformed TFLite model: "):
        TFLiteRunner(truncated)


def test_a_tflite_path_as_str_or_path(mlp_int8, tmp_path):
    _, content = mlp_int8
    path = tmp_path / "model_int8.tflite"
    path.write_bytes(content)
    x = models.data((64,), n=20, seed=4)
    expected = TFLiteRunner(content).quantized(x)
    for given in (str(path), path):
        np.testing.assert_array_equal(TFLiteRunner(given).quantized(x), expected)
    with pytest.raises(ValueError, match="is not a file"):
        TFLiteRunner(str(tmp_path / "missing.tflite"))


def test_a_converted_tflite_takes_no_mode_or_calibration_data(mlp_int8, tmp_path):
    _, content = mlp_int8
    path = tmp_path / "model_int8.tflite"
    path.write_bytes(content)
    assert convert(path) == convert(str(path)) == convert(content) == content
    with pytest.raises(ValueError, match=r"already-converted .tflite \(int8 \(full integer\)\), "
                       r"used as it is: representative_data cannot apply"):  # fmt: skip
        convert(path, models.data((64,), n=10))
    with pytest.raises(ValueError, match=r"mode='float16' cannot apply"):
        convert(str(path), mode="float16")
    with pytest.raises(ValueError, match=r"mode='int8' cannot apply"):
        convert(content, mode="int8")


# --- batch_size: a batch runs in chunks, bit for bit what one invocation gives -------------

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "models"


def _golden(name):
    return (GOLDEN / f"{name}.tflite").read_bytes()


def _batch(runner, n, seed=0):
    """Random inputs for every input of ``runner``: a list in the interpreter's order."""
    rng = np.random.default_rng(seed)
    shapes = [tuple(int(s) for s in d["shape"][1:]) for d in runner._inputs]
    return [rng.normal(size=(n, *shape)).astype(np.float32) for shape in shapes]


GOLDEN_NAMES = sorted(p.stem for p in GOLDEN.glob("*.tflite"))
INTEGER = ["cnn_int8", "heads_int8", "mlp_int16x8", "mlp_int8", "qat_mlp_int8"]


@pytest.mark.parametrize(
    "name, kernels",
    [(name, "xnnpack") for name in GOLDEN_NAMES] + [(name, "builtin") for name in INTEGER],
)
def test_chunks_equal_one_invocation_bit_for_bit(name, kernels):
    whole = TFLiteRunner(_golden(name), kernels=kernels, batch_size=103)
    chunked = TFLiteRunner(_golden(name), kernels=kernels, batch_size=10)
    (x,) = _batch(whole, 103)
    expected = whole.quantized(x)
    got = chunked.quantized(x)  # 10 chunks of 10, then one of 3
    assert chunked._it.get_input_details()[0]["shape"][0] == 3  # the last chunk ran last
    for key in chunked.output_names if isinstance(got, Outputs) else [None]:
        np.testing.assert_array_equal(*(v if key is None else v[key] for v in (got, expected)))
    one = TFLiteRunner(_golden(name), kernels=kernels, batch_size=1)
    first = one.quantized(x[:7])
    for key in one.output_names if isinstance(first, Outputs) else [None]:
        pair = (v if key is None else v[key] for v in (first, expected))
        np.testing.assert_array_equal(*(a[:7] for a in pair))


@pytest.mark.parametrize("name", ["mlp_dynamic", "mlp_float16"])
def test_builtin_float_kernels_group_rows_by_batch_size(name):
    """LiteRT's builtin float kernels sum a row differently by where it falls in the batch
    (blocks of rows, then a remainder): the same rows in other batches differ in their
    last bits whether or not the runner splits them. XNNPACK does not (above)."""
    whole = TFLiteRunner(_golden(name), kernels="builtin", batch_size=103)
    chunked = TFLiteRunner(_golden(name), kernels="builtin", batch_size=10)
    (x,) = _batch(whole, 103)
    expected, got = whole.quantized(x), chunked.quantized(x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert np.array_equal(chunked.quantized(x[:10]), got[:10])  # a chunk is its own batch


def test_chunks_of_several_inputs_and_outputs(cache):
    rep = {"a": models.data((4,), n=100), "b": models.data((6,), n=100, seed=1)}
    content = convert(models.two_in_two_out(), rep, mode="int8", cache_dir=cache)
    whole, chunked = TFLiteRunner(content, batch_size=50), TFLiteRunner(content, batch_size=8)
    x = {"a": models.data((4,), n=50, seed=2), "b": models.data((6,), n=50, seed=3)}
    expected = whole.quantized(x)
    got = chunked.quantized(x)
    assert isinstance(got, Outputs) and list(got) == list(expected) == whole.output_names
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    by_list = chunked([x[name] for name in chunked.input_names])
    for key, value in whole(x).items():
        np.testing.assert_array_equal(by_list[key], value)
    assert {int(d["shape"][0]) for d in chunked._it.get_input_details()} == {2}  # 8 x 6, 2


def test_default_batch_size_bounds_activation_memory(monkeypatch):
    from pytest_quant.tflite import runner as runner_module
    from pytest_quant.tflite.flatbuffer import read_model

    content = _golden("cnn_int8")
    per_sample = runner_module._activation_bytes(read_model(content))
    assert 1000 < per_sample < 10_000  # int8 8x8 feature maps, the float input and output
    default = TFLiteRunner(content)
    assert default.batch_size == runner_module.ACTIVATION_BUDGET // per_sample
    assert default.batch_size * per_sample <= 64 << 20 and "batch_size" not in default.options
    # a budget of 40 samples: a batch of 100 runs as 40, 40, 20
    monkeypatch.setattr(runner_module, "ACTIVATION_BUDGET", 40 * per_sample)
    bounded = TFLiteRunner(content)
    assert bounded.batch_size == 40
    (x,) = _batch(bounded, 100, seed=2)
    np.testing.assert_array_equal(bounded(x), default(x))
    assert bounded._it.get_input_details()[0]["shape"][0] == 20


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_batch_size_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match=rf"batch_size={bad!r} must be an int >= 1"):
        TFLiteRunner(_golden("mlp_int8"), batch_size=bad)
    assert TFLiteRunner(_golden("mlp_int8"), batch_size=16).options["batch_size"] == 16


def _fixed_batch_cnn():
    """The golden CNN with its RESHAPE given a constant shape (1, 128): a batch of 1 only."""
    from ai_edge_litert import schema_py_generated as s

    from pytest_quant.tflite.flatbuffer import decode, read_model, write_model

    model = read_model(_golden("cnn_int8"))
    g = model.subgraphs[0]
    reshape = next(op for op in decode(model) if op.name == "RESHAPE")
    shape = s.TensorT()
    shape.name, shape.shape, shape.type = b"fixed_shape", [2], s.TensorType.INT32
    shape.buffer = len(model.buffers)
    buffer = s.BufferT()
    buffer.data = np.frombuffer(np.array([1, 128], np.int32).tobytes(), np.uint8)
    model.buffers.append(buffer)
    g.tensors.append(shape)
    g.operators[reshape.index].inputs = [reshape.inputs[0].index, len(g.tensors) - 1]
    return write_model(model)


def test_a_fixed_batch_model_names_batch_size_and_runs_with_it():
    content = _fixed_batch_cnn()
    (x,) = _batch(TFLiteRunner(content), 5, seed=3)
    for kernels in ("xnnpack", "builtin"):
        original = TFLiteRunner(_golden("cnn_int8"), kernels=kernels)
        expected = np.concatenate([original.quantized(x[i : i + 1]) for i in range(5)])
        with pytest.raises(
            MalformedModelError,
            match="cannot allocate its tensors for inputs of shape \\(5, 8, 8, 1\\)",
        ) as info:
            TFLiteRunner(content, kernels=kernels).quantized(x)
        assert "pass TFLiteRunner(..., batch_size=<that size>)" in str(info.value)
        np.testing.assert_array_equal(
            TFLiteRunner(content, kernels=kernels, batch_size=1).quantized(x), expected
        )


def test_an_output_without_the_batch_first_cannot_be_split():
    from ai_edge_litert import schema_py_generated as s

    from pytest_quant.tflite.flatbuffer import read_model, write_model

    # the fixed-batch CNN's RESHAPE to (-1,) flattens the whole batch: (n * 128,)
    model = read_model(_fixed_batch_cnn())
    model.buffers[-1].data = np.frombuffer(np.array([-1], np.int32).tobytes(), np.uint8)
    model.subgraphs[0].tensors[-1].shape = [1]
    g = model.subgraphs[0]
    reshape_out = next(
        int(op.outputs[0]) for op in g.operators
        if model.operatorCodes[op.opcodeIndex].builtinCode == s.BuiltinOperator.RESHAPE
    )  # fmt: skip
    g.outputs = [reshape_out]
    content = write_model(model)
    runner = TFLiteRunner(content, batch_size=2)
    (x,) = _batch(runner, 3, seed=4)
    assert runner.quantized(x[:2]).shape == (256,)  # one invocation: fine
    with pytest.raises(
        ValueError,
        match=r"has shape \(256,\) for a chunk of 2 samples: its first dimension is not the batch",
    ):
        runner.quantized(x)


# --- malformed models: LiteRT's refusals are MalformedModelError, naming the source ---------


def test_litert_refusing_to_load_is_a_malformed_model_error(tmp_path):
    from pytest_quant.tflite import lint_tflite
    from pytest_quant.tflite.flatbuffer import read_model, write_model

    model = read_model(_golden("mlp_int8"))
    g = model.subgraphs[0]
    q = g.tensors[int(g.operators[0].inputs[1])].quantization
    q.zeroPoint = [74] * len(q.zeroPoint)  # int8 weights with a zero point: XNNPACK refuses
    path = tmp_path / "zero_point.tflite"
    path.write_bytes(write_model(model))
    with pytest.raises(
        MalformedModelError,
        match=rf"^{path}: malformed TFLite model: LiteRT cannot load it: unsupported zero-point",
    ) as info:
        TFLiteRunner(path)
    assert "assert_tflite_spec names spec violations" in str(info.value)
    assert [v.rule for v in lint_tflite(path)] == ["weights must be symmetric: zero point 0"]


def test_litert_failing_to_run_is_a_malformed_model_error():
    from pytest_quant.tflite.flatbuffer import decode, read_model, write_model

    model = read_model(_golden("cnn_int8"))
    pack = next(op for op in decode(model) if op.name == "PACK")  # builds RESHAPE's (n, 128)
    width = next(t for t in pack.inputs if t.data is not None)
    buf = model.buffers[model.subgraphs[0].tensors[width.index].buffer]
    buf.data = np.frombuffer(np.array([32], np.int32).tobytes(), np.uint8)  # (n, 32)
    runner = TFLiteRunner(write_model(model))
    message = (
        r"^the model bytes: malformed TFLite model: LiteRT failed to run it on inputs of "
        r"shape \(3, 8, 8, 1\): .*RESHAPE\) failed to invoke\. If the inputs are within"
    )
    with pytest.raises(MalformedModelError, match=message):
        runner(np.zeros((3, 8, 8, 1), np.float32))


def test_quant_tflite_passes_batch_size_and_names_a_stored_file(quant_tflite, litert):
    path = Path(__file__).resolve().parent.parent / "golden" / "models" / "mlp_int8.tflite"
    runner = quant_tflite(str(path), batch_size=7)
    assert runner.batch_size == 7 and runner.options["batch_size"] == 7
    assert str(path) in runner.source  # messages name the file, not "the model bytes"
