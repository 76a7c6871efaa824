"""Quantization parameters (scale, zero point) and how TFLite's converter chooses them."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import as_float_array, finite_scalar
from ._dtypes import dtype_name, int_range
from .rounding import round_half_away_from_zero

# Ranges narrower than this are treated as all-zero (scale 1.0), as the MLIR
# quantizer does, so a constant tensor never yields a zero or subnormal scale.
_DEGENERATE_WIDTH = float(np.finfo(np.float64).eps)


class QuantParams:
    """Immutable affine quantization parameters: ``x ~= scale * (q - zero_point)``.

    Per-tensor parameters are scalars; per-channel ones are 1-D arrays along
    ``axis`` (TFLite's ``quantized_dimension``). Scales are stored as float32
    values, as a ``.tflite`` file stores them.

    :param scale: step size, finite and > 0 (a scalar, or 1-D for per-channel).
    :param zero_point: integer code of real 0, inside the dtype's range.
    :param dtype: storage type: ``"int8"``, ``"uint8"``, ``"int16"`` or ``"int32"``.
    :param axis: the channel axis for per-channel parameters, else ``None``.
    :param narrow_range: the lowest code is unused (int8 weights: [-127, 127]).
    :param symmetric: a symmetric scheme; its zero point must be 0.
    :raises ValueError: naming the field and the offending value.

    Example::

        >>> qp = QuantParams(0.5, -3, "int8")
        >>> qp.qmin, qp.qmax, qp.is_per_channel
        (-128, 127, False)
    """

    __slots__ = ("axis", "dtype", "narrow_range", "scale", "symmetric", "zero_point")

    scale: Any
    zero_point: Any
    dtype: str
    axis: int | None
    narrow_range: bool
    symmetric: bool

    def __init__(
        self,
        scale: Any,
        zero_point: Any,
        dtype: Any = "int8",
        axis: int | None = None,
        *,
        narrow_range: bool = False,
        symmetric: bool = False,
    ) -> None:
        name = dtype_name(dtype)
        qmin, qmax = int_range(name, narrow_range=narrow_range)
        s = _validate_scale(scale, axis)
        z = _validate_zero_point(zero_point, s, name, qmin, qmax, symmetric)
        for field, value in (
            ("scale", s),
            ("zero_point", z),
            ("dtype", name),
            ("axis", None if axis is None else int(axis)),
            ("narrow_range", bool(narrow_range)),
            ("symmetric", bool(symmetric)),
        ):
            object.__setattr__(self, field, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"QuantParams is immutable; use QuantParams(...) to change {name}")

    @property
    def qmin(self) -> int:
        """Lowest integer code."""
        return int_range(self.dtype, narrow_range=self.narrow_range)[0]

    @property
    def qmax(self) -> int:
        """Highest integer code."""
        return int_range(self.dtype, narrow_range=self.narrow_range)[1]

    @property
    def is_per_channel(self) -> bool:
        """True when scale and zero point are 1-D arrays along ``axis``."""
        return self.axis is not None

    @property
    def real_range(self) -> tuple[Any, Any]:
        """The real interval ``[s*(qmin-z), s*(qmax-z)]`` that quantizes without clipping."""
        s = np.float64(self.scale) if not self.is_per_channel else self.scale.astype(np.float64)
        return s * (self.qmin - self.zero_point), s * (self.qmax - self.zero_point)

    def channel(self, c: int) -> QuantParams:
        """The per-tensor parameters of channel ``c`` (same dtype and scheme).

        Example::

            >>> QuantParams([0.5, 0.25], [0, 1], "int8", 0).channel(1)
            QuantParams(scale=0.25, zero_point=1, dtype='int8', axis=None)
        """
        if not self.is_per_channel:
            raise ValueError("channel() needs per-channel QuantParams")
        return QuantParams(
            float(self.scale[c]),
            int(self.zero_point[c]),
            self.dtype,
            narrow_range=self.narrow_range,
            symmetric=self.symmetric,
        )

    def with_axis(self, axis: int) -> QuantParams:
        """The same per-channel parameters along another axis."""
        return QuantParams(
            self.scale,
            self.zero_point,
            self.dtype,
            axis,
            narrow_range=self.narrow_range,
            symmetric=self.symmetric,
        )

    def broadcast(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (float32 scale, int64 zero point) shaped to broadcast over an ``ndim`` tensor."""
        if not self.is_per_channel:
            return np.float32(self.scale), np.int64(self.zero_point)
        assert self.axis is not None
        if not 0 <= self.axis < ndim:
            raise ValueError(
                f"per-channel axis={self.axis} does not exist in a {ndim}-D tensor; "
                "quantize a tensor that has the channel axis"
            )
        shape = [1] * ndim
        shape[self.axis] = -1
        return self.scale.reshape(shape), self.zero_point.reshape(shape)

    def check_channels(self, shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` if a tensor of ``shape`` does not fit the per-channel axis."""
        if not self.is_per_channel:
            return
        self.broadcast(len(shape))
        assert self.axis is not None
        if shape[self.axis] != self.scale.shape[0]:
            raise ValueError(
                f"shape mismatch: tensor has {shape[self.axis]} channels on axis {self.axis} "
                f"(shape {shape}) but the QuantParams have {self.scale.shape[0]}"
            )

    def _key(self) -> tuple[Any, ...]:
        s = self.scale.tobytes() if self.is_per_channel else self.scale
        z = self.zero_point.tobytes() if self.is_per_channel else self.zero_point
        return (s, z, self.dtype, self.axis, self.narrow_range, self.symmetric)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantParams):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        if self.is_per_channel:
            s = np.array2string(self.scale, precision=6, threshold=8)
            z = np.array2string(self.zero_point, threshold=8)
        else:
            s, z = f"{self.scale:.9g}", str(self.zero_point)
        extra = "".join(f", {k}=True" for k in ("narrow_range", "symmetric") if getattr(self, k))
        return (
            f"QuantParams(scale={s}, zero_point={z}, dtype={self.dtype!r}, axis={self.axis}{extra})"
        )


def require_qparams(qp: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``qp`` is a :class:`QuantParams`, saying how to make one."""
    if not isinstance(qp, QuantParams):
        raise TypeError(
            f"{name} must be a QuantParams, got {type(qp).__name__} ({qp!r:.60}); make one "
            "from data with qparams_for(x), from a range with choose_qparams(x_min, x_max), "
            "or directly with QuantParams(scale, zero_point)"
        )


_SCALE_RANGE = "pass a scale in float32's positive range [1.4e-45, 3.4028235e+38]"


def _scale_problem(value: float) -> str | None:
    """What is wrong with a scale that a .tflite file stores as float32, or None."""
    if not (np.isfinite(value) and value > 0):
        return "must be finite and > 0"
    with np.errstate(over="ignore", under="ignore"):
        s32 = np.float32(value)
    if np.isinf(s32):
        return "overflows float32 (max 3.4028235e+38), the type a .tflite file stores scales in"
    if s32 == 0:
        return "underflows float32 to 0, the type a .tflite file stores scales in"
    return None


def _validate_scale(scale: Any, axis: int | None) -> Any:
    arr = np.asarray(scale)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"scale={scale!r} is not a real number")
    if axis is None:
        if arr.ndim != 0:
            raise ValueError(
                f"scale has shape {arr.shape} but axis=None; per-channel scales need axis="
            )
        value = float(arr)
        problem = _scale_problem(value)
        if problem:
            raise ValueError(f"scale={value!r} {problem}; {_SCALE_RANGE}")
        s32 = float(np.float32(value))
        return s32
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"per-channel scale must be a non-empty 1-D array, got shape {arr.shape}")
    if int(axis) < 0:
        raise ValueError(f"axis={axis} must be >= 0 (the tensor's channel dimension)")
    for i, value in enumerate(arr.astype(np.float64).tolist()):
        problem = _scale_problem(value)
        if problem:
            raise ValueError(f"scale[{i}]={value!r} {problem}; {_SCALE_RANGE}")
    channel_scales = arr.astype(np.float32)
    channel_scales.setflags(write=False)
    return channel_scales


def _validate_zero_point(
    zero_point: Any, scale: Any, dtype: str, qmin: int, qmax: int, symmetric: bool
) -> Any:
    arr = np.asarray(zero_point)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"zero_point={zero_point!r} must be an integer")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"zero_point={zero_point!r} must be an integer")
    per_channel = isinstance(scale, np.ndarray)
    if per_channel:
        if arr.ndim == 0:
            arr = np.full(scale.shape, arr)
        if arr.shape != scale.shape:
            raise ValueError(f"zero_point has shape {arr.shape} but scale has shape {scale.shape}")
    elif arr.ndim != 0:
        raise ValueError(f"zero_point has shape {arr.shape} but scale is a scalar")
    out = arr.astype(np.int64)
    outside = (out < qmin) | (out > qmax)
    if np.any(outside):
        bad = out[outside].flat[0]
        raise ValueError(f"zero_point={bad} is outside {dtype}'s range [{qmin}, {qmax}]")
    if symmetric and np.any(out != 0):
        raise ValueError(f"zero_point={out[out != 0].flat[0]} must be 0 in a symmetric scheme")
    if per_channel:
        out.setflags(write=False)
        return out
    return int(out)


def choose_qparams(
    x_min: Any,
    x_max: Any,
    *,
    dtype: Any = "int8",
    symmetric: bool = False,
    narrow_range: bool = False,
    axis: int | None = None,
) -> QuantParams:
    """Choose scale and zero point for the range [x_min, x_max] as TFLite's converter does.

    Asymmetric: the range is widened to include 0, ``scale = (max' - min') / (qmax - qmin)``
    and ``zero_point = clamp(round_half_away(qmin - min'/scale))``, in float64, the scale then
    stored as float32. Symmetric: ``scale = max(|min|, |max|) / qmax`` and zero point 0
    (TFLite int8 weights: ``symmetric=True, narrow_range=True``, codes [-127, 127]).
    A degenerate range (all zeros, min == max == 0) gives scale 1.0, never a division by zero.

    :param x_min: lower bound (scalar, or 1-D per channel with ``axis``).
    :param x_max: upper bound, >= x_min.
    :raises ValueError: NaN/Inf bounds, ``x_min > x_max``, symmetric with uint8.

    Example::

        >>> qp = choose_qparams(-1.0, 1.0)
        >>> round(qp.scale, 6), qp.zero_point
        (0.007843, -1)
    """
    name = dtype_name(dtype)
    qmin, qmax = int_range(name, narrow_range=narrow_range)
    if symmetric and qmin >= 0:
        raise ValueError(f"symmetric=True needs a signed dtype, got {name}")
    lo, hi = _bounds(x_min, x_max, axis)
    if symmetric:
        max_abs = np.maximum(np.abs(lo), np.abs(hi))
        degenerate = max_abs < _DEGENERATE_WIDTH
        scale = np.where(degenerate, 1.0, max_abs / qmax)
        zero = np.zeros_like(scale, dtype=np.int64)
    else:
        rmin = np.minimum(lo, 0.0)
        rmax = np.maximum(hi, 0.0)
        degenerate = (rmax - rmin) < _DEGENERATE_WIDTH
        scale = np.where(degenerate, 1.0, (rmax - rmin) / (qmax - qmin))
        zp = qmin - rmin / scale
        zero = np.clip(round_half_away_from_zero(zp), qmin, qmax).astype(np.int64)
        zero = np.where(degenerate, qmin, zero)
    scale32 = scale.astype(np.float32)
    if np.any(scale32 <= 0) or not np.all(np.isfinite(scale32)):
        raise ValueError(
            f"range [{x_min}, {x_max}] gives scale {scale} that float32 cannot hold; "
            "use a range of moderate magnitude"
        )
    if axis is None:
        return QuantParams(
            float(scale32), int(zero), name, narrow_range=narrow_range, symmetric=symmetric
        )
    return QuantParams(scale32, zero, name, axis, narrow_range=narrow_range, symmetric=symmetric)


def _bounds(x_min: Any, x_max: Any, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    if axis is None:
        lo = np.float64(finite_scalar(x_min, "x_min"))
        hi = np.float64(finite_scalar(x_max, "x_max"))
    else:
        lo = as_float_array(x_min, "x_min").astype(np.float64)
        hi = as_float_array(x_max, "x_max").astype(np.float64)
        if lo.ndim != 1 or lo.shape != hi.shape:
            raise ValueError(
                "per-channel x_min and x_max must be 1-D arrays of one length, "
                f"got shapes {lo.shape} and {hi.shape}"
            )
    if np.any(lo > hi):
        where = "" if axis is None else f" at channel {int(np.argmax(lo > hi))}"
        raise ValueError(f"x_min > x_max{where} ({lo} > {hi}); pass the bounds in order")
    return lo, hi


def qparams_for(
    x: Any,
    *,
    dtype: Any = "int8",
    symmetric: bool = False,
    narrow_range: bool = False,
    axis: int | None = None,
) -> QuantParams:
    """Choose parameters from a tensor's min and max (per channel along ``axis`` if given).

    Example::

        >>> qparams_for([[-1.0, 2.0], [0.5, 4.0]], axis=1, symmetric=True).scale
        array([0.00787402, 0.03149606], dtype=float32)
    """
    arr = as_float_array(x, "x")
    if axis is None:
        return choose_qparams(
            arr.min(), arr.max(), dtype=dtype, symmetric=symmetric, narrow_range=narrow_range
        )
    if not -arr.ndim <= axis < arr.ndim:
        raise ValueError(f"axis={axis} is out of range for x of shape {arr.shape}")
    axis = axis % arr.ndim
    others = tuple(i for i in range(arr.ndim) if i != axis)
    return choose_qparams(
        arr.min(axis=others),
        arr.max(axis=others),
        dtype=dtype,
        symmetric=symmetric,
        narrow_range=narrow_range,
        axis=axis,
    )
