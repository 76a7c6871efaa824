from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pytest_quant.tflite.flatbuffer import packed_nbytes, unpack_bits

from . import aeq_models, models


def _pack(values, bits):
    """``values`` packed ``8 // bits`` a byte, low bits first (the layout LiteRT reads)."""
    per_byte = 8 // bits
    out = bytearray(-(-len(values) // per_byte))
    for i, v in enumerate(values):
        out[i // per_byte] |= (v & ((1 << bits) - 1)) << (bits * (i % per_byte))
    return bytes(out)


# --- unpacking INT4 and INT2 (pure numpy) -------------------------------------------------


def test_unpack_known_bytes_low_bits_first():
    assert unpack_bits(bytes([0x8F]), 4, 2).tolist() == [-1, -8]
    assert unpack_bits(bytes([0x70]), 4, 2).tolist() == [0, 7]
    assert unpack_bits(bytes([0b11100100]), 2, 4).tolist() == [0, 1, -2, -1]
    nibbles = bytes([0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE])  # 0, 1, ..., 15
    assert unpack_bits(nibbles, 4, 16).tolist() == [*range(8), *range(-8, 0)]
    assert unpack_bits(nibbles, 4, 16).dtype == np.int8


def test_unpack_odd_counts_ignore_the_padding():
    assert unpack_bits(bytes([0x21, 0xF3]), 4, 3).tolist() == [1, 2, 3]
    assert unpack_bits(bytes([0xFF, 0b01]), 2, 5).tolist() == [-1, -1, -1, -1, 1]
    assert unpack_bits(b"", 4, 0).tolist() == []


@pytest.mark.parametrize("bits", [4, 2])
@given(data=st.data())
@example(data=None)
def test_unpack_inverts_packing(bits, data):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    values = [lo, hi, 0, -1, 1] if data is None else data.draw(st.lists(st.integers(lo, hi)))
    assert unpack_bits(_pack(values, bits), bits, len(values)).tolist() == values


def test_packed_nbytes():
    assert packed_nbytes("INT4", (3,)) == 2
    assert packed_nbytes("INT4", (32, 64)) == 1024
    assert packed_nbytes("INT2", (5,)) == 2
    assert packed_nbytes("INT4", ()) == 1  # a scalar
    assert packed_nbytes("INT8", (3,)) is None


# --- decode on models quantized by ai-edge-quantizer --------------------------------------


@pytest.fixture(scope="module")
def mlp_float(tf, tflite_cache):
    return aeq_models.float_tflite(models.mlp(), tflite_cache)


@pytest.fixture(scope="module")
def aeq(mlp_float):
    """``aeq(recipe, regex=None)``: the float MLP quantized by an ai-edge-quantizer recipe."""
    pytest.importorskip(
        "ai_edge_quantizer",
        reason="ai-edge-quantizer is not installed: pip install ai-edge-quantizer to run this",
    )
    samples = models.data((64,), n=50)
    return lambda recipe, regex=None: aeq_models.quantize(mlp_float, recipe, samples, regex=regex)


def _decode(content):
    from pytest_quant.tflite.flatbuffer import decode, read_model

    return decode(read_model(content))


def _float_weights(content):
    return {op.inputs[1].name: op.inputs[1].data for op in _decode(content)}


def _packed_weights(content):
    ws = [t for op in _decode(content) for t in op.inputs if t is not None]
    return [t for t in ws if t.dtype in ("INT4", "INT2")]


@pytest.mark.parametrize(
    "recipe, dtype", [("dynamic_wi4_afp32", "INT4"), ("dynamic_wi2c_afp32", "INT2")]
)
def test_decode_unpacks_per_channel_weights(aeq, mlp_float, recipe, dtype):
    floats = _float_weights(mlp_float)
    weights = _packed_weights(aeq(recipe))
    assert {w.dtype for w in weights} == {dtype} and len(weights) == 3
    for w in weights:
        assert w.data.dtype == np.int8 and w.data.shape == w.shape
        assert w.constant and w.nbytes == packed_nbytes(w.dtype, w.shape)
        assert not w.blockwise and w.block_scale is None
        step = w.scale[:, None]
        err = np.abs(w.data * step - floats[w.name]) / step
        assert err.max() <= 0.5 + 1e-4  # the right order: every value within half a step


def test_decode_reads_block_scales(aeq, mlp_float):
    floats = _float_weights(mlp_float)
    weights = _packed_weights(aeq("dynamic_wi4b32_afp32", "dense"))
    assert len(weights) == 2  # the logits stay float
    for w in weights:
        assert w.blockwise and w.block_size == 32 and not w.quantized
        assert w.block_scale.shape == (w.shape[0], w.shape[1] // 32)
        assert w.block_zero_point is None
        step = np.repeat(w.block_scale.astype(np.float32), w.block_size, axis=1)
        err = np.abs(w.data * step - floats[w.name]) / step
        assert err.max() <= 0.5 + 1e-4


def test_decode_truncated_packed_buffer_has_no_values(aeq):
    from pytest_quant.tflite.flatbuffer import read_model, write_model

    model = read_model(aeq("dynamic_wi4_afp32"))
    w = _packed_weights(write_model(model))[0]
    buf = model.buffers[model.subgraphs[0].tensors[w.index].buffer]
    buf.data = np.array(buf.data, np.uint8)[:-1]
    broken = next(t for t in _packed_weights(write_model(model)) if t.index == w.index)
    assert broken.data is None and broken.constant
    assert broken.nbytes == packed_nbytes("INT4", w.shape) - 1


# --- malformed models: one error type, naming the source and what is wrong ----------------

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "models"


def _golden(name):
    return (GOLDEN / f"{name}.tflite").read_bytes()


def _edited(name, edit):
    """The golden model ``name`` with ``edit(model, subgraph)`` applied to its ``ModelT``."""
    from pytest_quant.tflite.flatbuffer import read_model, write_model

    model = read_model(_golden(name))
    edit(model, model.subgraphs[0])
    return write_model(model)


def _set_name(g, i, name):
    g.tensors[i].name = name


def _set_zero_points(g, i, count):
    q = g.tensors[i].quantization
    q.zeroPoint = list(q.zeroPoint)[:count]


def _weight(g):
    """The index of the first FULLY_CONNECTED's weights (per-axis: 32 scales, shape (32, 64))."""
    return int(g.operators[0].inputs[1])


def _set_opcode(model, builtin, deprecated):
    model.operatorCodes[0].builtinCode = builtin
    model.operatorCodes[0].deprecatedBuiltinCode = deprecated


# (what is edited, the edit on the golden int8 MLP, the problem the error must name)
MALFORMED = [
    ("name", lambda m, g: _set_name(g, 3, b"dense\xff"), r"tensor 3's name is not UTF-8 \("),
    ("op input", lambda m, g: setattr(g.operators[1], "inputs", [999, *g.operators[1].inputs[1:]]),
     "operator 1 refers to tensor 999 of 10 \\(an input\\)"),
    ("op output", lambda m, g: setattr(g.operators[2], "outputs", [-7]),
     "operator 2 refers to tensor -7 of 10"),
    ("buffer", lambda m, g: setattr(g.tensors[4], "buffer", 5832716),
     "tensor 4 refers to buffer 5832716 of"),
    ("opcode index", lambda m, g: setattr(g.operators[0], "opcodeIndex", 40),
     "operator 0 refers to operator code 40 of"),
    ("type", lambda m, g: setattr(g.tensors[2], "type", 99),
     "tensor 2 has type 99, which is no TFLite tensor type"),
    ("shape", lambda m, g: setattr(g.tensors[2], "shape", [-3, 4]),
     r"tensor 2 has a negative dimension in its shape \[-3, 4\]"),
    ("zero points", lambda m, g: _set_zero_points(g, _weight(g), 31),
     r"tensor \d+ has 32 scale\(s\) but 31 zero point\(s\)"),
    ("axis", lambda m, g: setattr(g.tensors[_weight(g)].quantization, "quantizedDimension", 5),
     r"tensor \d+ is quantized per axis on dimension 5, but has 2 dimension\(s\)"),
    ("graph input", lambda m, g: setattr(g, "inputs", [10]),
     "the subgraph's inputs refer to tensor 10 of 10"),
    ("signature", lambda m, g: setattr(m.signatureDefs[0].inputs[0], "tensorIndex", 999),
     "signature 0 refers to tensor 999 of 10"),
    ("signature name", lambda m, g: setattr(m.signatureDefs[0].inputs[0], "name", b"\xfe"),
     r"signature 0 has a name that is not UTF-8 \("),
    ("unwritten output", lambda m, g: setattr(g, "operators", g.operators[:-1]),
     r"the subgraph's output tensor \d+ is written by no operator"),
    ("version", lambda m, g: setattr(m, "version", 6915),
     "its schema version is 6915; LiteRT reads version 3"),
    ("no subgraph", lambda m, g: setattr(m, "subgraphs", []), "it has no subgraph"),
    # LiteRT runs max(builtin, deprecated): FULLY_CONNECTED (9) became BATCH_MATMUL (126),
    # whose kernel then read missing inputs (LiteRT 2.3.0 died of SIGSEGV on such a model)
    ("opcode fields", lambda m, g: _set_opcode(m, 126, 9),
     r"operator code 0 names two ops: builtin_code 126 \(BATCH_MATMUL\) and "
     r"deprecated_builtin_code 9 \(FULLY_CONNECTED\)"),
]  # fmt: skip


@pytest.mark.parametrize("edit, problem", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_model_names_the_first_problem(litert, tmp_path, edit, problem):
    from pytest_quant.tflite import (
        MalformedModelError,
        TFLiteRunner,
        detect_scheme,
        lint_tflite,
    )

    content = _edited("mlp_int8", edit)
    path = tmp_path / "broken.tflite"
    path.write_bytes(content)
    for call in (lint_tflite, detect_scheme, TFLiteRunner):
        with pytest.raises(MalformedModelError, match=problem) as info:
            call(path)
        assert str(info.value).startswith(f"{path}: malformed TFLite model: ")
        assert info.value.source == str(path) and "convert the model again" in str(info.value)
    with pytest.raises(MalformedModelError, match=r"^the model bytes: malformed TFLite model: "):
        lint_tflite(content)


def test_unreadable_tables_are_located(litert):
    from pytest_quant.tflite import MalformedModelError, lint_tflite

    content = _golden("mlp_int8")
    with pytest.raises(MalformedModelError, match=r"cannot be read \(unpack_from requires"):
        lint_tflite(content[: len(content) // 2])  # truncated
    root = bytearray(content)
    root[0:4] = (len(content) + 100).to_bytes(4, "little")
    with pytest.raises(
        MalformedModelError, match=r"root table offset \d+ is outside its \d+ bytes"
    ):
        lint_tflite(bytes(root))
    with pytest.raises(MalformedModelError, match=r"no 'TFL3' identifier.*not a TFLite model"):
        lint_tflite(b"PK\x03\x04 not a model")


def test_malformed_error_is_a_picklable_value_error(litert):
    import pickle

    from pytest_quant.tflite import MalformedModelError

    exc = MalformedModelError("model.tflite", "tensor 3's name is not UTF-8")
    assert isinstance(exc, ValueError)
    again = pickle.loads(pickle.dumps(exc))
    assert (again.source, again.problem, str(again)) == (exc.source, exc.problem, str(exc))


@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("*.tflite")))
def test_well_formed_models_read_as_before(litert, name):
    from pytest_quant.tflite.flatbuffer import decode, read_model

    ops = decode(read_model(_golden(name), name))
    assert ops and all(op.outputs for op in ops)


def test_buffer_not_a_whole_number_of_values_decodes_without_values(litert):
    from pytest_quant.tflite.flatbuffer import decode, read_model

    def edit(m, g):
        bias = g.tensors[int(g.operators[0].inputs[2])]
        m.buffers[bias.buffer].data = np.asarray(m.buffers[bias.buffer].data)[:-1]  # 127 bytes

    bias = decode(read_model(_edited("mlp_int8", edit)))[0].inputs[2]
    assert bias.dtype == "INT32" and bias.data is None and bias.nbytes == 127
