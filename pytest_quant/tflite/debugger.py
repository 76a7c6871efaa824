"""Per-layer local error from TF's QuantizationDebugger, run in the converter's child.

Each layer's int8 output is compared with the float op applied to the same dequantized
inputs: the error that layer alone adds. It needs TensorFlow and the float source (it
re-converts it to int8), so it is the second opinion beside the interpreter-only
per-tensor blame of :mod:`pytest_quant.tflite.blame`, never the only way.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from .blame import LayerError
from .calibration import _representative, _save_dataset
from .converter import _describe, _route, _run_child, _start_child, tf_version
from .export import _saved


def debugger_layer_errors(
    source: Any, representative_data: Any, debug_data: Any, *, timeout: float = 600.0
) -> list[LayerError]:
    """Per-layer quantization error of ``source`` converted to int8, worst first.

    ``rmse_per_scale`` is the RMSE in steps of the layer's output scale: about 0.29
    (1/sqrt(12)) for a well-quantized layer. ``layer`` is the quantized tensor's name.

    Example::

        errors = debugger_layer_errors(keras_model, x_calib, x_test[:32])
    """
    if isinstance(source, (str, os.PathLike)):
        source = Path(source)
    rep = _representative(representative_data)
    dbg = _representative(debug_data)
    if rep is None or dbg is None:
        raise ValueError("layer_errors needs representative_data and debug_data")
    version = tf_version()
    _start_child()
    with tempfile.TemporaryDirectory(prefix="pytest-quant-blame-") as tmp:
        work = Path(tmp)
        saved = _saved(source, work, _route(source, "saved_model", "int8", True))
        out = work / "layers.json"
        args = [
            "blame",
            str(saved),
            _save_dataset(rep, work / "rep.npz"),
            _save_dataset(dbg, work / "debug.npz"),
            str(out),
        ]
        _run_child(args, f"debugging {_describe(source)}", version, timeout)
        rows = json.loads(out.read_text())
    errors = [
        LayerError(
            r["layer"],
            r["scale"],
            math.sqrt(r["mean_squared_error"]),
            math.sqrt(r["mean_squared_error"]) / r["scale"] if r["scale"] > 0 else math.nan,
            r["max_abs_error"],
            r["mean_error"],
            op="(QuantizationDebugger)",
        )
        for r in rows
    ]
    return sorted(
        errors, key=lambda e: -(e.rmse_per_scale if math.isfinite(e.rmse_per_scale) else 0)
    )
