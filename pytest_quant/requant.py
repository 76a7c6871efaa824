"""TFLite's integer requantization, and an int8 FULLY_CONNECTED layer, in numpy int64.

A quantized kernel accumulates in int32, then rescales the accumulator to the output's
scale with a fixed-point multiplier: ``real = input_scale * weight_scale / output_scale``
becomes ``(multiplier, shift)`` with ``multiplier`` in [2^30, 2^31) (``quantize_multiplier``)
and ``x * real`` becomes integer arithmetic (``multiply_by_quantized_multiplier``), with
either gemmlowp's two roundings (a rounding doubling high multiply, then a rounding right
shift) or one rounding (``TFLITE_SINGLE_ROUNDING``). The two differ by one step on a small
fraction of values, and LiteRT changed between them: measured, the reference kernels of
ai-edge-litert 1.2.0 round twice and those of 2.3.0 once (XNNPACK rounds once in both).
tests/test_requant.py probes the installed LiteRT and checks the matching mode bit for
bit against its reference kernels on generated layers.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from ._checks import finite_scalar
from .qparams import QuantParams
from .rounding import round_half_away_from_zero

Rounding = Literal["double", "single"]
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(
    real_multiplier: float, *, rounding: Rounding = "double"
) -> tuple[int, int]:
    """``QuantizeMultiplier``: ``real ~= multiplier * 2**(shift - 31)``, multiplier < 2**31.

    Example::

        >>> quantize_multiplier(0.5)
        (1073741824, 0)
    """
    m = finite_scalar(real_multiplier, "real_multiplier")
    if m < 0:
        raise ValueError(f"real_multiplier={m} must be >= 0")
    if m == 0:
        return 0, 0
    q, shift = math.frexp(m)
    fixed = int(np.sign(q) * math.floor(abs(q) * 2**31 + 0.5))  # TfLiteRound on a double
    if fixed == 2**31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if rounding == "single" and shift > 30:
        return _I32_MAX, 30
    return fixed, shift


def _high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int64 arrays of int32 values."""
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))  # C++ division truncates
    return np.where((a == b) & (a == _I32_MIN), _I32_MAX, high)


def _rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(
    x: Any, multiplier: Any, shift: Any, *, rounding: Rounding = "single"
) -> np.ndarray:
    """``MultiplyByQuantizedMultiplier``: int32 ``x * multiplier * 2**(shift - 31)``, rounded.

    ``multiplier`` and ``shift`` broadcast against ``x`` (per-channel rescaling).

    Example::

        >>> multiply_by_quantized_multiplier([5, -5, 7], 1 << 30, 0).tolist()  # x * 0.5
        [3, -2, 4]
    """
    xs = np.asarray(x, np.int64)
    m = np.asarray(multiplier, np.int64)
    s = np.asarray(shift, np.int64)
    if rounding == "single":
        total = 31 - s
        return ((xs * m + (np.int64(1) << (total - 1))) >> total).astype(np.int64)
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    shifted = np.clip(xs * (np.int64(1) << left), _I32_MIN, _I32_MAX)  # int32 product wraps in C
    return _rounding_divide_by_pot(_high_mul(shifted, m), right)


def fully_connected_int8(
    x: Any,
    weights: Any,
    bias: Any,
    *,
    input_qparams: QuantParams,
    weight_qparams: QuantParams,
    output_qparams: QuantParams,
    activation: str = "NONE",
    rounding: Rounding = "single",
) -> np.ndarray:
    """TFLite's reference int8 FULLY_CONNECTED: ``x`` (batch, in) int8, ``weights``
    (out, in) int8 with zero point 0 (per-tensor or per-channel on axis 0), ``bias`` (out,)
    int32 or None; returns (batch, out) int8.

    ``activation`` is the fused ``"NONE"``, ``"RELU"`` or ``"RELU6"``.
    """
    q = np.asarray(x, np.int64)
    w = np.asarray(weights, np.int64)
    acc = (q - input_qparams.zero_point) @ w.T
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    w_scales = np.atleast_1d(np.asarray(weight_qparams.scale, np.float32)).astype(np.float64)
    real = (
        np.float64(np.float32(input_qparams.scale))
        * w_scales
        / np.float64(np.float32(output_qparams.scale))
    )
    pairs = [quantize_multiplier(float(r), rounding=rounding) for r in real]
    mult = np.array([p[0] for p in pairs], np.int64)
    shift = np.array([p[1] for p in pairs], np.int64)
    out = multiply_by_quantized_multiplier(acc, mult, shift, rounding=rounding)
    out = out + output_qparams.zero_point
    lo, hi = _activation_range(activation, output_qparams)
    return np.clip(out, lo, hi).astype(np.int8)


def _activation_range(activation: str, qp: QuantParams) -> tuple[int, int]:
    lo, hi = -128, 127
    zero = int(qp.zero_point)
    scale = np.float32(qp.scale)

    def q(v: float) -> int:
        return zero + int(round_half_away_from_zero(np.float32(v) / scale))  # TfLiteRound

    if activation == "NONE":
        return lo, hi
    if activation == "RELU":
        return max(lo, q(0.0)), hi
    if activation == "RELU6":
        return max(lo, q(0.0)), min(hi, q(6.0))
    raise ValueError(f"activation={activation!r}: use 'NONE', 'RELU' or 'RELU6'")
