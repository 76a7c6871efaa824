"""Error metrics between a quantized result and its float reference, in one stats object."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._checks import as_float_array, same_shape
from .qparams import QuantParams


@dataclass(frozen=True)
class ErrorStats:
    """What ``compare`` measured. All figures are float64, computed over every element.

    ``full_scale`` is the reference's range ``max - min``; when that is 0 (a constant
    reference) it is ``max(|reference|)``, and 1.0 when the reference is all zeros, so
    ``*_fs`` figures are then absolute errors. ``sqnr_db`` is ``inf`` for identical
    tensors and ``-inf`` for a zero reference with nonzero error. ``cosine`` is 1.0 when
    both sides are all zeros and 0.0 when only one is.
    LSB figures (``*_lsb``) are ``None`` unless ``qparams`` were given.
    """

    n: int
    max_abs: float
    mean_abs: float
    mean_signed: float
    rmse: float
    p99_abs: float
    sqnr_db: float
    cosine: float
    full_scale: float
    max_abs_fs: float
    rmse_fs: float
    p99_abs_fs: float
    rel_l2: float
    worst_index: tuple[int, ...]
    worst_actual: float
    worst_reference: float
    max_lsb: float | None = None
    rmse_lsb: float | None = None
    mean_signed_lsb: float | None = None
    _err_lsb: np.ndarray | None = field(default=None, repr=False, compare=False)

    def fraction_over_lsb(self, k: float) -> float:
        """Fraction of elements whose error exceeds ``k`` quantization steps.

        :raises ValueError: when ``compare`` had no qparams.
        """
        if self._err_lsb is None:
            raise ValueError("LSB figures need qparams: call compare(..., qparams=qp)")
        return float(np.mean(self._err_lsb > k))

    def lsb_histogram(self) -> dict[int, int]:
        """Count of elements by error rounded to whole steps: ``{0: 990, 1: 9, 3: 1}``."""
        if self._err_lsb is None:
            raise ValueError("LSB figures need qparams: call compare(..., qparams=qp)")
        steps, counts = np.unique(np.rint(self._err_lsb).astype(np.int64), return_counts=True)
        return {int(s): int(c) for s, c in zip(steps, counts, strict=True)}


def compare(actual: Any, reference: Any, *, qparams: QuantParams | None = None) -> ErrorStats:
    """Measure how far ``actual`` is from ``reference``.

    :param actual: the quantized model's (dequantized) output.
    :param reference: the float output it is judged against; same shape.
    :param qparams: when given, errors are also expressed in steps of its scale
        (per channel if the params are).
    :raises ValueError: NaN/Inf on either side, a shape mismatch, an empty array.
    :raises TypeError: non-numeric input.

    Example::

        >>> s = compare([0.0, 0.5, 1.02], [0.0, 0.5, 1.0])
        >>> round(s.max_abs, 6), s.worst_index, round(s.max_abs_fs, 6)
        (0.02, (2,), 0.02)
    """
    a = as_float_array(actual, "actual").astype(np.float64)
    r = as_float_array(reference, "reference").astype(np.float64)
    same_shape(a, r, ("actual", "reference"))
    err = a - r
    abs_err = np.abs(err)
    flat_worst = int(np.argmax(abs_err))
    worst: tuple[int, ...] = tuple(
        int(i) for i in (np.unravel_index(flat_worst, err.shape) if err.ndim else ())
    )
    rmse = math.sqrt(float(np.mean(err * err)))
    full_scale = _full_scale(r)
    ref_norm = float(np.linalg.norm(r.ravel()))
    err_norm = float(np.linalg.norm(err.ravel()))
    lsb: dict[str, Any] = {}
    if qparams is not None:
        qparams.check_channels(err.shape)
        scale, _ = qparams.broadcast(err.ndim)
        err_lsb = err / scale.astype(np.float64)
        lsb = {
            "max_lsb": float(np.max(np.abs(err_lsb))),
            "rmse_lsb": math.sqrt(float(np.mean(err_lsb * err_lsb))),
            "mean_signed_lsb": float(np.mean(err_lsb)),
            "_err_lsb": np.abs(err_lsb),
        }
    max_abs = float(abs_err.max())
    p99 = float(np.percentile(abs_err, 99))
    return ErrorStats(
        n=int(err.size),
        max_abs=max_abs,
        mean_abs=float(abs_err.mean()),
        mean_signed=float(err.mean()),
        rmse=rmse,
        p99_abs=p99,
        sqnr_db=sqnr_db(ref_norm, err_norm),
        cosine=_cosine(a, r),
        full_scale=full_scale,
        max_abs_fs=max_abs / full_scale,
        rmse_fs=rmse / full_scale,
        p99_abs_fs=p99 / full_scale,
        rel_l2=_ratio(err_norm, ref_norm),
        worst_index=worst,
        worst_actual=float(a[worst]),
        worst_reference=float(r[worst]),
        **lsb,
    )


def sqnr_db(signal_norm: float, error_norm: float) -> float:
    """``20 log10(||x|| / ||x - x^||)``: inf for zero error, -inf for a zero signal."""
    if error_norm == 0:
        return math.inf
    if signal_norm == 0:
        return -math.inf
    return 20.0 * math.log10(signal_norm / error_norm)


def _full_scale(r: np.ndarray) -> float:
    span = float(r.max() - r.min())
    if span > 0:
        return span
    peak = float(np.abs(r).max())
    return peak if peak > 0 else 1.0


def _cosine(a: np.ndarray, r: np.ndarray) -> float:
    na, nr = float(np.linalg.norm(a.ravel())), float(np.linalg.norm(r.ravel()))
    if na == 0 and nr == 0:
        return 1.0
    if na == 0 or nr == 0:
        return 0.0
    return float(np.dot(a.ravel(), r.ravel()) / (na * nr))


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return num / den
