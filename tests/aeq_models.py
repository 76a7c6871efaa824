"""Models for the scheme-aware spec tests: a Keras model as a float .tflite (cached), that
float model quantized by ai-edge-quantizer (AEQ) recipes,
and a Keras model whose convolutions have no bias.

AEQ needs neither TensorFlow nor Keras: only the float .tflite, which TensorFlow makes.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np


def float_tflite(keras_model: Any, cache_dir: Path) -> bytes:
    """``keras_model`` as a float .tflite (no optimization): what AEQ quantizes."""
    from pytest_quant.tflite import convert

    return convert(keras_model, mode="float", cache_dir=cache_dir)


def quantize(
    float_content: bytes,
    recipe_name: str,
    samples: np.ndarray,
    *,
    regex: str | None = None,
    batch: int = 1,
) -> bytes:
    """``float_content`` quantized by the AEQ recipe ``recipe_name`` (calibrated on
    ``samples`` when the recipe needs it: ``batch`` samples per calibration step, and
    only the first 50 when one at a time); ``regex`` restricts the recipe to the ops
    whose output names match (a selective recipe: the rest stays float)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    rules = getattr(recipe, recipe_name)()
    if regex is not None:
        rules = [{**rule, "regex": regex} for rule in rules]
    with warnings.catch_warnings():
        # AEQ runs LiteRT with experimental_preserve_all_tensors, and LiteRT warns
        warnings.simplefilter("ignore", UserWarning)
        q = quantizer.Quantizer(float_content, rules)
        calibration = None
        if q.need_calibration:
            signatures = Interpreter(model_content=float_content).get_signature_list()
            key = next(iter(signatures))
            name = signatures[key]["inputs"][0]
            n = len(samples) if batch > 1 else min(50, len(samples))
            batches = [{name: samples[i : i + batch]} for i in range(0, n, batch)]
            calibration = q.calibrate({key: batches})
        return bytes(q.quantize(calibration, enable_progress_report=False).quantized_model)


def convs_without_bias():
    """Two bias-less Conv2D layers, then a Dense head: the int16x8 converter gives both
    convolutions one shared all-zero int64 bias."""
    import keras

    keras.utils.set_random_seed(1234)
    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4)(x)
    return keras.Model(inp, out, name="convs_without_bias")
