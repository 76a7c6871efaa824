"""Read and write .tflite flatbuffers with the schema LiteRT ships (no TensorFlow import).

The object API (``ModelT``) gives every operator, tensor, buffer and quantization
parameter as plain Python objects: what tests edit to break a model on purpose.
:func:`decode` turns one subgraph into :class:`Op` and :class:`Tensor` records with the
constants' values: packed INT4 and INT2 values come back unpacked (int8), and blockwise
quantized tensors (ai-edge-quantizer ``*_b32``/``*_b64`` recipes) carry their block
scales, so no reader of a model needs its raw buffers.

Model bytes are untrusted: :func:`read_model` reads them defensively (a table that
cannot be read, an index past its list, a name that is not UTF-8, a field with no valid
value, what LiteRT would refuse or crash on), and any malformed model raises one
:class:`MalformedModelError` that names the source and the first thing found wrong.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._deps import require
from .modes import TFLITE_IDENTIFIER

_NP = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "INT32": np.int32,
    "UINT8": np.uint8,
    "INT64": np.int64,
    "INT16": np.int16,
    "INT8": np.int8,
    "BOOL": np.bool_,
}
# packed integer types, and their bits
_PACKED_BITS = {"INT4": 4, "INT2": 2}


_FIX = (
    "The bytes are corrupt or were altered after conversion: convert the model again, "
    "or restore the file"
)


class MalformedModelError(ValueError):
    """A ``.tflite`` model whose bytes cannot be read or run: corrupt, truncated, or
    altered after conversion. The one error the linter and the runner raise for any
    malformed model.

    :ivar source: where the model came from: its path, or ``"the model bytes"``.
    :ivar problem: the first thing found wrong, e.g. ``"tensor 12's name is not UTF-8"``.
    :ivar fix: what to do about it.

    Example::

        try:
            lint_tflite("downloaded.tflite")
        except MalformedModelError as exc:
            print(exc.source, exc.problem)
    """

    def __init__(self, source: str, problem: str, fix: str = _FIX) -> None:
        self.source, self.problem, self.fix = source, problem, fix
        super().__init__(f"{source}: malformed TFLite model: {problem}. {fix}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes
        return type(self), (self.source, self.problem, self.fix)


def schema() -> Any:
    """The flatbuffer schema module LiteRT ships (``ai_edge_litert.schema_py_generated``)."""
    return require("ai_edge_litert.schema_py_generated")


#: The schema version of every TFLite model (LiteRT loads no other).
SCHEMA_VERSION = 3
# What the flatbuffers object API raises on offsets or lengths past the bytes (it checks
# nothing itself: struct and numpy do, as they read).
_READ_ERRORS = (struct.error, ValueError, IndexError, TypeError, OverflowError, AttributeError)


def read_model(content: bytes, source: str = "the model bytes") -> Any:
    """The ``ModelT`` of a .tflite flatbuffer, checked: ``MalformedModelError`` naming
    ``source`` and the first thing wrong when a table cannot be read, an index points
    past its list, a name is not UTF-8 or a field holds no valid value.

    Example::

        model = read_model(Path("model.tflite").read_bytes(), "model.tflite")
    """
    s = schema()
    content = check_tflite(bytes(content), source)
    root = int.from_bytes(content[:4], "little")
    if not 8 <= root <= len(content) - 4:
        raise MalformedModelError(
            source, f"its root table offset {root} is outside its {len(content)} bytes"
        )
    try:
        model = s.ModelT.InitFromObj(s.Model.GetRootAsModel(content, 0))
    except _READ_ERRORS as exc:
        raise MalformedModelError(source, _unreadable(s, content, exc)) from None
    problem = _first_problem(s, model)
    if problem is not None:
        raise MalformedModelError(source, problem)
    return model


def check_tflite(content: bytes, source: str) -> bytes:
    """``content`` if it has the TFLite identifier, else :class:`MalformedModelError`
    naming ``source`` (a path, or e.g. "the converter's output")."""
    if len(content) < 8 or content[4:8] != TFLITE_IDENTIFIER:
        raise MalformedModelError(
            source,
            f"it has no 'TFL3' identifier at bytes 4-8 ({len(content)} bytes), so it is not "
            "a TFLite model (pass a .tflite file or the converter's output)",
        )
    return content


def _reason(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, struct.error) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 160 else text[:157] + "..."


def _unreadable(s: Any, content: bytes, exc: BaseException) -> str:
    """The first part of the model, in the order ``ModelT`` reads them, that cannot be
    read on its own; else the error reading the whole."""
    m = s.Model.GetRootAsModel(content, 0)
    # (where, what, its count, its i-th table, how ModelT reads it)
    parts: list[tuple[str, str, Any, Any, Any]] = [
        ("", "operator code", m.OperatorCodesLength, m.OperatorCodes, s.OperatorCodeT.InitFromObj)
    ]
    try:
        for i in range(m.SubgraphsLength()):
            g, where = m.Subgraphs(i), ("" if i == 0 else f"subgraph {i}, ")
            parts += [
                (where, "tensor", g.TensorsLength, g.Tensors, s.TensorT.InitFromObj),
                (where, "operator", g.OperatorsLength, g.Operators, s.OperatorT.InitFromObj),
            ]
    except _READ_ERRORS as e:
        return f"its list of subgraphs cannot be read ({_reason(e)})"
    parts += [
        ("", "subgraph", m.SubgraphsLength, m.Subgraphs, s.SubGraphT.InitFromObj),
        ("", "buffer", m.BuffersLength, m.Buffers, s.BufferT.InitFromObj),
        ("", "metadata entry", m.MetadataLength, m.Metadata, s.MetadataT.InitFromObj),
        ("", "signature", m.SignatureDefsLength, m.SignatureDefs, s.SignatureDefT.InitFromObj),
    ]
    for where, what, length, item, read in parts:
        try:
            count = length()
        except _READ_ERRORS as e:
            return f"{where}its list of {what}s cannot be read ({_reason(e)})"
        for i in range(count):
            try:
                read(item(i))
            except _READ_ERRORS as e:
                return f"{where}{what} {i} cannot be read ({_reason(e)})"
    return f"its flatbuffer cannot be read ({_reason(exc)})"


def _first_problem(s: Any, model: Any) -> str | None:
    """The first broken reference or invalid field of a readable ``ModelT`` (None: none).
    These are what LiteRT refuses to load, checked in Python so that no reader of the
    model (nor the interpreter) meets them."""
    if model.version != SCHEMA_VERSION:
        return f"its schema version is {model.version}; LiteRT reads version {SCHEMA_VERSION}"
    if not model.subgraphs:
        return "it has no subgraph"
    types = set(_enum_names(s.TensorType))
    for k, code in enumerate(model.operatorCodes or []):
        problem = _opcode_problem(s, k, code)
        if problem is not None:
            return problem
    for g_index, g in enumerate(model.subgraphs):
        where = "" if g_index == 0 else f"subgraph {g_index}, "
        if g is None:
            return f"subgraph {g_index} is missing"
        problem = _subgraph_problem(g, types, model.buffers or [], len(model.operatorCodes or []))
        if problem is not None:
            return where + problem
    for k, sig in enumerate(model.signatureDefs or []):
        problem = _signature_problem(k, sig, model.subgraphs)
        if problem is not None:
            return problem
    return None


def _opcode_problem(s: Any, k: int, code: Any) -> str | None:
    """LiteRT runs op ``max(builtin_code, deprecated_builtin_code)``. The TF converter
    writes ``deprecated = min(builtin, 127)``, older models only ``deprecated``,
    ai-edge-quantizer only ``builtin`` (the other 0). Two set fields that disagree name
    another op than the model was built with, whose kernel then reads the wrong inputs
    (LiteRT crashed on one such model)."""
    if code is None:
        return f"operator code {k} is missing"
    names = _enum_names(s.BuiltinOperator)
    builtin, deprecated = int(code.builtinCode), int(code.deprecatedBuiltinCode)
    if builtin != 0 and deprecated != 0 and deprecated != min(builtin, 127):
        return (
            f"operator code {k} names two ops: builtin_code {builtin} "
            f"({names.get(builtin, 'unknown')}) and deprecated_builtin_code {deprecated} "
            f"({names.get(deprecated, 'unknown')})"
        )
    return None


def _subgraph_problem(g: Any, types: set[int], buffers: list[Any], n_codes: int) -> str | None:
    tensors = g.tensors or []
    n = len(tensors)
    for j, t in enumerate(tensors):
        problem = _tensor_problem(j, t, types, len(buffers))
        if problem is not None:
            return problem
    written = set(_ints(g.inputs))
    for k, op in enumerate(g.operators or []):
        if op is None:
            return f"operator {k} is missing"
        if not 0 <= op.opcodeIndex < n_codes:
            return f"operator {k} refers to operator code {op.opcodeIndex} of {n_codes}"
        for role, indices in (("input", op.inputs), ("output", op.outputs)):
            for i in _ints(indices):
                if not -1 <= i < n:
                    return f"operator {k} refers to tensor {i} of {n} (an {role})"
        written.update(_ints(op.outputs))
    for role, indices in (("input", g.inputs), ("output", g.outputs)):
        for i in _ints(indices):
            if not 0 <= i < n:
                return f"the subgraph's {role}s refer to tensor {i} of {n}"
    for i in _ints(g.outputs):
        data = buffers[tensors[i].buffer].data
        if i not in written and not tensors[i].isVariable and (data is None or not len(data)):
            # LiteRT allocates no memory for it: reading the output fails
            return f"the subgraph's output tensor {i} is written by no operator"
    return None


def _ints(values: Any) -> list[int]:
    return [int(v) for v in (values if values is not None else [])]


def _tensor_problem(j: int, t: Any, types: set[int], n_buffers: int) -> str | None:
    if t is None:
        return f"tensor {j} is missing"
    if t.name is not None:
        try:
            bytes(t.name).decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"tensor {j}'s name is not UTF-8 ({exc.reason} at byte {exc.start})"
    if t.type not in types:
        return f"tensor {j} has type {t.type}, which is no TFLite tensor type"
    if not 0 <= t.buffer < n_buffers:
        return f"tensor {j} refers to buffer {t.buffer} of {n_buffers}"
    shape = _ints(t.shape)
    if any(d < 0 for d in shape):
        return f"tensor {j} has a negative dimension in its shape {shape}"
    q = t.quantization
    scales = len(q.scale) if q is not None and q.scale is not None else 0
    if scales:
        zeros = len(q.zeroPoint) if q.zeroPoint is not None else 0
        if zeros != scales:
            return f"tensor {j} has {scales} scale(s) but {zeros} zero point(s)"
        if scales > 1 and not 0 <= q.quantizedDimension < max(len(shape), 1):
            return (
                f"tensor {j} is quantized per axis on dimension {q.quantizedDimension}, "
                f"but has {len(shape)} dimension(s)"
            )
    return None


def _signature_problem(k: int, sig: Any, subgraphs: list[Any]) -> str | None:
    if sig is None:
        return f"signature {k} is missing"
    for text in (
        sig.signatureKey,
        *(m.name for m in (*(sig.inputs or []), *(sig.outputs or [])) if m is not None),
    ):
        if text is not None:
            try:
                bytes(text).decode("utf-8")
            except UnicodeDecodeError as exc:
                return (
                    f"signature {k} has a name that is not UTF-8 ({exc.reason} at byte {exc.start})"
                )
    if not 0 <= sig.subgraphIndex < len(subgraphs):
        return f"signature {k} refers to subgraph {sig.subgraphIndex} of {len(subgraphs)}"
    n = len(subgraphs[sig.subgraphIndex].tensors or [])
    for entry in (*(sig.inputs or []), *(sig.outputs or [])):
        if entry is None:
            return f"signature {k} has a missing entry"
        if not 0 <= entry.tensorIndex < n:
            return f"signature {k} refers to tensor {entry.tensorIndex} of {n}"
    return None


def write_model(model: Any) -> bytes:
    """Serialize a ``ModelT`` back to .tflite bytes."""
    flatbuffers = require("flatbuffers")
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def unpack_bits(raw: bytes, bits: int, count: int) -> np.ndarray:
    """``count`` signed ``bits``-bit values packed ``8 // bits`` a byte, low bits first
    (how LiteRT and ai-edge-quantizer store INT4 and INT2), as int8.

    Example::

        unpack_bits(bytes([0x8F]), 4, 2)  # array([-1, -8], dtype=int8)
    """
    per_byte = 8 // bits
    packed = np.frombuffer(bytes(raw), np.uint8)
    shifts = (np.arange(per_byte) * bits).astype(np.uint8)
    values = ((packed[:, None] >> shifts) & ((1 << bits) - 1)).reshape(-1)[:count]
    values = values.astype(np.int16)
    return np.where(values >= 1 << (bits - 1), values - (1 << bits), values).astype(np.int8)


def packed_nbytes(dtype: str, shape: tuple[int, ...]) -> int | None:
    """The bytes a packed (INT4, INT2) constant of ``shape`` fills; None for other types.

    Example::

        assert packed_nbytes("INT4", (3,)) == 2
    """
    bits = _PACKED_BITS.get(dtype)
    return None if bits is None else -(-math.prod(shape) * bits // 8)


@dataclass(frozen=True)
class Tensor:
    """One tensor of a subgraph, decoded.

    ``data``: a constant's values, shaped (INT4 and INT2 unpacked to int8), or None for
    an activation or contents that cannot be read; ``constant``: whether the model stores
    contents for it (in a buffer, or past the flatbuffer's end); ``nbytes``: the length of
    its buffer (None without one). Blockwise quantized tensors have a ``block_size`` and
    their ``block_scale`` and ``block_zero_point`` (None when absent or unreadable),
    and no ``scale``.
    """

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int
    data: np.ndarray | None
    constant: bool = False
    nbytes: int | None = None
    block_size: int | None = None
    block_scale: np.ndarray | None = None
    block_zero_point: np.ndarray | None = None

    @property
    def quantized(self) -> bool:
        """Whether it has per-tensor or per-axis quantization parameters."""
        return self.scale.size > 0

    @property
    def blockwise(self) -> bool:
        """Whether it is quantized blockwise (its scales in :attr:`block_scale`)."""
        return self.block_size is not None


@dataclass(frozen=True)
class Op:
    """One operator: its index, builtin name, and input/output tensors (None: optional)."""

    index: int
    name: str
    inputs: tuple[Tensor | None, ...]
    outputs: tuple[Tensor, ...]


def _enum_names(enum: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def _values(dtype: str, shape: tuple[int, ...], raw: Any) -> np.ndarray | None:
    """A constant's values from its buffer's bytes, shaped when they fill the shape."""
    if raw is None or not len(raw):
        return None
    content = bytes(np.asarray(raw, np.uint8))
    count = math.prod(shape)  # exact: np.prod would wrap around on absurd shapes
    if dtype in _PACKED_BITS:
        if len(content) != packed_nbytes(dtype, shape):
            return None  # a truncated (or padded) buffer: its values are unknown
        data = unpack_bits(content, _PACKED_BITS[dtype], count)
    elif dtype in _NP and len(content) % np.dtype(_NP[dtype]).itemsize == 0:
        data = np.frombuffer(content, _NP[dtype])
    else:
        return None  # another type, or a length no whole number of values fills
    return data.reshape(shape) if count == data.size else data


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in (t.shape if t.shape is not None else []))


def _name(t: Any) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def _affine(q: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-tensor or per-axis scales, zero points and quantized dimension of ``q``."""
    if q is None:
        return np.zeros(0, np.float32), np.zeros(0, np.int64), 0
    scale = np.asarray(q.scale if q.scale is not None else [], np.float32)
    zero = np.asarray(q.zeroPoint if q.zeroPoint is not None else [], np.int64)
    return scale, zero, int(q.quantizedDimension)


@dataclass(frozen=True)
class _Reader:
    """One subgraph of a ``ModelT``, and the schema's names for its enums."""

    model: Any
    graph: Any
    types: dict[int, str]
    blockwise: int | None  # the BlockwiseQuantization details type (None: older schema)

    def tensor(self, i: int) -> Tensor | None:
        if i < 0:
            return None
        t = self.graph.tensors[i]
        buf = self.buffer(t)
        raw = buf.data if buf is not None else None
        dtype, shape = self.dtype(t), _shape(t)
        scale, zero_point, axis = _affine(t.quantization)
        return Tensor(
            i,
            _name(t),
            dtype,
            shape,
            scale,
            zero_point,
            axis,
            _values(dtype, shape, raw),
            constant=(raw is not None and len(raw) > 0) or getattr(buf, "offset", 0) > 1,
            nbytes=None if raw is None else len(raw),
            **self.blocks(t.quantization),
        )

    def buffer(self, t: Any) -> Any:
        return self.model.buffers[t.buffer] if t.buffer < len(self.model.buffers) else None

    def dtype(self, t: Any) -> str:
        return self.types.get(t.type, str(t.type))

    def blocks(self, q: Any) -> dict[str, Any]:
        """The blockwise fields of a tensor quantized by ``q`` (none when it is not)."""
        if self.blockwise is None or q is None or q.detailsType != self.blockwise:
            return {}
        if q.details is None:
            return {}  # a details type without its table: nothing to read
        d = q.details
        return {
            "block_size": int(d.blockSize),
            "block_scale": self.values(int(d.scales)),
            "block_zero_point": self.values(int(d.zeroPoints)),
        }

    def values(self, i: int) -> np.ndarray | None:
        """The values of constant ``i`` (None for no such tensor, e.g. index -1)."""
        if not 0 <= i < len(self.graph.tensors):
            return None
        t = self.graph.tensors[i]
        buf = self.buffer(t)
        return _values(self.dtype(t), _shape(t), buf.data if buf is not None else None)


def decode(model: Any, subgraph: int = 0) -> list[Op]:
    """The operators of one subgraph of a ``ModelT`` (as :func:`read_model` checked it)
    with their tensors decoded.

    Example::

        ops = decode(read_model(content))
        weights = [op.inputs[1].data for op in ops if op.name == "FULLY_CONNECTED"]
    """
    s = schema()
    ops_by_code = _enum_names(s.BuiltinOperator)
    blockwise = getattr(s.QuantizationDetails, "BlockwiseQuantization", None)
    reader = _Reader(model, model.subgraphs[subgraph], _enum_names(s.TensorType), blockwise)
    out = []
    for k, op in enumerate(reader.graph.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = ops_by_code.get(builtin, f"CUSTOM({code.customCode!r})")
        ins = tuple(reader.tensor(i) for i in _ints(op.inputs))
        outs = tuple(t for t in map(reader.tensor, _ints(op.outputs)) if t is not None)
        out.append(Op(k, name, ins, outs))
    return out


def is_tflite_source(source: Any) -> bool:
    """Whether ``source`` is an already-converted model: bytes or a file's path (a
    SavedModel is a directory)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return True
    return isinstance(source, (str, os.PathLike)) and Path(source).is_file()


def read_tflite(model: Any) -> bytes:
    """The bytes of a ``.tflite`` model given as bytes, a path (``str`` or ``Path``) or a
    runner; :class:`MalformedModelError` naming the source when they are not a TFLite
    flatbuffer, ``ValueError`` for a path that is not a file."""
    if hasattr(model, "content"):
        return bytes(model.content)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise ValueError(f"{path} is not a file: pass a .tflite path or the model bytes")
        return check_tflite(path.read_bytes(), str(path))
    if isinstance(model, (bytes, bytearray, memoryview)):
        return check_tflite(bytes(model), "the model bytes")
    raise TypeError(
        f"expected a .tflite model (bytes, a path or a runner), got {type(model).__name__}"
    )


def source_name(model: Any) -> str:
    """How messages name ``model``: its path, ``"the model bytes"`` or the runner's source."""
    if hasattr(model, "content"):
        return str(getattr(model, "source", "the runner's model"))
    if isinstance(model, (str, os.PathLike)):
        return str(Path(model))
    return "the model bytes"


def read_ops(model: Any) -> list[Op]:
    """The decoded ops of the main subgraph of ``model`` (bytes, a path or a runner);
    :class:`MalformedModelError` when the bytes are malformed.

    Example::

        names = [op.name for op in read_ops("model.tflite")]
    """
    return decode(read_model(read_tflite(model), source_name(model)))
