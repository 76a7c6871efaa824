from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras", reason="Keras/TensorFlow not installed: pytest-quant[tf]")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed: pytest-quant[tf]")

from pytest_quant import QuantParams, assert_quant_close, dequantize, quantize
from pytest_quant.tflite import Outputs, TFLiteRunner, convert

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
    with pytest.raises(ValueError, match="LiteRT cannot load this model"):
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
