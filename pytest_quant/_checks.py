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
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like of numbers: {exc}") from None
    if arr.dtype.kind in "iub":
        arr = arr.astype(np.float64)
    elif arr.dtype.kind != "f":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one element")
    if check_finite:
        require_finite(arr, name)
    return arr


def as_int_array(x: Any, name: str, *, hint: str) -> np.ndarray:
    """Return ``x`` as an integer array (quantized codes); ``hint`` says what to do instead."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}; {hint}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one element")
    return arr


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
