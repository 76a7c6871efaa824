from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from pytest_quant import (
    QuantParams,
    QuantWarning,
    _blocks,
    _settings,
    assert_accuracy_drop,
    assert_quant_close,
    assert_sqnr,
    assert_within_lsb,
    compare,
    dequantize,
    qparams_for,
    quantize,
)
from pytest_quant import assertions as assertions_mod

RNG = np.random.default_rng(5)
REF = RNG.normal(size=(64, 16)).astype(np.float32)
QP = qparams_for(REF)
GOOD = dequantize(quantize(REF, QP), QP)  # a faithful int8 round trip


def test_close_passes_on_a_faithful_round_trip():
    assert_quant_close(GOOD, REF)
    assert_quant_close(GOOD, REF, metric="max", tolerance=0.01)


def test_close_catches_an_inverted_scale_and_says_where():
    # the article's scale: levels / range x 0.1, the inverse of range / levels
    bad_qp = QuantParams(255 / float(REF.max() - REF.min()) * 0.1, 0)
    bad = dequantize(quantize(REF, bad_qp), bad_qp)
    with pytest.raises(AssertionError) as info:
        assert_quant_close(bad, REF, qparams=QP)
    msg = str(info.value)
    assert "rms error" in msg and "% of full scale, bound 2%" in msg
    assert "worst element at index (" in msg and "LSB)" in msg
    assert "histogram (|error| in LSB" in msg
    assert "bound from the default 0.02; change it with --quant-tolerance" in msg


def test_close_catches_one_saturated_outlier_only_with_max_metric():
    bad = GOOD.copy()
    bad[3, 7] += 0.3 * float(REF.max() - REF.min())  # one element off by 30% of full scale
    assert_quant_close(bad, REF)  # RMS (about 1% here) shrugs off one outlier, by design
    with pytest.raises(AssertionError, match=r"worst element at index \(3, 7\)"):
        assert_quant_close(bad, REF, metric="max", tolerance=0.05)


def test_close_never_passes_on_nan_and_rejects_misuse():
    bad = GOOD.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="actual has 1 non-finite"):
        assert_quant_close(bad, REF, tolerance=1e9)
    with pytest.raises(ValueError, match="shape mismatch"):
        assert_quant_close(GOOD[:2], REF)
    with pytest.raises(ValueError, match="metric='mean'"):
        assert_quant_close(GOOD, REF, metric="mean")
    with pytest.raises(ValueError, match=r"tolerance=-1\.0 must be >= 0"):
        assert_quant_close(GOOD, REF, tolerance=-1)


def test_within_lsb_budgets():
    expected = np.arange(-100, 100, dtype=np.int8)
    off_by_one = expected.copy()
    off_by_one[::50] += 1  # 4 of 200 elements, 2%
    assert_within_lsb(off_by_one, expected)  # default max_lsb 1
    assert_within_lsb(off_by_one, expected, max_mismatch=0.02)
    with pytest.raises(AssertionError, match=r"2% of elements differ, budget max_mismatch=1%"):
        assert_within_lsb(off_by_one, expected, max_mismatch=0.01)
    with pytest.raises(AssertionError, match=r"differ by up to 1 LSB, bound 0 LSB"):
        assert_within_lsb(off_by_one, expected, max_lsb=0)


def test_within_lsb_catches_wrap_around_with_real_units():
    expected = np.array([127, 0, -5], np.int8)
    wrapped = np.array([-56, 0, -5], np.int8)  # 200 cast to int8 before clipping
    with pytest.raises(AssertionError) as info:
        assert_within_lsb(wrapped, expected, qparams=QuantParams(0.5, 0))
    msg = str(info.value)
    assert "differ by up to 183 LSB, bound 1 LSB" in msg
    assert "index (0,): actual -56, expected 127 (-183 LSB = -91.5 in real units)" in msg
    assert "histogram (actual - expected in LSB): -183: 1  0: 2" in msg


INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]


