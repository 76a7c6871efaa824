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
    scan = _scan(flat_a, flat_r, steps, mode="full")
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
_LEAN_FIGURES = ("max_abs_fs", "rmse_fs", "rel_l2", "sqnr_db", "p99_abs_fs")


def _figure(
    actual: Any, reference: Any, name: str, qparams: QuantParams | None = None
) -> tuple[float, dict[int, int] | None]:
    """One of :data:`_LEAN_FIGURES`, equal to ``getattr(compare(actual, reference), name)``
    (the same sums over the same blocks, the same order statistics) in about half the
    time: what a check decides on, with the LSB histogram when ``qparams`` are given (what
    it records). A failure message then takes :func:`compare`, a second pass, only when
    the check fails."""
    a, r, flat_a, flat_r = _inputs(actual, reference)
    steps = _Steps(qparams, a.shape) if qparams is not None else None
    scan = _scan(flat_a, flat_r, steps, mode="p99" if name == "p99_abs_fs" else "sums")
    _require_finite(scan, a, r)
    n = int(a.size)
    if name == "p99_abs_fs":
        value = _percentile(scan.top, n) / _full_scale(scan)
    else:
        total = [math.fsum(column) for column in scan.sums.T]
        value = _shared_figures(scan, total, n)[name]
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
    full_scale = _full_scale(scan)
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
        # one step for all: |errors| are counted by step against these, undivided
        self.bounds = _step_bounds(1.0 if self.per_channel else float(self.scale[0]))

    def of(self, start: int, size: int) -> np.ndarray | np.float64:
        """The steps of flat elements ``[start, start + size)``."""
        if not self.per_channel:
            return self.scale[0]
        channel = np.arange(start, start + size) // self.stride
        channel %= self.scale.size
        return self.scale[channel]


_FEW_STEPS = 8  # errors below this many steps are counted by comparisons, not binned


def _step_bounds(scale: float) -> list[float]:
    """``bounds[k]``, for ``k`` in ``1.._FEW_STEPS - 1``: the largest float ``e`` with
    ``rint(e / scale) < k`` (``bounds[0]`` is unused).

    ``e / scale`` (rounded, as ``np.divide`` rounds it) never falls as ``e`` grows, so
    ``rint(e / scale) >= k`` exactly when ``e > bounds[k]``: a count of the errors of
    ``k`` steps or more needs no division. Found from ``(k - 0.5) * scale`` by stepping
    one float at a time (``rint`` rounds a half to even: ``k - 0.5`` itself rounds up
    to ``k`` only when ``k`` is even).
    """

    def under(e: float, k: int) -> bool:  # rint(e / scale) < k
        q = e / scale
        return q < k - 0.5 or (q == k - 0.5 and k % 2 == 1)

    bounds = [-math.inf]
    for k in range(1, _FEW_STEPS):
        e = (k - 0.5) * scale
        while not under(e, k):
            e = math.nextafter(e, -math.inf)
        while under(math.nextafter(e, math.inf), k):
            e = math.nextafter(e, math.inf)
        bounds.append(e)
    return bounds


