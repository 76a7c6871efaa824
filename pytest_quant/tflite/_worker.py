"""Child process of the TFLite layer: one conversion or one debugger run, then exit.

python -m pytest_quant.tflite._worker convert ENTRY SAVED REP.npz|- MODE OUT.tflite
python -m pytest_quant.tflite._worker blame SAVED_MODEL REP.npz DEBUG.npz OUT.json

ENTRY is the ``TFLiteConverter`` constructor the parent chose for the route:
``from_saved_model`` (SAVED is a SavedModel), ``from_concrete_functions`` (a SavedModel;
its serving signature is converted) or ``from_keras_model`` (a Keras 3 ``.keras`` file).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .converter import CALIBRATED_MODES, REFERENCE_MODE


def _dataset(path: str) -> Any:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    by_name = json.loads((Path(path).with_suffix(".json")).read_text())["by_name"]
    n = next(iter(arrays.values())).shape[0]

    def dataset() -> Any:  # one sample at a time, as the converter expects
        for i in range(n):
            if by_name:
                yield {k: v[i : i + 1] for k, v in arrays.items()}
            else:
                yield [arrays[f"input_{j}"][i : i + 1] for j in range(len(arrays))]

    return dataset


def _converter(tf: Any, entry: str, saved: str) -> Any:
    if entry == "from_keras_model":
        import keras

        # compile=False: the loss and optimizer do not matter to conversion, and a loss
        # object's config need not reload
        model = keras.models.load_model(saved, compile=False)
        return tf.lite.TFLiteConverter.from_keras_model(model)
    if entry == "from_concrete_functions":
        loaded = tf.saved_model.load(saved)
        return tf.lite.TFLiteConverter.from_concrete_functions(
            [loaded.signatures["serving_default"]], loaded
        )
    if entry == "from_saved_model":
        return tf.lite.TFLiteConverter.from_saved_model(saved)
    raise ValueError(f"unknown converter entry {entry!r}")


def convert(entry: str, saved: str, rep_path: str, mode: str, out: str) -> None:
    import tensorflow as tf

    conv = _converter(tf, entry, saved)
    if mode != REFERENCE_MODE:  # the float reference: no optimization at all
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    # Only the calibrated modes get the data: given to "dynamic" it makes a full-integer
    # model with float I/O instead of a weights-only one.
    calibrated = rep_path != "-" and mode in CALIBRATED_MODES
    if calibrated:
        conv.representative_dataset = _dataset(rep_path)
    if mode == "int8":
        if calibrated:  # (QAT: this setting would demand calibration data again)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    elif mode == "float16":
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "int16x8":
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    Path(out).write_bytes(conv.convert())


def blame(saved_model: str, rep_path: str, debug_path: str, out: str) -> None:
    """Per-layer error of the int8 model with TF's QuantizationDebugger: each quantized
    layer's output against the float op run on the same (dequantized) inputs."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _dataset(rep_path)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=conv, debug_dataset=_dataset(debug_path)
    )
    debugger.run()
    interp = debugger._quant_interpreter  # the debug model: NumericVerify(q, float) per layer
    rows = []
    for detail in debugger._get_numeric_verify_tensor_details():
        name = detail["name"]
        stats = {k: float(v) for k, v in debugger.layer_statistics[name].items()}
        op = interp._get_op_details(debugger._defining_op[detail["index"]])
        quantized = interp._get_tensor_details(op["inputs"][0], 0)  # the layer's own tensor
        quant = quantized["quantization_parameters"]
        scale = float(quant["scales"][0]) if len(quant["scales"]) else math.nan
        rows.append({"layer": quantized["name"], "scale": scale, **stats})
    Path(out).write_text(json.dumps(rows))


COMMANDS: dict[str, Callable[..., None]] = {"convert": convert, "blame": blame}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
