"""Clipping before quantization: by value, by per-row L1/L2 norm, and range calibration."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ._checks import as_float_array, finite_scalar
from .affine import dequantize, quantize
from .qparams import choose_qparams


class Range(NamedTuple):
    """A calibrated quantization range; always contains 0."""

    min: float
    max: float


def clip_values(x: Any, x_min: float, x_max: float) -> np.ndarray:
    """Clip element-wise to ``[x_min, x_max]``, keeping ``x``'s float dtype.

    Example::

        >>> clip_values([-3.0, 0.5, 9.0], -1.0, 1.0).tolist()
        [-1.0, 0.5, 1.0]
    """
    arr = as_float_array(x, "x")
    lo, hi = finite_scalar(x_min, "x_min"), finite_scalar(x_max, "x_max")
    if lo > hi:
        raise ValueError(f"x_min={lo} > x_max={hi}; pass the bounds in order")
    return np.clip(arr, arr.dtype.type(lo), arr.dtype.type(hi))


def clip_by_norm(x: Any, max_norm: float, *, ord: int = 2, axis: int = -1) -> np.ndarray:
    """Scale each row whose L1 or L2 norm exceeds ``max_norm`` down to that norm.

    Rows (slices along ``axis``) at or under the bound are returned unchanged, bit for
    bit; a row over it becomes ``x * max_norm / norm``. With ``ord=2`` and ``axis`` the
    reduced axis, this is ``tf.clip_by_norm(x, max_norm, axes=[axis])`` except that the
    norm is summed in float64 (TF sums in float32 and also multiplies and divides rows
    under the bound by ``max_norm``, which moves their last bit): the two agree within a
    few float32 ulps, measured in tests/test_clipping.py.

    :raises ValueError: ``max_norm`` not > 0, ``ord`` not 1 or 2, non-finite input.

    Example::

        >>> clip_by_norm([[3.0, 4.0], [0.3, 0.4]], 1.0).tolist()
        [[0.6, 0.8], [0.3, 0.4]]
    """
    arr = as_float_array(x, "x")
    bound = finite_scalar(max_norm, "max_norm")
    if bound <= 0:
        raise ValueError(f"max_norm={bound} must be > 0")
    if ord not in (1, 2):
        raise ValueError(f"ord={ord!r}: use 1 (L1) or 2 (L2)")
    if arr.ndim == 0:
        raise ValueError("x must have at least one axis to clip along")
    wide = arr.astype(np.float64)
    norm = np.linalg.norm(wide, ord=ord, axis=axis, keepdims=True)
    over = norm > bound
    scaled = (wide * bound / np.where(over, norm, 1.0)).astype(arr.dtype)
    return np.where(over, scaled, arr)


def calibrate_minmax(x: Any) -> Range:
    """The observed range widened to include 0 (what TFLite's converter calibrates).

    Example::

        >>> calibrate_minmax([0.5, 2.0])
        Range(min=0.0, max=2.0)
    """
    arr = as_float_array(x, "x")
    return Range(min(float(arr.min()), 0.0), max(float(arr.max()), 0.0))


def calibrate_percentile(x: Any, *, percentile: float = 99.99) -> Range:
    """Clip outliers: the ``100 - p`` and ``p`` percentiles, widened to include 0.

    :param percentile: in (50, 100]; 100 is min-max.

    Example::

        >>> calibrate_percentile(list(range(101)), percentile=99.0)
        Range(min=0.0, max=99.0)
    """
    arr = as_float_array(x, "x")
    p = finite_scalar(percentile, "percentile")
    if not 50.0 < p <= 100.0:
        raise ValueError(f"percentile={p} must be in (50, 100]")
    lo, hi = np.percentile(arr.astype(np.float64), [100.0 - p, p])
    return Range(min(float(lo), 0.0), max(float(hi), 0.0))


def calibrate_mse(
    x: Any,
    *,
    dtype: Any = "int8",
    symmetric: bool = False,
    num_candidates: int = 100,
) -> Range:
    """The shrink of the min-max range that minimizes the quantize-dequantize MSE of ``x``.

    Tries ``alpha * [min, max]`` for ``num_candidates`` values of alpha in (0, 1]
    (alpha = 1 included, so the result is never worse than min-max).

    Example::

        >>> x = [0.0] * 98 + [0.01, 100.0]
        >>> calibrate_mse(x, dtype="uint8").max <= 100.0
        True
    """
    arr = as_float_array(x, "x").astype(np.float32)
    if not isinstance(num_candidates, int) or num_candidates < 1:
        raise ValueError(f"num_candidates={num_candidates!r} must be an int >= 1")
    full = calibrate_minmax(arr)
    best, best_err = full, float("inf")
    for alpha in np.linspace(1.0, 0.0, num_candidates, endpoint=False):
        cand = Range(float(full.min * alpha), float(full.max * alpha))
        qp = choose_qparams(cand.min, cand.max, dtype=dtype, symmetric=symmetric)
        err = float(np.mean((dequantize(quantize(arr, qp), qp).astype(np.float64) - arr) ** 2))
        if err < best_err:
            best, best_err = cand, err
    return best
