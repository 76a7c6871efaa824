from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pytest_quant import fake_quant, fake_quant_per_channel, nudge
from pytest_quant.strategies import FakeQuantCase, fake_quant_cases

F = np.float32


def _nonzero(case: FakeQuantCase) -> bool:
    return not (case.x_min == 0 and case.x_max == 0)


def test_float32_zero_point_trap():
    # In float32, zero_point_from_min for [-1, 1] is 127.49999: zp 127, not 128.
    n = nudge(-1.0, 1.0)
    assert n.zero_point == 127
    assert (n.min, n.max) == (F(-0.9960785), F(1.0039216))


def test_range_excluding_zero_is_shifted_not_widened():
    # [12, 123] becomes [0, 111]: the top maps to 111 and everything below 0 to 0.
    assert fake_quant([123.0, 500.0, 0.0, -5.0], 12.0, 123.0).tolist() == [111.0, 111.0, 0.0, 0.0]


def test_known_tie_case():
    # QUANT-FACTS: min=-0.3, max=0.7 (zp_from_min exactly 76.5): TF maps -0.3 to -0.29803923.
    assert fake_quant([-0.3], -0.3, 0.7)[0] == F(-0.29803923)


def test_all_zero_range_gives_zeros():
    assert fake_quant([1.5, -2.0], 0.0, 0.0).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    "args, match",
    [
        (([1.0], 0.5, 0.5), "degenerate range"),
        (([1.0], 1.0, -1.0), "x_min=1.0 > x_max=-1.0"),
        (([np.nan], -1.0, 1.0), "non-finite"),
        (([1.0], -np.inf, 1.0), "must be finite"),
        (([], -1.0, 1.0), "empty"),
    ],
)
def test_bad_input_is_a_clear_error(args, match):
    with pytest.raises(ValueError, match=match):
        fake_quant(*args)


@pytest.mark.parametrize(
    "lo, hi, match",
    [
        (0.0, 0.0, r"x_min=0.0, x_max=0.0 has no step to nudge: fake_quant maps this range "),
        (0.5, 0.5, r"x_max=0.5 is a degenerate range \(it has zero width: TensorFlow's "),
        (0.0, 1e-45, r"degenerate range \(its step .* = 0 is below float32's smallest normal"),
        (-1e-40, 1e-40, r"degenerate range \(its step .* = 7.847e-43 is below float32's"),
        (0.0, 2.9e-36, r"degenerate range \(its step .* = 1.137e-38 is below float32's"),
        (-3e38, 3e38, r"degenerate range \(its width overflows float32: TensorFlow's kernel"),
    ],
)
def test_nudge_of_a_degenerate_range_says_so(lo, hi, match):
    # (0, 0) and (0, 1e-45) used to fail inside the rounding ("cannot convert float NaN"),
    # and a subnormal step with a finite inverse, (0, 2.9e-36), quantized where TF gives NaN
    with pytest.raises(ValueError, match=match):
        nudge(lo, hi)
    if (lo, hi) != (0.0, 0.0):  # fake_quant's own special case: zeros, as TF
        with pytest.raises(ValueError, match=match):
            fake_quant([0.25], lo, hi)
        with pytest.raises(ValueError, match=match.replace("x_max=", r"x_max\[0\]=")):
            fake_quant_per_channel([[0.25]], [lo], [hi])


def test_nudge_of_the_narrowest_usable_range_is_finite():
    n = nudge(0.0, 3.1e-36)  # a step just above float32's smallest normal number
    assert n.scale >= np.finfo(F).tiny and np.isfinite(n.inv_scale) and n.zero_point == 0


def test_num_bits_validated():
    with pytest.raises(ValueError, match=r"num_bits=17 is outside \[2, 16\]"):
        fake_quant([0.0], -1, 1, num_bits=17)
    with pytest.raises(TypeError, match="num_bits"):
        fake_quant([0.0], -1, 1, num_bits=8.0)


@given(fake_quant_cases())
def test_idempotent(case):
    y = fake_quant(
        case.x, case.x_min, case.x_max, num_bits=case.num_bits, narrow_range=case.narrow_range
    )
    again = fake_quant(
        y, case.x_min, case.x_max, num_bits=case.num_bits, narrow_range=case.narrow_range
    )
    np.testing.assert_array_equal(again, y)


@given(fake_quant_cases().filter(_nonzero))
def test_outputs_on_grid_and_inside_nudged_range(case):
    n = nudge(case.x_min, case.x_max, num_bits=case.num_bits, narrow_range=case.narrow_range)
    y = fake_quant(
        case.x, case.x_min, case.x_max, num_bits=case.num_bits, narrow_range=case.narrow_range
    )
    k = y.astype(np.float64) / np.float64(n.scale)
    assert np.all(np.abs(k - np.rint(k)) <= 1e-3 + 1e-6 * np.abs(k))  # float32 product error
    assert np.all((y >= n.min - abs(n.min) * 1e-6) & (y <= n.max + abs(n.max) * 1e-6))
    assert np.all(np.diff(y[np.argsort(case.x, kind="stable")]) >= 0)  # monotonic


@given(fake_quant_cases().filter(_nonzero))
def test_per_channel_equals_per_tensor_up_to_division_vs_inverse(case):
    # TF's per-channel kernel multiplies by inv_scale where the per-tensor one divides,
    # so the two may differ by one step at ties; elsewhere they agree exactly.
    kw = {"num_bits": case.num_bits, "narrow_range": case.narrow_range}
    x = np.stack([case.x, case.x], axis=-1)
    pc = fake_quant_per_channel(x, [case.x_min, case.x_min], [case.x_max, case.x_max], **kw)
    pt = fake_quant(case.x, case.x_min, case.x_max, **kw)
    n = nudge(case.x_min, case.x_max, **kw)
    assert np.all(np.abs(pc[:, 0] - pt) <= n.scale + 4 * np.spacing(np.abs(pt)))
    np.testing.assert_array_equal(pc[:, 0], pc[:, 1])


