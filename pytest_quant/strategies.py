"""Hypothesis strategies for property-testing quantization code.

Every strategy draws all its randomness through hypothesis, so failures shrink and
replay. Large float tensors are drawn as a hypothesis-chosen seed and spread (numpy's
generator fills the elements): that keeps thousands of elements cheap while the seed,
the shape and the spread still shrink. Values that matter, rounding ties and the
clipping edges, are constructed exactly rather than hoped for.

Opt into the derandomized, deadline-free CI profile with
``pytest --hypothesis-profile=pytest-quant-ci`` (the plugin registers it), or
``settings.load_profile(PROFILE)`` after importing this module.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ._dtypes import int_range
from ._profiles import PROFILE
from .fakequant import nudge
from .qparams import QuantParams

__all__ = [
    "PROFILE",
    "FakeQuantCase",
    "activations",
    "edges",
    "fake_quant_cases",
    "fake_quant_ranges",
    "qparams",
    "quantization_cases",
    "ranges",
    "shapes",
    "ties",
    "weights",
]

_F = np.float32
_DTYPES = ("int8", "uint8", "int16")
_ACTIVATION_KINDS = ("relu", "normal", "wide", "tiny", "huge")
_KIND_MAGNITUDE = {  # log10 range of the spread of each kind
    "relu": (-2.0, 1.0),
    "normal": (-2.0, 1.0),
    "wide": (2.0, 4.0),
    "tiny": (-6.0, -3.0),
    "huge": (4.0, 6.0),
}


def _floats32(lo: float, hi: float) -> st.SearchStrategy[float]:
    """float32 values in [lo, hi], the bounds rounded inward to float32."""
    a, b = _F(lo), _F(hi)
    a = a if a >= lo else np.nextafter(a, _F(np.inf))
    b = b if b <= hi else np.nextafter(b, _F(-np.inf))
    return st.floats(float(a), float(b), width=32)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise InvalidArgument(message)


def _check_int(value: Any, name: str, lo: int, hi: int) -> None:
    _check(
        isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
        f"{name}={value!r} must be an int in [{lo}, {hi}]",
    )


def _check_dtype(dtype: Any, allowed: tuple[str, ...] = _DTYPES) -> None:
    _check(dtype is None or dtype in allowed, f"dtype={dtype!r} must be None or one of {allowed}")


def shapes(
    *, min_dims: int = 1, max_dims: int = 4, min_side: int = 1, max_side: int = 8
) -> st.SearchStrategy[tuple[int, ...]]:
    """Tensor shapes: ``min_dims``..``max_dims`` axes of ``min_side``..``max_side``.

    Example::

        @given(shapes(max_dims=2))
        def test_shape(s): assert 1 <= len(s) <= 2
    """
    _check_int(min_dims, "min_dims", 0, 32)
    _check_int(max_dims, "max_dims", min_dims, 32)
    _check_int(min_side, "min_side", 0, 2**16)
    _check_int(max_side, "max_side", min_side, 2**16)
    return hnp.array_shapes(
        min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    )


def _shape_strategy(shape: Any) -> st.SearchStrategy[tuple[int, ...]]:
    if shape is None:
        return shapes()
    if isinstance(shape, st.SearchStrategy):
        return shape
    _check(
        isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape),
        f"shape={shape!r} must be None, a tuple of ints >= 0 or a strategy of them",
    )
    return st.just(shape)


@st.composite
def _seeded(draw: Any, shape: Any, magnitude: tuple[float, float], kind: str) -> np.ndarray:
    shp = draw(_shape_strategy(shape))
    seed = draw(st.integers(0, 2**32 - 1))
    spread = 10.0 ** draw(st.floats(*magnitude))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shp) * spread
    if kind == "relu":
        x = np.maximum(x, 0.0)
    return x.astype(_F)


def weights(
    *, shape: Any = None, min_std: float = 1e-3, max_std: float = 1.0
) -> st.SearchStrategy[np.ndarray]:
    """float32 weight tensors, roughly normal with a standard deviation in [min_std, max_std].

    Example::

        @given(weights(shape=(16, 8)))
        def test_w(w): assert w.dtype == np.float32
    """
    _check(0 < min_std <= max_std < 1e30, f"need 0 < min_std={min_std} <= max_std={max_std}")
    return _seeded(shape, (math.log10(min_std), math.log10(max_std)), "normal")


def activations(*, shape: Any = None, kind: str | None = None) -> st.SearchStrategy[np.ndarray]:
    """float32 activation tensors of a kind: ``"relu"`` (>= 0, many zeros), ``"normal"``,
    ``"wide"`` (spread 1e2..1e4), ``"tiny"`` (1e-6..1e-3) or ``"huge"`` (1e4..1e6);
    ``None`` draws the kind too.

    Example::

        @given(activations(kind="relu"))
        def test_a(a): assert (a >= 0).all()
    """
    _check(
        kind is None or kind in _ACTIVATION_KINDS,
        f"kind={kind!r} must be None or one of {_ACTIVATION_KINDS}",
    )
    kinds = _ACTIVATION_KINDS if kind is None else (kind,)
    return st.one_of(*(_seeded(shape, _KIND_MAGNITUDE[k], k) for k in kinds))


def _scales(min_scale: float, max_scale: float) -> st.SearchStrategy[float]:
    lo, hi = math.log2(min_scale), math.log2(max_scale)
    generic = st.floats(lo, hi).map(lambda e: float(_F(2.0**e)))
    exact = st.integers(math.ceil(lo), math.floor(hi)).map(lambda e: 2.0**e)
    special = st.sampled_from([1 / 255, 1 / 256, 1 / 128, 2 / 255, 0.1]).filter(
        lambda s: min_scale <= s <= max_scale
    )
    return st.one_of(generic, exact, special) if math.floor(hi) >= math.ceil(lo) else generic


def qparams(
    *,
    dtype: str | None = None,
    symmetric: bool | None = None,
    per_channel: bool | None = None,
    axis: int = 0,
    max_channels: int = 8,
    min_scale: float = 1e-6,
    max_scale: float = 1e3,
    narrow_range: bool | None = None,
) -> st.SearchStrategy[QuantParams]:
    """``QuantParams`` of every scheme: asymmetric/symmetric, per-tensor/per-channel,
    int8/uint8/int16. ``None`` draws the choice. By default (``narrow_range=None``)
    symmetric int8 uses narrow range ([-127, 127]) as TFLite's weights do; pass
    ``narrow_range=False`` for the full range. uint8 is never symmetric.

    Example::

        @given(qparams(dtype="int8", symmetric=True))
        def test_sym(qp): assert qp.zero_point == 0
    """
    _check_dtype(dtype)
    _check_int(axis, "axis", 0, 31)
    _check_int(max_channels, "max_channels", 1, 4096)
    _check(
        0 < min_scale <= max_scale < 1e30,
        f"need 0 < min_scale={min_scale} <= max_scale={max_scale} < 1e30",
    )
    _check(not (symmetric and dtype == "uint8"), "symmetric=True needs a signed dtype, not uint8")

    @st.composite
    def build(draw: Any) -> QuantParams:
        signed = tuple(d for d in _DTYPES if d != "uint8")
        dt = dtype or draw(st.sampled_from(signed if symmetric else _DTYPES))
        sym = (
            False if dt == "uint8" else symmetric if symmetric is not None else draw(st.booleans())
        )
        narrow = (sym and dt == "int8") if narrow_range is None else (narrow_range and sym)
        qmin, qmax = int_range(dt, narrow_range=narrow)
        pc = per_channel if per_channel is not None else draw(st.booleans())
        zps = st.just(0) if sym else st.integers(qmin, qmax)
        if not pc:
            return QuantParams(
                draw(_scales(min_scale, max_scale)),
                draw(zps),
                dt,
                narrow_range=narrow,
                symmetric=sym,
            )
        n = draw(st.integers(1, max_channels))
        scale = [draw(_scales(min_scale, max_scale)) for _ in range(n)]
        zero = [draw(zps) for _ in range(n)]
        return QuantParams(
            np.array(scale, _F), np.array(zero), dt, axis, narrow_range=narrow, symmetric=sym
        )

    return build()


def ranges(
    *,
    max_magnitude: float = 1e4,
    allow_excluding_zero: bool = True,
    allow_degenerate: bool = True,
) -> st.SearchStrategy[tuple[float, float]]:
    """``(x_min, x_max)`` with ``x_min <= x_max``: ranges around 0, ranges that exclude 0
    (both ends positive or both negative) and degenerate ones (``min == max``, all zeros).

    Example::

        @given(ranges())
        def test_range(r): assert r[0] <= r[1]
    """
    _check(0 < max_magnitude < 1e30, f"max_magnitude={max_magnitude} must be in (0, 1e30)")
    mag = st.floats(0.0, max_magnitude, allow_subnormal=False)
    tiny_to_big = st.floats(-6, math.log10(max_magnitude)).map(lambda e: 10.0**e)
    around = st.tuples(mag.map(lambda v: -v), mag) | st.tuples(
        tiny_to_big.map(lambda v: -v), tiny_to_big
    )
    parts = [around]
    if allow_excluding_zero:
        positive = st.tuples(tiny_to_big, tiny_to_big).map(sorted).map(tuple)
        parts.append(positive)
        parts.append(positive.map(lambda r: (-r[1], -r[0])))
    if allow_degenerate:
        parts.append(st.just((0.0, 0.0)))
        parts.append(st.floats(-max_magnitude, max_magnitude).map(lambda v: (v, v)))
    return st.one_of(*parts)


def _exact_ties(k: np.ndarray, scale: np.float32) -> np.ndarray:
    """float32 values whose float32 quotient by ``scale`` is exactly ``k + 0.5``."""
    want = (k + 0.5).astype(_F)
    base = ((k + 0.5) * np.float64(scale)).astype(_F)
    out = base.copy()
    found = (base / scale) == want
    cand = base
    for direction in (np.inf, -np.inf):
        cand = base
        for _ in range(3):
            cand = np.nextafter(cand, _F(direction))
            hit = ~found & ((cand / scale) == want)
            out[hit] = cand[hit]
            found |= hit
    return out


def ties(qp: QuantParams, *, max_size: int = 64) -> st.SearchStrategy[np.ndarray]:
    """float32 inputs placed exactly on rounding ties of ``qp``: ``x / scale == k + 0.5``
    in float32 (where such an x exists; otherwise its nearest float32), for codes from
    one below ``qmin`` to ``qmax``. Per-tensor ``qp`` only.

    Example::

        @given(ties(QuantParams(0.1, 0)))
        def test_ties(x): ...
    """
    _check(isinstance(qp, QuantParams), f"qp={qp!r} must be a QuantParams")
    _check(not qp.is_per_channel, "ties() takes per-tensor QuantParams")
    _check_int(max_size, "max_size", 1, 1 << 20)
    lo, hi = qp.qmin - qp.zero_point - 1, qp.qmax - qp.zero_point
    ks = hnp.arrays(np.int64, st.integers(1, max_size), elements=st.integers(lo, hi))
    return ks.map(lambda k: _exact_ties(k, _F(qp.scale)))


def edges(qp: QuantParams) -> st.SearchStrategy[np.ndarray]:
    """float32 values on and around the clipping edges of per-tensor ``qp``: the ends of its
    real range, their float32 neighbours, half a step outside, and far outside.

    Example::

        @given(edges(QuantParams(0.1, 0)))
        def test_edges(x): ...
    """
    _check(
        isinstance(qp, QuantParams) and not qp.is_per_channel,
        "edges() takes per-tensor QuantParams",
    )
    s = np.float64(qp.scale)
    lo, hi = s * (qp.qmin - qp.zero_point), s * (qp.qmax - qp.zero_point)
    pts = np.array([lo, hi, lo - s / 2, hi + s / 2, lo - 1e3 * s, hi + 1e3 * s], _F)
    pts = np.concatenate([pts, np.nextafter(pts, _F(np.inf)), np.nextafter(pts, _F(-np.inf))])
    return hnp.arrays(_F, st.integers(1, 8), elements=st.sampled_from(pts.tolist()))


@st.composite
def _case(draw: Any, qp_strategy: Any) -> tuple[np.ndarray, QuantParams]:
    qp = draw(qp_strategy)
    n = qp.scale.shape[0] if qp.is_per_channel else 1
    cols = []
    for c in range(n):
        one = qp.channel(c) if qp.is_per_channel else qp
        s = np.float64(one.scale)
        inside = hnp.arrays(
            _F,
            8,
            elements=_floats32(
                s * (one.qmin - one.zero_point - 4), s * (one.qmax - one.zero_point + 4)
            ),
        )
        parts = [draw(ties(one, max_size=8)), draw(edges(one)), draw(inside)]
        cols.append(np.concatenate(parts)[:24])
    width = min(len(c) for c in cols)
    x = np.stack([c[:width] for c in cols])  # (channels, values)
    if not qp.is_per_channel:
        x = x[0]
    elif qp.axis:
        # (channels, values) -> values on axis 0, channels on qp.axis
        x = x.T.reshape((width,) + (1,) * (qp.axis - 1) + (n,))
    return x, qp


def quantization_cases(
    *,
    dtype: str | None = None,
    symmetric: bool | None = None,
    per_channel: bool | None = None,
    axis: int | None = None,
    narrow_range: bool | None = None,
) -> st.SearchStrategy[tuple[np.ndarray, QuantParams]]:
    """``(x, qp)`` pairs to test a quantizer on: ``x`` mixes exact rounding ties, clipping
    edges and their neighbours, and values inside and just outside the range; per-channel
    ``x`` has ``qp``'s channels on ``axis`` (default: drawn, 0 or 1).

    Example::

        @given(quantization_cases(dtype="int8"))
        def test_saturates(case):
            x, qp = case
            assert quantize(x, qp).dtype == np.int8
    """
    _check_dtype(dtype)
    if axis is not None:
        _check_int(axis, "axis", 0, 31)
    axes = st.just(axis) if axis is not None else st.sampled_from([0, 1])
    if per_channel is False:
        axes = st.just(0)
    return axes.flatmap(
        lambda ax: _case(
            qparams(
                dtype=dtype,
                symmetric=symmetric,
                per_channel=per_channel,
                axis=ax,
                max_channels=4,
                narrow_range=narrow_range,
            )
        )
    )


class FakeQuantCase(NamedTuple):
    """Arguments for one call of ``fake_quant``."""

    x: np.ndarray
    x_min: float
    x_max: float
    num_bits: int
    narrow_range: bool


def fake_quant_ranges(
    *, num_bits: int = 8, narrow_range: bool = False, max_magnitude: float = 1e3
) -> st.SearchStrategy[tuple[float, float]]:
    """``(x_min, x_max)`` float32 ranges for fake-quant: generic ranges around 0, ranges
    that exclude 0 (shifted by the nudge), the all-zero range, and ranges whose float32
    zero point lands next to a .5 tie (the ``min=-1, max=1`` trap), plus known cases.

    Example::

        @given(fake_quant_ranges())
        def test_range(r): assert r[0] <= r[1]
    """
    _check_int(num_bits, "num_bits", 2, 16)
    _check(0 < max_magnitude < 1e30, f"max_magnitude={max_magnitude} must be in (0, 1e30)")
    qmin, qmax = (1 if narrow_range else 0), 2**num_bits - 1
    mag = st.floats(1e-3, max_magnitude).map(lambda v: float(_F(v)))
    generic = st.tuples(mag.map(lambda v: -v), mag)
    excluding = st.tuples(mag, mag).map(lambda r: (min(r), max(r))).filter(lambda r: r[0] < r[1])
    negative = excluding.map(lambda r: (-r[1], -r[0]))

    def tie_range(args: tuple[int, float]) -> tuple[float, float]:
        zp, scale = args
        lo = float(_F(-(zp + 0.5 - qmin) * scale))
        return lo, float(_F(lo + (qmax - qmin) * scale))

    tie = st.tuples(st.integers(qmin, qmax - 1), st.floats(1e-4, max_magnitude / qmax)).map(
        tie_range
    )
    known = st.sampled_from([(-1.0, 1.0), (-0.3, 0.7), (12.0, 123.0), (0.0, 0.0), (-6.0, 0.0)])
    return st.one_of(known, tie, generic, excluding, negative)


def fake_quant_cases(
    *, num_bits: int | None = None, narrow_range: bool | None = None
) -> st.SearchStrategy[FakeQuantCase]:
    """Whole fake-quant calls: a range from :func:`fake_quant_ranges` and inputs placed on
    the nudged grid's rounding ties, their float32 neighbours, the clamp edges, and
    values spread over and beyond the range.

    Example::

        @given(fake_quant_cases())
        def test_idempotent(c): ...
    """
    if num_bits is not None:
        _check_int(num_bits, "num_bits", 2, 16)
    bits = st.just(num_bits) if num_bits is not None else st.sampled_from([8, 8, 8, 2, 4, 7, 16])
    narrow = st.just(narrow_range) if narrow_range is not None else st.booleans()

    @st.composite
    def build(draw: Any) -> FakeQuantCase:
        nb, nr = draw(bits), draw(narrow)
        lo, hi = draw(fake_quant_ranges(num_bits=nb, narrow_range=nr))
        if lo == hi:
            x = draw(hnp.arrays(_F, 4, elements=st.floats(-10, 10, width=32)))
            return FakeQuantCase(x, lo, hi, nb, nr)
        n = nudge(lo, hi, num_bits=nb, narrow_range=nr)
        qmin, qmax = (1 if nr else 0), 2**nb - 1
        k = draw(hnp.arrays(np.int64, 16, elements=st.integers(qmin - 1, qmax)))
        tie = ((k - qmin + 0.5) * np.float64(n.scale) + np.float64(n.min)).astype(_F)
        width = np.float64(n.max) - np.float64(n.min)
        spread = draw(
            hnp.arrays(_F, 8, elements=_floats32(float(n.min) - width, float(n.max) + width))
        )
        ends = np.array([n.min, n.max, lo, hi, 0.0], _F)
        x = np.concatenate(
            [
                tie,
                np.nextafter(tie, _F(np.inf)),
                np.nextafter(tie, _F(-np.inf)),
                ends,
                spread,
            ]
        )
        return FakeQuantCase(x, lo, hi, nb, nr)

    return build()
