"""Rounding modes as the kernels implement them (ties are where they differ)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import as_float_array, as_int_array


def round_half_away_from_zero(v: Any) -> Any:
    """``std::round`` / ``TfLiteRound``: ties go away from zero, dtype kept.

    Not ``floor(|v| + 0.5)``: in float32 that rounds 0.49999997 up to 1. Integers come
    back unchanged.

    :raises ValueError: NaN/Inf or empty input, as everywhere in the reference math
        (a NaN would otherwise become an integer code when cast).
    :raises TypeError: non-numeric input.

    Example::

        >>> round_half_away_from_zero(np.float32([0.5, -2.5, 0.49999997])).tolist()
        [1.0, -3.0, 0.0]
    """
    if np.asarray(v).dtype.kind in "iu":
        return as_int_array(v, "v", hint="pass numbers")
    v = as_float_array(v, "v")
    t = np.trunc(v)
    tie = np.abs(v - t) == 0.5  # exact: v - trunc(v) never rounds
    return np.where(tie, t + np.sign(v), np.rint(v)).astype(v.dtype, copy=False)


def round_half_to_even(v: Any) -> Any:
    """numpy's ``rint`` (banker's rounding), XNNPACK's and PyTorch's mode."""
    return np.rint(np.asarray(v))


def round_half_up(v: Any) -> Any:
    """``floor(v + 0.5)`` evaluated in the input's precision, as fake-quant kernels do."""
    v = np.asarray(v)
    return np.floor(v + v.dtype.type(0.5))
