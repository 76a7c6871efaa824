"""Failure messages of the quant checks, built by pure functions (tests call them directly).

Every message says what is off (metric, value, bound), where (the worst element with
its index, actual and reference values, and its error in LSB when the quantization
parameters are known), how the errors spread (an LSB histogram), and which option or
marker changes the bound.
"""

from __future__ import annotations

from typing import Any

MAX_ROWS = 8


def fmt(value: float) -> str:
    """A figure for a message: 4 significant digits."""
    return f"{value:.4g}"


def histogram_line(hist: dict[int, int], *, label: str = "|error| in LSB") -> str:
    """``0: 990  1: 9  3: 1``, ascending. With more than ``MAX_ROWS`` distinct values the
    counts are grouped by magnitude in powers of two (``|4..7|: 12``), so a wide spread
    still shows its shape."""
    keys = sorted(hist)
    if len(keys) <= MAX_ROWS:
        return f"  histogram ({label}): " + "  ".join(f"{k}: {hist[k]}" for k in keys)
    buckets: dict[int, int] = {}
    for k, count in hist.items():
        b = 0 if k == 0 else abs(k).bit_length()  # 1 -> 1, 2..3 -> 2, 4..7 -> 3, ...
        buckets[b] = buckets.get(b, 0) + count
    parts = []
    for b in sorted(buckets):
        lo, hi = (0, 0) if b == 0 else (1 << (b - 1), (1 << b) - 1)
        name = "0" if b == 0 else (f"|{lo}|" if lo == hi else f"|{lo}..{hi}|")
        parts.append(f"{name}: {buckets[b]}")
    return f"  histogram ({label}, grouped by magnitude): " + "  ".join(parts)


def bound_line(origin: str, source: str) -> str:
    """Where the bound came from and how to change it."""
    if origin.startswith("the argument"):  # it beats options, ini and marker
        return f"  bound from {origin}; change it in the call"
    return f"  bound from {origin}; change it with {source}"


def close_failure(
    *,
    metric: str,
    description: str,
    value: float,
    bound: float,
    stats: Any,
    origin: str,
    source: str,
) -> str:
    """Message of ``assert_quant_close``: ``stats`` is a :class:`pytest_quant.ErrorStats`."""
    lines = [
        f"quantized output is off: {metric} error = {fmt(100 * value)}% of full scale, "
        f"bound {fmt(100 * bound)}% (over by {fmt(100 * (value - bound))} points)",
        f"  metric: {description}; full scale (reference max - min) = {fmt(stats.full_scale)}",
        worst_line(stats),
        f"  also: max {fmt(100 * stats.max_abs_fs)}% FS, p99 {fmt(100 * stats.p99_abs_fs)}% FS, "
        f"RMS {fmt(100 * stats.rmse_fs)}% FS, bias (mean signed error) {stats.mean_signed:+.4g}, "
        f"SQNR {fmt(stats.sqnr_db)} dB, n={stats.n}",
    ]
    if stats.max_lsb is not None:
        lines.append(histogram_line(stats.lsb_histogram()))
    lines.append(bound_line(origin, source))
    return "\n".join(lines)


def worst_line(stats: Any) -> str:
    """``worst element at index (3, 7): actual 0.91, reference 1, error -0.09 (-11.5 LSB)``."""
    err = stats.worst_actual - stats.worst_reference
    lsb = ""
    if stats.max_lsb is not None:
        sign = 1 if err >= 0 else -1
        lsb = f" ({sign * stats.max_lsb:+.3g} LSB)"
    return (
        f"  worst element at index {stats.worst_index}: actual {fmt(stats.worst_actual)}, "
        f"reference {fmt(stats.worst_reference)}, error {err:+.4g}{lsb}"
    )


def lsb_failure(
    *,
    max_diff: int,
    max_lsb: int,
    index: tuple[int, ...],
    actual: int,
    expected: int,
    mismatch: float,
    max_mismatch: float | None,
    n: int,
    hist: dict[int, int],
    real_error: float | None,
    origin: str,
    source: str,
) -> str:
    """Message of ``assert_within_lsb``."""
    head = []
    if max_diff > max_lsb:
        head.append(f"integer outputs differ by up to {max_diff} LSB, bound {max_lsb} LSB")
    if max_mismatch is not None and mismatch > max_mismatch:
        head.append(
            f"{fmt(100 * mismatch)}% of elements differ, budget max_mismatch="
            f"{fmt(100 * max_mismatch)}%"
        )
    real = f" = {real_error:+.4g} in real units" if real_error is not None else ""
    lines = [
        "; ".join(head),
        f"  worst element at index {index}: actual {actual}, expected {expected} "
        f"({actual - expected:+d} LSB{real})",
        f"  {round(mismatch * n)} of {n} elements differ ({fmt(100 * mismatch)}%)",
        histogram_line(hist, label="actual - expected in LSB"),
        bound_line(origin, source),
    ]
    return "\n".join(lines)


def sqnr_failure(*, value: float, min_db: float, stats: Any) -> str:
    """Message of ``assert_sqnr``."""
    return "\n".join(
        [
            f"SQNR {fmt(value)} dB is below min_db={fmt(min_db)} dB "
            f"(short by {fmt(min_db - value)} dB)",
            worst_line(stats),
            f"  RMS error {fmt(stats.rmse)}, signal RMS {fmt(stats.rmse * 10 ** (value / 20))}, "
            f"n={stats.n}",
            "  bound from the min_db argument of assert_sqnr",
        ]
    )


def accuracy_failure(
    *,
    float_acc: float,
    quant_acc: float,
    drop: float,
    max_drop: float,
    ci: tuple[float, float],
    agreement: float,
    n: int,
    origin: str,
    source: str,
) -> str:
    """Message of ``assert_accuracy_drop``."""
    return "\n".join(
        [
            f"top-1 accuracy dropped by {fmt(100 * drop)} points "
            f"(float {fmt(100 * float_acc)}% -> quantized {fmt(100 * quant_acc)}%), "
            f"bound {fmt(100 * max_drop)} points",
            f"  95% confidence interval of the drop: [{fmt(100 * ci[0])}, {fmt(100 * ci[1])}] "
            f"points over n={n} samples",
            f"  the two models agree on {fmt(100 * agreement)}% of predictions",
            bound_line(origin, source),
        ]
    )


def golden_failure(
    *,
    name: str,
    path: str,
    key: str,
    headline: str,
    worst: list[tuple[tuple[int, ...], Any, Any]],
    hist: dict[int, int] | None,
    golden_fp: str,
    current_fp: str,
    written: str,
    origin: str,
    source: str,
) -> str:
    """Message of ``quant_golden.check`` on a mismatch."""
    lines = [f"golden {name!r} ({path}), output {key!r}: {headline}"]
    if worst:
        lines.append("  worst elements (index: now vs golden):")
        lines += [f"    {idx}: {now} vs {gold}" for idx, now, gold in worst]
    if hist is not None:
        lines.append(histogram_line(hist, label="now - golden in LSB"))
    lines += [
        f"  golden written {written} with: {golden_fp}",
        f"  this run:                     {current_fp}",
        bound_line(origin, source),
        "  if the change is intended: pytest --quant-golden-update rewrites it",
    ]
    return "\n".join(lines)
