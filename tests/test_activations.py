from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_quant.activations import (
    affine_sigmoid,
    affine_sigmoid_bounds,
    hard_sigmoid,
    hard_swish,
    piecewise_linear_fit,
    relu6,
)

F = np.float32
finite = st.floats(-1e3, 1e3, allow_nan=False)


def _dense() -> np.ndarray:
    x = np.linspace(-8, 8, 40_001).astype(F)
    return np.concatenate([x, F([-3, 3, -3.0000002, 2.9999998, 0, -0.0])])


def test_hard_sigmoid_and_swish_bit_exact_with_keras(tf):
    keras = pytest.importorskip("keras", reason="Keras is not installed")
    x = _dense()
    np.testing.assert_array_equal(hard_sigmoid(x), keras.activations.hard_sigmoid(x).numpy())
    np.testing.assert_array_equal(hard_swish(x), keras.activations.hard_swish(x).numpy())
    np.testing.assert_array_equal(relu6(x), tf.nn.relu6(x).numpy())


def test_keras2_hard_sigmoid_is_a_different_function():
    # 0.2x + 0.5 (Keras 2) vs x/6 + 0.5 (Keras 3): a model ported between them changes.
    assert hard_sigmoid([1.0])[0] == F(4 / 6) and hard_sigmoid([1.0])[0] != F(0.7)


@given(finite, finite, st.floats(-100, 100), st.floats(-100, 100))
def test_affine_sigmoid_stays_in_its_bounds(x, alpha, beta, gamma):
    lo, hi = affine_sigmoid_bounds(alpha=alpha, beta=beta, gamma=gamma)
    y = affine_sigmoid([x], alpha=alpha, beta=beta, gamma=gamma)[0]
    tol = 1e-9 * (abs(alpha) + abs(beta) + abs(gamma) + 1)
    assert lo - tol <= y <= hi + tol


def test_affine_sigmoid_bounds_are_finite_not_unbounded():
    assert affine_sigmoid_bounds(alpha=1.0, beta=2.0, gamma=0.5) == (0.5, 2.5)
    assert affine_sigmoid_bounds(alpha=0.0, beta=-1.0, gamma=0.0) == (-1.0, 0.0)
    far = affine_sigmoid([-1e3, 1e3], alpha=1.0, beta=2.0, gamma=0.5)
    assert far.tolist() == [0.5, 2.5]


def test_affine_sigmoid_parameters_are_required():
    with pytest.raises(TypeError, match="alpha"):
        affine_sigmoid([0.0], beta=1.0, gamma=0.0)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="gamma must be finite"):
        affine_sigmoid_bounds(alpha=1.0, beta=1.0, gamma=float("nan"))


@given(
    st.sampled_from([np.tanh, np.sin, np.exp, lambda v: 1 / (1 + np.exp(-v)), lambda v: v**3]),
    st.floats(-4, 0),
    st.floats(0.1, 4),
    st.integers(1, 64),
    st.lists(st.floats(0, 1), min_size=1, max_size=20),
)
def test_piecewise_fit_meets_its_reported_bound(fn, lo, width, segments, ts):
    hi = lo + width
    fit = piecewise_linear_fit(fn, lo, hi, segments)
    x = lo + np.array(ts) * width
    err = np.abs(fit(x) - fn(x))
    assert np.all(err <= fit.max_error * (1 + 1e-6) + 1e-12)
    assert abs(fit(np.array([fit.worst_x]))[0] - fn(np.array([fit.worst_x]))) == pytest.approx(
        fit.max_error, rel=1e-9, abs=1e-15
    )


def test_piecewise_fit_of_a_line_is_exact_and_error_shrinks_quadratically():
    assert piecewise_linear_fit(lambda v: 3 * v - 1, -2, 5, 3).max_error < 1e-12
    e8 = piecewise_linear_fit(np.tanh, -4, 4, 8).max_error
    e16 = piecewise_linear_fit(np.tanh, -4, 4, 16).max_error
    assert 3.0 < e8 / e16 < 5.0


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.tanh, 1.0, 1.0, 4), "lo=1.0 must be < hi=1.0"),
        ((np.tanh, 0.0, 1.0, 0), "segments=0"),
        ((lambda v: np.where(v > 0, 1.0, np.nan), -1.0, 1.0, 4), "NaN/Inf"),
        ((lambda v: 1.0, 0.0, 1.0, 2), "vectorized"),
    ],
)
def test_piecewise_fit_validates(args, match):
    with pytest.raises(ValueError, match=match):
        piecewise_linear_fit(*args)
