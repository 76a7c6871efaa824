"""Linearized (piecewise-linear) activations, and fits that state their own error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._checks import as_float_array, finite_scalar

_F = np.float32


def relu6(x: Any) -> np.ndarray:
    """``min(max(x, 0), 6)`` in float32, as ``tf.nn.relu6`` and TFLite RELU6.

    Example::

        >>> relu6([-1.0, 3.0, 7.0]).tolist()
        [0.0, 3.0, 6.0]
    """
    arr = as_float_array(x, "x").astype(_F)
    return np.minimum(np.maximum(arr, _F(0)), _F(6))


def hard_sigmoid(x: Any) -> np.ndarray:
    """Keras 3's ``hard_sigmoid``: ``relu6(x + 3) / 6`` in float32, bit-exact.

    (Keras 2 used ``clip(0.2 x + 0.5, 0, 1)``: a different function.)

    Example::

        >>> hard_sigmoid([-4.0, 0.0, 1.5]).tolist()
        [0.0, 0.5, 0.75]
    """
    arr = as_float_array(x, "x").astype(_F)
    return relu6(arr + _F(3)) / _F(6)


def hard_swish(x: Any) -> np.ndarray:
    """Keras 3's ``hard_silu`` / ``hard_swish``: ``x * hard_sigmoid(x)``, bit-exact.

    TFLite's float HARD_SWISH kernel computes ``x * relu6(x + 3) / 6`` in that order,
    which can differ from this in the last bit.

    Example::

        >>> hard_swish([-4.0, 1.5, 4.0]).tolist()
        [-0.0, 1.125, 4.0]
    """
    arr = as_float_array(x, "x").astype(_F)
    return arr * hard_sigmoid(arr)


def affine_sigmoid(x: Any, *, alpha: float, beta: float, gamma: float) -> np.ndarray:
    """``alpha + beta * sigmoid(x) - gamma``; all three parameters are required.

    Its output lies in :func:`affine_sigmoid_bounds`, a bounded interval: not the
    unbounded range the source article claims.

    Example::

        >>> affine_sigmoid([0.0], alpha=1.0, beta=2.0, gamma=0.5).tolist()
        [1.5]
    """
    a, b, g = (finite_scalar(v, n) for v, n in ((alpha, "alpha"), (beta, "beta"), (gamma, "gamma")))
    arr = as_float_array(x, "x").astype(np.float64)
    sig = 0.5 * (1.0 + np.tanh(0.5 * arr))  # overflow-free logistic
    return a + b * sig - g


def affine_sigmoid_bounds(*, alpha: float, beta: float, gamma: float) -> tuple[float, float]:
    """The closed hull of ``affine_sigmoid``'s outputs: ``[alpha - gamma, alpha + beta - gamma]``.

    For ``beta < 0`` the ends swap; ``beta == 0`` gives the single point ``alpha - gamma``.
    The ends are reached only in the limit (and in float arithmetic, at large ``|x|``).

    Example::

        >>> affine_sigmoid_bounds(alpha=1.0, beta=2.0, gamma=0.5)
        (0.5, 2.5)
    """
    a, b, g = (finite_scalar(v, n) for v, n in ((alpha, "alpha"), (beta, "beta"), (gamma, "gamma")))
    lo, hi = a - g, a + b - g
    return (lo, hi) if lo <= hi else (hi, lo)


@dataclass(frozen=True)
class PiecewiseLinear:
    """A continuous piecewise-linear function through ``(knots, values)``.

    ``max_error`` is the largest ``|f(x) - self(x)|`` found on ``[knots[0], knots[-1]]``
    by dense sampling (256 points a segment) refined by a golden-section search around
    each segment's worst sample: for smooth ``f`` it is the true maximum to within
    about 1e-9 relative.
    """

    knots: np.ndarray
    values: np.ndarray
    max_error: float
    worst_x: float

    def __call__(self, x: Any) -> np.ndarray:
        """Evaluate; outside the knots the end segments are extended linearly."""
        arr = as_float_array(x, "x").astype(np.float64)
        k, v = self.knots, self.values
        i = np.clip(np.searchsorted(k, arr, side="right") - 1, 0, len(k) - 2)
        t = (arr - k[i]) / (k[i + 1] - k[i])
        return v[i] + t * (v[i + 1] - v[i])


def piecewise_linear_fit(
    fn: Callable[[np.ndarray], Any], lo: float, hi: float, segments: int
) -> PiecewiseLinear:
    """Interpolate ``fn`` on ``[lo, hi]`` with ``segments`` equal linear pieces.

    ``fn`` takes and returns float64 arrays (vectorized). The result reports its own
    ``max_error`` so a test can assert an approximation bound.

    Example::

        >>> fit = piecewise_linear_fit(np.tanh, -4.0, 4.0, 16)
        >>> round(fit.max_error, 4)
        0.0233
    """
    a, b = finite_scalar(lo, "lo"), finite_scalar(hi, "hi")
    if not a < b:
        raise ValueError(f"lo={a} must be < hi={b}")
    if not isinstance(segments, int) or segments < 1:
        raise ValueError(f"segments={segments!r} must be an int >= 1")
    knots = np.linspace(a, b, segments + 1)
    values = _call(fn, knots)
    partial = PiecewiseLinear(knots, values, 0.0, a)

    def err(x: np.ndarray) -> np.ndarray:
        return np.abs(_call(fn, x) - partial(x))

    grid = np.linspace(a, b, segments * 256 + 1)
    e = err(grid)
    worst, worst_x = float(e.max()), float(grid[int(np.argmax(e))])
    per_seg = e[:-1].reshape(segments, 256)
    for s in range(segments):
        j = s * 256 + int(np.argmax(per_seg[s]))
        x_best, e_best = _refine(err, grid[max(j - 1, 0)], grid[min(j + 1, len(grid) - 1)])
        if e_best > worst:
            worst, worst_x = e_best, x_best
    return PiecewiseLinear(knots, values, worst, worst_x)


def _call(fn: Callable[[np.ndarray], Any], x: np.ndarray) -> np.ndarray:
    out = np.asarray(fn(x), dtype=np.float64)
    if out.shape != x.shape:
        raise ValueError(f"fn must be vectorized: returned shape {out.shape} for {x.shape}")
    if not np.all(np.isfinite(out)):
        raise ValueError("fn returned NaN/Inf on [lo, hi]; fit a function finite there")
    return out


def _refine(err: Callable[[np.ndarray], np.ndarray], a: float, b: float) -> tuple[float, float]:
    """Golden-section search for the largest error in [a, b]."""
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(60):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        ec, ed = err(np.array([c, d]))
        if ec > ed:
            b = d
        else:
            a = c
    x = 0.5 * (a + b)
    return float(x), float(err(np.array([x]))[0])
