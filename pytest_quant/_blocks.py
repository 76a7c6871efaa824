"""Run an elementwise kernel over a large array in cache-sized blocks on all cores.

numpy releases the GIL inside ufuncs, so blocks run truly in parallel; blocks of
64K float32 (256 KiB) keep every pass of a multi-pass kernel in cache. This is what
lets the numpy reference keep pace with TensorFlow's multi-threaded Eigen kernels.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._checks import require_finite

_BLOCK = 1 << 16
_PARALLEL_FROM = 1 << 19  # below this, thread hand-off costs more than it saves
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, 8))
        return _pool


def blockwise(
    kernel: Callable[[np.ndarray, np.ndarray], None], x: np.ndarray, out: np.ndarray, name: str
) -> np.ndarray:
    """Call ``kernel(x_block, out_block)`` over matching flat blocks; return ``out``.

    Each block is checked for NaN/Inf while it is in cache; any raises the usual
    ``ValueError`` naming ``name`` (so callers skip the separate full-array check).
    """
    flat_x = np.ascontiguousarray(x).reshape(-1)
    flat_out = out.reshape(-1)
    n = flat_x.size
    bad = []

    def run(s: int) -> None:
        xb = flat_x[s : s + _BLOCK]
        if not np.isfinite(xb).all():
            bad.append(s)
            return
        kernel(xb, flat_out[s : s + _BLOCK])

    starts = range(0, n, _BLOCK)
    if n < _PARALLEL_FROM or (os.cpu_count() or 1) == 1:
        for s in starts:
            run(s)
    else:
        for _ in _executor().map(run, starts):
            pass
    if bad:
        require_finite(x, name)
    return out
