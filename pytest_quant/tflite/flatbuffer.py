"""Read and write .tflite flatbuffers with the schema LiteRT ships (no TensorFlow import).

The object API (``ModelT``) gives every operator, tensor, buffer and quantization
parameter as plain Python objects: what tests edit to break a model on purpose.
:func:`decode` turns one subgraph into :class:`Op` and :class:`Tensor` records with the
constants' values: packed INT4 and INT2 values come back unpacked (int8), and blockwise
quantized tensors (ai-edge-quantizer ``*_b32``/``*_b64`` recipes) carry their block
scales, so no reader of a model needs its raw buffers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._deps import require
from .modes import check_tflite

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


def schema() -> Any:
    """The flatbuffer schema module LiteRT ships (``ai_edge_litert.schema_py_generated``)."""
    return require("ai_edge_litert.schema_py_generated")


def read_model(content: bytes) -> Any:
    """The ``ModelT`` of a .tflite flatbuffer (``ValueError`` if it is not one)."""
    s = schema()
    check_tflite(bytes(content), "the model")
    try:
        return s.ModelT.InitFromObj(s.Model.GetRootAsModel(bytes(content), 0))
    except Exception as exc:  # a truncated or corrupt flatbuffer
        raise ValueError(f"the model's flatbuffer cannot be read: {exc}") from None


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
    return None if bits is None else -(-int(np.prod(shape)) * bits // 8)


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
    if dtype in _PACKED_BITS:
        if len(content) != packed_nbytes(dtype, shape):
            return None  # a truncated (or padded) buffer: its values are unknown
        data = unpack_bits(content, _PACKED_BITS[dtype], int(np.prod(shape)))
    elif dtype in _NP:
        data = np.frombuffer(content, _NP[dtype])
    else:
        return None
    return data.reshape(shape) if int(np.prod(shape)) == data.size else data


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
    """The operators of one subgraph of a ``ModelT`` with their tensors decoded.

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
        ins = tuple(reader.tensor(int(i)) for i in (op.inputs if op.inputs is not None else []))
        outs = tuple(t for t in (reader.tensor(int(i)) for i in op.outputs) if t is not None)
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
    runner; ``ValueError`` naming the source when it is not a TFLite flatbuffer."""
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


def read_ops(model: Any) -> list[Op]:
    """The decoded ops of the main subgraph of ``model`` (bytes, a path or a runner).

    Example::

        names = [op.name for op in read_ops("model.tflite")]
    """
    return decode(read_model(read_tflite(model)))