# --- differential: TensorFlow's own kernel ---------------------------------------


@settings(max_examples=400)
@given(case=fake_quant_cases())
@example(case=FakeQuantCase(np.array([-0.3, 0.19803922, 0.7], F), -0.3, 0.7, 8, False))
@example(case=FakeQuantCase(np.array([-1.0, 1.0, 0.0, 0.5019608], F), -1.0, 1.0, 8, False))
@example(case=FakeQuantCase(np.array([123.0, 12.0, 1.0882353], F), 12.0, 123.0, 8, False))
@example(case=FakeQuantCase(np.array([0.7, -0.3], F), -0.3, 0.7, 8, True))
def test_fake_quant_bit_exact_with_tensorflow(tf, case):
    y = tf.quantization.fake_quant_with_min_max_vars(
        case.x, case.x_min, case.x_max, num_bits=case.num_bits, narrow_range=case.narrow_range
    ).numpy()
    ours = fake_quant(
        case.x, case.x_min, case.x_max, num_bits=case.num_bits, narrow_range=case.narrow_range
    )
    np.testing.assert_array_equal(ours.view(np.int32), y.view(np.int32))


@settings(max_examples=150)
@given(
    cases=st.lists(
        fake_quant_cases(num_bits=8, narrow_range=False).filter(_nonzero), min_size=1, max_size=4
    )
)
def test_fake_quant_per_channel_bit_exact_with_tensorflow(tf, cases):
    width = min(len(c.x) for c in cases)
    x = np.stack([c.x[:width] for c in cases], axis=-1)
    lo = np.array([c.x_min for c in cases], F)
    hi = np.array([c.x_max for c in cases], F)
    y = tf.quantization.fake_quant_with_min_max_vars_per_channel(x, lo, hi).numpy()
    np.testing.assert_array_equal(
        fake_quant_per_channel(x, lo, hi).view(np.int32), y.view(np.int32)
    )


def test_fake_quant_bulk_tie_sweep_bit_exact(tf):
    """Every tie and both float32 neighbours, over 200 seeded ranges and all bit widths."""
    rng = np.random.default_rng(2021)
    mismatches = total = 0
    for _ in range(200):
        lo = float(F(-rng.uniform(0, 10) * rng.choice([1, 1e-2, 1e2])))
        hi = float(F(rng.uniform(0.01, 10) * rng.choice([1, 1e-2, 1e2])))
        nb = int(rng.choice([2, 4, 7, 8, 16]))
        nr = bool(rng.integers(2))
        n = nudge(lo, hi, num_bits=nb, narrow_range=nr)
        k = np.arange(-1, min(2**nb, 4096) + 1)
        ties = ((k + 0.5) * np.float64(n.scale) + np.float64(n.min)).astype(F)
        x = np.concatenate([ties, np.nextafter(ties, F(np.inf)), np.nextafter(ties, F(-np.inf))])
        y = tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=nb, narrow_range=nr)
        ours = fake_quant(x, lo, hi, num_bits=nb, narrow_range=nr)
        mismatches += int(np.sum(ours.view(np.int32) != y.numpy().view(np.int32)))
        total += x.size
    assert total > 500_000
    assert mismatches == 0


def test_textbook_formula_is_not_bit_exact(tf):
    """The step-by-step formula (``... * scale + nudged_min``) differs from TF: proof that
    the bit-exact test above can fail, and why the reference does not use it."""
    n = nudge(-0.3, 0.7)
    x = np.linspace(-0.4, 0.8, 10_001).astype(F)
    clamped = np.clip(x, n.min, n.max)
    textbook = np.floor((clamped - n.min) / n.scale + F(0.5)) * n.scale + n.min
    y = tf.quantization.fake_quant_with_min_max_vars(x, -0.3, 0.7).numpy()
    assert np.mean(textbook != y) > 0.1
    assert np.array_equal(fake_quant(x, -0.3, 0.7), y)


def test_degenerate_range_really_is_nan_in_tensorflow(tf):
    # Our ValueError stands for this: TF silently returns NaN for min == max != 0.
    y = tf.quantization.fake_quant_with_min_max_vars(np.array([1.0], F), 0.5, 0.5).numpy()
    assert np.isnan(y).all()


@pytest.mark.parametrize("lo, hi", [(0.0, 1e-45), (-1e-40, 1e-40), (0.0, 2.9e-36), (-3e38, 3e38)])
def test_a_subnormal_or_overflowing_step_is_no_quantization_in_tensorflow(tf, lo, hi):
    """Our ValueError stands for this too: TF flushes the step to zero (or overflows), and
    returns NaN or zeros, even for the range's own ends."""
    x = np.array([lo, hi, (lo + hi) / 2], F)
    y = tf.quantization.fake_quant_with_min_max_vars(x, lo, hi).numpy()
    assert not np.any(np.isfinite(y) & (y != 0)), y


@pytest.mark.parametrize("lo, hi", [(0.0, 3.1e-36), (-1e38, 1e38)])
def test_ranges_next_to_the_limits_still_quantize_as_tensorflow_does(tf, lo, hi):
    # (not every input: TF also flushes subnormal intermediates, e.g. x - nudged_min)
    x = np.array([lo, hi, hi / 3, lo / 7, 1.0, -1.0, 0.0], F)
    y = tf.quantization.fake_quant_with_min_max_vars(x, lo, hi).numpy()
    np.testing.assert_array_equal(fake_quant(x, lo, hi), y)
