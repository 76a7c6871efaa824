"""Input validation shared by the reference math: clear errors, never silent NaN."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_float_array(
    x: Any, name: str, *, allow_empty: bool = False, check_finite: bool = True
) -> np.ndarray:
    """Return ``x`` as a float array, rejecting non-numeric, empty and non-finite input.

    float16/32/64 are kept; integers and bools become float64. The error names the
    argument, what is wrong, where, and what to do. ``check_finite=False`` is for hot
    paths that check block by block instead (``_blocks.blockwise``).
    """
    arr = as_real_array(x, name, allow_empty=allow_empty)
    if arr.dtype.kind in "iub":
        arr = arr.astype(np.float64)
    if check_finite:
        require_finite(arr, name)
    return arr


def as_real_array(x: Any, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """Return ``x`` as an array of real numbers (float, integer or bool), not converted.

    For code that converts block by block (``metrics.compare``) rather than copying a
    large input whole. Non-numeric input raises ``TypeError``, empty input ``ValueError``;
    NaN/Inf are the caller's to check.
    """
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like of numbers: {exc}") from None
    if arr.dtype.kind not in "iubf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one element")
    return arr


def as_int_array(x: Any, name: str, *, hint: str) -> np.ndarray:
    """Return ``x`` as an integer array (quantized codes); ``hint`` says what to do instead."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}; {hint}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one element")
    return arr


def int_codes(x: Any, name: str, dtype: str, lo: int, hi: int, *, hint: str) -> np.ndarray:
    """Return the integer codes ``x`` as int64, rejecting floats and codes outside [lo, hi].

    A float array raises ``TypeError`` (codes are never truncated); a code outside the
    range raises ``ValueError`` naming the first one, its index and ``dtype``'s range.
    ``hint`` says what to do instead.
    """
    arr = as_int_array(x, name, hint=hint)
    _require_range(arr, name, lo, hi, f"{dtype}'s range", hint)
    return arr.astype(np.int64)


def whole_numbers(x: Any, name: str, lo: int, hi: int, *, what: str, hint: str) -> np.ndarray:
    """Return ``x`` as int64: integers, or floats holding whole numbers, in [lo, hi].

    NaN/Inf, fractions and values outside [lo, hi] raise ``ValueError`` naming the first
    offender and its index; ``what`` names the range, ``hint`` the fix.
    """
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like of integers: {exc}") from None
    if arr.dtype.kind == "f":
        require_finite(arr, name)
        fractional = arr != np.trunc(arr)
        if fractional.any():
            i = first_index(fractional) if arr.ndim else ()
            raise ValueError(f"{name}={arr[i].item()!r}{_at(i)} is not a whole number; {hint}")
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}; {hint}")
    _require_range(arr, name, lo, hi, what, hint)
    return arr.astype(np.int64)


def _require_range(arr: np.ndarray, name: str, lo: int, hi: int, what: str, hint: str) -> None:
    outside = (arr < lo) | (arr > hi)
    if outside.any():
        i = first_index(outside) if arr.ndim else ()
        value = arr[i].item()
        raise ValueError(
            f"{name}={value}{_at(i)} is outside {what} [{lo}, {hi}] "
            f"({int(outside.sum())} value(s) outside); {hint}"
        )


def _at(index: tuple[int, ...]) -> str:
    return f" at index {index}" if index else ""


def first_index(mask: np.ndarray) -> tuple[int, ...]:
    """The index of the first True element of ``mask``, as plain ints."""
    return tuple(int(v) for v in np.argwhere(mask)[0])


def require_finite(arr: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` naming the first NaN or Inf in ``arr`` and how many there are."""
    finite = np.isfinite(arr)
    if finite.all():
        return
    first = first_index(~finite) if arr.ndim else ()
    value = arr[first]
    raise ValueError(
        f"{name} has {int((~finite).sum())} non-finite value(s) (first: {value} at index {first}); "
        "quantization is undefined for NaN/Inf: clean or clip the data first"
    )


def finite_scalar(value: Any, name: str) -> float:
    """Return ``value`` as a finite Python float, or raise naming the argument."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if not np.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out}")
    return out


def same_shape(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    """Raise ``ValueError`` when two arrays that are compared element-wise differ in shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"shape mismatch: {names[0]} has shape {a.shape}, {names[1]} has shape {b.shape}; "
            "compare tensors of the same shape (no broadcasting)"
        )
