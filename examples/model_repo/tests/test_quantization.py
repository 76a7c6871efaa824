import numpy as np
from hypothesis import given
from quantize_utils import quantize_weights

from pytest_quant import (
    assert_accuracy_drop,
    assert_quantizer_conforms,
    assert_tflite_close,
    assert_tflite_spec,
)
from pytest_quant.strategies import weights


def test_int8_outputs_close_to_float(int8_model, model, data):
    assert_tflite_close(int8_model, model, data["x_test"])  # bound: --quant-tolerance


def test_int8_accuracy(int8_model, model, data):
    x, y = data["x_test"], data["y_test"]
    assert_accuracy_drop(int8_model(x), model.predict(x, verbose=0), y)


def test_int8_model_follows_the_tflite_spec(int8_model):
    assert_tflite_spec(int8_model)


def test_int8_outputs_match_golden(quant_golden, int8_model, data):
    quant_golden.check("digits_int8", int8_model.quantized(data["x_test"][:100]), runner=int8_model)


def test_our_weight_quantizer_conforms():
    assert_quantizer_conforms(quantize_weights, kind="tensor", symmetric=True, per_channel_axis=1)


@given(weights(shape=(64, 32)))
def test_weight_round_trip_error_is_half_a_step(w):
    q, scale, _ = quantize_weights(w)
    assert np.all(np.abs(q * scale - w) <= scale / 2 + 1e-7)
