"""``assert_quantizer_conforms``: property-test a user's quantizer against the reference.

The check draws inputs with this package's strategies (rounding ties, clipping edges,
ranges that exclude 0, float32 zero-point traps), calls the user's function, and
compares with the reference. The first broken property is shrunk by hypothesis to a
minimal input and reported with it. A function that raises, returns NaN, the wrong
dtype or shape, or wraps around is a reported failure, never a crash of the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from . import strategies as qs
from ._checks import first_index
from ._dtypes import INT_RANGES
from .affine import dequantize, quantize
from .assertions import record
from .fakequant import fake_quant, nudge
from .qparams import QuantParams, choose_qparams, qparams_for

KINDS = ("quantize", "dequantize", "qparams", "fake_quant", "tensor")
ROUNDINGS = (None, "half_away_from_zero", "half_to_even")
_F = np.float32


@dataclass
class Broken(Exception):
    """One broken property, with the input that broke it."""

    prop: str
    detail: str
    inputs: dict[str, Any]


def _show(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return np.array2string(value, threshold=16, max_line_width=100, precision=8) + (
            f" (dtype {value.dtype})"
        )
    return repr(value)


def _params(qp: QuantParams) -> tuple[Any, Any]:
    if qp.is_per_channel:
        return qp.scale.copy(), qp.zero_point.copy()
    return qp.scale, qp.zero_point


def _call(fn: Callable[..., Any], inputs: dict[str, Any]) -> Any:
    try:
        return fn(*(v.copy() if isinstance(v, np.ndarray) else v for v in inputs.values()))
    except Exception as exc:  # the user's bug, reported with its input
        raise Broken("does not raise", f"raised {type(exc).__name__}: {exc}", inputs) from None


def _array(result: Any, inputs: dict[str, Any], what: str) -> np.ndarray:
    try:
        return np.asarray(result)
    except Exception:
        raise Broken(f"returns {what}", f"returned {result!r}", inputs) from None


def _codes(result: Any, like: np.ndarray, dtype: str, inputs: dict[str, Any]) -> np.ndarray:
    q = _array(result, inputs, f"an array of {dtype}")
    if q.dtype != np.dtype(dtype):
        raise Broken(f"returns dtype {dtype}", f"returned dtype {q.dtype}", inputs)
    if q.shape != like.shape:
        raise Broken(
            "keeps the input's shape", f"returned shape {q.shape}, input {like.shape}", inputs
        )
    return q


def _floats(result: Any, like: np.ndarray, inputs: dict[str, Any]) -> np.ndarray:
    y = _array(result, inputs, "a float array")
    if y.dtype.kind != "f":
        raise Broken("returns floats", f"returned dtype {y.dtype}", inputs)
    if y.shape != like.shape:
        raise Broken(
            "keeps the input's shape", f"returned shape {y.shape}, input {like.shape}", inputs
        )
    if not np.isfinite(y).all():
        i = first_index(~np.isfinite(y))
        raise Broken("returns finite values", f"returned {y[i]} at index {i}", inputs)
    return y


def _half_to_even(x: np.ndarray, qp: QuantParams) -> np.ndarray:
    scale, zero = qp.broadcast(x.ndim)
    steps = np.rint(x.astype(_F) / scale).astype(np.float64)
    return np.clip(steps + zero, qp.qmin, qp.qmax).astype(qp.dtype)


def _compare_codes(
    q: np.ndarray, x: np.ndarray, qp: QuantParams, rounding: str | None, inputs: dict[str, Any]
) -> None:
    away = quantize(x, qp)
    even = _half_to_even(x, qp)
    if rounding == "half_away_from_zero":
        ok = q == away
    elif rounding == "half_to_even":
        ok = q == even
    else:
        ok = (q == away) | (q == even)
    if ok.all():
        return
    i = first_index(~ok)
    lo, hi = qp.real_range
    lo_i = np.broadcast_to(lo, x.shape)[i] if np.ndim(lo) else lo
    hi_i = np.broadcast_to(hi, x.shape)[i] if np.ndim(hi) else hi
    where = f"x{list(i)} = {x[i].item()!r}: got {q[i]}, reference {away[i]}"
    if (
        (x[i] > hi_i and q[i] < away[i])
        or (x[i] < lo_i and q[i] > away[i])
        or abs(int(q[i]) - int(away[i])) > (qp.qmax - qp.qmin) // 2
    ):
        raise Broken("saturates, never wraps around", where, inputs)
    scale, _ = qp.broadcast(x.ndim)
    steps = (x.astype(_F) / scale)[i]
    if abs(steps - np.trunc(steps)) == 0.5:
        mode = rounding or "either way (half away from zero or half to even)"
        raise Broken(f"rounds exact ties {mode}", f"{where} (x / scale = {steps.item()!r})", inputs)
    raise Broken("matches the reference clamp(round(x / scale) + zero_point)", where, inputs)


def _check_quantize(fn: Any, case: Any, dtype: str, rounding: Any) -> None:
    x, qp = case
    scale, zero = _params(qp)
    inputs = {"x": x, "scale": scale, "zero_point": zero}
    q = _codes(_call(fn, inputs), x, dtype, inputs)
    _compare_codes(q, x, qp, rounding, inputs)


def _check_dequantize(fn: Any, case: Any, dtype: str, rounding: Any) -> None:
    q, qp = case
    scale, zero = _params(qp)
    inputs = {"q": q, "scale": scale, "zero_point": zero}
    y = _floats(_call(fn, inputs), q, inputs)
    ref = dequantize(q, qp).astype(np.float64)
    bad = np.abs(y.astype(np.float64) - ref) > np.spacing(np.abs(ref).astype(_F)).astype(np.float64)
    if bad.any():
        i = first_index(bad)
        raise Broken(
            "matches the reference scale * (q - zero_point) within 1 float32 ulp",
            f"q{list(i)} = {q[i]}: got {y[i].item()!r}, reference {ref[i].item()!r}",
            inputs,
        )


def _check_qparams(fn: Any, case: Any, dtype: str, symmetric: bool, rounding: Any) -> None:
    lo, hi = case
    inputs = {"x_min": lo, "x_max": hi}
    out = _call(fn, inputs)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise Broken("returns (scale, zero_point)", f"returned {out!r}", inputs)
    scale, zero = out
    try:
        s, z = float(scale), float(zero)
    except (TypeError, ValueError):
        raise Broken("returns a number for each", f"returned {out!r}", inputs) from None
    qmin, qmax = INT_RANGES[dtype]
    if not (np.isfinite(s) and s > 0):
        raise Broken("returns a finite scale > 0", f"scale = {s!r}", inputs)
    if z != round(z) or not qmin <= z <= qmax:
        raise Broken(
            f"returns an integer zero point in [{qmin}, {qmax}]", f"zero_point = {z!r}", inputs
        )
    if symmetric and z != 0:
        raise Broken("returns zero point 0 (symmetric)", f"zero_point = {z!r}", inputs)
    ref = choose_qparams(lo, hi, dtype=dtype, symmetric=symmetric)
    if ref.scale == 1.0 and max(abs(lo), abs(hi)) < 1e-12:
        return  # degenerate range: any valid parameters represent it
    if abs(s - ref.scale) > 1e-6 * ref.scale:
        raise Broken(
            "scale = (max' - min') / (qmax - qmin) of the range widened to include 0"
            if not symmetric
            else "scale = max(|min|, |max|) / qmax",
            f"scale = {s!r}, reference {ref.scale!r}",
            inputs,
        )
    if z == ref.zero_point:
        return
    width = max(hi, 0.0) - min(lo, 0.0)
    zp_from_min = qmin - min(lo, 0.0) / (width / (qmax - qmin))  # float64, as the reference
    tie = abs(zp_from_min - np.floor(zp_from_min) - 0.5) < 1e-6
    even = float(np.clip(np.rint(zp_from_min), qmin, qmax))
    if tie and rounding != "half_away_from_zero" and z == even:
        return
    raise Broken(
        "zero_point = clamp(round(qmin - min'/scale))",
        f"zero_point = {z:g}, reference {ref.zero_point} (qmin - min'/scale = {zp_from_min!r})",
        inputs,
    )


def _check_fake_quant(fn: Any, case: Any, dtype: str, rounding: Any) -> None:
    inputs = {"x": case.x, "x_min": case.x_min, "x_max": case.x_max}
    y = _floats(_call(fn, inputs), case.x, inputs)
    ref = fake_quant(case.x, case.x_min, case.x_max)
    if rounding is not None:
        bad = y.astype(_F).view(np.int32) != ref.view(np.int32)
    elif case.x_min == case.x_max == 0:
        bad = y != 0
    else:
        # A few float32 ulps of the range (the textbook "... * scale + nudged_min" is that
        # far from TF), or one step at inputs next to a rounding tie.
        n = nudge(case.x_min, case.x_max)
        tol = 4 * np.float64(np.spacing(max(abs(n.min), abs(n.max))))
        diff = np.abs(y.astype(np.float64) - ref)
        rel = (np.clip(case.x, n.min, n.max).astype(np.float64) - n.min) / np.float64(n.scale)
        near_tie = np.abs(rel - np.floor(rel) - 0.5) < 1e-3
        bad = (diff > tol) & ~(near_tie & (diff <= np.float64(n.scale) + tol))
    if bad.any():
        i = first_index(bad)
        raise Broken(
            "matches tf.quantization.fake_quant_with_min_max_vars (nudged range, rounding)"
            + ("" if rounding is None else ", bit for bit"),
            f"x{list(i)} = {case.x[i].item()!r}: got {y[i].item()!r}, TF gives {ref[i].item()!r}",
            inputs,
        )


def _check_tensor(
    fn: Any, x: np.ndarray, dtype: str, symmetric: bool, axis: int | None, rounding: Any
) -> None:
    inputs = {"x": x}
    out = _call(fn, inputs)
    if not (isinstance(out, (tuple, list)) and len(out) == 3):
        raise Broken("returns (q, scale, zero_point)", f"returned {type(out).__name__}", inputs)
    q = _codes(out[0], x, dtype, inputs)
    try:
        theirs = QuantParams(
            np.asarray(out[1], np.float64) if axis is not None else float(out[1]),
            np.asarray(out[2]) if axis is not None else out[2],
            dtype,
            axis,
            symmetric=symmetric,
        )
    except (TypeError, ValueError) as exc:
        raise Broken("returns valid scale and zero point", str(exc), inputs) from None
    try:
        theirs.check_channels(x.shape)
    except ValueError as exc:
        raise Broken("returns one scale per channel", str(exc), inputs) from None
    _compare_codes(q, x, theirs, rounding, inputs)
    scale, _ = theirs.broadcast(x.ndim)
    err = np.abs(dequantize(q, theirs).astype(np.float64) - x)
    half = np.broadcast_to(scale.astype(np.float64) * (0.5 + 1e-6), x.shape) + np.abs(x) * 1e-6
    if (err > half).any():
        i = first_index(err > half)
        raise Broken(
            "covers the data: every value within half a step (no clipping, no wrap-around)",
            f"x{list(i)} = {x[i].item()!r} comes back as {dequantize(q, theirs)[i].item()!r}",
            inputs,
        )
    ref = qparams_for(x, dtype=dtype, symmetric=symmetric, axis=axis)
    ref_scale = np.broadcast_to(ref.broadcast(x.ndim)[0], scale.shape)
    wasteful = scale > 2.0 * ref_scale * (1 + 1e-6)
    if wasteful.any():
        i = first_index(wasteful)
        raise Broken(
            "uses the integer range: scale at most 2x the min-max scale",
            f"scale = {scale[i].item()!r}, min-max scale {ref_scale[i].item()!r}",
            inputs,
        )


def _strategy(kind: str, dtype: str, symmetric: bool, axis: int | None) -> Any:
    per_channel = axis is not None
    if kind == "quantize":
        return qs.quantization_cases(
            dtype=dtype, symmetric=symmetric, per_channel=per_channel, axis=axis, narrow_range=False
        )
    if kind == "dequantize":
        lo, hi = INT_RANGES[dtype]

        def codes(qp: QuantParams) -> Any:
            # per channel: channels on `axis`, a few values on every other axis
            shape = (64,) if not per_channel else (3,) * (axis or 0) + (qp.scale.shape[0], 4)
            return hnp.arrays(dtype, shape, elements=st.integers(lo, hi))

        params = qs.qparams(
            dtype=dtype,
            symmetric=symmetric,
            per_channel=per_channel,
            axis=axis or 0,
            narrow_range=False,
        )
        return params.flatmap(lambda qp: st.tuples(codes(qp), st.just(qp)))
    if kind == "qparams":
        return qs.ranges()
    if kind == "fake_quant":
        return qs.fake_quant_cases(num_bits=8, narrow_range=False)
    # tensor
    if axis is None:
        shapes = qs.shapes(max_dims=3)
    else:
        # channels on the last axis: (in, out) for axis 1 as a Keras Dense kernel, 4-D
        # for axis 3 as a conv kernel; axis 0 gives (out, in), TFLite's FC layout
        ndim = max(axis + 1, 2)
        shapes = qs.shapes(min_dims=ndim, max_dims=ndim)
    return qs.weights(shape=shapes) | qs.activations(shape=shapes)


def _phases() -> tuple[Phase, ...]:
    """The phases the loaded hypothesis profile runs."""
    return tuple(settings.default.phases) if settings.default is not None else tuple(Phase)


def assert_quantizer_conforms(
    fn: Callable[..., Any],
    *,
    kind: str,
    dtype: str = "int8",
    symmetric: bool = False,
    per_channel_axis: int | None = None,
    rounding: str | None = None,
    max_examples: int | None = None,
) -> None:
    """Property-test your own quantization function against the reference.

    Calling conventions, by ``kind``:

    - ``"quantize"``: ``fn(x, scale, zero_point) -> q`` (codes of ``dtype``);
    - ``"dequantize"``: ``fn(q, scale, zero_point) -> x`` (floats);
    - ``"qparams"``: ``fn(x_min, x_max) -> (scale, zero_point)``;
    - ``"fake_quant"``: ``fn(x, x_min, x_max) -> y``, TF FakeQuantWithMinMaxVars, 8 bits;
    - ``"tensor"``: ``fn(x) -> (q, scale, zero_point)``, choosing its own parameters.

    With ``per_channel_axis``, ``scale`` and ``zero_point`` are 1-D arrays along that
    axis; for ``kind="tensor"`` the generated tensors then have ``max(axis + 1, 2)`` dims
    (a Dense kernel ``(in, out)`` for axis 1, a conv kernel for axis 3).
    ``rounding=None`` accepts ties rounded either half away from zero or half to
    even; ``"half_away_from_zero"`` demands TFLite's rounding (for ``fake_quant``, any
    value other than None demands TF's output bit for bit). Inputs are drawn with
    :mod:`pytest_quant.strategies`; ``max_examples`` defaults to the hypothesis profile's.

    :raises AssertionError: naming the broken property and the shrunk input.
    :raises ValueError: an unknown ``kind``, ``dtype`` or ``rounding``.

    Example::

        def my_quantize(x, scale, zero_point):
            q = np.round(x / scale) + zero_point
            return np.clip(q, -128, 127).astype(np.int8)

        def test_my_quantizer():
            assert_quantizer_conforms(my_quantize, kind="quantize")
    """
    __tracebackhide__ = True
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: use one of {', '.join(KINDS)}")
    if dtype not in ("int8", "uint8", "int16"):
        raise ValueError(f"dtype={dtype!r}: use 'int8', 'uint8' or 'int16'")
    if rounding not in ROUNDINGS:
        raise ValueError(
            f"rounding={rounding!r}: use None, 'half_away_from_zero' or 'half_to_even'"
        )
    if symmetric and dtype == "uint8":
        raise ValueError("symmetric=True needs a signed dtype, not uint8")
    if per_channel_axis is not None:
        if kind in ("qparams", "fake_quant"):
            raise ValueError(f"per_channel_axis is not supported for kind={kind!r}")
        if not isinstance(per_channel_axis, int) or per_channel_axis < 0:
            raise ValueError(f"per_channel_axis={per_channel_axis!r} must be an int >= 0")
    if not callable(fn):
        raise TypeError(f"fn={fn!r} is not callable")
    checks = {
        "quantize": lambda c: _check_quantize(fn, c, dtype, rounding),
        "dequantize": lambda c: _check_dequantize(fn, c, dtype, rounding),
        "qparams": lambda c: _check_qparams(fn, c, dtype, symmetric, rounding),
        "fake_quant": lambda c: _check_fake_quant(fn, c, dtype, rounding),
        "tensor": lambda c: _check_tensor(fn, c, dtype, symmetric, per_channel_axis, rounding),
    }
    check = checks[kind]
    overrides: dict[str, Any] = {
        "deadline": None,
        "database": None,
        "report_multiple_bugs": False,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
        # generate and shrink, without hypothesis's "explain" phase: the message names
        # the property and the shrunk input itself, and explaining took 4.4 of the 4.8 s
        # a failing check spent (measured on a quantizer that always raises)
        "phases": [p for p in Phase if p is not Phase.explain and p in _phases()],
    }
    if max_examples is not None:
        overrides["max_examples"] = max_examples

    @settings(settings.default, **overrides)
    @given(_strategy(kind, dtype, symmetric, per_channel_axis))
    def conforms(case: Any) -> None:
        check(case)

    try:
        conforms()
    except Broken as broken:
        record("assert_quantizer_conforms", f"{kind}_broken_properties", 1.0, 0.0, False)
        raise AssertionError(_conformance_message(fn, kind, dtype, broken)) from None
    record("assert_quantizer_conforms", f"{kind}_broken_properties", 0.0, 0.0, True)


def _conformance_message(fn: Any, kind: str, dtype: str, broken: Broken) -> str:
    name = getattr(fn, "__qualname__", repr(fn))
    lines = [
        f"{name} does not conform (kind={kind!r}, dtype={dtype!r}): "
        f"property '{broken.prop}' is broken",
        f"  {broken.detail}",
        "  minimal failing input (shrunk by hypothesis):",
    ]
    lines += [f"    {k} = {_show(v)}" for k, v in broken.inputs.items()]
    return "\n".join(lines)
