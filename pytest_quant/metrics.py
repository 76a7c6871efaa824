"""Error metrics between a quantized result and its float reference, in one stats object.

The figures are accumulated block by block (256K elements, converted to float64 one block
at a time, blocks shared between the cores), so comparing two 400 MB outputs needs a few
MB besides them, not a dozen copies. Sums are float64 per block and exactly rounded over
the blocks (``math.fsum``); maxima, the worst element and the 99th percentile are exact
(the percentile is numpy's ``linear`` method on the largest 1% of errors, kept as they
stream by).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ._blocks import _PARALLEL_FROM, over_shares
from ._checks import as_real_array, require_finite, same_shape
from .qparams import QuantParams

# float64 elements per block (2 MiB a buffer): measured on 100M elements and 2 cores,
# blocks of 256K beat 32K by 1.5x with two threads (fewer numpy calls, less GIL hand-off)
# and by 1.2x on one; the buffers still sit in L3
_BLOCK = 1 << 18
_T = TypeVar("_T")
_Q = 0.99  # the percentile behind p99_abs, as numpy.percentile(x, 99) computes it
# columns of the per-block sums
_ERR, _ERR2, _ABS, _AA, _RR, _AR, _LSB, _LSB2 = range(8)
# columns of the per-block extremes
_RMIN, _RMAX, _WORST, _MAX_LSB = range(4)


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
    _lsb: _LsbErrors | None = field(default=None, repr=False, compare=False)

    def fraction_over_lsb(self, k: float) -> float:
        """Fraction of elements whose error exceeds ``k`` quantization steps.

        Counted on demand, block by block, from the arrays ``compare`` was given (do not
        change them in place in between).

        :raises ValueError: when ``compare`` had no qparams.
        """
        if self._lsb is None:
            raise ValueError("LSB figures need qparams: call compare(..., qparams=qp)")
        return self._lsb.count_over(k) / self.n

    def lsb_histogram(self) -> dict[int, int]:
        """Count of elements by error rounded to whole steps: ``{0: 990, 1: 9, 3: 1}``."""
        if self._lsb is None:
            raise ValueError("LSB figures need qparams: call compare(..., qparams=qp)")
        return dict(self._lsb.histogram)


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
    a, r, flat_a, flat_r = _inputs(actual, reference)
    steps = _Steps(qparams, a.shape) if qparams is not None else None
    scan = _scan(flat_a, flat_r, steps, p99=True)
    _require_finite(scan, a, r)
    n = int(a.size)
    total = [math.fsum(column) for column in scan.sums.T]
    shared = _shared_figures(scan, total, n)
    worst_block = int(np.argmax(scan.extremes[:, _WORST]))  # the first, as np.argmax
    flat_worst = int(scan.worst_at[worst_block])
    worst: tuple[int, ...] = (
        tuple(int(i) for i in np.unravel_index(flat_worst, a.shape)) if a.ndim else ()
    )
    lsb: dict[str, Any] = {}
    if steps is not None:
        lsb = {
            "max_lsb": float(scan.extremes[:, _MAX_LSB].max()),
            "rmse_lsb": math.sqrt(total[_LSB2] / n),
            "mean_signed_lsb": total[_LSB] / n,
            "_lsb": _LsbErrors(flat_a, flat_r, steps, scan.histogram),
        }
    p99_abs = _percentile(scan.top, n)
    full_scale = shared["full_scale"]
    return ErrorStats(
        n=n,
        max_abs=shared["max_abs"],
        mean_abs=total[_ABS] / n,
        mean_signed=total[_ERR] / n,
        rmse=shared["rmse"],
        p99_abs=p99_abs,
        sqnr_db=shared["sqnr_db"],
        cosine=_cosine(total[_AA], total[_RR], total[_AR]),
        full_scale=full_scale,
        max_abs_fs=shared["max_abs_fs"],
        rmse_fs=shared["rmse_fs"],
        p99_abs_fs=p99_abs / full_scale,
        rel_l2=shared["rel_l2"],
        worst_index=worst,
        worst_actual=float(a[worst]),
        worst_reference=float(r[worst]),
        **lsb,
    )


#: the figures :func:`_figure` computes in a lean pass
_LEAN_FIGURES = ("max_abs_fs", "rmse_fs", "rel_l2", "sqnr_db")


def _figure(
    actual: Any, reference: Any, name: str, qparams: QuantParams | None = None
) -> tuple[float, dict[int, int] | None]:
    """One of :data:`_LEAN_FIGURES`, equal to ``getattr(compare(actual, reference), name)``
    (the same sums over the same blocks) in about half the time: what a check decides on,
    with the LSB histogram when ``qparams`` are given (what it records). A failure
    message then takes :func:`compare`, a second pass, only when the check fails."""
    a, r, flat_a, flat_r = _inputs(actual, reference)
    steps = _Steps(qparams, a.shape) if qparams is not None else None
    scan = _scan(flat_a, flat_r, steps, p99=False, lean=True)
    _require_finite(scan, a, r)
    total = [math.fsum(column) for column in scan.sums.T]
    value = _shared_figures(scan, total, int(a.size))[name]
    return value, (scan.histogram if steps is not None else None)


def _inputs(actual: Any, reference: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    a = as_real_array(actual, "actual")
    r = as_real_array(reference, "reference")
    same_shape(a, r, ("actual", "reference"))
    return a, r, _flat(a), _flat(r)


def _require_finite(scan: _Scan, a: np.ndarray, r: np.ndarray) -> None:
    if scan.non_finite:  # the scan skipped those blocks: say where, as the checks do
        require_finite(a, "actual")
        require_finite(r, "reference")


def _shared_figures(scan: _Scan, total: list[float], n: int) -> dict[str, float]:
    """The figures both a full and a lean pass give, from their per-block figures."""
    max_abs = float(scan.extremes[:, _WORST].max())
    full_scale = _full_scale(
        float(scan.extremes[:, _RMIN].min()), float(scan.extremes[:, _RMAX].max())
    )
    rmse = math.sqrt(total[_ERR2] / n)
    ref_norm, err_norm = math.sqrt(total[_RR]), math.sqrt(total[_ERR2])
    return {
        "max_abs": max_abs,
        "full_scale": full_scale,
        "rmse": rmse,
        "max_abs_fs": max_abs / full_scale,
        "rmse_fs": rmse / full_scale,
        "rel_l2": _ratio(err_norm, ref_norm),
        "sqnr_db": sqnr_db(ref_norm, err_norm),
    }


def _flat(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).reshape(-1)  # a copy only for a strided view


class _Steps:
    """The quantization step of each element, block by block (per channel: the step of
    each element's channel, gathered for the block, never for the whole tensor)."""

    def __init__(self, qparams: QuantParams, shape: tuple[int, ...]) -> None:
        qparams.check_channels(shape)
        scale, _ = qparams.broadcast(len(shape))
        self.scale = scale.astype(np.float64).reshape(-1)
        self.per_channel = qparams.is_per_channel
        axis = qparams.axis if self.per_channel and qparams.axis is not None else 0
        self.stride = math.prod(shape[axis + 1 :])

    def of(self, start: int, size: int) -> np.ndarray | np.float64:
        """The steps of flat elements ``[start, start + size)``."""
        if not self.per_channel:
            return self.scale[0]
        channel = np.arange(start, start + size) // self.stride
        channel %= self.scale.size
        return self.scale[channel]


class _Top:
    """The ``m`` largest of ``n`` values streamed by in blocks, kept in about ``2 m``
    floats: all a percentile near the top needs.

    Values not above the floor are dropped; the floor is the ``m``-th largest value held
    once more than ``m`` are, which is always safe. With ``guess``, the first block also
    sets a provisional floor: its quantile that ``2 m / n`` of its values clear, so that
    later blocks keep about 2% of their values from the start. That floor is safe when at
    least ``m`` values cleared it in the end; :func:`_scan` checks, and collects again
    without a guess when they did not (errors much larger in the first block than later).
    """

    def __init__(self, m: int, n: int, *, guess: bool) -> None:
        self.m, self.n = m, n
        self.floor = -math.inf
        self.guess = -math.inf  # the provisional floor, if one was set
        self.guessing = guess
        self.parts: list[np.ndarray] = []
        self.held = 0

    def add(self, values: np.ndarray, peak: float) -> None:
        if self.guessing:
            self.guessing = False
            share = 2 * self.m / self.n
            if share < 0.5 and values.size >= 1024:
                k = int(values.size * (1 - share))
                self.guess = self.floor = float(np.partition(values, k)[k])
        if peak <= self.floor:
            return
        kept = values.copy() if self.floor == -math.inf else values[values > self.floor]
        self.parts.append(kept)
        self.held += kept.size
        if self.held >= 2 * max(self.m, _BLOCK):
            self._prune()

    def _prune(self) -> None:
        if not self.parts:
            return
        held = np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]
        if held.size > self.m:
            held = np.partition(held, held.size - self.m)[held.size - self.m :]
            self.floor = float(held[0])
        self.parts, self.held = [held], held.size

    def values(self) -> np.ndarray:
        self._prune()
        return self.parts[0] if self.parts else np.empty(0)


