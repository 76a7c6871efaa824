"""Assertion helpers with error bounds; their defaults come from the running test.

Each helper raises ``AssertionError`` with a full message when the bound is broken,
``ValueError`` / ``TypeError`` on misuse (NaN, shape or dtype mismatch, empty input),
and records its figures for the terminal summary, the JSON report and JUnit XML.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from . import _settings, messages
from ._blocks import _PARALLEL_FROM, over_shares
from ._checks import as_float_array, as_int_array, finite_scalar, same_shape
from ._intdiff import int_difference
from .metrics import _LEAN_FIGURES, _figure, compare
from .qparams import QuantParams

_INT_BLOCK = 1 << 16  # elements per block of integer codes

#: metric name -> (ErrorStats field, description)
METRICS = {
    "rms": ("rmse_fs", "RMS error / full scale"),
    "max": ("max_abs_fs", "max |error| / full scale"),
    "p99": ("p99_abs_fs", "99th percentile of |error| / full scale"),
    "rel_l2": ("rel_l2", "||error|| / ||reference||"),
}


class QuantWarning(UserWarning):
    """pytest-quant's warnings: a check passed but cannot resolve its bound (e.g. too small
    an evaluation set); subclasses say more (``tflite.cache.CacheEntryWarning``: a damaged
    conversion cache entry, converted again)."""


def _tolerance(tolerance: float | None, name: str = "tolerance") -> tuple[float, str]:
    if tolerance is not None:
        value = finite_scalar(tolerance, name)
        if value < 0:
            raise ValueError(f"{name}={value} must be >= 0")
        return value, f"the argument {name}={value:g}"
    s = _settings.current()
    return s.tolerance, s.tolerance_from


def record(
    check: str,
    metric: str,
    value: float,
    bound: float,
    passed: bool,
    *,
    at_least: bool = False,
    detail: dict[str, Any] | None = None,
    info: bool = False,
) -> None:
    """Record one check's figures; ``margin`` is how far inside the bound it stayed
    (negative: by how much it broke it), whichever way the bound points. ``detail``
    (an LSB histogram, per-layer errors) feeds the plots of ``--quant-report-dir``.
    ``info`` marks figures that explain another check's failure (per-layer blame): shown
    as ``info``, never counted as a check of their own."""
    margin = value - bound if at_least else bound - value
    entry: dict[str, Any] = {
        "check": check,
        "metric": metric,
        "value": _json_float(value),
        "bound": _json_float(bound),
        "margin": _json_float(margin),
        "passed": passed,
    }
    if detail:
        entry["detail"] = detail
    if info:
        entry["info"] = True
    _settings.record(entry)


def _json_float(v: float) -> float | str:
    return v if math.isfinite(v) else str(v)


def assert_quant_close(
    actual: Any,
    reference: Any,
    *,
    tolerance: float | None = None,
    metric: str | None = None,
    qparams: QuantParams | None = None,
) -> None:
    """Assert the quantized ``actual`` is within ``tolerance`` of the float ``reference``.

    The default metric is the RMS error as a fraction of the reference's full-scale
    range (``max - min``; for a constant reference its ``max |x|``, for an all-zero one
    1.0). ``metric`` selects ``"max"``, ``"p99"`` or ``"rel_l2"`` instead. The default
    ``tolerance`` is the test's ``--quant-tolerance`` (marker > CLI > ini > 0.02).
    With ``qparams`` the message also gives errors in LSB.

    Example::

        def test_model(quant_tflite_outputs, float_outputs):
            assert_quant_close(quant_tflite_outputs, float_outputs)          # RMS <= 2% FS
            assert_quant_close(quant_tflite_outputs, float_outputs, metric="p99", tolerance=0.05)
    """
    __tracebackhide__ = True
    name = metric or "rms"
    if name not in METRICS:
        raise ValueError(f"metric={metric!r}: use one of {', '.join(METRICS)}")
    bound, origin = _tolerance(tolerance)
    field, description = METRICS[name]
    stats = None
    if field in _LEAN_FIGURES:  # the verdict needs one figure (and the histogram)
        value, hist = _figure(actual, reference, field, qparams)
    else:
        stats = compare(actual, reference, qparams=qparams)
        value = float(getattr(stats, field))
        hist = stats.lsb_histogram() if qparams is not None else None
    passed = value <= bound
    detail = {"lsb_histogram": hist} if hist is not None else None
    record("assert_quant_close", f"{name}_error", value, bound, passed, detail=detail)
    if not passed:
        if stats is None:  # the message gives every figure: a second pass
            stats = compare(actual, reference, qparams=qparams)
        raise AssertionError(
            messages.close_failure(
                metric=name,
                description=description,
                value=value,
                bound=bound,
                stats=stats,
                origin=origin,
                source=_settings.TOLERANCE_SOURCE,
            )
        )


def assert_within_lsb(
    actual: Any,
    expected: Any,
    *,
    max_lsb: int | None = None,
    max_mismatch: float | None = None,
    qparams: QuantParams | None = None,
) -> None:
    """Assert integer outputs differ by at most ``max_lsb`` steps everywhere.

    ``max_mismatch`` (a fraction in [0, 1]) also bounds how many elements may differ
    at all: real kernels differ by one step on a small fraction of elements (XNNPACK vs
    reference kernels: 0.2% to 2%). The default ``max_lsb`` is ``--quant-max-lsb``
    (marker > CLI > ini > 1). ``qparams`` lets the message give the error in real units.

    Example::

        def test_int8_outputs(golden_q, runner):
            assert_within_lsb(runner.quantized(x), golden_q, max_mismatch=0.02)
    """
    __tracebackhide__ = True
    hint = "compare float outputs with assert_quant_close"
    a = as_int_array(actual, "actual", hint=hint)
    e = as_int_array(expected, "expected", hint=hint)
    same_shape(a, e, ("actual", "expected"))
    if max_lsb is None:
        s = _settings.current()
        bound, origin = s.max_lsb, s.max_lsb_from
    else:
        bound = _settings.parse_max_lsb(max_lsb)
        origin = f"the argument max_lsb={bound}"
    if max_mismatch is not None:
        max_mismatch = finite_scalar(max_mismatch, "max_mismatch")
        if not 0.0 <= max_mismatch <= 1.0:
            raise ValueError(f"max_mismatch={max_mismatch} must be a fraction in [0, 1]")
    max_diff, flat, differ, hist = _int_errors(a, e)
    index = tuple(int(i) for i in np.unravel_index(flat, a.shape)) if a.ndim else ()
    mismatch = differ / a.size
    passed = max_diff <= bound and (max_mismatch is None or mismatch <= max_mismatch)
    record(
        "assert_within_lsb",
        "max_lsb",
        float(max_diff),
        float(bound),
        max_diff <= bound,
        detail={"lsb_histogram": hist},
    )
    if max_mismatch is not None:
        record(
            "assert_within_lsb",
            "mismatch_fraction",
            mismatch,
            max_mismatch,
            mismatch <= max_mismatch,
        )
    if passed:
        return
    real = None
    worst = int(a[index]) - int(e[index])
    if qparams is not None:
        qparams.check_channels(a.shape)
        scale, _ = qparams.broadcast(a.ndim)
        real = float(worst) * float(np.broadcast_to(scale, a.shape)[index])
    raise AssertionError(
        messages.lsb_failure(
            max_diff=max_diff,
            max_lsb=bound,
            index=index,
            actual=int(a[index]),
            expected=int(e[index]),
            mismatch=mismatch,
            max_mismatch=max_mismatch,
            n=int(a.size),
            hist=hist,
            real_error=real,
            origin=origin,
            source=_settings.MAX_LSB_SOURCE,
        )
    )


def _int_errors(a: np.ndarray, e: np.ndarray) -> tuple[int, int, int, dict[int, int]]:
    """``a - e`` exactly, block by block: the largest ``|a - e|`` and the flat index of
    its first occurrence, how many elements differ, and the count of each difference."""
    fa, fe = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(e).reshape(-1)
    n = fa.size
    nblocks = -(-n // _INT_BLOCK)
    peaks: list[Any] = [0] * nblocks
    where = [0] * nblocks
    differ = [0] * nblocks

    def share(first: int, stop: int) -> dict[int, int]:
        hist: dict[int, int] = {}
        for b in range(first, stop):
            start = b * _INT_BLOCK
            diff = _block_difference(fa[start : start + _INT_BLOCK], fe[start : start + _INT_BLOCK])
            absdiff = np.abs(diff)
            i = int(np.argmax(absdiff))
            peaks[b], where[b] = absdiff[i], start + i
            differ[b] = int(np.count_nonzero(diff))
            _count_differences(diff, hist)
        return hist

    hist: dict[int, int] = {}
    for part in over_shares(share, nblocks, parallel=n >= _PARALLEL_FROM):
        for key, count in part.items():
            hist[key] = hist.get(key, 0) + count
    worst = max(range(nblocks), key=lambda b: (peaks[b], -b))  # the first largest
    return int(peaks[worst]), where[worst], sum(differ), dict(sorted(hist.items()))


def _block_difference(a: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Exact ``a - e`` in the narrowest type that holds every difference of the dtypes."""
    if a.dtype.itemsize == e.dtype.itemsize == 1:
        return np.subtract(a, e, dtype=np.int16)
    if a.dtype.itemsize <= 2 and e.dtype.itemsize <= 2:
        return np.subtract(a, e, dtype=np.int32)
    return int_difference(a, e)  # int64, or Python ints where int64 would wrap


