"""convert() with Keras 2 (tf_keras) models, the Keras TensorFlow Model Optimization's QAT
builds, on both routes; the float reference mode; which modes see representative data;
failure hints that name the route that failed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

tf_keras = pytest.importorskip(
    "tf_keras", reason="tf_keras (Keras 2) is not installed: pip install tf-keras"
)
pytest.importorskip("keras", reason="Keras/TensorFlow not installed: pytest-quant[tf]")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed: pytest-quant[tf]")

from pytest_quant import assert_quant_close, assert_within_lsb, quantize  # noqa: E402
from pytest_quant.tflite import ConversionError, TFLiteRunner, convert  # noqa: E402
from pytest_quant.tflite import converter as convert_mod  # noqa: E402
from pytest_quant.tflite import fingerprint as fingerprint_mod  # noqa: E402
from pytest_quant.tflite.flatbuffer import decode, read_model  # noqa: E402

from . import models, models_keras2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VIAS = ["keras", "saved_model"]
QAT_HINT = "int8 without representative_data works only for a model trained with fake-quant"


@pytest.fixture(scope="module")
def tfmot():
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        module = models_keras2.tfmot()
    except ModuleNotFoundError:
        pytest.skip(
            "tensorflow-model-optimization is not installed: pip install "
            "tensorflow-model-optimization (QAT models)"
        )
    assert os.environ.get("TF_USE_LEGACY_KERAS") == before  # Keras 3 tests unaffected
    return module


@pytest.fixture(scope="module")
def k2_mlp():
    return models_keras2.mlp()


@pytest.fixture(scope="module")
def qat_mlp(tfmot):
    return models_keras2.qat_mlp()


@pytest.fixture(scope="module")
def annotated_mlp(tfmot):
    return models_keras2.annotated_mlp()


@pytest.fixture(scope="module")
def calib():
    return models.data((models_keras2.N_IN,), n=200, seed=3)


@pytest.fixture(scope="module")
def x_test():
    return models.data((models_keras2.N_IN,), n=1000, seed=7)


def ops_of(content: bytes) -> list:
    return decode(read_model(content))


def activation_dtypes(content: bytes) -> set[str]:
    """dtypes of the tensors the ops compute (not constants)."""
    return {t.dtype for op in ops_of(content) for t in op.outputs if t.data is None}


def test_keras_flavour_comes_from_the_model(k2_mlp, qat_mlp):
    assert convert_mod.keras_flavour(k2_mlp) == "keras2"
    assert convert_mod.keras_flavour(qat_mlp) == "keras2"
    assert convert_mod.keras_flavour(models.mlp()) == "keras3"
    assert convert_mod.keras_flavour(np.zeros(3)) is None


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize(
    "mode, io_dtype, tolerance",
    [
        ("dynamic", np.float32, 0.02),
        ("float", np.float32, 1e-6),
        ("float16", np.float32, 1e-3),
        ("int16x8", np.float32, 0.005),
        ("int8", np.int8, 0.02),
    ],
)
def test_plain_model_converts_in_every_mode(
    k2_mlp, calib, x_test, tflite_cache, via, mode, io_dtype, tolerance
):
    """A tf_keras model compiled with a loss object: Keras 3 could not reload its .keras
    file (``SparseCategoricalCrossentropy.__init__() got an unexpected keyword argument
    'fn'``), and it has no ``export(verbose=...)``."""
    content = convert(k2_mlp, calib, mode=mode, cache_dir=tflite_cache, via=via)
    runner = TFLiteRunner(content)
    assert runner._inputs[0]["dtype"] == io_dtype and runner._outputs[0]["dtype"] == io_dtype
    assert_quant_close(runner(x_test), k2_mlp.predict(x_test, verbose=0), tolerance=tolerance)
    names = {op.name for op in ops_of(content)}
    if mode == "float":
        assert names == {"FULLY_CONNECTED"} and activation_dtypes(content) == {"FLOAT32"}
    if mode == "dynamic":
        assert "QUANTIZE" not in names and activation_dtypes(content) == {"FLOAT32"}


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("with_data", [False, True], ids=["no-data", "data"])
def test_qat_model_converts_to_int8_within_one_lsb_of_keras(
    qat_mlp, calib, x_test, tflite_cache, via, with_data
):
    """tfmot ``quantize_model``: int8 in and out, the output range the model's last
    fake-quant node learned (representative data does not recalibrate it), and the
    int8 outputs within 1 LSB of the QAT Keras model's outputs quantized with those
    parameters. Measured (TF 2.21, both routes, with and without data): max 1 LSB,
    0.125% of outputs one step off."""
    content = convert(
        qat_mlp, calib if with_data else None, mode="int8", cache_dir=tflite_cache, via=via
    )
    runner = TFLiteRunner(content)
    assert runner.input_qparams.dtype == "int8" and runner.output_qparams.dtype == "int8"
    lo, hi = (
        float(w.numpy())
        for w in qat_mlp.weights
        if w.name.startswith("quant_logits/post_activation_m")
    )
    assert runner.output_qparams.scale == pytest.approx((hi - lo) / 255, rel=1e-5)
    reference = quantize(qat_mlp.predict(x_test, verbose=0), runner.output_qparams)
    assert_within_lsb(runner.quantized(x_test), reference, max_lsb=1, max_mismatch=0.01)


@pytest.mark.parametrize("via", VIAS)
def test_annotate_and_apply_model_converts_to_int8(annotated_mlp, x_test, tflite_cache, via):
    content = convert(annotated_mlp, None, mode="int8", cache_dir=tflite_cache, via=via)
    runner = TFLiteRunner(content)
    assert {op.name for op in ops_of(content)} == {"FULLY_CONNECTED"}
    reference = quantize(annotated_mlp.predict(x_test, verbose=0), runner.output_qparams)
    assert_within_lsb(runner.quantized(x_test), reference, max_lsb=1, max_mismatch=0.01)


def test_dynamic_ignores_representative_data(k2_mlp, calib, tflite_cache):
    """Given to "dynamic", representative data used to make a full-integer model with
    float I/O (QUANTIZE ops, int8 activations): it is no longer passed on."""
    without = convert(k2_mlp, None, mode="dynamic", cache_dir=tflite_cache)
    with_data = convert(k2_mlp, calib, mode="dynamic")  # no cache: the converter itself
    for content in (without, with_data):
        ops = ops_of(content)
        assert "QUANTIZE" not in {op.name for op in ops}
        assert activation_dtypes(content) == {"FLOAT32"}
        weights = {t.dtype for op in ops for t in op.inputs if t is not None and t.data is not None}
        assert "INT8" in weights  # the hidden layer's weights: it is a dynamic-range model
    assert with_data == without


@pytest.mark.parametrize("mode", ["dynamic", "float", "float16"])
def test_uncalibrated_modes_ignore_the_data_in_the_cache_key(k2_mlp, calib, mode):
    version = convert_mod.tf_version()
    rep = convert_mod._representative(calib)
    assert convert_mod.cache_key(k2_mlp, rep, mode, version) == convert_mod.cache_key(
        k2_mlp, None, mode, version
    )
    fewer = convert_mod._representative(calib[:1])
    int8 = [convert_mod.cache_key(k2_mlp, r, "int8", version) for r in (rep, fewer)]
    assert int8[0] != int8[1]


def test_float_reference_is_converted_once_whatever_the_data(
    k2_mlp, calib, tflite_cache, forbid_conversion
):
    first = convert(k2_mlp, mode="float", cache_dir=tflite_cache)

    forbid_conversion()
    assert convert(k2_mlp, calib, mode="float", cache_dir=tflite_cache) == first
    assert convert(k2_mlp, calib[:7], mode="float", cache_dir=tflite_cache) == first


def test_second_conversion_is_a_cache_hit(k2_mlp, calib, tflite_cache, forbid_conversion):
    first = convert(k2_mlp, calib, mode="int8", cache_dir=tflite_cache)

    forbid_conversion()
    assert convert(k2_mlp, calib, mode="int8", cache_dir=tflite_cache) == first
    other = models_keras2.mlp()
    other.set_weights([w * 1.01 for w in other.get_weights()])
    with pytest.raises(AssertionError, match="ran again"):
        convert(other, calib, mode="int8", cache_dir=tflite_cache)


def test_cache_key_depends_on_flavour_and_weights(k2_mlp, monkeypatch):
    version = convert_mod.tf_version()
    key = convert_mod.cache_key(k2_mlp, None, "dynamic", version)
    assert key == convert_mod.cache_key(models_keras2.mlp(), None, "dynamic", version)
    other = models_keras2.mlp()
    other.set_weights([w * 1.01 for w in other.get_weights()])
    assert convert_mod.cache_key(other, None, "dynamic", version) != key
    assert convert_mod.cache_key(k2_mlp, None, "dynamic", version, via="keras") != key
    assert convert_mod.cache_key(models.mlp(), None, "dynamic", version) != key
    monkeypatch.setattr(fingerprint_mod, "keras_flavour", lambda model: "keras3")
    assert convert_mod.cache_key(k2_mlp, None, "dynamic", version) != key


@pytest.mark.parametrize("via", VIAS)
def test_int8_without_data_of_a_float_model_names_route_and_fix(k2_mlp, via):
    with pytest.raises(ConversionError) as info:
        convert(k2_mlp, None, mode="int8", via=via)
    msg = str(info.value)
    assert f"converting Keras model 'k2_mlp' to int8 via={via!r} (Keras 2: " in msg
    assert "tf.saved_model.save, then TFLiteConverter.from_concrete_functions" in msg
    assert "must be tf.float32" in msg  # the converter's own words, the cause
    assert QAT_HINT in msg
    assert "the test session goes on" not in msg


def test_a_crash_gets_no_qat_hint(k2_mlp, monkeypatch):
    """A crash is no calibration problem: the QAT hint used to follow every int8 failure
    without representative data."""
    monkeypatch.setattr(convert_mod, "WORKER", "tests.abort_worker")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    with pytest.raises(ConversionError) as info:
        convert(k2_mlp, None, mode="int8")
    msg = str(info.value)
    assert "crashed (the converter process was killed by SIGABRT)" in msg
    assert "via='saved_model' (Keras 2: tf.saved_model.save" in msg
    assert "QAT" not in msg and "representative_data" not in msg


def test_int16x8_of_a_qat_model_says_why(qat_mlp, calib):
    with pytest.raises(ConversionError) as info:
        convert(qat_mlp, calib, mode="int16x8")
    msg = str(info.value)
    assert "Quantization to 16x8-bit not yet supported for op: 'DEQUANTIZE'" in msg
    assert "fake-quant (QAT) nodes, whose ranges are int8: convert it with mode='int8'" in msg
    assert QAT_HINT not in msg


@pytest.mark.parametrize(
    "output, mode, calibrated, entry, expected",
    [
        ("LLVM ERROR: Failed to infer result type(s).", "int8", False, "from_saved_model", ""),
        ("ValueError: ... must be tf.float32.", "int8", False, "from_saved_model", QAT_HINT),
        ("ValueError: ... must be tf.float32.", "int8", True, "from_saved_model", ""),
        (
            "TypeError: Could not locate class 'QuantizeLayer'",
            "int8",
            False,
            "from_keras_model",
            "via='keras' reloads the .keras file with Keras 3",
        ),
        ("TypeError: Could not locate class 'X'", "float", False, "from_saved_model", ""),
    ],
)
def test_failure_hints_only_a_plain_cause(output, mode, calibrated, entry, expected):
    hint = convert_mod.failure_hint(output, mode=mode, calibrated=calibrated, entry=entry)
    assert hint.startswith(expected) if expected else hint == ""


def test_int16x8_without_data_is_refused(k2_mlp):
    with pytest.raises(ValueError, match="mode='int16x8' needs representative_data"):
        convert(k2_mlp, None, mode="int16x8")
