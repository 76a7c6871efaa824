"""The TFLite layer: conversion in every post-training mode, the LiteRT runner, the spec
linter. The only part of pytest-quant that touches TensorFlow, and only lazily:
importing this package imports neither TensorFlow nor LiteRT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "ConversionError": ".converter",
    "MODES": ".converter",
    "convert": ".converter",
    "TFLiteRunner": ".runner",
    "Outputs": ".runner",
    "assert_tflite_spec": ".spec",
    "lint_tflite": ".spec",
    "Violation": ".spec",
    "assert_tflite_close": ".checks",
    "layer_errors": ".converter",
    "LayerError": ".converter",
}

__all__ = [
    "MODES",
    "ConversionError",
    "LayerError",
    "Outputs",
    "TFLiteRunner",
    "Violation",
    "assert_tflite_close",
    "assert_tflite_spec",
    "convert",
    "layer_errors",
    "lint_tflite",
]

if TYPE_CHECKING:
    from .checks import assert_tflite_close
    from .converter import MODES, ConversionError, LayerError, convert, layer_errors
    from .runner import Outputs, TFLiteRunner
    from .spec import Violation, assert_tflite_spec, lint_tflite


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