def _count_differences(diff: np.ndarray, hist: dict[int, int]) -> None:
    """Add the count of each value of ``diff`` to ``hist``."""
    lo, hi = diff.min(), diff.max()
    span = int(hi) - int(lo)
    pairs: Iterable[tuple[int, int]]
    if diff.dtype != object and span < 8:  # the usual few steps: one count each
        found = [(v, int(np.count_nonzero(diff == v))) for v in range(int(lo), int(hi) + 1)]
        pairs = [(v, c) for v, c in found if c]
    elif diff.dtype != object and span < 1 << 16:
        bins = np.bincount((diff - lo).astype(np.intp, copy=False))
        keys = np.flatnonzero(bins)
        pairs = zip((keys + int(lo)).tolist(), bins[keys].tolist(), strict=True)
    else:  # wide, or Python ints
        values, counts = np.unique(diff, return_counts=True)
        pairs = zip((int(v) for v in values), counts.tolist(), strict=True)
    for key, count in pairs:
        hist[key] = hist.get(key, 0) + count


def assert_sqnr(actual: Any, reference: Any, *, min_db: float) -> None:
    """Assert the signal-to-quantization-noise ratio is at least ``min_db`` decibels.

    ``SQNR = 20 log10(||reference|| / ||actual - reference||)``: identical tensors
    have SQNR inf; a well-quantized int8 tensor about 40 dB.

    Example::

        assert_sqnr(dequantized, weights, min_db=35.0)
    """
    __tracebackhide__ = True
    bound = finite_scalar(min_db, "min_db")
    value, _ = _figure(actual, reference, "sqnr_db")
    passed = value >= bound
    record("assert_sqnr", "sqnr_db", value, bound, passed, at_least=True)
    if not passed:
        stats = compare(actual, reference)  # the message's figures: a second pass
        raise AssertionError(messages.sqnr_failure(value=value, min_db=bound, stats=stats))


