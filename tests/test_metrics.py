from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pytest_quant import QuantParams, _blocks, compare, dequantize, quantize
from pytest_quant import metrics as metrics_mod
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


# --- large arrays: block by block, on all cores, with the same figures ------------------

# parallel, many blocks, a ragged last block
BIG = 5 * (max(_blocks._PARALLEL_FROM, 4 * metrics_mod._BLOCK) // 5 + 12_345)


def _whole_array(a, r, qp=None):
    """The figures as the whole-array numpy expressions give them (compare before it
    streamed): the exact ones must come out identical, the sums within rounding."""
    a64, r64 = np.asarray(a, np.float64), np.asarray(r, np.float64)
    err = a64 - r64
    abs_err = np.abs(err)
    flat = int(np.argmax(abs_err))
    out = {
        "max_abs": float(abs_err.max()),
        "p99_abs": float(np.percentile(abs_err, 99)),
        "worst_index": tuple(int(i) for i in np.unravel_index(flat, err.shape)),
        "full_scale": float(r64.max() - r64.min()) or float(np.abs(r64).max()) or 1.0,
        "mean_abs": float(abs_err.mean()),
        "mean_signed": float(err.mean()),
        "rmse": float(np.sqrt(np.mean(err * err))),
    }
    norms = float(np.linalg.norm(a64) * np.linalg.norm(r64))
    if norms:
        out["cosine"] = float(np.dot(a64.ravel(), r64.ravel())) / norms
    out["worst_actual"], out["worst_reference"] = a64[out["worst_index"]], r64[out["worst_index"]]
    if qp is not None:
        scale, _ = qp.broadcast(err.ndim)
        lsb = err / scale.astype(np.float64)
        steps, counts = np.unique(np.rint(np.abs(lsb)).astype(np.int64), return_counts=True)
        out["max_lsb"] = float(np.abs(lsb).max())
        out["lsb_histogram"] = {int(s): int(c) for s, c in zip(steps, counts, strict=True)}
        out["rmse_lsb"] = float(np.sqrt(np.mean(lsb * lsb)))
        out["over_one"] = float(np.mean(np.abs(lsb) > 1))
    return out


EXACT = ["max_abs", "p99_abs", "worst_index", "worst_actual", "worst_reference", "full_scale"]
SUMS = ["mean_abs", "mean_signed", "rmse", "cosine"]


def _assert_same_figures(s, want):
    for name in EXACT + (["max_lsb"] if "max_lsb" in want else []):
        assert getattr(s, name) == want[name], name
    for name in [n for n in [*SUMS, "rmse_lsb"] if n in want]:
        assert getattr(s, name) == pytest.approx(want[name], rel=1e-12, abs=1e-300), name
    if "lsb_histogram" in want:
        assert s.lsb_histogram() == want["lsb_histogram"]
        assert s.fraction_over_lsb(1) == want["over_one"]


def _round_trip(shape, seed=0, dtype=np.float32):
    r = np.random.default_rng(seed).normal(size=shape).astype(dtype)
    return (np.round(r * 40) / 40).astype(dtype), r


@pytest.mark.parametrize("n", [1, 2, 3, 101, metrics_mod._BLOCK - 1, metrics_mod._BLOCK + 1, BIG])
def test_streamed_figures_equal_the_whole_array_ones(n):
    a, r = _round_trip(n)
    _assert_same_figures(compare(a, r), _whole_array(a, r))
    qp = QuantParams(1 / 40, 0)
    _assert_same_figures(compare(a, r, qparams=qp), _whole_array(a, r, qp))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_streamed_per_channel_lsb_figures_equal_the_whole_array_ones(axis):
    a, r = _round_trip((7, BIG // 7 // 5, 5), seed=axis)
    channels = a.shape[axis]
    scale = np.random.default_rng(9).uniform(0.01, 0.05, channels).astype(np.float32)
    qp = QuantParams(scale, np.zeros(channels, np.int64), axis=axis)
    _assert_same_figures(compare(a, r, qparams=qp), _whole_array(a, r, qp))


@given(
    st.integers(1, 3000).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.float32, n, elements=st.floats(-4, 4, width=32)),
            hnp.arrays(np.float32, n, elements=st.floats(-4, 4, width=32)),
        )
    )
)
def test_streamed_figures_equal_the_whole_array_ones_on_any_values(pair):
    a, r = pair
    s = compare(a, r)
    want = _whole_array(a, r)
    for name in EXACT:
        assert getattr(s, name) == want[name], name