class _Top:
    """The ``m`` largest of ``n`` values streamed by in blocks, kept in about ``2 m``
    floats: all a percentile near the top needs.

    Values not above the floor are dropped; the floor is the ``m``-th largest value held
    once more than ``m`` are, which is always safe. With ``guess``, the first block also
    sets a provisional floor: its quantile that ``2 m / n`` of its values clear (estimated
    from one value in 8), so that later blocks keep about 2% of their values from the
    start. That floor is safe when at least ``m`` values cleared it in the end;
    :func:`_largest` checks, and :func:`_scan` collects again without a guess when they
    did not (errors much larger in the first block than later).
    """

    def __init__(self, m: int, n: int, *, guess: bool) -> None:
        self.m, self.n = m, n
        self.floor = -math.inf
        self.guess = -math.inf  # the provisional floor, if one was set
        self.guessing = guess
        self.parts: list[np.ndarray] = []
        self.held = 0

    def add(self, values: np.ndarray, peak: float) -> None:
        """Keep those of ``values`` (``peak`` the largest) above the floor."""
        floor = self.floor_for(values)
        if peak > floor:
            self.keep(values.copy() if floor == -math.inf else values[values > floor])

    def floor_for(self, values: np.ndarray) -> float:
        """The floor for ``values``, which set the guess if they are the first."""
        if self.guessing:
            self.guessing = False
            share = 2 * self.m / self.n
            if share < 0.5 and values.size >= 1024:
                sample = values[::8]
                k = int(sample.size * (1 - share))
                self.guess = self.floor = float(np.partition(sample, k)[k])
        return self.floor

    def keep(self, kept: np.ndarray) -> None:
        """Keep ``kept``, values above :meth:`floor_for` (a copy, not a view of a buffer)."""
        self.parts.append(kept)
        self.held += kept.size
        if self.held >= 2 * max(self.m, _BLOCK):
            self._prune()

    def _prune(self) -> None:
        held = self.values()
        if held.size > self.m:
            held = np.partition(held, held.size - self.m)[held.size - self.m :]
            self.floor = float(held[0])
        self.parts, self.held = [held], held.size

    def values(self) -> np.ndarray:
        """Every value held (at least the ``m`` largest, unless a guess failed)."""
        if len(self.parts) != 1:
            self.parts = [np.concatenate(self.parts) if self.parts else np.empty(0)]
        return self.parts[0]


def _largest(tops: list[tuple[np.ndarray, float]], m: int) -> list[np.ndarray] | None:
    """The values of all ``tops`` (each ``(values, guess)``, see :class:`_Top`), or
    ``None`` when a provisional floor may have dropped one of the ``m`` largest (fewer
    than ``m`` values cleared the highest)."""
    values = [v for v, _ in tops]
    guess = max(g for _, g in tops)
    if guess > -math.inf and sum(int(np.count_nonzero(v > guess)) for v in values) < m:
        return None
    return values


