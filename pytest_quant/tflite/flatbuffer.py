"""Read and write .tflite flatbuffers with the schema LiteRT ships (no TensorFlow import).

The object API (``ModelT``) gives every operator, tensor, buffer and quantization
parameter as plain Python objects: what the spec linter reads, and what tests edit to
break a model on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._deps import require
from .converter import check_tflite

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


def schema() -> Any:
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


def _enum_names(enum: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


@dataclass(frozen=True)
class Tensor:
    """One tensor of a subgraph, decoded."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int
    data: np.ndarray | None  # constant contents, or None for activations

    @property
    def quantized(self) -> bool:
        return self.scale.size > 0


@dataclass(frozen=True)
class Op:
    """One operator: its index, builtin name, and input/output tensors (None: optional)."""

    index: int
    name: str
    inputs: tuple[Tensor | None, ...]
    outputs: tuple[Tensor, ...]


def decode(model: Any, subgraph: int = 0) -> list[Op]:
    """The operators of one subgraph with their tensors decoded."""
    s = schema()
    types = _enum_names(s.TensorType)
    ops_by_code = _enum_names(s.BuiltinOperator)
    g = model.subgraphs[subgraph]

    def tensor(i: int) -> Tensor | None:
        if i < 0:
            return None
        t = g.tensors[i]
        q = t.quantization
        scale = np.asarray(q.scale if q is not None and q.scale is not None else [], np.float32)
        zero = np.asarray(
            q.zeroPoint if q is not None and q.zeroPoint is not None else [], np.int64
        )
        dtype = types.get(t.type, str(t.type))
        buf = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        data: np.ndarray | None = None
        if buf is not None and len(buf) and dtype in _NP:
            data = np.frombuffer(bytes(np.asarray(buf, np.uint8)), _NP[dtype])
            shape = tuple(int(v) for v in (t.shape if t.shape is not None else []))
            data = data.reshape(shape) if int(np.prod(shape)) == data.size else data
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        shp = tuple(int(v) for v in (t.shape if t.shape is not None else []))
        axis = int(q.quantizedDimension) if q is not None else 0
        return Tensor(i, name, dtype, shp, scale, zero, axis, data)

    out = []
    for k, op in enumerate(g.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = ops_by_code.get(builtin, f"CUSTOM({code.customCode!r})")
        ins = tuple(tensor(int(i)) for i in (op.inputs if op.inputs is not None else []))
        outs = tuple(t for t in (tensor(int(i)) for i in op.outputs) if t is not None)
        out.append(Op(k, name, ins, outs))
    return out
