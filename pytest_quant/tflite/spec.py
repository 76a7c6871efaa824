"""The TFLite quantization spec, checked op by op under the scheme a model uses.

The scheme (:mod:`~pytest_quant.tflite.scheme`) is the one ``scheme=`` demands, or else
the one the model's ops vote for; a selective recipe that keeps some ops in float is
checked by its quantized ops, and its float ops are no violation. ``weights=`` names the
integer weight types a team intends (default ``"int8"``, the TFLite spec; ``"int4"``;
``"int2"``; or a tuple of them for mixed recipes); any other integer weight type is a
violation.

Rules, per op by its own types (so mixed models are checked op by op); rules from
https://ai.google.dev/edge/litert/models/quantization_spec, summarized in QUANT-FACTS:

- Weights (input 1 of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) of an integer op or
  of a dynamic-range op: a type ``weights=`` allows; symmetric (zero point 0); int8
  narrow range (-128 never used); scales finite and > 0; per-axis on the op's channel
  dimension (CONV_2D 0, DEPTHWISE_CONV_2D 3, FULLY_CONNECTED 0), one scale per channel.
  Int4 and int2 weights are packed (two or four values a byte, low bits first; the
  flatbuffer reader unpacks them): the buffer must hold the tensor's values. Every int4
  value is allowed ([-8, 7]): ai-edge-quantizer uses a narrow range only from 8 bits up
  (its kernels widen smaller types to int8 first), and in practice emits [-7, 7].
  Blockwise weights (ai-edge-quantizer ``*_b32``/``*_b64``) keep their scales in a
  tensor of their own: those must be finite and > 0, and their zero points 0.
- Bias of an integer op: int32 under int8 activations, int64 (or int32, the converter's
  ``_experimental_full_integer_quantization_bias_type``) under int16; zero point 0;
  scales finite and > 0; scale = input scale x weight scale. An all-zero bias is exempt
  from the last rule: its scale is irrelevant (the int16x8 converter shares one zero
  bias among bias-less convolutions, whose scale can match only one of them).
- Int8 outputs of LOGISTIC, SOFTMAX, TANH, L2_NORMALIZATION and LOG_SOFTMAX have fixed
  parameters, and so do int16 outputs of LOGISTIC, SOFTMAX and TANH (1/32768, 0); the
  ops in :data:`SAME_PARAMS` keep their input's scale and zero point; int16 activations
  are symmetric (zero point 0).
- A DEQUANTIZE of integer weights (weight-only): a type ``weights=`` allows, scales
  finite and > 0, zero points within the type's range, per-axis on its consumer's
  channel dimension. Zero points other than 0 and -128 are allowed: DEQUANTIZE handles
  them, and only integer kernels need symmetric narrow weights.
- A DEQUANTIZE of float16 constants: the values are finite (an overflow of the float16
  range is a broken model). Float ops: nothing to check.

Only the main subgraph is linted. A failure names the op, the tensor and the rule;
model-level rules (the scheme demanded with ``scheme=``) name op -1. Bytes that are not a
well-formed model (a corrupt file) are no violation: they raise
:class:`~pytest_quant.tflite.flatbuffer.MalformedModelError` before any rule runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .flatbuffer import Op, Tensor, packed_nbytes, read_ops
from .scheme import SCHEMES, WEIGHT_TYPES, describe, integer_constant, scheme_of, weight_types_of

#: channel (quantized) dimension of per-axis weights, by op
WEIGHT_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}
#: fixed (scale, zero point) of int8 outputs
FIXED_OUTPUT = {
    "LOGISTIC": (1 / 256, -128),
    "SOFTMAX": (1 / 256, -128),
    "TANH": (1 / 128, 0),
    "L2_NORMALIZATION": (1 / 128, 0),
    "LOG_SOFTMAX": (16 / 256, 127),
}
#: fixed (scale, zero point) of int16 outputs (converter and ai-edge-quantizer agree)
FIXED_OUTPUT_INT16 = {
    "LOGISTIC": (1 / 32768, 0),
    "SOFTMAX": (1 / 32768, 0),
    "TANH": (1 / 32768, 0),
}
#: ops whose quantized inputs and output must have the same scale and zero point
SAME_PARAMS = frozenset(
    {
        "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION", "RESHAPE", "RESIZE_BILINEAR",
        "SPACE_TO_DEPTH", "PAD", "GATHER", "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND",
        "TRANSPOSE", "SQUEEZE", "MAXIMUM", "MINIMUM", "SLICE",
    }
)  # fmt: skip
_BIAS_RTOL = 1e-5
MAX_LISTED = 20
_SYMMETRIC = "weights must be symmetric: zero point 0"


@dataclass(frozen=True)
class Violation:
    """One broken rule: where (op, tensor) and what (rule, found). Op -1: the model."""

    op_index: int
    op: str
    tensor: str
    rule: str
    found: str

    def __str__(self) -> str:
        where = f"op {self.op_index} {self.op}, tensor {self.tensor!r}"
        if self.op_index < 0:  # the model's scheme: "must be X but is Y" reads best
            return f"{where}: {self.rule} but is {self.found}"
        return f"{where}: {self.rule} (found {self.found})"


# --- argument validation ----------------------------------------------------------


def _scheme_arg(scheme: str | None) -> str | None:
    if scheme is None or scheme in SCHEMES:
        return scheme
    hint = ""
    if scheme in WEIGHT_TYPES:
        hint = f"; {scheme} is a weight type: pass weights={scheme!r}"
    raise ValueError(
        f"scheme={scheme!r}: use one of {', '.join(map(repr, SCHEMES))}, or None to detect it{hint}"
    )


def _weights_arg(weights: str | Iterable[str] | None) -> tuple[str, ...]:
    if weights is None:
        return ("int8",)
    names = (weights,) if isinstance(weights, str) else tuple(weights)
    bad = [w for w in names if w not in WEIGHT_TYPES]
    if bad or not names:
        raise ValueError(
            f"weights={weights!r}: use one of {', '.join(map(repr, WEIGHT_TYPES))} "
            "or a tuple of them"
        )
    return names


# --- rules --------------------------------------------------------------------------


def _v(op: Op, t: Tensor, rule: str, found: str) -> Violation:
    return Violation(op.index, op.name, t.name, rule, found)


def _first_bad(values: np.ndarray, bad: np.ndarray, noun: str) -> str:
    """The first offending value and how many there are: never the whole array."""
    flat = np.ravel(values)
    i = int(np.flatnonzero(np.ravel(bad))[0])
    if flat.size == 1:
        return f"{noun} {float(flat[i]):.9g}"
    return f"{flat.size} {noun}s, first {float(flat[i]):.9g} at [{i}]"


def _valid_scales(scale: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(scale) & (scale > 0)


def _weight_type(op: Op, w: Tensor, allowed: tuple[str, ...]) -> Violation | None:
    if w.dtype.lower() in allowed:
        return None
    hint = " (option weights=)" if w.dtype.lower() in WEIGHT_TYPES else ""
    return _v(op, w, f"weights must be {' or '.join(allowed)}{hint}", w.dtype)


def _weights(
    op: Op,
    w: Tensor,
    *,
    allowed: tuple[str, ...],
    channels: tuple[str, int] | None,
    strict: bool,
) -> list[Violation]:
    """The rules of one weight tensor. ``channels``: the op that uses it and its channel
    dimension; ``strict``: symmetric narrow weights (what integer kernels need)."""
    wrong_type = _weight_type(op, w, allowed)
    if wrong_type is not None:
        return [wrong_type]
    kind = w.dtype.lower()
    if w.blockwise:
        return _block_weights(op, w, kind, strict)
    if not w.quantized:
        return [_v(op, w, f"{kind} weights need quantization parameters", "none")]
    return [
        *_packed_size(op, w, kind),
        *_weight_zero_points(op, w, kind, strict),
        *_narrow_range(op, w, kind, strict),
        *_weight_scales(op, w),
        *_per_axis(op, w, channels),
    ]


def _packed_size(op: Op, w: Tensor, kind: str) -> list[Violation]:
    need = packed_nbytes(w.dtype, w.shape)
    if need is None or not w.constant or w.nbytes is None or w.nbytes == need:
        return []
    rule = f"packed {kind} weights hold {8 // WEIGHT_TYPES[kind]} values a byte: {need} bytes"
    return [_v(op, w, rule, f"{w.nbytes} bytes")]


def _weight_zero_points(op: Op, w: Tensor, kind: str, strict: bool) -> list[Violation]:
    bits = WEIGHT_TYPES[kind]
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    bad = w.zero_point != 0 if strict else (w.zero_point < lo) | (w.zero_point > hi)
    if not np.any(bad):
        return []
    i = int(np.flatnonzero(bad)[0])
    rule = _SYMMETRIC if strict else f"weight zero points must be in [{lo}, {hi}]"
    return [_v(op, w, rule, f"zero_point[{i}] = {w.zero_point[i]}")]


def _narrow_range(op: Op, w: Tensor, kind: str, strict: bool) -> list[Violation]:
    data = w.data
    if not strict or kind != "int8" or data is None or not data.size or data.min() >= -127:
        return []
    where = np.unravel_index(int(np.argmin(data)), data.shape)
    rule = "weights must be in [-127, 127] (narrow range, -128 unused)"
    return [_v(op, w, rule, f"{int(data.min())} at index {tuple(int(i) for i in where)}")]


def _weight_scales(op: Op, w: Tensor) -> list[Violation]:
    valid = _valid_scales(w.scale)
    if np.all(valid):
        return []
    found = _first_bad(w.scale, ~valid, "scale")
    return [_v(op, w, "weight scales must be finite and > 0", found)]


def _per_axis(op: Op, w: Tensor, channels: tuple[str, int] | None) -> list[Violation]:
    if channels is None or w.scale.size <= 1:
        return []
    user, axis = channels
    if w.axis != axis:
        rule = f"per-axis weights of {user} are quantized on dimension {axis}"
        return [_v(op, w, rule, f"quantized_dimension = {w.axis}")]
    if len(w.shape) > axis and w.scale.size != w.shape[axis]:
        rule = f"one weight scale per channel ({w.shape[axis]})"
        return [_v(op, w, rule, f"{w.scale.size} scales")]
    return []


def _block_weights(op: Op, w: Tensor, kind: str, strict: bool) -> list[Violation]:
    out = []
    if w.block_scale is not None:
        scales = w.block_scale.astype(np.float32)
        valid = _valid_scales(scales)
        if not np.all(valid):
            found = _first_bad(scales, ~valid, "block scale")
            out.append(_v(op, w, f"{kind} block scales must be finite and > 0", found))
    zeros = w.block_zero_point
    if strict and zeros is not None and np.any(zeros != 0):
        i = int(np.flatnonzero(zeros != 0)[0])
        out.append(_v(op, w, _SYMMETRIC, f"block zero_point[{i}] = {zeros.flat[i]}"))
    return out


def _bias(op: Op, act: Tensor, w: Tensor, b: Tensor) -> list[Violation]:
    want = ("INT64", "INT32") if act.dtype == "INT16" else ("INT32",)
    if b.dtype not in want:
        return [_v(op, b, f"bias must be {' or '.join(t.lower() for t in want)}", b.dtype)]
    out = []
    if np.any(b.zero_point != 0):
        out.append(_v(op, b, "bias zero point must be 0", str(b.zero_point[b.zero_point != 0][0])))
    valid = _valid_scales(b.scale)
    if not np.all(valid):
        found = _first_bad(b.scale, ~valid, "scale")
        return [*out, _v(op, b, "bias scales must be finite and > 0", found)]
    if b.data is not None and not np.any(b.data):
        return out  # all zero: the scale is irrelevant (and may be shared)
    return [*out, *_bias_scale(op, act, w, b)]


def _bias_scale(op: Op, act: Tensor, w: Tensor, b: Tensor) -> list[Violation]:
    """The bias scale is the input scale x the weight scale (per channel)."""
    with np.errstate(all="ignore"):  # 0 x inf: judged below, without a RuntimeWarning
        expected = np.float64(act.scale[0]) * w.scale.astype(np.float64)
    if not np.all(_valid_scales(expected)):
        return []  # the weight (or input) scale is already wrong: nothing to compare with
    got = b.scale.astype(np.float64)
    if expected.size > 1 and got.size != expected.size:
        return [_v(op, b, "one bias scale per weight scale", f"{got.size} vs {expected.size}")]
    expected = np.broadcast_to(expected, got.shape)
    if np.allclose(got, expected, rtol=_BIAS_RTOL, atol=0):
        return []
    c = int(np.argmax(np.abs(got - expected) / expected))
    found = f"scale[{c}] = {got.flat[c]:.9g}, expected {expected.flat[c]:.9g}"
    return [_v(op, b, "bias scale must be input scale x weight scale", found)]


def _weight_op(op: Op, allowed: tuple[str, ...]) -> list[Violation]:
    act = op.inputs[0] if op.inputs else None
    w = op.inputs[1] if len(op.inputs) > 1 else None
    if w is None or act is None:
        return []
    channels = (op.name, WEIGHT_AXIS[op.name])
    if act.quantized and act.dtype in ("INT8", "UINT8", "INT16"):
        out = _weights(op, w, allowed=allowed, channels=channels, strict=True)
        if _weight_type(op, w, allowed) is not None:
            return out  # wrong weight type: its bias cannot be judged
        b = op.inputs[2] if len(op.inputs) > 2 else None
        if b is not None and w.quantized:
            out += _bias(op, act, w, b)
        return out
    if act.quantized:
        return []  # another integer type: no TFLite rule to check
    if integer_constant(w) or (w.quantized and w.dtype != "FLOAT32"):
        return _weights(op, w, allowed=allowed, channels=channels, strict=True)  # dynamic
    return []  # a float op (its weights may come from a DEQUANTIZE, checked there)


def _dequantize(
    op: Op, allowed: tuple[str, ...], consumers: dict[int, list[tuple[Op, int]]]
) -> list[Violation]:
    t = op.inputs[0] if op.inputs else None
    if t is None or not t.constant:
        return []  # an activation leaving the integer part of the model
    if t.dtype == "FLOAT16":
        if t.data is not None and not np.all(np.isfinite(t.data)):
            found = _first_bad(t.data, ~np.isfinite(t.data), "value")
            return [_v(op, t, "float16 constants must be finite", found)]
        return []
    if not integer_constant(t):
        return []
    uses = consumers.get(op.outputs[0].index, []) if op.outputs else []
    users = [(c.name, WEIGHT_AXIS[c.name]) for c, k in uses if k == 1 and c.name in WEIGHT_AXIS]
    channels = users[0] if users else None  # the channel dimension of the op it feeds
    return _weights(op, t, allowed=allowed, channels=channels, strict=False)


def _fixed_output(op: Op) -> list[Violation]:
    out = op.outputs[0]
    table = {"INT8": FIXED_OUTPUT, "INT16": FIXED_OUTPUT_INT16}.get(out.dtype, {})
    if op.name not in table or not out.quantized:
        return []
    scale, zero = table[op.name]
    if float(out.scale[0]) == np.float32(scale) and int(out.zero_point[0]) == zero:
        return []
    rule = f"{op.name} output must have scale {scale:g} and zero point {zero}"
    found = f"scale {float(out.scale[0]):.9g}, zero point {int(out.zero_point[0])}"
    return [_v(op, out, rule, found)]


def _same_params(op: Op) -> list[Violation]:
    out = op.outputs[0]
    if not out.quantized:
        return []
    found = []
    for t in op.inputs:
        if t is None or t.dtype != out.dtype or not t.quantized or t.data is not None:
            continue
        if np.array_equal(t.scale, out.scale) and np.array_equal(t.zero_point, out.zero_point):
            continue
        params = (
            f"input {float(t.scale[0]):.9g}/{int(t.zero_point[0])}, output "
            f"{float(out.scale[0]):.9g}/{int(out.zero_point[0])}"
        )
        found.append(_v(op, t, f"{op.name} keeps its input's scale and zero point", params))
    return found


def _int16_symmetric(op: Op, seen: set[int]) -> list[Violation]:
    found = []
    for t in (*op.inputs, *op.outputs):
        if t is None or t.dtype != "INT16" or not t.quantized or t.constant or t.index in seen:
            continue
        seen.add(t.index)
        nz = np.flatnonzero(t.zero_point)
        if nz.size:
            rule = "int16 activations must be symmetric: zero point 0"
            found.append(_v(op, t, rule, f"zero_point[{nz[0]}] = {t.zero_point[nz[0]]}"))
    return found


def _consumers(ops: list[Op]) -> dict[int, list[tuple[Op, int]]]:
    """Tensor index -> the ops that read it, and at which input."""
    consumers: dict[int, list[tuple[Op, int]]] = {}
    for op in ops:
        for k, t in enumerate(op.inputs):
            if t is not None:
                consumers.setdefault(t.index, []).append((op, k))
    return consumers


def _lint(
    ops: list[Op], scheme: str | None, allowed: tuple[str, ...]
) -> tuple[str, list[Violation]]:
    """The scheme checked (demanded, or else detected) and every violation."""
    found: list[Violation] = []
    seen: set[int] = set()
    consumers = _consumers(ops)
    for op in ops:
        if op.name in WEIGHT_AXIS:
            found += _weight_op(op, allowed)
        elif op.name == "DEQUANTIZE":
            found += _dequantize(op, allowed, consumers)
        if op.outputs and (op.name in FIXED_OUTPUT or op.name in FIXED_OUTPUT_INT16):
            found += _fixed_output(op)
        if op.outputs and op.name in SAME_PARAMS:
            found += _same_params(op)
        found += _int16_symmetric(op, seen)
    detected = scheme_of(ops)
    if scheme is not None and scheme != detected:
        must = f"the model must be {describe(scheme)}"
        found.insert(0, Violation(-1, "-", "-", must, describe(detected, weight_types_of(ops))))
    return scheme or detected, found


def lint_tflite(
    model: Any, *, scheme: str | None = None, weights: str | Iterable[str] | None = None
) -> list[Violation]:
    """Every violation of its quantization scheme in ``model`` (bytes, a path or a
    runner): model-level first, then in op order. ``scheme`` and ``weights`` as in
    :func:`assert_tflite_spec`; an empty list for a model that passes. Malformed bytes
    raise :class:`~pytest_quant.tflite.flatbuffer.MalformedModelError`.

    Example::

        assert lint_tflite(aeq_model, weights="int4") == []
    """
    demanded, allowed = _scheme_arg(scheme), _weights_arg(weights)
    return _lint(read_ops(model), demanded, allowed)[1]


def failure_message(scheme: str, violations: list[Violation]) -> str:
    """The assertion message of :func:`assert_tflite_spec` (capped at ``MAX_LISTED``).

    Example::

        message = failure_message("int8", lint_tflite(model))
    """
    lines = [
        f"the model breaks the TFLite {scheme} quantization spec in {len(violations)} place(s):"
    ]
    lines += [f"  {v}" for v in violations[:MAX_LISTED]]
    if len(violations) > MAX_LISTED:
        lines.append(f"  ... and {len(violations) - MAX_LISTED} more")
    return "\n".join(lines)


def assert_tflite_spec(
    model: Any, *, scheme: str | None = None, weights: str | Iterable[str] | None = None
) -> None:
    """Assert ``model`` follows the rules of its TFLite quantization scheme.

    :param model: the ``.tflite`` bytes, a path to one, or a :class:`TFLiteRunner`.
    :param scheme: the scheme the model must use: ``"int8"`` (full integer),
        ``"int16x8"``, ``"dynamic"``, ``"weight_only"``, ``"float16"`` or ``"float"``.
        ``None`` (the default) detects it (:func:`detect_scheme`) and checks its rules,
        so a float model passes; a named scheme the model does not use is a failure.
    :param weights: the intended integer weight types: ``"int8"`` (the default and the
        TFLite spec), ``"int4"``, ``"int2"``, or a tuple of them (a mixed recipe). Other
        integer weights are violations.
    :raises AssertionError: the model breaks a rule; the message names the scheme
        checked and lists each violation with the op index, op, tensor and rule (up to
        20).
    :raises MalformedModelError: (a ``ValueError``) bytes that are not a well-formed
        TFLite model, naming the source and the first thing wrong.
    :raises ValueError: an unknown ``scheme`` or weight type.

    Example::

        def test_spec(quant_tflite, keras_model, x_calib):
            assert_tflite_spec(quant_tflite(keras_model, x_calib, mode="int8"), scheme="int8")

        def test_int4_spec(aeq_int4_model):
            assert_tflite_spec(aeq_int4_model, scheme="dynamic", weights="int4")
    """
    __tracebackhide__ = True
    from ..assertions import record

    demanded, allowed = _scheme_arg(scheme), _weights_arg(weights)
    checked, violations = _lint(read_ops(model), demanded, allowed)
    record("assert_tflite_spec", "violations", float(len(violations)), 0.0, not violations)
    if violations:
        raise AssertionError(failure_message(checked, violations))
