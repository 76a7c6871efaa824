"""Exact differences of integer arrays of any dtypes, never wrapped around."""

from __future__ import annotations

import numpy as np

_I64_MAX = 2**63 - 1


def int_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the exact element-wise ``a - b`` of two integer arrays of the same shape.

    ``astype(np.int64)`` before subtracting is not enough: int64 extremes, and uint64
    values above 2**63, wrap around (``2**63 - 1`` minus ``-2**63`` becomes ``-1``), so
    a comparison of int64 or uint64 outputs could pass on a difference of 2**64 - 1.
    Operands of up to 32 bits take a plain int64 subtraction (always exact). 64-bit
    operands take it too when their extreme values show that every difference and its
    absolute value fit int64; otherwise the result is an object array of Python ints
    (exact for any pair, e.g. uint64 ``2**64 - 1`` minus int64 ``-2**63``). Either way
    ``np.abs``, ``max``, ``argmax``, ``np.unique`` and ``!= 0`` give exact answers.

    :param a: integer array (any of int8..int64, uint8..uint64).
    :param b: integer array of the same shape (any integer dtype).
    :raises TypeError: an operand is not an integer array.
    :raises ValueError: the shapes differ.

    Example::

        >>> d = int_difference(np.array([2**63 - 1]), np.array([-(2**63)]))
        >>> d.tolist(), d.dtype
        ([18446744073709551615], dtype('O'))
        >>> int_difference(np.array([3], np.uint8), np.array([5], np.int8)).tolist()
        [-2]
    """
    for name, arr in (("a", a), ("b", b)):
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iu":
            got = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
            raise TypeError(f"int_difference: {name} must be an integer numpy array, got {got}")
    if a.shape != b.shape:
        raise ValueError(f"int_difference: shapes differ, a {a.shape} and b {b.shape}")
    if a.dtype.itemsize <= 4 and b.dtype.itemsize <= 4:
        return a.astype(np.int64) - b.astype(np.int64)
    if a.size and not _fits_int64(a, b):
        return a.astype(object) - b.astype(object)
    # Wrapping int64 arithmetic is exact modulo 2**64, so it is exact outright when the
    # true differences lie in [-(2**63 - 1), 2**63 - 1] (checked above).
    return a.astype(np.int64) - b.astype(np.int64)


def _fits_int64(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether every ``a - b`` and ``|a - b|`` is representable in int64."""
    largest = int(a.max()) - int(b.min())
    smallest = int(a.min()) - int(b.max())
    return smallest >= -_I64_MAX and largest <= _I64_MAX