def _class_ids(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 2 and arr.shape[1] > 1:
        return np.argmax(as_float_array(arr, name), axis=1)
    if arr.ndim == 1 and arr.dtype.kind in "iu":
        if arr.size == 0:
            raise ValueError(f"{name} is empty; there is nothing to score")
        return arr.astype(np.int64)
    raise ValueError(
        f"{name} has shape {arr.shape} and dtype {arr.dtype}: pass logits or probabilities "
        "of shape (n, classes), or integer class ids of shape (n,)"
    )


def assert_accuracy_drop(
    quant_outputs: Any, float_outputs: Any, labels: Any, *, max_drop: float | None = None
) -> None:
    """Assert top-1 accuracy drops by at most ``max_drop`` (absolute) after quantization.

    Outputs are logits / probabilities ``(n, classes)`` or class ids ``(n,)``; labels are
    class ids or one-hot. The default ``max_drop`` is the test's ``--quant-tolerance``.
    The message gives both accuracies, the agreement rate of the two models and a 95%
    confidence interval of the drop (paired, normal approximation). A drop over the
    bound fails whatever that interval (a gate never passes on a measured excess). A
    drop within the bound whose interval is wider than the bound passes with a
    :class:`QuantWarning`: the evaluation set is too small to resolve the bound.

    Example::

        assert_accuracy_drop(tflite_logits, keras_logits, y_test, max_drop=0.01)
    """
    __tracebackhide__ = True
    bound, origin = _tolerance(max_drop, "max_drop")
    q = _class_ids(quant_outputs, "quant_outputs")
    f = _class_ids(float_outputs, "float_outputs")
    y = _class_ids(labels, "labels")
    if not (q.shape == f.shape == y.shape):
        raise ValueError(
            f"shape mismatch: {q.shape[0]} quantized, {f.shape[0]} float predictions and "
            f"{y.shape[0]} labels; score the same samples"
        )
    n = int(y.size)
    right_q, right_f = q == y, f == y
    float_acc, quant_acc = float(right_f.mean()), float(right_q.mean())
    drop = float_acc - quant_acc
    d = right_f.astype(np.float64) - right_q.astype(np.float64)
    half = 1.96 * float(d.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
    ci = (drop - half, drop + half)
    passed = drop <= bound
    record("assert_accuracy_drop", "top1_drop", drop, bound, passed)
    if not passed:
        raise AssertionError(
            messages.accuracy_failure(
                float_acc=float_acc,
                quant_acc=quant_acc,
                drop=drop,
                max_drop=bound,
                ci=ci,
                agreement=float(np.mean(q == f)),
                n=n,
                origin=origin,
                source=_settings.TOLERANCE_SOURCE,
            )
        )
    if half > bound:
        warnings.warn(
            QuantWarning(
                f"accuracy drop {100 * drop:.3g} points is within the bound "
                f"{100 * bound:.3g}, but with n={n} samples its 95% interval is "
                f"+-{100 * half:.3g} points: use more samples to make this gate meaningful"
            ),
            stacklevel=2,
        )
