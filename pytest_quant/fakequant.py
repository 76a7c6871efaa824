"""``tf.quantization.fake_quant_with_min_max_vars`` in numpy, bit for bit.

The arithmetic follows TensorFlow's CPU kernel (``fake_quant_ops_functor.h``) as it
is in TF >= 2.15, in float32 and in the same order of operations:

- the nudge: ``scale = (max - min) / (qmax - qmin)``, ``inv = (qmax - qmin) / (max - min)``
  (both divisions, not a reciprocal), ``zp = round_half_away(qmin - min / scale)`` clamped,
  ``nudged_min = (qmin - zp) * scale``, ``nudged_max = (qmax - zp) * scale``;
- per tensor: ``floor(clamp(x) - nudged_min) / scale - quant_zero + 0.5) * scale`` with
  ``quant_zero = floor(-nudged_min * inv + 0.5)``: there is no ``+ nudged_min`` at the
  end (the older formula, and what the kernel's docs describe, differs from TF 2.21's
  output by one step next to rounding ties and in the last bit elsewhere);
- per channel: the same but ``* inv`` where per tensor divides by ``scale``.

tests/test_fakequant.py checks this against the installed TensorFlow on tie-dense
inputs, their float32 neighbours and thousands of generated ranges.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ._blocks import blockwise
from ._checks import as_float_array, finite_scalar, require_finite
from .rounding import round_half_away_from_zero

_F = np.float32
_TINY = np.finfo(_F).tiny  # the smallest normal float32


class Nudged(NamedTuple):
    """The range fake-quant actually uses after moving the zero point onto the grid."""

    min: np.float32
    max: np.float32
    scale: np.float32
    inv_scale: np.float32
    zero_point: int


def nudge(x_min: Any, x_max: Any, *, num_bits: int = 8, narrow_range: bool = False) -> Nudged:
    """Return the nudged range TF's FakeQuant kernels derive from ``[x_min, x_max]``.

    The grid is unsigned: codes ``[narrow_range, 2**num_bits - 1]``. Note the float32
    trap: ``nudge(-1, 1)`` has zero point 127 (``1/scale`` is 127.49999 in float32),
    so the range is ``[-0.9960785, 1.0039216]``, not its mirror image.

    Example::

        >>> n = nudge(-1.0, 1.0)
        >>> n.zero_point, float(n.min), float(n.max)
        (127, -0.9960784912109375, 1.003921627998352)
    """
    qmin, qmax = _grid(num_bits, narrow_range)
    lo, hi = _range(x_min, x_max)
    return _checked_nudge(lo, hi, qmin, qmax, "")


def _checked_nudge(lo: np.float32, hi: np.float32, qmin: int, qmax: int, where: str) -> Nudged:
    """The nudge of ``[lo, hi]``, or a ``ValueError`` naming the range when it has no
    usable step: zero, subnormal (float32's smallest normal number is about 1.2e-38) or
    overflowing; TF's kernel returns NaN or zeros for those, not a quantization."""
    qminf, qmaxf = _F(qmin), _F(qmax)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        scale = (hi - lo) / (qmaxf - qminf)
        inv = (qmaxf - qminf) / (hi - lo)
    # TF runs with subnormals flushed to zero: a subnormal step is 0 there (NaN or zeros out)
    if not (_TINY <= scale < np.inf and np.isfinite(inv)):
        raise ValueError(_degenerate_message(lo, hi, scale, where))
    zp_from_min = qminf - lo / scale
    if zp_from_min < qminf:
        zp = qmin
    elif zp_from_min > qmaxf:
        zp = qmax
    else:
        zp = int(round_half_away_from_zero(zp_from_min))
    return Nudged((qminf - _F(zp)) * scale, (qmaxf - _F(zp)) * scale, scale, inv, zp)


def fake_quant(
    x: Any, x_min: Any, x_max: Any, *, num_bits: int = 8, narrow_range: bool = False
) -> np.ndarray:
    """Quantize-dequantize ``x`` exactly as ``tf.quantization.fake_quant_with_min_max_vars``.

    Values outside the nudged range saturate at its ends; ``x_min == x_max == 0``
    returns zeros, as TF does.

    :param x: float tensor (taken as float32).
    :param x_min: range minimum (a range excluding 0 is shifted, not widened).
    :param x_max: range maximum, >= x_min.
    :param num_bits: 2 to 16.
    :param narrow_range: use codes ``[1, 2**num_bits - 1]``.
    :raises ValueError: NaN/Inf input, ``x_min > x_max``, or ``x_min == x_max != 0``
        (TF returns NaN for that range).

    Example::

        >>> fake_quant([-0.3, 0.0, 0.2, 5.0], -0.3, 0.7).tolist()
        [-0.2980392277240753, 0.0, 0.20000001788139343, 0.6980392336845398]
    """
    qmin, qmax = _grid(num_bits, narrow_range)
    lo, hi = _range(x_min, x_max)
    arr = as_float_array(x, "x", check_finite=False).astype(_F, copy=False)
    if lo == 0 and hi == 0:
        require_finite(arr, "x")
        return np.zeros_like(arr)
    n = _checked_nudge(lo, hi, qmin, qmax, "")
    quant_zero = np.floor(-n.min * n.inv_scale + _F(0.5))

    def kernel(xb: np.ndarray, ob: np.ndarray) -> None:
        # floor((clamp(x) - nudged_min) / scale - quant_zero + 0.5) * scale, in place
        np.clip(xb, n.min, n.max, out=ob)  # = max(min(x, max), min): nudged min <= max
        np.subtract(ob, n.min, out=ob)
        np.divide(ob, n.scale, out=ob)
        np.subtract(ob, quant_zero, out=ob)
        np.add(ob, _F(0.5), out=ob)
        np.floor(ob, out=ob)
        np.multiply(ob, n.scale, out=ob)

    return blockwise(kernel, arr, np.empty_like(arr), "x")


def fake_quant_per_channel(
    x: Any, x_min: Any, x_max: Any, *, num_bits: int = 8, narrow_range: bool = False
) -> np.ndarray:
    """``tf.quantization.fake_quant_with_min_max_vars_per_channel``: one range per channel.

    Channels are the last axis, as in TF. ``x_min`` / ``x_max`` are 1-D of that length.

    Example::

        >>> fake_quant_per_channel([[0.3, 0.3]], [-1.0, 0.0], [1.0, 0.6]).tolist()
        [[0.2980392277240753, 0.2988235354423523]]
    """
    qmin, qmax = _grid(num_bits, narrow_range)
    arr = as_float_array(x, "x").astype(_F)
    lo = as_float_array(x_min, "x_min").astype(_F)
    hi = as_float_array(x_max, "x_max").astype(_F)
    if lo.ndim != 1 or lo.shape != hi.shape or arr.ndim == 0 or arr.shape[-1] != lo.shape[0]:
        raise ValueError(
            f"shape mismatch: x has shape {arr.shape}, x_min {lo.shape}, x_max {hi.shape}; "
            "per-channel ranges are 1-D, one per element of x's last axis"
        )
    out = np.empty_like(arr)
    for c in range(lo.shape[0]):
        if lo[c] > hi[c]:
            raise ValueError(f"x_min[{c}]={lo[c]} > x_max[{c}]={hi[c]}; pass the bounds in order")
        if lo[c] == 0 and hi[c] == 0:
            out[..., c] = 0
            continue
        n = _checked_nudge(lo[c], hi[c], qmin, qmax, f"[{c}]")
        quant_zero = np.floor(-n.min * n.inv_scale + _F(0.5))
        shifted = np.maximum(np.minimum(arr[..., c], n.max), n.min) - n.min
        out[..., c] = np.floor(shifted * n.inv_scale - quant_zero + _F(0.5)) * n.scale
    return out


def _grid(num_bits: int, narrow_range: bool) -> tuple[int, int]:
    if isinstance(num_bits, bool) or not isinstance(num_bits, (int, np.integer)):
        raise TypeError(f"num_bits must be an int, got {num_bits!r}")
    if not 2 <= num_bits <= 16:
        raise ValueError(f"num_bits={num_bits} is outside [2, 16], the range TF supports")
    return (1 if narrow_range else 0), 2**num_bits - 1


def _range(x_min: Any, x_max: Any) -> tuple[np.float32, np.float32]:
    lo = _F(finite_scalar(x_min, "x_min"))
    hi = _F(finite_scalar(x_max, "x_max"))
    if lo > hi:
        raise ValueError(f"x_min={lo} > x_max={hi}; pass the bounds in order")
    return lo, hi


def _degenerate_message(lo: np.float32, hi: np.float32, scale: np.float32, where: str) -> str:
    """Why ``[lo, hi]`` has no usable step, and what to pass instead."""
    if lo == 0 and hi == 0:
        return (
            f"x_min{where}=0.0, x_max{where}=0.0 has no step to nudge: fake_quant maps this "
            "range to all zeros, as TensorFlow does; give nudge a range of nonzero width"
        )
    if lo == hi:
        why = "it has zero width: TensorFlow's kernel returns NaN for it"
    elif not np.isfinite(scale):
        why = "its width overflows float32: TensorFlow's kernel returns NaN for it"
    else:
        why = (
            f"its step (x_max - x_min) / (qmax - qmin) = {scale:.4g} is below float32's "
            f"smallest normal number {_TINY:.4g}: TensorFlow's kernel flushes it to zero "
            "and returns NaN or zeros, not a quantization"
        )
    return (
        f"x_min{where}={lo}, x_max{where}={hi} is a degenerate range ({why}); use a wider "
        "range (or both 0 for all zeros)"
    )
