"""pytest-quant: test quantized TensorFlow / TFLite models with pytest.

Importing this package is free: names resolve on first use (PEP 562), so a pytest
run that never touches quantization never imports numpy or TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> defining module (relative)
_EXPORTS = {
    "QuantParams": ".qparams",
    "choose_qparams": ".qparams",
    "qparams_for": ".qparams",
    "quantize": ".affine",
    "dequantize": ".affine",
    "quantize_bias": ".affine",
    "fake_quant": ".fakequant",
    "fake_quant_per_channel": ".fakequant",
    "nudge": ".fakequant",
    "compare": ".metrics",
    "ErrorStats": ".metrics",
    "round_half_away_from_zero": ".rounding",
    "assert_quant_close": ".assertions",
    "assert_within_lsb": ".assertions",
    "assert_sqnr": ".assertions",
    "assert_accuracy_drop": ".assertions",
    "QuantWarning": ".assertions",
    "assert_quantizer_conforms": ".conformance",
    "QuantSettings": "._settings",
    "assert_tflite_spec": ".tflite.spec",
    "lint_tflite": ".tflite.spec",
    "assert_tflite_close": ".tflite.checks",
    "QuantGolden": ".golden_check",
}

__all__ = [
    "ErrorStats",
    "QuantGolden",
    "QuantParams",
    "QuantSettings",
    "QuantWarning",
    "assert_accuracy_drop",
    "assert_quant_close",
    "assert_quantizer_conforms",
    "assert_sqnr",
    "assert_tflite_close",
    "assert_tflite_spec",
    "assert_within_lsb",
    "choose_qparams",
    "compare",
    "dequantize",
    "fake_quant",
    "fake_quant_per_channel",
    "lint_tflite",
    "nudge",
    "qparams_for",
    "quantize",
    "quantize_bias",
    "round_half_away_from_zero",
]

if TYPE_CHECKING:
    from ._settings import QuantSettings
    from .affine import dequantize, quantize, quantize_bias
    from .assertions import (
        QuantWarning,
        assert_accuracy_drop,
        assert_quant_close,
        assert_sqnr,
        assert_within_lsb,
    )
    from .conformance import assert_quantizer_conforms
    from .fakequant import fake_quant, fake_quant_per_channel, nudge
    from .golden_check import QuantGolden
    from .metrics import ErrorStats, compare
    from .qparams import QuantParams, choose_qparams, qparams_for
    from .rounding import round_half_away_from_zero
    from .tflite.checks import assert_tflite_close
    from .tflite.spec import assert_tflite_spec, lint_tflite


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
