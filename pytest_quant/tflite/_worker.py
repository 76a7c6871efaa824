"""Child process of :func:`pytest_quant.tflite.convert`: one conversion, then exit.

python -m pytest_quant.tflite._worker SAVED_MODEL_DIR REP.npz|- MODE OUT.tflite
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(saved_model: str, rep_path: str, mode: str, out: str) -> None:
    import tensorflow as tf

    if rep_path == "-" and mode == "int8":
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
        with np.load(rep_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        by_name = json.loads((Path(rep_path).parent / "rep.json").read_text())["by_name"]
        n = next(iter(arrays.values())).shape[0]

        def dataset():  # one sample at a time, as the converter expects
            for i in range(n):
                if by_name:
                    yield {k: v[i : i + 1] for k, v in arrays.items()}
                else:
                    yield [arrays[f"input_{j}"][i : i + 1] for j in range(len(arrays))]

        conv.representative_dataset = dataset
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


if __name__ == "__main__":
    main(*sys.argv[1:5])