def _largest(tops: list[_Top]) -> np.ndarray | None:
    """The values of all ``tops`` together, or ``None`` when a provisional floor may have
    dropped one of the ``m`` largest (fewer than ``m`` values cleared the highest)."""
    values = [t.values() for t in tops]
    merged = np.concatenate(values) if len(values) > 1 else values[0]
    guess = max(t.guess for t in tops)
    m = tops[0].m
    if guess > -math.inf and np.count_nonzero(merged > guess) < m:
        return None
    return merged


def _largest_errors(a: np.ndarray, r: np.ndarray) -> np.ndarray:
    """The largest ``|a - r|`` that :func:`_percentile` reads, collected without a
    provisional floor (the fallback of :func:`_scan`)."""
    n = a.size
    m = _tail_size(n)

    def share(first: int, stop: int) -> _Top:
        size = min(_BLOCK, n)
        buf_a, buf_r, buf_e = (np.empty(size) for _ in range(3))
        top = _Top(m, n, guess=False)
        for b in range(first, stop):
            start = b * _BLOCK
            xa = _float64(a[start : start + _BLOCK], buf_a)
            xr = _float64(r[start : start + _BLOCK], buf_r)
            err = np.abs(np.subtract(xa, xr, out=buf_e[: xa.size]), out=buf_e[: xa.size])
            top.add(err, float(err.max()))
        return top

    tops = over_shares(_quiet(share), -(-n // _BLOCK), parallel=n >= _PARALLEL_FROM)
    merged = _largest(tops)
    assert merged is not None  # no guess, no doubt
    return merged


def _tail_size(n: int) -> int:
    """How many of the largest values ``numpy.percentile(x, 99)`` reads: from the one
    below its virtual index up."""
    virtual = (n - 1) * _Q
    return 1 if virtual >= n - 1 else n - math.floor(virtual)


def _percentile(top: np.ndarray, n: int) -> float:
    """``numpy.percentile(x, 99)`` (method ``linear``) of the ``n`` values of ``x`` whose
    largest ``_tail_size(n)`` or more are ``top``: the same order statistics, interpolated
    by the same arithmetic, so the same float."""
    virtual = (n - 1) * _Q
    if virtual >= n - 1:
        return float(top.max())
    below = math.floor(virtual)
    m, size = n - below, top.size
    part = np.partition(top, [size - m, size - m + 1])
    lo, hi = float(part[size - m]), float(part[size - m + 1])
    t = virtual - below
    diff = hi - lo
    return hi - diff * (1 - t) if t >= 0.5 else lo + diff * t


@dataclass
class _Scan:
    """Per-block figures of one pass (filed by block number: the same on any core count)."""

    sums: np.ndarray  # (blocks, 8) float64, columns _ERR.._LSB2
    extremes: np.ndarray  # (blocks, 4) float64, columns _RMIN.._MAX_LSB
    worst_at: np.ndarray  # (blocks,) flat index of each block's largest |error|
    non_finite: bool
    top: np.ndarray  # at least the _tail_size(n) largest |errors|
    histogram: dict[int, int]


def _scan(
    a: np.ndarray, r: np.ndarray, steps: _Steps | None, *, p99: bool, lean: bool = False
) -> _Scan:
    """One pass over the flat ``a`` and ``r``: every figure of :func:`compare` (the
    largest errors only with ``p99``). ``lean``: only what :func:`_figure` reads (the
    sums of squares, the reference's extremes, the largest ``|error|`` and the LSB
    histogram, computed alike, so equal to the full pass's), about half the work."""
    n = a.size
    nblocks = -(-n // _BLOCK)
    sums = np.zeros((nblocks, 8))
    extremes = np.zeros((nblocks, 4))
    worst_at = np.zeros(nblocks, np.int64)
    bad = np.zeros(nblocks, bool)
    m = _tail_size(n)

    def share(first: int, stop: int) -> tuple[_Top, dict[int, int]]:
        size = min(_BLOCK, n)
        buf_a, buf_r, buf_e, buf_l = (np.empty(size) for _ in range(4))
        top = _Top(m, n, guess=True)
        hist: dict[int, int] = {}
        for b in range(first, stop):
            start = b * _BLOCK
            block_a, block_r = a[start : start + _BLOCK], r[start : start + _BLOCK]
            xa, xr = _float64(block_a, buf_a), _float64(block_r, buf_r)
            err = np.subtract(xa, xr, out=buf_e[: xa.size])
            lsb = buf_l[: err.size]  # the errors in steps, with qparams
            row, ext = sums[b], extremes[b]
            rr, ee = _dot(xr, xr), _dot(err, err)
            # NaN/Inf make these sums non-finite (so can an overflow of finite values)
            if not math.isfinite(rr + ee) and not (np.isfinite(xa).all() and np.isfinite(xr).all()):
                bad[b] = True
                continue
            row[_RR], row[_ERR2] = rr, ee
            ext[_RMIN], ext[_RMAX] = block_r.min(), block_r.max()  # exact in any dtype
            if lean:
                ext[_WORST] = max(float(err.max()), -float(err.min()))
                if steps is not None:
                    _count_steps(np.abs(np.divide(err, steps.of(start, err.size), out=lsb)), hist)
                continue
            row[_AR], row[_AA], row[_ERR] = _dot(xa, xr), _dot(xa, xa), err.sum()
            if steps is not None:
                np.divide(err, steps.of(start, err.size), out=lsb)
                row[_LSB], row[_LSB2] = lsb.sum(), _dot(lsb, lsb)
                ext[_MAX_LSB] = _count_steps(np.abs(lsb, out=lsb), hist)
            np.abs(err, out=err)
            row[_ABS] = err.sum()
            i = int(err.argmax())
            worst_at[b], ext[_WORST] = start + i, err[i]
            if p99:
                top.add(err, float(err[i]))
        return top, hist

    shares = over_shares(_quiet(share), nblocks, parallel=n >= _PARALLEL_FROM)
    histogram: dict[int, int] = {}
    for _, hist in shares:
        for key, count in hist.items():
            histogram[key] = histogram.get(key, 0) + count
    non_finite = bool(bad.any())
    top = None if non_finite or not p99 else _largest([t for t, _ in shares])
    if top is None and p99 and not non_finite:
        top = _largest_errors(a, r)
    return _Scan(
        sums,
        extremes,
        worst_at,
        non_finite,
        np.empty(0) if top is None else top,
        dict(sorted(histogram.items())),
    )


def _quiet(task: Callable[[int, int], _T]) -> Callable[[int, int], _T]:
    """``task`` without numpy's overflow warnings, in whichever thread runs it (numpy's
    error state is per thread): an overflow of huge finite values shows as inf in the
    figures, as it did in whole-array numpy."""

    def run(first: int, stop: int) -> _T:
        with np.errstate(over="ignore", invalid="ignore"):
            return task(first, stop)

    return run


_ROW = 4096  # see _dot
_vecdot = getattr(np, "vecdot", None)  # numpy >= 2.0


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    """``x . y`` of two float64 blocks, as dot products of rows of ``_ROW`` elements.

    Not one ``np.dot``: OpenBLAS runs a dot product of over 10,000 elements on threads
    of its own, which spin against ours (and against a busy machine): 64K elements took
    3.7 ms instead of 6 us on 2 loaded cores. Rows this short never start a thread.
    """
    full = x.size - x.size % _ROW
    total = 0.0
    if full:
        rows_x, rows_y = x[:full].reshape(-1, _ROW), y[:full].reshape(-1, _ROW)
        if _vecdot is not None:
            total = float(_vecdot(rows_x, rows_y).sum())
        else:
            total = math.fsum(float(np.dot(u, v)) for u, v in zip(rows_x, rows_y, strict=True))
    if full < x.size:
        total += float(np.dot(x[full:], y[full:]))
    return total


def _float64(x: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """``x`` itself when it is float64 (it is only read), else converted into ``buf``."""
    if x.dtype == np.float64:
        return x
    out = buf[: x.size]
    np.copyto(out, x)
    return out


def _count_steps(steps: np.ndarray, hist: dict[int, int]) -> float:
    """Count the magnitudes of errors in steps, ``steps`` (rounded in place to whole
    steps), into ``hist``; return the largest before rounding."""
    peak = float(steps.max())
    np.rint(steps, out=steps)
    top = float(np.rint(peak))
    pairs: Iterable[tuple[int, int]]
    if top < 8:  # the usual few steps: a count each beats np.bincount's casts
        pairs = [(k, int(np.count_nonzero(steps == k))) for k in range(int(top) + 1)]
    elif top < 1 << 16:
        counts = np.bincount(steps.astype(np.intp))
        keys = np.flatnonzero(counts)
        pairs = zip(keys.tolist(), counts[keys].tolist(), strict=True)
    else:  # wide errors: no bin per step
        values, found = np.unique(steps, return_counts=True)
        pairs = zip((int(v) for v in values), found.tolist(), strict=True)
    for key, count in pairs:
        if count:
            hist[key] = hist.get(key, 0) + count
    return peak


@dataclass(frozen=True)
class _LsbErrors:
    """What ``ErrorStats`` keeps to answer LSB questions: the histogram, and the inputs to
    count errors over a bound on demand (never a full-size array of errors)."""

    actual: np.ndarray
    reference: np.ndarray
    steps: _Steps
    histogram: dict[int, int]

    def count_over(self, k: float) -> int:
        n = self.actual.size
        nblocks = -(-n // _BLOCK)

        def share(first: int, stop: int) -> int:
            count = 0
            for b in range(first, stop):
                start = b * _BLOCK
                stop_ = min(start + _BLOCK, n)
                err = self.actual[start:stop_].astype(np.float64)
                err -= self.reference[start:stop_]
                err /= self.steps.of(start, stop_ - start)
                count += int(np.count_nonzero(np.abs(err) > k))
            return count

        return sum(over_shares(_quiet(share), nblocks, parallel=n >= _PARALLEL_FROM))


def sqnr_db(signal_norm: float, error_norm: float) -> float:
    """``20 log10(||x|| / ||x - x^||)``: inf for zero error, -inf for a zero signal."""
    if error_norm == 0:
        return math.inf
    if signal_norm == 0:
        return -math.inf
    return 20.0 * math.log10(signal_norm / error_norm)


def _full_scale(r_min: float, r_max: float) -> float:
    span = r_max - r_min
    if span > 0:
        return span
    peak = max(abs(r_min), abs(r_max))
    return peak if peak > 0 else 1.0


def _cosine(aa: float, rr: float, ar: float) -> float:
    """Cosine similarity from the sums of squares ``aa``, ``rr`` and the dot product ``ar``."""
    na, nr = math.sqrt(aa), math.sqrt(rr)
    if na == 0 and nr == 0:
        return 1.0
    if na == 0 or nr == 0:
        return 0.0
    return ar / (na * nr)


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return num / den
