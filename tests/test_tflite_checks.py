from __future__ import annotations

import pytest

keras = pytest.importorskip("keras", reason="Keras/TensorFlow not installed: pytest-quant[tf]")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed: pytest-quant[tf]")

from pytest_quant import assert_tflite_close  # noqa: E402
from pytest_quant.tflite import TFLiteRunner, convert, layer_errors  # noqa: E402
from pytest_quant.tflite.flatbuffer import decode, read_model  # noqa: E402

from . import models  # noqa: E402


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
    assert "layers adding the most error (3 of 3 tensors, ranked by 'added'" in msg
    table = msg.split("about 0.29 is ideal):\n")[1].splitlines()
    assert "culprit" in table[0]  # how to read accumulated vs added error
    worst = table[2].split()
    assert float(worst[1]) > 10.0  # rmse/scale; measured: 794 steps
    first = decode(read_model(runner.content))[0]  # the first layer, clipped by calibration
    assert worst[-2] == first.name == "FULLY_CONNECTED" and worst[-1] == first.outputs[0].name


def test_layer_errors_on_demand(mlp, tflite_cache):
    errors = layer_errors(mlp, models.data((64,), n=200), models.data((64,), n=32, seed=3))
    assert len(errors) == 3
    assert errors == sorted(errors, key=lambda e: -e.rmse_per_scale)
    assert all(0.0 < e.rmse_per_scale < 2.0 and e.scale > 0 for e in errors)


def test_blame_uses_the_reference_model_without_a_source(mlp, tflite_cache):
    runner = TFLiteRunner(
        convert(mlp, models.data((64,), n=200) * 0.02, mode="int8", cache_dir=tflite_cache)
    )
    x = models.data((64,), n=100, seed=2)
    with pytest.raises(AssertionError, match=r"layers adding the most error \(3 of 3"):
        assert_tflite_close(runner, mlp, x)  # the Keras reference is converted to float
    outputs = mlp.predict(x, verbose=0)
    with pytest.raises(AssertionError, match=r"per-tensor blame unavailable: the reference is"):
        assert_tflite_close(runner, outputs, x)  # outputs alone: nothing to compare with


def test_list_outputs_of_a_keras_model(tflite_cache):
    keras.utils.set_random_seed(7)
    a = keras.Input((4,), name="a")
    h = keras.layers.Dense(8, activation="relu")(a)
    wide = keras.layers.Dense(5, name="wide")(h)
    narrow = keras.layers.Dense(2, name="narrow", activation="tanh")(h)
    model = keras.Model(a, [wide, narrow])  # outputs as a list: predict returns a list
    runner = TFLiteRunner(convert(model, models.data((4,), n=100), mode="int8",
                                  cache_dir=tflite_cache))  # fmt: skip
    assert_tflite_close(runner, model, models.data((4,), n=50, seed=1), tolerance=0.05)
    swapped = keras.Model(a, [narrow, wide])  # the same outputs, the other way round
    with pytest.raises(ValueError, match="shape"):
        assert_tflite_close(runner, swapped, models.data((4,), n=50, seed=1))


def test_failing_int8_gate_says_how_to_get_a_float_ops_suggestion(mlp, tflite_cache):
    from pytest_quant.tflite.checks import SUGGEST_HINT

    x = models.data((64,), n=100, seed=2)
    runner = _runner(mlp, models.data((64,), n=200) * 0.02, tflite_cache)
    with pytest.raises(AssertionError) as info:
        assert_tflite_close(runner, mlp, x)
    assert str(info.value).endswith(SUGGEST_HINT)
    assert "--quant-suggest or ini quant_suggest = true" in SUGGEST_HINT
    with pytest.raises(AssertionError) as info:
        assert_tflite_close(runner, mlp, x, blame=False)
    assert "quant-suggest" not in str(info.value)  # the bare check, as asked
    bare = TFLiteRunner(runner.content)  # no float source known: nothing to search with
    with pytest.raises(AssertionError) as info:
        assert_tflite_close(bare, mlp, x)
    assert "layers adding the most error" in str(info.value)
    assert "quant-suggest" not in str(info.value)


def test_a_calibration_mistake_is_not_fixed_by_float_ops(mlp, tflite_cache):
    # every activation range is 50x too small, the int8 input's too: no op kept in float
    # repairs that, and the suggestion says so instead of naming ops
    runner = _runner(mlp, models.data((64,), n=200) * 0.02, tflite_cache)
    with pytest.raises(AssertionError) as info:
        assert_tflite_close(runner, mlp, models.data((64,), n=100, seed=2), suggest=True)
    msg = str(info.value)
    assert "suggestion (--quant-suggest): no set of up to 8 ops kept in float brings" in msg
    assert "no set tried closes 5% of the gap to the bound" in msg
    assert "adopt it with" not in msg and "closest tried" not in msg
