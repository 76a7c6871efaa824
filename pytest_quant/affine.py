"""TFLite QUANTIZE / DEQUANTIZE and bias quantization, bit-exact with the kernels."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ._blocks import blockwise
from ._checks import as_float_array, as_int_array, finite_scalar, first_index, require_finite
from ._dtypes import INT_RANGES
from .qparams import QuantParams, require_qparams
from .rounding import round_half_away_from_zero

Kernel = Literal["reference", "xnnpack"]


def quantize(x: Any, qp: QuantParams, *, kernel: Kernel = "reference") -> np.ndarray:
    """Quantize ``x`` as TFLite's QUANTIZE op: ``clamp(round(x / scale) + zero_point)``.

    Saturates, never wraps. ``x`` is taken as float32, as the op's input is.
    Narrow-range params clamp to ``[qmin + 1, qmax]`` as the converter does for weights
    (the QUANTIZE op itself always uses the dtype's full range).

    ``kernel="reference"`` (the builtin kernel): float32 ``x / scale``, ties away from zero.
    ``kernel="xnnpack"`` (the default CPU delegate): ``x * float32(1 / scale)``, ties to even.
    The two differ by one code on a small fraction of inputs next to rounding ties; both
    are bit-exact with the LiteRT interpreter (tests/test_affine.py).
    For int32 (bias) the arithmetic is float64, as the converter's.

    :raises ValueError: NaN/Inf or empty input, a per-channel shape mismatch.
    :raises TypeError: ``qp`` is not a :class:`QuantParams`.

    Example::

        >>> quantize([0.0, 0.26, 200.0, -1e9], QuantParams(0.1, 3, "int8")).tolist()
        [3, 6, 127, -128]
    """
    require_qparams(qp, "qp")
    if kernel not in ("reference", "xnnpack"):
        raise ValueError(f"kernel={kernel!r}: use 'reference' or 'xnnpack'")
    arr = as_float_array(x, "x", check_finite=False)
    qp.check_channels(arr.shape)
    scale, zero = qp.broadcast(arr.ndim)
    if qp.dtype == "int32" or qp.is_per_channel:
        require_finite(arr, "x")
    if qp.dtype == "int32":
        steps = round_half_away_from_zero(arr.astype(np.float64) / scale.astype(np.float64))
        # Clamp while still floating point: a cast of an out-of-range float is what wraps.
        return np.clip(steps + zero, qp.qmin, qp.qmax).astype(qp.dtype)
    x32 = arr.astype(np.float32, copy=False)
    if qp.is_per_channel:
        out = np.empty(x32.shape, qp.dtype)
        _quantize_block(x32, out, scale, zero.astype(np.float32), qp, kernel)
        return out
    return blockwise(
        lambda xb, ob: _quantize_block(xb, ob, scale, np.float32(zero), qp, kernel),
        x32,
        np.empty(x32.shape, qp.dtype),
        "x",
    )


def _quantize_block(
    x: np.ndarray, out: np.ndarray, scale: Any, zero: Any, qp: QuantParams, kernel: Kernel
) -> None:
    if kernel == "reference":
        v = np.divide(x, scale)
        steps = np.rint(v)
        # rint rounds ties to even; TfLiteRound (std::round) rounds them away from zero.
        tie = np.abs(np.subtract(v, steps)) == 0.5
        if tie.any():
            steps[tie] = v[tie] + np.copysign(np.float32(0.5), v[tie])
    else:
        steps = np.rint(np.multiply(x, np.float32(1.0) / scale))
    # float32 is exact here: |steps| < 2**24 inside any int16 range, and values beyond
    # it clamp either way. Clamp while still floating point: casting first is what wraps.
    np.add(steps, zero, out=steps)
    np.clip(steps, qp.qmin, qp.qmax, out=steps)
    out[...] = steps


def dequantize(q: Any, qp: QuantParams) -> np.ndarray:
    """Dequantize as TFLite's DEQUANTIZE op: ``float32(scale * (q - zero_point))``.

    The product is formed in float64 and rounded once to float32, as the kernel does.

    :raises TypeError: ``q`` is not an integer array, ``qp`` not a :class:`QuantParams`.
    :raises ValueError: values outside the dtype's range (a sign of wrap-around upstream).

    Example::

        >>> dequantize([3, 6, 127], QuantParams(0.1, 3, "int8")).tolist()
        [0.0, 0.30000001192092896, 12.40000057220459]
    """
    require_qparams(qp, "qp")
    arr = as_int_array(q, "q", hint="quantize it first")
    lo, hi = INT_RANGES[qp.dtype]
    outside = (arr < lo) | (arr > hi)
    if outside.any():
        i = first_index(outside)
        raise ValueError(
            f"q[{i}]={arr[i]} is outside {qp.dtype}'s range [{lo}, {hi}]: "
            "the codes were produced for another dtype or wrapped around"
        )
    qp.check_channels(arr.shape)
    scale, zero = qp.broadcast(arr.ndim)
    return (scale.astype(np.float64) * (arr.astype(np.int64) - zero)).astype(np.float32)


def quantize_bias(
    bias: Any, input_scale: float, weight_scales: Any
) -> tuple[np.ndarray, QuantParams]:
    """Quantize a bias to int32 with ``scale = input_scale * weight_scale``, zero point 0.

    Per channel when ``weight_scales`` is 1-D (one per output channel). Arithmetic in
    float64, ties away from zero. A bias that does not fit int32 is an error, not a
    silent saturation: the converter enlarges the weight scale in that case.

    :returns: ``(q, qparams)``, ``q`` int32 with ``bias``'s shape.
    :raises ValueError: non-finite input, shape mismatch, int32 overflow (names the channel).

    Example::

        >>> q, qp = quantize_bias([0.5, -0.25], 0.05, [0.01, 0.02])
        >>> q.tolist(), qp.scale.tolist()
        ([1000, -250], [0.0005000000237487257, 0.0010000000474974513])
    """
    b = as_float_array(bias, "bias").astype(np.float64)
    s_in = finite_scalar(input_scale, "input_scale")
    ws = as_float_array(weight_scales, "weight_scales")
    if s_in <= 0 or np.any(ws <= 0):
        raise ValueError("input_scale and weight_scales must be > 0")
    per_channel = ws.ndim == 1
    if per_channel and (b.ndim != 1 or b.shape[0] != ws.shape[0]):
        raise ValueError(
            f"shape mismatch: bias has shape {b.shape}, weight_scales has {ws.shape[0]} "
            "channels; pass one weight scale per output channel"
        )
    if ws.ndim > 1:
        raise ValueError(f"weight_scales must be a scalar or 1-D, got shape {ws.shape}")
    scale = np.float64(np.float32(s_in)) * ws.astype(np.float32).astype(np.float64)
    steps = round_half_away_from_zero(b / scale)
    lo, hi = INT_RANGES["int32"]
    over = (steps < lo) | (steps > hi)
    if over.any():
        i = int(np.argmax(over.ravel()))
        s_i = scale if scale.ndim == 0 else scale[i]
        raise ValueError(
            f"bias[{i}]={b.ravel()[i]} overflows int32 at scale {s_i:.3g} "
            f"(input_scale x weight_scale); the weight scale must be at least "
            f"{abs(b.ravel()[i]) / (hi * s_in):.3g} for this bias"
        )
    qp = QuantParams(
        scale.astype(np.float32) if per_channel else float(scale),
        0,
        "int32",
        0 if per_channel else None,
        symmetric=True,
    )
    return steps.astype(np.int32), qp
