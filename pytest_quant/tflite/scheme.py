"""Which quantization scheme a TFLite model uses, by a vote of its ops; its weight types.

Schemes (:data:`SCHEMES`; :func:`detect_scheme` names the one a model uses):

- ``"int8"``: full integer, int8 activations (the TFLite int8 spec).
- ``"int16x8"``: int16 activations, int8 weights.
- ``"dynamic"``: dynamic range; integer weights feed float ops as they are, and the
  kernels quantize the float activations on the fly (converter ``mode="dynamic"``,
  ai-edge-quantizer ``dynamic_wi8_afp32``/``dynamic_wi4_afp32``).
- ``"weight_only"``: integer weights DEQUANTIZEd to float at load, float compute
  (ai-edge-quantizer ``weight_only_wi8_afp32``/``weight_only_wi4_afp32``).
- ``"float16"``: float16 constants DEQUANTIZEd to float32 at load.
- ``"float"``: no quantized tensor.

The weight type is not part of the scheme: ``dynamic_wi4_afp32`` is ``"dynamic"`` with
int4 weights (:data:`WEIGHT_TYPES`: int8, int4, int2). :func:`detect_weight_types` lists
those a model has.

Detection: every op votes for the scheme its own tensors belong to (int8 or int16
quantized outputs; a float op fed an integer constant; a DEQUANTIZE of an integer or a
float16 constant). The scheme with most votes wins (ties: int8, int16x8, dynamic,
weight_only, float16), so a selective recipe that keeps some ops in float is detected
by its quantized ops.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, TypeGuard

from .flatbuffer import Op, Tensor, read_ops

#: scheme name -> what it means, as failure messages say it
SCHEMES = {
    "int8": "full integer",
    "int16x8": "int16 activations, int8 weights",
    "dynamic": "integer weights, float activations quantized on the fly",
    "weight_only": "integer weights dequantized at load, float activations",
    "float16": "float16 weights, float activations",
    "float": "no quantized tensor",
}
#: integer weight types, and their bits
WEIGHT_TYPES = {"int8": 8, "int4": 4, "int2": 2}
_TIE_ORDER = ("int8", "int16x8", "dynamic", "weight_only", "float16")


def integer_constant(t: Tensor | None) -> TypeGuard[Tensor]:
    """Whether ``t`` is a constant of an integer weight type (quantized or not)."""
    return t is not None and t.dtype.lower() in WEIGHT_TYPES and t.constant


def _quantized_weight(t: Tensor | None) -> TypeGuard[Tensor]:
    return integer_constant(t) and (t.quantized or t.blockwise)


def _dequantize_vote(t: Tensor | None) -> str | None:
    if t is None or not t.constant:
        return None  # an activation leaving the integer part of the model
    if t.dtype == "FLOAT16":
        return "float16"
    return "weight_only" if integer_constant(t) else None


def _vote(op: Op) -> str | None:
    """The scheme ``op`` belongs to by its own tensors (None: it does not say)."""
    if op.name == "DEQUANTIZE":
        return _dequantize_vote(op.inputs[0] if op.inputs else None)
    if op.name == "QUANTIZE":
        return None
    out_types = {t.dtype for t in op.outputs if t.quantized}
    if "INT16" in out_types:
        return "int16x8"
    if out_types & {"INT8", "UINT8"}:
        quantized_in = [t for t in op.inputs if t is not None and t.quantized]
        if quantized_in and all(t.constant for t in quantized_in):
            return None  # a lookup in a weight table (GATHER of an embedding): no activation
        return "int8"
    float_out = any(t.dtype == "FLOAT32" for t in op.outputs)
    if float_out and any(_quantized_weight(t) for t in op.inputs):
        return "dynamic"
    return None


def scheme_of(ops: list[Op]) -> str:
    """The scheme most of ``ops`` vote for (see the module docstring); ``"float"`` if none."""
    votes = Counter(v for v in map(_vote, ops) if v is not None)
    if not votes:
        return "float"
    return max(_TIE_ORDER, key=lambda s: (votes[s], -_TIE_ORDER.index(s)))


def weight_types_of(ops: list[Op]) -> tuple[str, ...]:
    """The integer weight types of the quantized constants ``ops`` read, widest first."""
    found = {t.dtype.lower() for op in ops for t in op.inputs if _quantized_weight(t)}
    return tuple(sorted(found, key=lambda name: -WEIGHT_TYPES[name]))


def detect_scheme(model: Any) -> str:
    """The quantization scheme of ``model`` (bytes, a ``.tflite`` path or a runner): one
    of :data:`SCHEMES`, by the scheme most of its ops use (see the module docstring).
    Malformed bytes raise :class:`~pytest_quant.tflite.flatbuffer.MalformedModelError`.

    Example::

        assert detect_scheme(convert(keras_model, None, mode="dynamic")) == "dynamic"
    """
    return scheme_of(read_ops(model))


def detect_weight_types(model: Any) -> tuple[str, ...]:
    """The integer weight types of ``model``, widest first: ``("int8",)``, ``("int4",)``,
    ``("int8", "int4")``, or ``()`` for a float or float16 model.

    Example::

        assert detect_weight_types(aeq_int4_model) == ("int4",)
    """
    return weight_types_of(read_ops(model))


def describe(scheme: str, weight_types: tuple[str, ...] = ()) -> str:
    """``scheme`` with its meaning, as failure messages say it: ``"int8 (full integer)"``,
    ``"dynamic (int4 weights, float activations quantized on the fly)"``.

    Example::

        assert describe("dynamic", ("int4",)).startswith("dynamic (int4 weights")
    """
    meaning = SCHEMES[scheme]
    if weight_types and meaning.startswith("integer weights"):
        meaning = "/".join(weight_types) + meaning.removeprefix("integer")
    return f"{scheme} ({meaning})"
