"""The source article's quantization bugs, each caught by a property test built on the
reference and the strategies; the correct implementation passes the same test."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from pytest_quant import QuantParams, quantize
from pytest_quant.strategies import quantization_cases


def correct(x, scale, zero_point):
    return quantize(x, QuantParams(scale, zero_point, "int8"))


def cast_before_clip(x, scale, zero_point):
    # np.round(...).astype(int8) first, np.clip after: 200 wraps to -56.
    q = np.round(x / np.float32(scale)) + zero_point
    return np.clip(q.astype(np.int64).astype(np.int8), -128, 127)


def inverted_scale(x, scale, zero_point):
    # levels / range instead of range / levels (the article's "scale")
    q = np.round(x * np.float32(scale)) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def zero_point_sign(x, scale, zero_point):
    q = np.round(x / np.float32(scale)) - zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def _matches_reference(fn):
    @given(quantization_cases(dtype="int8", symmetric=False, per_channel=False))
    def check(case):
        x, qp = case
        got = np.asarray(fn(x, qp.scale, qp.zero_point))
        # Ties may round either way: only half-to-even vs half-away is forgiven.
        alt = quantize(x, qp, kernel="xnnpack")
        ok = (got == quantize(x, qp)) | (got == alt)
        assert ok.all(), f"mismatch at {np.argwhere(~ok)[:3].tolist()}"

    check()


def test_correct_quantizer_passes():
    _matches_reference(correct)


@pytest.mark.parametrize("bug", [cast_before_clip, inverted_scale, zero_point_sign])
def test_each_article_bug_is_caught(bug):
    with pytest.raises(AssertionError, match="mismatch at"):
        _matches_reference(bug)


def test_the_wrap_itself():
    qp = QuantParams(1.0, 0, "int8")
    assert cast_before_clip(np.array([200.0], np.float32), 1.0, 0).tolist() == [-56]
    assert quantize([200.0], qp).tolist() == [127]