@pytest.mark.parametrize(
    "errors",
    [
        pytest.param(lambda n: np.linspace(1.0, 0.0, n), id="largest-first"),
        pytest.param(lambda n: np.where(np.arange(n) < 70_000, 1.0, 1e-3), id="big-head"),
        pytest.param(lambda n: np.full(n, 0.25), id="all-tied"),
        pytest.param(lambda n: np.linspace(0.0, 1.0, n), id="largest-last"),
        pytest.param(lambda n: np.arange(n) % 3 * 0.5, id="three-values"),
    ],
)
def test_p99_is_numpys_exactly_whatever_the_order(errors):
    """The first block sets a provisional floor for the largest 1%: errors larger at the
    start than later fool it, and the fallback must still give numpy's value."""
    err = errors(BIG)
    r = np.random.default_rng(3).normal(size=BIG)
    s = compare(r + err, r)
    assert s.p99_abs == float(np.percentile(np.abs((r + err) - r), 99))


def test_the_same_figures_on_one_core_and_on_many(monkeypatch):
    a, r = _round_trip(BIG)
    qp = QuantParams(1 / 40, 0)
    monkeypatch.setattr(_blocks, "_WORKERS", 1)
    one = compare(a, r, qparams=qp)
    monkeypatch.setattr(_blocks, "_WORKERS", 3)
    three = compare(a, r, qparams=qp)
    assert one == three  # every field, bit for bit: blocks, not workers, are summed
    assert one.lsb_histogram() == three.lsb_histogram()


def test_without_numpy_vecdot_the_sums_agree(monkeypatch):
    a, r = _round_trip(metrics_mod._BLOCK + 5)
    fast = compare(a, r)
    monkeypatch.setattr(metrics_mod, "_vecdot", None)  # numpy < 2
    slow = compare(a, r)
    assert slow.rmse == pytest.approx(fast.rmse, rel=1e-13)
    assert slow.cosine == pytest.approx(fast.cosine, rel=1e-13)


