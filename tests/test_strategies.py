from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from pytest_quant import QuantParams, nudge
from pytest_quant import strategies as qs


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: qs.shapes(min_dims=3, max_dims=2), "max_dims=2"),
        (lambda: qs.weights(min_std=0), "min_std"),
        (lambda: qs.activations(kind="gelu"), "kind='gelu'"),
        (lambda: qs.qparams(dtype="int4"), "dtype='int4'"),
        (lambda: qs.qparams(dtype="uint8", symmetric=True), "signed dtype"),
        (lambda: qs.qparams(max_scale=-1.0), "max_scale"),
        (lambda: qs.ranges(max_magnitude=0), "max_magnitude"),
        (lambda: qs.ties(QuantParams([0.1], 0, "int8", 0)), "per-tensor"),
        (lambda: qs.fake_quant_ranges(num_bits=1), r"num_bits=1 must be an int in \[2, 16\]"),
        (lambda: qs.fake_quant_cases(num_bits=17), "num_bits=17"),
    ],
)
def test_arguments_validated_at_call_time(make, match):
    with pytest.raises(InvalidArgument, match=match):
        make()


@given(qs.qparams(per_channel=False).flatmap(lambda qp: st.tuples(st.just(qp), qs.ties(qp))))
def test_ties_are_exact_float32_ties(args):
    """Each value is an exact tie, or its code has none near it: neither float32
    neighbour is one (the old check, "at least half exact", failed on a one-value array
    whose code has no tie, as the docstring of ties() allows: scale 2.828, x 550.13)."""
    qp, x = args
    scale = np.float32(qp.scale)

    def is_tie(v):
        return (v / scale).astype(np.float64) % 1.0 == 0.5

    missed = x[~is_tie(x)]
    assert not is_tie(np.nextafter(missed, np.float32(np.inf))).any()
    assert not is_tie(np.nextafter(missed, np.float32(-np.inf))).any()


@given(qs.fake_quant_ranges())
def test_fake_quant_ranges_are_ordered(r):
    assert r[0] <= r[1]


def test_fake_quant_ranges_reach_zero_point_ties_and_excluded_zero():
    seen = {"tie": False, "excluding": False, "zero": False}

    @settings(max_examples=300, database=None)
    @given(qs.fake_quant_ranges())
    def collect(r):
        lo, hi = r
        if lo == hi == 0:
            seen["zero"] = True
            return
        if lo > 0 or hi < 0:
            seen["excluding"] = True
        scale = np.float32((np.float32(hi) - np.float32(lo)) / np.float32(255))
        zp = np.float32(0) - np.float32(lo) / scale
        if 0 < zp < 255 and abs(float(zp) % 1.0 - 0.5) < 1e-3:
            seen["tie"] = True

    collect()
    assert all(seen.values()), seen


@given(qs.qparams())
def test_qparams_cover_schemes(qp):
    assert qp.scale is not None
    if qp.symmetric:
        assert np.all(np.asarray(qp.zero_point) == 0)


@given(qs.quantization_cases())
def test_quantization_cases_fit_their_params(case):
    x, qp = case
    qp.check_channels(x.shape)
    assert x.dtype == np.float32 and np.isfinite(x).all()


@given(qs.activations(kind="relu"))
def test_relu_activations_nonnegative(a):
    assert a.dtype == np.float32 and (a >= 0).all()


@given(qs.fake_quant_cases())
def test_fake_quant_cases_hit_ties(case):
    if case.x_min == case.x_max:
        return
    n = nudge(case.x_min, case.x_max, num_bits=case.num_bits, narrow_range=case.narrow_range)
    rel = (case.x.astype(np.float64) - np.float64(n.min)) / np.float64(n.scale)
    # within 2% of a step of a tie: 16-bit steps near a large nudged min are only a few
    # float32 ulps wide, so the nearest float32 is as close as a tie can be placed
    assert np.any(np.abs(rel % 1.0 - 0.5) < 0.02)


def test_profile_is_derandomized_without_deadline():
    from hypothesis import settings as hs

    profile = hs.get_profile(qs.PROFILE)
    assert profile.derandomize and profile.deadline is None


@given(qs.qparams(symmetric=True))
def test_symmetric_request_is_honoured_for_every_drawn_dtype(qp):
    # uint8 cannot be symmetric, so symmetric=True never draws it
    assert qp.symmetric and qp.dtype != "uint8"
    assert np.all(np.asarray(qp.zero_point) == 0)
