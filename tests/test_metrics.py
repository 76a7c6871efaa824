from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given

from pytest_quant import QuantParams, compare, dequantize, quantize
from pytest_quant.strategies import weights


def test_figures_on_a_known_case():
    s = compare([0.0, 0.5, 1.02, 1.0], [0.0, 0.5, 1.0, 1.0])
    assert s.n == 4 and s.worst_index == (2,)
    assert s.max_abs == pytest.approx(0.02) and s.mean_abs == pytest.approx(0.005)
    assert s.mean_signed == pytest.approx(0.005) and s.rmse == pytest.approx(0.01)
    assert s.full_scale == 1.0 and s.max_abs_fs == pytest.approx(0.02)
    assert s.sqnr_db == pytest.approx(20 * math.log10(math.sqrt(2.25) / 0.02))
    assert (s.worst_actual, s.worst_reference) == (pytest.approx(1.02), 1.0)


def test_identical_zero_and_constant_references():
    same = compare([1.0, 2.0], [1.0, 2.0])
    assert same.sqnr_db == math.inf and same.max_abs == 0 and same.cosine == pytest.approx(1.0)
    zero_ref = compare([0.1, 0.0], [0.0, 0.0])
    assert zero_ref.sqnr_db == -math.inf and zero_ref.full_scale == 1.0 and zero_ref.cosine == 0.0
    const = compare([2.1, 2.0], [2.0, 2.0])
    assert const.full_scale == 2.0 and const.max_abs_fs == pytest.approx(0.05)
    assert compare([0.0], [0.0]).cosine == 1.0


def test_lsb_figures_and_histogram():
    qp = QuantParams(0.1, 0)
    s = compare([0.0, 0.1, 0.5, 0.0], [0.0, 0.0, 0.2, 0.0], qparams=qp)
    assert s.max_lsb == pytest.approx(3.0) and s.lsb_histogram() == {0: 2, 1: 1, 3: 1}
    assert s.fraction_over_lsb(1) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="need qparams"):
        compare([1.0], [1.0]).lsb_histogram()


@given(weights(shape=(64,)))
def test_quantization_error_is_about_a_third_of_a_step(w):
    qp = QuantParams(float(np.float32(np.abs(w).max() / 127 or 1.0)), 0, symmetric=True)
    s = compare(dequantize(quantize(w, qp), qp), w, qparams=qp)
    assert s.max_lsb <= 0.5 + 1e-3
    assert s.rmse_lsb <= 0.5


@pytest.mark.parametrize(
    "actual, reference, match",
    [
        ([np.nan, 1.0], [0.0, 1.0], "actual has 1 non-finite"),
        ([0.0, 1.0], [0.0, np.inf], "reference has 1 non-finite"),
        ([0.0, 1.0], [0.0, 1.0, 2.0], "shape mismatch"),
        ([], [], "empty"),
    ],
)
def test_bad_input_never_passes(actual, reference, match):
    with pytest.raises(ValueError, match=match):
        compare(actual, reference)


def test_non_numeric_is_type_error():
    with pytest.raises(TypeError, match="real numbers"):
        compare(["a"], ["b"])
