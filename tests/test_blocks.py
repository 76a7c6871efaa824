"""The blockwise, multi-threaded path must give exactly what the one-block path gives."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_quant import QuantParams, fake_quant, quantize
from pytest_quant._blocks import _BLOCK, _PARALLEL_FROM

N = 5 * (max(_PARALLEL_FROM, 4 * _BLOCK) // 5 + 12_345)  # parallel, many blocks, ragged tail


@pytest.fixture(scope="module")
def big():
    return np.random.default_rng(11).uniform(-2.0, 2.0, N).astype(np.float32).reshape(-1, 5)


def _in_small_pieces(fn, x):
    flat = x.reshape(-1)
    return np.concatenate([fn(flat[i : i + 1000]) for i in range(0, flat.size, 1000)])


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: fake_quant(x, -1.0, 1.5),
        lambda x: quantize(x, QuantParams(0.01, 3)),
        lambda x: quantize(x, QuantParams(0.01, 3), kernel="xnnpack"),
    ],
    ids=["fake_quant", "quantize-reference", "quantize-xnnpack"],
)
def test_blockwise_equals_small_calls(big, fn):
    out = fn(big)
    assert out.shape == big.shape
    np.testing.assert_array_equal(out.reshape(-1), _in_small_pieces(fn, big))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_in_the_last_block_is_reported_with_its_index(big, bad):
    x = big.copy()
    x[-1, -1] = bad
    with pytest.raises(ValueError, match=rf"first: {bad} at index \({N // 5 - 1}, 4\)"):
        fake_quant(x, -1.0, 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        quantize(x, QuantParams(0.01, 0))
