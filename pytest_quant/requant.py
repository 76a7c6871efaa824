"""TFLite's integer requantization, and an int8 FULLY_CONNECTED layer, in numpy int64.

A quantized kernel accumulates in int32, then rescales the accumulator to the output's
scale with a fixed-point multiplier: ``real = input_scale * weight_scale / output_scale``
becomes ``(multiplier, shift)`` with ``multiplier`` in [2^30, 2^31) (``quantize_multiplier``)
and ``x * real`` becomes integer arithmetic (``multiply_by_quantized_multiplier``), with
either gemmlowp's two roundings (a rounding doubling high multiply, then a rounding right
shift) or one rounding (``TFLITE_SINGLE_ROUNDING``). The two differ by one step on a small
fraction of values, and LiteRT changed between them: measured, the reference kernels of
ai-edge-litert 1.2.0 round twice and those of 2.3.0 once (XNNPACK rounds once in both).
tests/test_requant.py probes the installed LiteRT and checks the matching mode bit for
bit against its reference kernels on generated layers.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from ._checks import finite_scalar, int_codes, whole_numbers
from .qparams import QuantParams, require_qparams
from .rounding import round_half_away_from_zero

Rounding = Literal["double", "single"]
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_FROM_QM = "get (multiplier, shift) from quantize_multiplier(real_multiplier)"


def _check_rounding(rounding: Any) -> None:
    if not (isinstance(rounding, str) and rounding in ("single", "double")):
        raise ValueError(
            f"rounding={rounding!r}: use 'single' (TFLITE_SINGLE_ROUNDING: XNNPACK, and the "
            "reference kernels of ai-edge-litert 2.3) or 'double' (gemmlowp's two roundings: "
            "the reference kernels of ai-edge-litert 1.2)"
        )


def quantize_multiplier(
    real_multiplier: float, *, rounding: Rounding = "double"
) -> tuple[int, int]:
    """``QuantizeMultiplier``: ``real ~= multiplier * 2**(shift - 31)``, multiplier < 2**31.

    Multipliers below 2**-31 flush to ``(0, 0)``; with ``rounding="single"`` a shift
    above 30 saturates to ``(2**31 - 1, 30)``, as in TFLite.

    :raises ValueError: a negative or non-finite ``real_multiplier``, an unknown ``rounding``.

    Example::

        >>> quantize_multiplier(0.5)
        (1073741824, 0)
    """
    _check_rounding(rounding)
    m = finite_scalar(real_multiplier, "real_multiplier")
    if m < 0:
        raise ValueError(
            f"real_multiplier={m} must be >= 0 (input_scale * weight_scale / output_scale)"
        )
    if m == 0:
        return 0, 0
    q, shift = math.frexp(m)
    fixed = int(np.sign(q) * math.floor(abs(q) * 2**31 + 0.5))  # TfLiteRound on a double
    if fixed == 2**31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if rounding == "single" and shift > 30:
        return _I32_MAX, 30
    return fixed, shift


def _high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int64 arrays of int32 values."""
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))  # C++ division truncates
    return np.where((a == b) & (a == _I32_MIN), _I32_MAX, high)


def _rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def _multiplier_and_shift(multiplier: Any, shift: Any) -> tuple[Any, Any]:
    m = whole_numbers(
        multiplier,
        "multiplier",
        0,
        _I32_MAX,
        what="TFLite's quantized multipliers",
        hint=_FROM_QM,
    )
    s = whole_numbers(
        shift,
        "shift",
        -31,
        30,
        what="the shifts MultiplyByQuantizedMultiplier allows (its TFLITE_DCHECK)",
        hint=_FROM_QM + "; a shift above 30 means a real multiplier of 2**30 or more",
    )
    return m, s


def _broadcast(*arrays: np.ndarray) -> None:
    try:
        np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise ValueError(
            f"x, multiplier and shift have shapes {shapes} that do not broadcast; pass one "
            "multiplier and shift per channel along x's last axis, or scalars"
        ) from None