def test_views_integers_and_float64_inputs():
    a, r = _round_trip((BIG // 5, 5))
    _assert_same_figures(compare(a.T, r.T), _whole_array(a.T, r.T))  # a strided view
    ints = np.arange(-600, 600).reshape(40, 30)
    _assert_same_figures(compare(ints[::-1], ints), _whole_array(ints[::-1], ints))
    a64, r64 = a.astype(np.float64), r.astype(np.float64)
    _assert_same_figures(compare(a64, r64), _whole_array(a64, r64))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("side", ["actual", "reference"])
def test_non_finite_in_a_late_block_is_named_with_its_index(bad, side):
    a, r = _round_trip((BIG // 5, 5))
    (a if side == "actual" else r)[-1, 3] = bad
    with pytest.raises(ValueError, match=rf"{side} has 1 non-finite value\(s\) \(first: {bad} "):
        compare(a, r)
    with pytest.raises(ValueError, match=rf"at index \({BIG // 5 - 1}, 3\)"):
        compare(a, r, qparams=QuantParams(0.1, 0))


def test_non_finite_on_both_sides_names_actual_first():
    a, r = _round_trip(BIG)
    a[-5], r[7] = np.nan, np.inf
    with pytest.raises(ValueError, match=rf"actual has 1 non-finite .* at index \({BIG - 5},\)"):
        compare(a, r)


def test_huge_finite_values_are_not_taken_for_infinities():
    # their squares overflow float64: the sums say inf, but nothing is NaN or Inf
    s = compare([1e200, 0.0], [-1e200, 0.0])
    assert s.max_abs == 2e200 and s.rmse == math.inf


def test_compare_needs_no_full_size_temporaries(monkeypatch):
    """100M float32 elements used to take 10 times their size in temporaries (4.7 GB in
    all): now a few blocks per worker (8 MiB each with qparams), whatever the size."""
    monkeypatch.setattr(_blocks, "_WORKERS", 2)  # the budget is per worker: fix their number
    a, r = _round_trip(2**24)  # 64 MiB each
    qp = QuantParams(1 / 40, 0)
    tracemalloc.start()
    try:
        compare(a, r, qparams=qp).lsb_histogram()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < a.nbytes / 2, f"compare took {peak / a.nbytes:.2f}x its input"


@pytest.mark.parametrize(
    "pair",
    [
        pytest.param(lambda: _round_trip(BIG), id="big"),
        pytest.param(lambda: _round_trip((3, 4), seed=2), id="small"),
        pytest.param(lambda: (np.arange(50)[::-1], np.arange(50)), id="ints"),
        pytest.param(lambda: ([0.5, -0.5], [0.0, 0.0]), id="zero-reference"),
        pytest.param(lambda: ([1.0, 2.0], [1.0, 2.0]), id="identical"),
        pytest.param(lambda: ([2.5, 2.0], [2.0, 2.0]), id="constant-reference"),
    ],
)
def test_the_lean_figure_a_check_decides_on_is_compares_exactly(pair):
    a, r = pair()
    stats = compare(a, r)
    for name in metrics_mod._LEAN_FIGURES:
        assert metrics_mod._figure(a, r, name) == (getattr(stats, name), None), name
    qp = QuantParams(1 / 40, 0)
    value, hist = metrics_mod._figure(a, r, "rmse_fs", qp)
    assert (value, hist) == (stats.rmse_fs, compare(a, r, qparams=qp).lsb_histogram())


def _wide_exponents():
    """float32 pairs whose differences float32 cannot hold exactly (magnitudes 1e-9 to 10):
    the float32 screen of the lean p99 rounds them, float64 does not."""
    rng = np.random.default_rng(12)
    r = (10.0 ** rng.uniform(-9, 1, BIG) * rng.choice([-1, 1], BIG)).astype(np.float32)
    a = (r + 10.0 ** rng.uniform(-9, 1, BIG)).astype(np.float32)
    return a, r


def _mixed():
    a, r = _round_trip(BIG)
    return a, r.astype(np.float64)


def _big_head(dtype):
    """Errors 100 times larger in the first 70,000 elements: the first block's floor guess
    for the largest 1% fails, and the fallback collects again."""
    r = np.random.default_rng(5).normal(size=BIG).astype(dtype)
    err = np.where(np.arange(BIG) < 70_000, 0.1, 1e-3) * np.random.default_rng(6).random(BIG)
    return (r + err).astype(dtype), r


@pytest.mark.parametrize(
    "pair",
    [
        pytest.param(lambda: _round_trip(BIG, dtype=np.float64), id="big-float64"),
        pytest.param(lambda: _round_trip((BIG // 5, 5), dtype=np.float16), id="big-float16"),
        pytest.param(lambda: _big_head(np.float32), id="big-head-float32"),
        pytest.param(_wide_exponents, id="wide-exponents"),
        pytest.param(lambda: _big_head(np.float64), id="big-head-float64"),
        pytest.param(_mixed, id="float32-vs-float64"),
        pytest.param(lambda: _round_trip(metrics_mod._BLOCK + 1, seed=4), id="two-blocks"),
        pytest.param(lambda: ([3.0], [1.0]), id="one"),
    ],
)
def test_the_lean_p99_is_compares_exactly(pair):
    a, r = pair()
    assert metrics_mod._figure(a, r, "p99_abs_fs") == (compare(a, r).p99_abs_fs, None)
    qp = QuantParams(1 / 40, 0)
    want = compare(a, r, qparams=qp)
    assert metrics_mod._figure(a, r, "p99_abs_fs", qp) == (want.p99_abs_fs, want.lsb_histogram())


@pytest.mark.parametrize("name", ["p99_abs_fs", "rmse_fs"])
def test_the_lean_figures_with_per_channel_steps_are_compares_exactly(name):
    a, r = _round_trip((7, BIG // 7 // 5, 5), seed=7)
    scale = np.random.default_rng(9).uniform(0.01, 0.05, 5).astype(np.float32)
    qp = QuantParams(scale, np.zeros(5, np.int64), axis=2)
    want = compare(a, r, qparams=qp)
    assert metrics_mod._figure(a, r, name, qp) == (getattr(want, name), want.lsb_histogram())


@pytest.mark.parametrize("scale", [0.1, 1 / 3, 1 / 127, 3e-5, 1.4e-45, 2.0**-10, 1000.0])
@pytest.mark.parametrize("steps", [7.4, 12.0])  # counted by comparisons / binned
def test_errors_on_the_edge_of_a_step_count_as_dividing_them_does(scale, steps):
    """Errors of one step for all are counted against bounds, not divided: the float just
    below, at and just above each ``k - 0.5`` steps must land where ``rint(e / s)`` puts it."""
    s = float(np.float32(scale))  # a scale as QuantParams keeps it
    edges = [(k - 0.5) * s for k in range(1, 14)]
    near = [np.nextafter(e, d) for e in edges for d in (-np.inf, np.inf)]
    nearby = [np.nextafter(e, d) for e in near for d in (-np.inf, np.inf)]
    err = np.array([0.0, *edges, *near, *nearby, *(np.arange(0, 14, 0.25) * s)])
    err = err[err <= steps * s]
    err = np.concatenate([err, -err])
    qp = QuantParams(s, 0)
    want_keys, want_counts = np.unique(np.rint(np.abs(err) / s), return_counts=True)
    want = {int(k): int(c) for k, c in zip(want_keys, want_counts, strict=True)}
    reference = np.zeros_like(err)
    stats = compare(err, reference, qparams=qp)
    assert stats.lsb_histogram() == want
    assert stats.max_lsb == float(np.max(np.abs(err) / s))
    assert metrics_mod._figure(err, reference, "rmse_fs", qp)[1] == want
    assert metrics_mod._figure(err, reference, "p99_abs_fs", qp)[1] == want
    per_channel = QuantParams(np.full(2, s, np.float32), np.zeros(2, np.int64), axis=1)
    pairs = np.stack([err, err], axis=1), np.zeros((err.size, 2))
    twice = {k: 2 * c for k, c in want.items()}
    assert compare(*pairs, qparams=per_channel).lsb_histogram() == twice
    assert metrics_mod._figure(*pairs, "rmse_fs", per_channel)[1] == twice


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(lambda rng: rng.random(2_000_000), id="random"),
        pytest.param(lambda rng: np.round(rng.random(300_000) * 10), id="ties"),
        pytest.param(lambda rng: np.sort(rng.random(300_000)), id="sorted"),
        pytest.param(lambda rng: np.tile(np.arange(16.0), 20_000), id="period-of-the-sample"),
        pytest.param(lambda rng: rng.random(1000), id="few"),
    ],
)
@pytest.mark.parametrize("share", [0.5, 0.01, 1e-5])
def test_the_two_order_statistics_are_partitions(values, share):
    x = values(np.random.default_rng(11))
    m = max(2, int(x.size * share))
    part = np.partition(x, [x.size - m, x.size - m + 1])
    want = (part[x.size - m], part[x.size - m + 1])
    assert metrics_mod._largest_two([x], m) == want
    assert metrics_mod._largest_two([x[: x.size // 3], x[x.size // 3 :]], m) == want


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_lean_p99_falls_back_when_the_first_blocks_floor_fails(monkeypatch, dtype):
    a, r = _big_head(dtype)
    fallbacks = []
    full_pass = metrics_mod._largest_errors
    monkeypatch.setattr(
        metrics_mod, "_largest_errors", lambda *args: fallbacks.append(1) or full_pass(*args)
    )
    value, _ = metrics_mod._figure(a, r, "p99_abs_fs")
    assert fallbacks and value == compare(a, r).p99_abs_fs
    a64, r64 = np.asarray(a, np.float64), np.asarray(r, np.float64)
    assert compare(a, r).p99_abs == float(np.percentile(np.abs(a64 - r64), 99))
