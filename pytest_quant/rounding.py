"""Rounding modes as the kernels implement them (ties are where they differ)."""

from __future__ import annotations

from typing import Any

import numpy as np


def round_half_away_from_zero(v: Any) -> Any:
    """``std::round`` / ``TfLiteRound``: ties go away from zero, dtype kept.

    Not ``floor(|v| + 0.5)``: in float32 that rounds 0.49999997 up to 1.
    """
    v = np.asarray(v)
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