def multiply_by_quantized_multiplier(
    x: Any, multiplier: Any, shift: Any, *, rounding: Rounding = "single"
) -> np.ndarray:
    """``MultiplyByQuantizedMultiplier`` for int32 ``x``: ``x * multiplier * 2**(shift - 31)``,
    rounded as TFLite's int8 and uint8 kernels rescale their int32 accumulators.

    ``multiplier`` and ``shift`` broadcast against ``x`` (per-channel rescaling). The
    domain is the one TFLite's debug checks (``TFLITE_DCHECK``) allow: ``x`` in int32,
    ``multiplier`` in [0, 2**31 - 1], ``shift`` in [-31, 30]. Over all of it the int64
    arithmetic is exact (``|x * multiplier| < 2**62``; tests/test_requant.py checks it
    against Python ints); outside it this raises rather than overflowing. int64
    accumulators (int16 activations, 16x8 kernels) are out of scope: TFLite's source
    rescales them through another overload, with a 16-bit multiplier, while the reference
    kernel of ai-edge-litert 2.3 was measured to use the full one. Results are returned
    unwrapped, as int64 (the kernels clamp them to the output type next).

    :raises ValueError: NaN/Inf or fractional ``x``, a value outside the domain (naming
        the argument, the value and its index), an unknown ``rounding``.

    Example::

        >>> multiply_by_quantized_multiplier([5, -5, 7], 1 << 30, 0).tolist()  # x * 0.5
        [3, -2, 4]
    """
    _check_rounding(rounding)
    xs = whole_numbers(
        x,
        "x",
        _I32_MIN,
        _I32_MAX,
        what="int32, the accumulators of the int8/uint8 kernels,",
        hint="int64 accumulators (int16 kernels) are rescaled differently and not modelled",
    )
    m, s = _multiplier_and_shift(multiplier, shift)
    _broadcast(xs, m, s)
    if rounding == "single":
        # |x * m| < 2**62 and the rounding term <= 2**61: no int64 overflow.
        total = 31 - s
        return ((xs * m + (np.int64(1) << (total - 1))) >> total).astype(np.int64)
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    # With a multiplier from quantize_multiplier (>= 2**30) the C++ int32 product
    # overflows only when |x * real| >= 2**30, far beyond any output type: saturating
    # it gives the same clamped output.
    shifted = np.clip(xs * (np.int64(1) << left), _I32_MIN, _I32_MAX)
    return _rounding_divide_by_pot(_high_mul(shifted, m), right)


def fully_connected_int8(
    x: Any,
    weights: Any,
    bias: Any,
    *,
    input_qparams: QuantParams,
    weight_qparams: QuantParams,
    output_qparams: QuantParams,
    activation: str = "NONE",
    rounding: Rounding = "single",
) -> np.ndarray:
    """TFLite's reference int8 FULLY_CONNECTED: ``x`` (batch, in) int8 codes, ``weights``
    (out, in) int8 codes, ``bias`` (out,) int32 codes or None; returns (batch, out) int8.

    Weights are per-tensor (any zero point, as the kernel subtracts it) or per-channel
    on axis 0 (zero point 0: LiteRT's reference kernel ignores a per-channel zero point
    and XNNPACK rejects one, so this raises instead). ``activation`` is the fused
    ``"NONE"``, ``"RELU"`` or ``"RELU6"``. Bit-exact with LiteRT's reference kernel
    (tests/test_requant.py, including its own ``SimpleTestQuantizedInt8``).

    :raises TypeError: float inputs (int8 codes expected: quantize them first), or
        parameters that are not :class:`QuantParams`.
    :raises ValueError: a code outside int8 (bias: int32), shapes that do not match,
        an int32 accumulator overflow, an unknown ``activation`` or ``rounding``.

    Example::

        >>> qp = QuantParams(0.5, 0)
        >>> fully_connected_int8([[2, 4]], [[1, 1]], None, input_qparams=qp,
        ...                      weight_qparams=QuantParams(1.0, 0), output_qparams=qp).tolist()
        [[6]]
    """
    _check_rounding(rounding)
    for name, qp in (
        ("input_qparams", input_qparams),
        ("weight_qparams", weight_qparams),
        ("output_qparams", output_qparams),
    ):
        require_qparams(qp, name)
        if qp.dtype != "int8":
            raise ValueError(
                f"{name} has dtype {qp.dtype!r}, but fully_connected_int8 models int8 tensors "
                "only; pass int8 QuantParams (e.g. qparams_for(x, dtype='int8'))"
            )
    hint = "int8 codes expected: quantize float data first with quantize(x, qparams)"
    q = int_codes(x, "x", "int8", -128, 127, hint=hint)
    w = int_codes(weights, "weights", "int8", -128, 127, hint=hint)
    _check_shapes(q, w)
    w_zero = _weight_zero_point(weight_qparams, w.shape[0])
    acc = (q - _per_tensor_zero_point(input_qparams, "input_qparams")) @ (w - w_zero).T
    if bias is not None:
        b = int_codes(
            bias, "bias", "int32", _I32_MIN, _I32_MAX, hint="quantize it with quantize_bias"
        )
        if b.shape != (w.shape[0],):
            raise ValueError(
                f"bias has shape {b.shape}, weights have {w.shape[0]} output units; "
                f"pass one int32 bias code per unit, shape ({w.shape[0]},)"
            )
        acc = acc + b
    _check_accumulators(acc)
    w_scales = np.atleast_1d(np.asarray(weight_qparams.scale, np.float32)).astype(np.float64)
    real = (
        np.float64(np.float32(input_qparams.scale))
        * w_scales
        / np.float64(np.float32(output_qparams.scale))
    )
    pairs = [quantize_multiplier(float(r), rounding=rounding) for r in real]
    mult = np.array([p[0] for p in pairs], np.int64)
    shift = np.array([p[1] for p in pairs], np.int64)
    out = multiply_by_quantized_multiplier(acc, mult, shift, rounding=rounding)
    out = out + _per_tensor_zero_point(output_qparams, "output_qparams")
    lo, hi = _activation_range(activation, output_qparams)
    return np.clip(out, lo, hi).astype(np.int8)


