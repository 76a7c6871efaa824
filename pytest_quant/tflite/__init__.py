"""The TFLite layer: conversion in every post-training mode, the LiteRT runner, scheme
detection and the spec linter, per-tensor blame. The only part of pytest-quant that
touches TensorFlow, and only lazily: importing this package imports neither TensorFlow
nor LiteRT.
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
    "SCHEMES": ".scheme",
    "detect_scheme": ".scheme",
    "detect_weight_types": ".scheme",
    "assert_tflite_close": ".checks",
    "layer_errors": ".blame",
    "LayerError": ".blame",
    "Blame": ".blame",
    "MalformedModelError": ".flatbuffer",
    "CacheEntryWarning": ".cache",
    "suggest_float_layers": ".suggest",
    "FloatSuggestion": ".suggest",
}

__all__ = [
    "MODES",
    "SCHEMES",
    "Blame",
    "CacheEntryWarning",
    "ConversionError",
    "FloatSuggestion",
    "LayerError",
    "MalformedModelError",
    "Outputs",
    "TFLiteRunner",
    "Violation",
    "assert_tflite_close",
    "assert_tflite_spec",
    "convert",
    "detect_scheme",
    "detect_weight_types",
    "layer_errors",
    "lint_tflite",
    "suggest_float_layers",
]

if TYPE_CHECKING:
    from .blame import Blame, LayerError, layer_errors
    from .cache import CacheEntryWarning
    from .checks import assert_tflite_close
    from .converter import MODES, ConversionError, convert
    from .flatbuffer import MalformedModelError
    from .runner import Outputs, TFLiteRunner
    from .scheme import SCHEMES, detect_scheme, detect_weight_types
    from .spec import Violation, assert_tflite_spec, lint_tflite
    from .suggest import FloatSuggestion, suggest_float_layers


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