@pytest.mark.parametrize("actual_dtype", INT_DTYPES)
@pytest.mark.parametrize("expected_dtype", INT_DTYPES)
def test_within_lsb_never_wraps_around_at_dtype_extremes(actual_dtype, expected_dtype):
    """int64 max vs int64 min differs by 2**64 - 1, uint64 2**63 vs 0 by 2**63: a
    difference taken in int64 wraps to -1 and 2**63 - 1 ... or to a pass."""
    a_info, e_info = np.iinfo(actual_dtype), np.iinfo(expected_dtype)
    for a_value in (int(a_info.min), int(a_info.max), int(a_info.max) // 2 + 1):
        for e_value in (int(e_info.min), int(e_info.max), int(e_info.max) // 2 + 1):
            a = np.array([a_value, 0], actual_dtype)
            e = np.array([e_value, 0], expected_dtype)
            exact = a_value - e_value
            if abs(exact) <= 1:
                assert_within_lsb(a, e)
                continue
            with pytest.raises(AssertionError) as info:
                assert_within_lsb(a, e)
            msg = str(info.value)
            assert f"differ by up to {abs(exact)} LSB, bound 1 LSB" in msg
            assert f"actual {a_value}, expected {e_value} ({exact:+d} LSB)" in msg
            hist = f"{exact}: 1  0: 1" if exact < 0 else f"0: 1  {exact}: 1"  # ascending
            assert f"histogram (actual - expected in LSB): {hist}" in msg


def test_within_lsb_exact_next_to_the_64_bit_extremes():
    top = np.array([2**64 - 1, 2**63], np.uint64)
    assert_within_lsb(top, top - np.uint64(1))  # both above 2**63: a difference of 1
    assert_within_lsb(np.array([2**63 - 1]), np.array([2**63 - 2]))
    assert_within_lsb(np.array([-(2**63)]), np.array([-(2**63) + 1]))
    with pytest.raises(AssertionError, match=r"differ by up to 9223372036854775808 LSB"):
        assert_within_lsb(np.array([2**63], np.uint64), np.array([0], np.uint64))
    with pytest.raises(AssertionError, match=r"differ by up to 18446744073709551615 LSB"):
        assert_within_lsb(np.array([2**63 - 1]), np.array([-(2**63)]))
    with pytest.raises(AssertionError, match=r"-1\.845e\+19 in real units"):
        assert_within_lsb(
            np.array([-(2**63)]), np.array([2**63 - 1]), qparams=QuantParams(1.0, 0, "int32")
        )


def test_within_lsb_misuse():
    with pytest.raises(TypeError, match="integer array"):
        assert_within_lsb(np.zeros(3), np.zeros(3, np.int8))
    with pytest.raises(ValueError, match="shape mismatch"):
        assert_within_lsb(np.zeros(3, np.int8), np.zeros(4, np.int8))
    with pytest.raises(ValueError, match=r"max_mismatch=2.0 must be a fraction"):
        assert_within_lsb(np.zeros(3, np.int8), np.zeros(3, np.int8), max_mismatch=2)


def test_sqnr():
    assert_sqnr(GOOD, REF, min_db=35.0)
    with pytest.raises(AssertionError, match=r"SQNR .* dB is below min_db=60 dB"):
        assert_sqnr(GOOD, REF, min_db=60.0)
    assert_sqnr(REF, REF, min_db=1e6)  # identical: inf dB


def _logits(pred, n_classes=10):
    out = np.zeros((len(pred), n_classes), np.float32)
    out[np.arange(len(pred)), pred] = 1.0
    return out


def test_accuracy_drop_gate():
    labels = np.arange(1000) % 10
    float_pred = labels.copy()
    float_pred[:50] = (labels[:50] + 1) % 10  # 95%
    quant_pred = float_pred.copy()
    quant_pred[50:60] = (labels[50:60] + 1) % 10  # 94%
    assert_accuracy_drop(_logits(quant_pred), _logits(float_pred), labels)  # 1 point <= 2
    with pytest.raises(AssertionError) as info:
        assert_accuracy_drop(quant_pred, float_pred, labels, max_drop=0.005)
    msg = str(info.value)
    assert "dropped by 1 points (float 95% -> quantized 94%), bound 0.5 points" in msg
    assert "95% confidence interval" in msg and "agree on 99%" in msg


def test_accuracy_drop_small_set_warns():
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    quant = labels.copy()
    float_ = labels.copy()
    float_[0] = 1  # float is worse: drop -10 points, passes, but n=10 resolves nothing
    with pytest.warns(QuantWarning, match="n=10 samples"):
        assert_accuracy_drop(quant, float_, labels, max_drop=0.02)


def test_accuracy_drop_over_the_bound_fails_even_with_a_wide_interval():
    # the case that contradicted the docstring: drop 2.5 points, interval [-0.74, 5.74]
    labels = np.arange(80) % 4
    float_pred, quant_pred = labels.copy(), labels.copy()
    quant_pred[:4] = (labels[:4] + 1) % 4  # float 100%, quantized 95%
    float_pred[4:6] = (labels[4:6] + 1) % 4  # float 97.5%: drop 2.5 points
    with pytest.raises(AssertionError, match=r"dropped by 2.5 points") as info:
        assert_accuracy_drop(quant_pred, float_pred, labels, max_drop=0.02)
    assert "95% confidence interval" in str(info.value)


def test_accuracy_drop_misuse():
    with pytest.raises(ValueError, match=r"integer class ids of shape \(n,\)"):
        assert_accuracy_drop(np.zeros(3), np.zeros(3), np.zeros(3, int))
    with pytest.raises(ValueError, match="shape mismatch"):
        assert_accuracy_drop(np.zeros(3, int), np.zeros(4, int), np.zeros(3, int))
    logits = _logits([0, 1, 2])
    logits[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        assert_accuracy_drop(logits, logits, np.array([0, 1, 2]))


def test_defaults_come_from_the_running_test():
    token = _settings.activate(_settings.QuantSettings(0.5, 7, "X", "Y"))
    try:
        bad = GOOD + 0.4 * float(REF.max() - REF.min())
        assert_quant_close(bad, REF)  # 40% < 50%
        assert_within_lsb(np.array([7], np.int8), np.array([0], np.int8))
        with pytest.raises(AssertionError, match="bound from Y"):
            assert_within_lsb(np.array([8], np.int8), np.array([0], np.int8))
    finally:
        _settings.deactivate(token)


def test_checks_record_their_figures():
    seen = []
    token = _settings.activate(_settings.QuantSettings(test_id="t", sink=seen.append))
    try:
        assert_quant_close(GOOD, REF)
        with pytest.raises(AssertionError):
            assert_sqnr(GOOD, REF, min_db=99)
    finally:
        _settings.deactivate(token)
    assert [(r["check"], r["metric"], r["passed"]) for r in seen] == [
        ("assert_quant_close", "rms_error", True),
        ("assert_sqnr", "sqnr_db", False),
    ]
    assert seen[0]["test_id"] == "t" and seen[0]["margin"] == pytest.approx(
        seen[0]["bound"] - seen[0]["value"]
    )
    # SQNR is an "at least" bound: its margin is value - bound
    assert seen[1]["margin"] == pytest.approx(seen[1]["value"] - 99) and seen[1]["margin"] < 0


# --- large arrays: block by block, on all cores --------------------------------------

BIG = 5 * (max(_blocks._PARALLEL_FROM, 4 * assertions_mod._INT_BLOCK) // 5 + 12_345)


def _recorded(check, *args, **kwargs):
    """The records ``check(*args, **kwargs)`` makes, and its failure message (or None)."""
    seen = []
    token = _settings.activate(_settings.QuantSettings(test_id="t", sink=seen.append))
    try:
        check(*args, **kwargs)
        message = None
    except AssertionError as exc:
        message = str(exc)
    finally:
        _settings.deactivate(token)
    return seen, message


@pytest.mark.parametrize(
    "actual_dtype, expected_dtype",
    [
        ("int8", "int8"),
        ("uint8", "int8"),
        ("int16", "uint16"),
        ("int32", "int8"),
        ("int64", "int64"),
    ],
)
def test_within_lsb_on_large_arrays_equals_the_whole_array_figures(actual_dtype, expected_dtype):
    rng = np.random.default_rng(7)
    expected = rng.integers(0, 100, BIG).astype(expected_dtype)
    steps = rng.choice([-2, -1, 0, 0, 0, 0, 0, 1, 3], BIG)
    actual = (expected.astype(np.int64) + steps).astype(actual_dtype)
    actual[BIG - 3] = 120  # the worst element, in the last block
    diff = actual.astype(np.int64) - expected.astype(np.int64)
    values, counts = np.unique(diff, return_counts=True)
    want_hist = {int(v): int(c) for v, c in zip(values, counts, strict=True)}
    seen, message = _recorded(assert_within_lsb, actual, expected, max_lsb=0, max_mismatch=0.5)
    assert seen[0]["value"] == float(np.abs(diff).max())
    assert seen[0]["detail"]["lsb_histogram"] == want_hist
    assert seen[1]["value"] == float(np.mean(diff != 0))
    worst = int(np.argmax(np.abs(diff)))
    assert (
        f"worst element at index ({worst},): actual {actual[worst]}, expected "
        f"{expected[worst]} ({diff[worst]:+d} LSB)"
    ) in message


def test_within_lsb_names_the_first_of_equal_worst_elements_across_blocks():
    expected = np.zeros((BIG // 5, 5), np.int8)
    actual = expected.copy()
    actual[-1, 4] = actual[3 * assertions_mod._INT_BLOCK // 5, 2] = -9
    actual[BIG // 10, 0] = 9  # an equal |difference| between them
    _, message = _recorded(assert_within_lsb, actual, expected)
    assert f"index ({3 * assertions_mod._INT_BLOCK // 5}, 2): actual -9, expected 0" in message


def test_within_lsb_exact_at_64_bit_extremes_in_a_late_block():
    expected = np.zeros(BIG, np.int64)
    actual = expected.copy()
    actual[-2], expected[-2] = 2**63 - 1, -(2**63)  # this block takes Python ints
    _, message = _recorded(assert_within_lsb, actual, expected)
    assert "differ by up to 18446744073709551615 LSB, bound 1 LSB" in message
    assert f"index ({BIG - 2},)" in message and f"0: {BIG - 1}" in message


def test_within_lsb_needs_no_full_size_temporaries(monkeypatch):
    """An int64 difference of int8 codes took 26 times their size; now a few blocks."""
    monkeypatch.setattr(_blocks, "_WORKERS", 2)  # the budget is per worker
    expected = np.random.default_rng(1).integers(-127, 127, 8 * 2**20, dtype=np.int8)
    actual = expected.copy()
    actual[::100] += 1
    tracemalloc.start()
    try:
        assert_within_lsb(actual, expected)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < expected.nbytes / 2, f"assert_within_lsb took {peak / expected.nbytes:.2f}x"


def test_close_failure_on_the_rms_metric_still_reports_p99_and_every_figure():
    r = np.random.default_rng(2).normal(size=BIG).astype(np.float32)
    a = r + np.float32(0.3)
    stats = compare(a, r)
    with pytest.raises(AssertionError) as info:
        assert_quant_close(a, r)
    msg = str(info.value)
    assert f"p99 {100 * stats.p99_abs_fs:.4g}% FS" in msg
    assert f"RMS {100 * stats.rmse_fs:.4g}% FS" in msg and f"n={BIG}" in msg


def test_sqnr_on_large_arrays_agrees_with_compare():
    r = np.random.default_rng(4).normal(size=BIG).astype(np.float32)
    a = (np.round(r * 40) / 40).astype(np.float32)
    db = compare(a, r).sqnr_db
    assert_sqnr(a, r, min_db=db - 1e-9)
    seen, message = _recorded(assert_sqnr, a, r, min_db=db + 0.01)
    assert seen[0]["value"] == db and message.startswith(f"SQNR {db:.4g} dB is below")


@pytest.mark.parametrize("side", ["actual", "reference"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_close_and_sqnr_never_pass_on_nan_in_a_late_block(side, bad):
    r = np.random.default_rng(6).normal(size=BIG).astype(np.float32)
    a = r.copy()
    (a if side == "actual" else r)[-1] = bad
    for check in (
        lambda: assert_quant_close(a, r, tolerance=1e9),
        lambda: assert_quant_close(a, r, tolerance=1e9, metric="max"),
        lambda: assert_quant_close(a, r, tolerance=1e9, metric="p99"),
        lambda: assert_sqnr(a, r, min_db=-1e9),
    ):
        with pytest.raises(ValueError, match=rf"{side} has 1 non-finite .* index \({BIG - 1},\)"):
            check()


@pytest.mark.parametrize("metric", ["rms", "max", "p99", "rel_l2"])
def test_close_records_compares_figure_exactly(metric):
    r = np.random.default_rng(8).normal(size=BIG).astype(np.float32)
    a = (np.round(r * 40) / 40).astype(np.float32)
    field = assertions_mod.METRICS[metric][0]
    seen, message = _recorded(assert_quant_close, a, r, metric=metric, tolerance=1.0)
    assert message is None and seen[0]["value"] == getattr(compare(a, r), field)


def test_close_with_per_channel_qparams_records_compares_histogram():
    r = np.random.default_rng(9).normal(size=(BIG // 4, 4)).astype(np.float32)
    a = (np.round(r * 40) / 40).astype(np.float32)
    qp = QuantParams(np.array([0.01, 0.02, 0.03, 0.04], np.float32), np.zeros(4, np.int64), axis=1)
    want = compare(a, r, qparams=qp).lsb_histogram()
    seen, message = _recorded(assert_quant_close, a, r, qparams=qp, tolerance=1.0)
    assert message is None and seen[0]["detail"]["lsb_histogram"] == want
    seen, message = _recorded(assert_quant_close, a, r, qparams=qp, tolerance=1e-6)
    assert seen[0]["detail"]["lsb_histogram"] == want and "histogram (|error| in LSB): " in message
    with pytest.raises(ValueError, match="tensor has 4 channels on axis 1"):
        assert_quant_close(a, r, qparams=QuantParams(np.ones(3), np.zeros(3, np.int64), axis=1))