def _largest_errors(a: np.ndarray, r: np.ndarray) -> list[np.ndarray]:
    """The largest ``|a - r|`` that :func:`_percentile` reads, collected without a
    provisional floor (the fallback of :func:`_scan`)."""
    n = a.size
    m = _tail_size(n)

    def share(first: int, stop: int) -> tuple[np.ndarray, float]:
        buf_a, buf_r = np.empty(min(_BLOCK, n)), np.empty(min(_BLOCK, n))
        top = _Top(m, n, guess=False)
        for b in range(first, stop):
            start = b * _BLOCK
            err = _abs_error(a[start : start + _BLOCK], r[start : start + _BLOCK], buf_a, buf_r)
            top.add(err, float(err.max()))
        return top.values(), top.guess

    tops = over_shares(_quiet(share), -(-n // _BLOCK), parallel=n >= _PARALLEL_FROM)
    merged = _largest(tops, m)
    assert merged is not None  # no guess, no doubt
    return merged


def _abs_error(
    block_a: np.ndarray, block_r: np.ndarray, buf_a: np.ndarray, buf_r: np.ndarray
) -> np.ndarray:
    """``|block_a - block_r|`` in float64, in ``buf_a`` (``buf_r`` holds the reference
    converted, when it is not float64)."""
    xa, xr = _float64(block_a, buf_a), _float64(block_r, buf_r)
    err = np.subtract(xa, xr, out=buf_a[: xa.size])
    return np.abs(err, out=err)


def _tail_size(n: int) -> int:
    """How many of the largest values ``numpy.percentile(x, 99)`` reads: from the one
    below its virtual index up."""
    virtual = (n - 1) * _Q
    return 1 if virtual >= n - 1 else n - math.floor(virtual)


def _percentile(top: list[np.ndarray], n: int) -> float:
    """``numpy.percentile(x, 99)`` (method ``linear``) of the ``n`` values of ``x`` whose
    largest ``_tail_size(n)`` or more are ``top`` (in parts): the same order statistics,
    interpolated by the same arithmetic, so the same float."""
    virtual = (n - 1) * _Q
    if virtual >= n - 1:
        return max(float(part.max()) for part in top if part.size)
    below = math.floor(virtual)
    lo, hi = _largest_two(top, n - below)
    t = virtual - below
    diff = hi - lo
    return hi - diff * (1 - t) if t >= 0.5 else lo + diff * t


_SAMPLE = 16  # _largest_two estimates where its order statistics lie from one value in 16


def _largest_two(parts: list[np.ndarray], m: int) -> tuple[float, float]:
    """The ``m``-th and ``(m - 1)``-th largest of the values in ``parts`` (``m >= 2``), as
    ``np.partition`` gives them.

    A selection over millions of values costs 10 ns each: instead, a sample of one value
    in ``_SAMPLE`` gives a band ``[low, high]`` that should hold both; when counting shows
    it does (fewer than ``m - 1`` values above ``high``, at least ``m`` from ``low`` up),
    they are order statistics of the band, a few percent of the values. Otherwise the
    whole selection.
    """
    size = sum(p.size for p in parts)
    sample = np.concatenate([p[::_SAMPLE] for p in parts])
    centre = m * sample.size // size  # about this many sample values are >= the m-th largest
    margin = 8 * math.isqrt(centre) + 16  # 8 standard deviations of that count and more
    i_low, i_high = sample.size - centre - margin, sample.size - centre + margin
    if size >= 1 << 16 and i_low >= 0 and i_high < sample.size:
        low, high = np.partition(sample, [i_low, i_high])[[i_low, i_high]]
        above = sum(int(np.count_nonzero(p > high)) for p in parts)
        band = np.concatenate([p[(p >= low) & (p <= high)] for p in parts])
        if above <= m - 2 and above + band.size >= m:  # the k-th largest of all is the
            k = band.size - (m - above)  # (k - above)-th largest of the band
            part = np.partition(band, [k, k + 1])
            return float(part[k]), float(part[k + 1])
    values = np.concatenate(parts)
    part = np.partition(values, [size - m, size - m + 1])
    return float(part[size - m]), float(part[size - m + 1])


@dataclass
class _Scan:
    """Per-block figures of one pass (filed by block number: the same on any core count)."""

    sums: np.ndarray  # (blocks, 8) float64, columns _ERR.._LSB2
    extremes: np.ndarray  # (blocks, 4) float64, columns _RMIN.._MAX_LSB
    worst_at: np.ndarray  # (blocks,) flat index of each block's largest |error|
    non_finite: bool
    top: list[np.ndarray]  # at least the _tail_size(n) largest |errors|, in parts
    histogram: dict[int, int]


def _scan(a: np.ndarray, r: np.ndarray, steps: _Steps | None, *, mode: str) -> _Scan:
    """One pass over the flat ``a`` and ``r``, with the LSB histogram when ``steps`` are
    given. ``mode``: ``"full"``, every figure of :func:`compare`; ``"sums"``, only what
    :func:`_figure` reads for the figures from sums (the sums of squares, the reference's
    extremes and the largest ``|error|``); ``"p99"``, only what it reads for
    ``p99_abs_fs`` (the reference's extremes and the largest errors). Each figure is
    computed alike in every mode, so a lean pass's equal the full pass's."""
    n = a.size
    nblocks = -(-n // _BLOCK)
    sums = np.zeros((nblocks, 8))
    extremes = np.zeros((nblocks, 4))
    worst_at = np.zeros(nblocks, np.int64)
    bad = np.zeros(nblocks, bool)
    m = _tail_size(n)
    screen = mode == "p99" and steps is None and a.dtype == r.dtype == np.float32

    def share(first: int, stop: int) -> tuple[np.ndarray, float, dict[int, int]]:
        size = min(_BLOCK, n)
        buf_a, buf_r = np.empty(size), np.empty(size)
        buf_l = np.empty(size if steps is not None and mode == "full" else 0)
        buf_s = np.empty(size if screen else 0, np.float32)
        top = _Top(m, n, guess=True)
        hist: dict[int, int] = {}
        for b in range(first, stop):
            start = b * _BLOCK
            block_a, block_r = a[start : start + _BLOCK], r[start : start + _BLOCK]
            row, ext = sums[b], extremes[b]
            if screen and top.floor > -math.inf:
                # float32 inputs and a floor set: float32 and float64 both round the exact
                # a - r, and rounding never reorders, so an error above the floor in float64
                # is at least the floor rounded to float32 in float32. Only those few are
                # computed in float64 (top.add drops the rest again, as the float64 pass
                # would have)
                diff = np.subtract(block_a, block_r, out=buf_s[: block_a.size])
                np.abs(diff, out=diff)
                peak = float(diff.max())
                if not math.isfinite(peak) and not _finite(block_a, block_r):
                    bad[b] = True  # as below
                    continue
                ext[_RMIN], ext[_RMAX] = block_r.min(), block_r.max()
                floor = np.float32(top.floor)
                if peak >= floor:
                    at = np.flatnonzero(diff >= floor)
                    err = np.abs(np.subtract(block_a[at], block_r[at], dtype=np.float64))
                    top.add(err, float(err.max()))
                continue
            if mode == "p99":
                err = _abs_error(block_a, block_r, buf_a, buf_r)
                peak = float(err.max())
                # NaN/Inf make an error NaN or Inf (so can an overflow of finite values)
                if not math.isfinite(peak) and not _finite(block_a, block_r):
                    bad[b] = True
                    continue
                ext[_RMIN], ext[_RMAX] = block_r.min(), block_r.max()
                top.add(err, peak)
                if steps is not None:
                    _count_lsb(err, peak, steps, start, hist)
                continue
            xa, xr = _float64(block_a, buf_a), _float64(block_r, buf_r)
            rr = _dot(xr, xr)
            if mode == "full":  # before the errors overwrite xa
                row[_AR], row[_AA] = _dot(xa, xr), _dot(xa, xa)
            err = np.subtract(xa, xr, out=buf_a[: xa.size])  # in place, unless xa is a's
            ee = _dot(err, err)
            # NaN/Inf make these sums non-finite (so can an overflow of finite values)
            if not math.isfinite(rr + ee) and not _finite(block_a, block_r):
                bad[b] = True
                continue
            row[_RR], row[_ERR2] = rr, ee
            ext[_RMIN], ext[_RMAX] = block_r.min(), block_r.max()  # exact in any dtype
            if mode == "sums":
                np.abs(err, out=err)
                ext[_WORST] = peak = float(err.max())
                if steps is not None:
                    _count_lsb(err, peak, steps, start, hist)
                continue
            row[_ERR] = err.sum()
            lsb = None
            if steps is not None:  # the errors in steps
                lsb = np.divide(err, steps.of(start, err.size), out=buf_l[: err.size])
                row[_LSB], row[_LSB2] = lsb.sum(), _dot(lsb, lsb)
            np.abs(err, out=err)
            row[_ABS] = err.sum()
            at = np.flatnonzero(err > top.floor_for(err))
            if at.size:  # the largest is among those kept, first where it is first
                kept = err[at]
                top.keep(kept)
                j = int(kept.argmax())
                i = int(at[j])
            else:
                i = int(err.argmax())
            worst_at[b], ext[_WORST] = start + i, err[i]
            peak = float(err[i])
            if steps is not None:
                ext[_MAX_LSB] = _count_lsb(err, peak, steps, start, hist, lsb)
        return top.values(), top.guess, hist

    shares = over_shares(_quiet(share), nblocks, parallel=n >= _PARALLEL_FROM)
    histogram: dict[int, int] = {}
    for _, _, hist in shares:
        for key, count in hist.items():
            histogram[key] = histogram.get(key, 0) + count
    non_finite = bool(bad.any())
    top = None
    if mode != "sums" and not non_finite:
        top = _largest([(v, g) for v, g, _ in shares], m)
        if top is None:
            top = _largest_errors(a, r)
    return _Scan(
        sums,
        extremes,
        worst_at,
        non_finite,
        [] if top is None else top,
        dict(sorted(histogram.items())),
    )


def _finite(x: np.ndarray, y: np.ndarray) -> bool:
    return bool(np.isfinite(x).all() and np.isfinite(y).all())


def _quiet(task: Callable[[int, int], _T]) -> Callable[[int, int], _T]:
    """``task`` without numpy's overflow warnings, in whichever thread runs it (numpy's
    error state is per thread): an overflow of huge finite values shows as inf in the
    figures, as it did in whole-array numpy."""

    def run(first: int, stop: int) -> _T:
        with np.errstate(over="ignore", invalid="ignore"):
            return task(first, stop)

    return run


# see _dot: 1024 rows in a block, so np.vecdot lets go of the GIL (numpy keeps it for an
# outer loop of under 500)
_ROW = _BLOCK // 1024
_vecdot = getattr(np, "vecdot", None)  # numpy >= 2.0


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    """``x . y`` of two float64 blocks, as dot products of rows of ``_ROW`` elements.

    Not one ``np.dot``: OpenBLAS runs a dot product of over 10,000 elements on threads
    of its own, which spin against ours (and against a busy machine): 64K elements took
    3.7 ms instead of 6 us on 2 loaded cores. Rows this short never start a thread.
    And many rows: numpy releases the GIL in ``np.vecdot`` only for an outer loop of 500
    or more, so the 64 rows of 4096 a block once had ran the two threads' dot products
    one after the other (``compare`` on 100M float32: 0.20 s with those, 0.16 s now).
    """
    full = x.size - x.size % _ROW
    total = 0.0
    if full:
        rows_x, rows_y = x[:full].reshape(-1, _ROW), y[:full].reshape(-1, _ROW)
        if _vecdot is not None:
            total = float(_vecdot(rows_x, rows_y).sum())
        else:  # numpy 1.x
            total = float(np.einsum("ij,ij->i", rows_x, rows_y).sum())
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


def _count_lsb(
    errors: np.ndarray,
    peak: float,
    steps: _Steps,
    start: int,
    hist: dict[int, int],
    lsb: np.ndarray | None = None,
) -> float:
    """Count the ``errors`` (magnitudes of flat elements from ``start`` on; ``peak`` the
    largest) by whole steps, ``rint(|error| / step)``, into ``hist``; return the largest
    error in steps. ``errors`` may be overwritten. ``lsb``: with per-channel steps, the
    errors divided by their steps, when already computed (made magnitudes in place).

    With one step for all, ``rint(|error| / step) >= k`` is ``|error| > bounds[k]`` (see
    :func:`_step_bounds`): the usual few steps take a comparison each, no division, and
    the largest in steps is ``peak / step`` (dividing by a step never reorders).
    """
    if steps.per_channel:
        if lsb is None:
            lsb = np.divide(errors, steps.of(start, errors.size), out=errors)
        else:
            np.abs(lsb, out=lsb)
        values, peak_steps = lsb, float(lsb.max())
    else:
        values, peak_steps = errors, float(peak / steps.scale[0])
    top = float(np.rint(peak_steps))
    pairs: Iterable[tuple[int, int]]
    if top < _FEW_STEPS:  # a count each of the errors of k steps or more
        over = [values.size]
        over += [int(np.count_nonzero(values > steps.bounds[k])) for k in range(1, int(top) + 1)]
        over.append(0)
        pairs = [(k, over[k] - over[k + 1]) for k in range(int(top) + 1)]
    else:
        if not steps.per_channel:
            values = np.divide(errors, steps.scale[0], out=errors)
        np.rint(values, out=values)
        if top < 1 << 16:
            counts = np.bincount(values.astype(np.intp))
            keys = np.flatnonzero(counts)
            pairs = zip(keys.tolist(), counts[keys].tolist(), strict=True)
        else:  # wide errors: no bin per step
            found, counted = np.unique(values, return_counts=True)
            pairs = zip((int(v) for v in found), counted.tolist(), strict=True)
    for key, count in pairs:
        if count:
            hist[key] = hist.get(key, 0) + count
    return peak_steps


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


def _full_scale(scan: _Scan) -> float:
    """The reference's range ``max - min``; for a constant reference its ``max |x|``, for
    an all-zero one 1.0."""
    r_min, r_max = float(scan.extremes[:, _RMIN].min()), float(scan.extremes[:, _RMAX].max())
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