def _check_shapes(q: np.ndarray, w: np.ndarray) -> None:
    if w.ndim != 2:
        raise ValueError(f"weights must be 2-D (out, in), got shape {w.shape}")
    if q.ndim != 2 or q.shape[1] != w.shape[1]:
        raise ValueError(
            f"x has shape {q.shape}, weights {w.shape}: pass x as (batch, {w.shape[1]})"
        )


def _per_tensor_zero_point(qp: QuantParams, name: str) -> int:
    if qp.is_per_channel:
        raise ValueError(f"{name} must be per-tensor (axis=None), got axis={qp.axis}")
    return int(qp.zero_point)


def _weight_zero_point(qp: QuantParams, units: int) -> Any:
    if not qp.is_per_channel:
        return int(qp.zero_point)
    if qp.axis != 0 or qp.scale.shape[0] != units:
        raise ValueError(
            f"per-channel weight_qparams must be on axis 0 with one scale per output unit "
            f"({units}), got axis={qp.axis} with {qp.scale.shape[0]} scales"
        )
    nonzero = np.flatnonzero(qp.zero_point)
    if nonzero.size:
        c = int(nonzero[0])
        raise ValueError(
            f"weight_qparams.zero_point[{c}]={int(qp.zero_point[c])}: per-channel int8 "
            "weights must have zero point 0 (TFLite's int8 spec; LiteRT's reference kernel "
            "ignores it, XNNPACK rejects the model); quantize them with symmetric=True"
        )
    return 0


def _check_accumulators(acc: np.ndarray) -> None:
    over = (acc < _I32_MIN) | (acc > _I32_MAX)
    if over.any():
        b, o = (int(i) for i in np.argwhere(over)[0])
        raise ValueError(
            f"the int32 accumulator of batch {b}, unit {o} is {int(acc[b, o])}, outside "
            "int32: TFLite's kernel would overflow it; use fewer inputs per unit or "
            "smaller bias codes"
        )


def _activation_range(activation: str, qp: QuantParams) -> tuple[int, int]:
    lo, hi = -128, 127
    zero = int(qp.zero_point)
    scale = np.float32(qp.scale)

    def q(v: float) -> int:
        return zero + int(round_half_away_from_zero(np.float32(v) / scale))  # TfLiteRound

    if activation == "NONE":
        return lo, hi
    if activation == "RELU":
        return max(lo, q(0.0)), hi
    if activation == "RELU6":
        return max(lo, q(0.0)), min(hi, q(6.0))
    raise ValueError(f"activation={activation!r}: use 'NONE', 'RELU' or 'RELU6'")
