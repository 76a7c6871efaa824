from __future__ import annotations

import pytest

pytest.importorskip("keras", reason="Keras/TensorFlow not installed: pytest-quant[tf]")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed: pytest-quant[tf]")

from pytest_quant import assert_tflite_close
from pytest_quant.tflite import TFLiteRunner, convert, layer_errors

from . import models


@pytest.fixture(scope="module")
def mlp():
    return models.mlp()


def _runner(model, rep, cache):
    runner = TFLiteRunner(convert(model, rep, mode="int8", cache_dir=cache))
    runner.origin = (model, rep)  # as quant_tflite records it
    return runner


def test_good_calibration_passes(mlp, tflite_cache):
    runner = _runner(mlp, models.data((64,), n=200), tflite_cache)
    assert_tflite_close(runner, mlp, models.data((64,), n=100, seed=2))


def test_bad_calibration_fails_and_blames_layers(mlp, tflite_cache):
    # calibrated on inputs 50x too small: the input and first layer's ranges clip
    runner = _runner(mlp, models.data((64,), n=200) * 0.02, tflite_cache)
    with pytest.raises(AssertionError) as info:
        assert_tflite_close(runner, mlp, models.data((64,), n=100, seed=2))
    msg = str(info.value)
    assert "rms error" in msg and "bound 2%" in msg
    assert "layers adding the most error (3 of 3, RMSE in steps of each layer's scale" in msg
    table = msg.split("about 0.29 is ideal):\n")[1].splitlines()
    worst = table[1].split()
    assert float(worst[0]) > 10.0  # measured: 794 steps
    assert worst[-1].startswith("mlp_1/dense_1/MatMul")  # the first layer, clipped by calibration


def test_layer_errors_on_demand(mlp, tflite_cache):
    errors = layer_errors(mlp, models.data((64,), n=200), models.data((64,), n=32, seed=3))
    assert len(errors) == 3
    assert errors == sorted(errors, key=lambda e: -e.rmse_per_scale)
    assert all(0.0 < e.rmse_per_scale < 2.0 and e.scale > 0 for e in errors)


def test_blame_unavailable_without_source(mlp, tflite_cache):
    runner = TFLiteRunner(
        convert(mlp, models.data((64,), n=200) * 0.02, mode="int8", cache_dir=tflite_cache)
    )
    with pytest.raises(AssertionError, match=r"per-layer blame unavailable: per-layer blame needs"):
        assert_tflite_close(runner, mlp, models.data((64,), n=100, seed=2))
