"""A linter for the TFLite int8 quantization specification.

Rules (https://ai.google.dev/edge/litert/models/quantization_spec, summarized in
QUANT-FACTS): weights int8, symmetric (zero point 0), narrow range (-128 never used),
per-axis on the op's channel dimension; bias int32 (int64 under int16 activations) with
zero point 0 and scale = input scale x weight scale; fixed output parameters of LOGISTIC,
SOFTMAX, TANH, L2_NORMALIZATION and LOG_SOFTMAX; and the ops whose inputs and output
must share scale and zero point. A failure names the op, the tensor and the rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .flatbuffer import Op, Tensor, decode, read_model

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


@dataclass(frozen=True)
class Violation:
    """One broken rule: where (op, tensor) and what (rule, found)."""

    op_index: int
    op: str
    tensor: str
    rule: str
    found: str

    def __str__(self) -> str:
        where = f"op {self.op_index} {self.op}, tensor {self.tensor!r}"
        return f"{where}: {self.rule} (found {self.found})"


def _content(model: Any) -> bytes:
    if hasattr(model, "content"):  # a TFLiteRunner
        return bytes(model.content)
    if isinstance(model, (str, os.PathLike)):
        return Path(model).read_bytes()
    return bytes(model)


def lint_tflite(model: Any) -> list[Violation]:
    """Every violation of the int8 spec in ``model`` (bytes, a path or a runner), in op order."""
    ops = decode(read_model(_content(model)))
    found: list[Violation] = []
    for op in ops:
        if op.name in WEIGHT_AXIS:
            found += _weights_and_bias(op)
        if op.name in FIXED_OUTPUT:
            found += _fixed_output(op)
        if op.name in SAME_PARAMS:
            found += _same_params(op)
    if not any(t is not None and t.quantized for op in ops for t in (*op.inputs, *op.outputs)):
        found.append(Violation(-1, "-", "-", "the model must be quantized", "no quantized tensor"))
    return found


def _v(op: Op, t: Tensor, rule: str, found: str) -> Violation:
    return Violation(op.index, op.name, t.name, rule, found)


def _weights_and_bias(op: Op) -> list[Violation]:
    out: list[Violation] = []
    act = op.inputs[0] if op.inputs else None
    w = op.inputs[1] if len(op.inputs) > 1 else None
    if w is None or not (w.quantized or (act is not None and act.quantized)):
        return out  # a float op: nothing to check
    if w.dtype != "INT8":
        return [_v(op, w, "weights must be int8", w.dtype)]
    if not w.quantized:
        return [_v(op, w, "int8 weights need quantization parameters", "none")]
    nz = np.flatnonzero(w.zero_point)
    if nz.size:
        out.append(
            _v(
                op,
                w,
                "weights must be symmetric: zero point 0",
                f"zero_point[{nz[0]}] = {w.zero_point[nz[0]]}",
            )
        )
    if w.data is not None and w.data.size and int(w.data.min()) < -127:
        where = np.unravel_index(int(np.argmin(w.data)), w.data.shape)
        out.append(
            _v(
                op,
                w,
                "weights must be in [-127, 127] (narrow range, -128 unused)",
                f"{int(w.data.min())} at index {tuple(int(i) for i in where)}",
            )
        )
    if not np.all(np.isfinite(w.scale) & (w.scale > 0)):
        out.append(_v(op, w, "weight scales must be finite and > 0", str(w.scale)))
    axis = WEIGHT_AXIS[op.name]
    if w.scale.size > 1:
        if w.axis != axis:
            out.append(
                _v(
                    op,
                    w,
                    f"per-axis weights of {op.name} are quantized on dimension {axis}",
                    f"quantized_dimension = {w.axis}",
                )
            )
        elif len(w.shape) > axis and w.scale.size != w.shape[axis]:
            out.append(
                _v(
                    op,
                    w,
                    f"one weight scale per channel ({w.shape[axis]})",
                    f"{w.scale.size} scales",
                )
            )
    b = op.inputs[2] if len(op.inputs) > 2 else None
    if b is None or act is None or not act.quantized:
        return out  # dynamic-range models keep float biases
    want = "INT64" if act.dtype == "INT16" else "INT32"
    if b.dtype != want:
        out.append(_v(op, b, f"bias must be {want.lower()}", b.dtype))
        return out
    if np.any(b.zero_point != 0):
        out.append(_v(op, b, "bias zero point must be 0", str(b.zero_point[b.zero_point != 0][0])))
    expected = np.float64(act.scale[0]) * w.scale.astype(np.float64)
    got = b.scale.astype(np.float64)
    if got.shape != np.broadcast_shapes(got.shape, expected.shape) and got.size != expected.size:
        out.append(_v(op, b, "one bias scale per weight scale", f"{got.size} vs {expected.size}"))
    elif not np.allclose(got, np.broadcast_to(expected, got.shape), rtol=_BIAS_RTOL, atol=0):
        c = int(np.argmax(np.abs(got - expected) / expected))
        out.append(
            _v(
                op,
                b,
                "bias scale must be input scale x weight scale",
                f"scale[{c}] = {got.flat[c]:.9g}, expected {np.ravel(expected)[c]:.9g}",
            )
        )
    return out


def _fixed_output(op: Op) -> list[Violation]:
    out = op.outputs[0]
    if out.dtype != "INT8" or not out.quantized:
        return []
    scale, zero = FIXED_OUTPUT[op.name]
    if float(out.scale[0]) == np.float32(scale) and int(out.zero_point[0]) == zero:
        return []
    return [
        _v(
            op,
            out,
            f"{op.name} output must have scale {scale:g} and zero point {zero}",
            f"scale {float(out.scale[0]):.9g}, zero point {int(out.zero_point[0])}",
        )
    ]


def _same_params(op: Op) -> list[Violation]:
    out = op.outputs[0]
    if not out.quantized:
        return []
    found = []
    for t in op.inputs:
        if t is None or t.dtype != out.dtype or not t.quantized or t.data is not None:
            continue
        if not (
            np.array_equal(t.scale, out.scale) and np.array_equal(t.zero_point, out.zero_point)
        ):
            found.append(
                _v(
                    op,
                    t,
                    f"{op.name} keeps its input's scale and zero point",
                    f"input {float(t.scale[0]):.9g}/{int(t.zero_point[0])}, output "
                    f"{float(out.scale[0]):.9g}/{int(out.zero_point[0])}",
                )
            )
    return found


def assert_tflite_spec(model: Any) -> None:
    """Assert ``model`` (bytes, a ``.tflite`` path or a runner) follows the int8 spec.

    The message lists each violation with the op, the tensor and the rule (up to 20).

    Example::

        def test_spec(quant_tflite, keras_model, x_calib):
            assert_tflite_spec(quant_tflite(keras_model, x_calib, mode="int8"))
    """
    __tracebackhide__ = True
    from ..assertions import record

    violations = lint_tflite(model)
    record("assert_tflite_spec", "violations", float(len(violations)), 0.0, not violations)
    if violations:
        lines = [
            f"the model breaks the TFLite int8 quantization spec in {len(violations)} place(s):"
        ]
        lines += [f"  {v}" for v in violations[:MAX_LISTED]]
        if len(violations) > MAX_LISTED:
            lines.append(f"  ... and {len(violations) - MAX_LISTED} more")
        raise AssertionError("\n".join(lines))
