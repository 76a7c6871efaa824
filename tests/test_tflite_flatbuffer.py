from __future__ import annotations

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
