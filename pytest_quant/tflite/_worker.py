"""Child process of the TFLite layer: one conversion or one debugger run, then exit.

python -m pytest_quant.tflite._worker convert SAVED_MODEL REP.npz|- MODE OUT.tflite
python -m pytest_quant.tflite._worker blame SAVED_MODEL REP.npz DEBUG.npz OUT.json
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np


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


def convert(saved_model: str, rep_path: str, mode: str, out: str) -> None:
    import tensorflow as tf

    if saved_model.endswith(".keras"):  # via="keras": what most Keras code calls
        import keras

        conv = tf.lite.TFLiteConverter.from_keras_model(keras.models.load_model(saved_model))
    elif rep_path == "-" and mode == "int8":
        # A QAT model: its ranges come from the fake-quant nodes. Only the concrete-function
        # path lets the converter find them (from_saved_model demands calibration data).
        loaded = tf.saved_model.load(saved_model)
        conv = tf.lite.TFLiteConverter.from_concrete_functions(
            [loaded.signatures["serving_default"]], loaded
        )
    else:
        conv = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if rep_path != "-":
        conv.representative_dataset = _dataset(rep_path)
    if mode == "int8":
        if rep_path != "-":  # (QAT: this setting would demand calibration data again)
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
        quant = interp._get_tensor_details(op["inputs"][0], 0)["quantization_parameters"]
        scale = float(quant["scales"][0]) if len(quant["scales"]) else math.nan
        layer = name.removeprefix("NumericVerify/").rsplit(":", 1)[0]
        rows.append({"layer": layer, "scale": scale, **stats})
    Path(out).write_text(json.dumps(rows))


if __name__ == "__main__":
    {"convert": convert, "blame": blame}[sys.argv[1]](*sys.argv[2:6])
