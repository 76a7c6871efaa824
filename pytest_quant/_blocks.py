"""Run elementwise kernels and reductions over large arrays in cache-sized blocks on all cores.

numpy releases the GIL inside ufuncs, so blocks run truly in parallel; blocks of
128K float32 (512 KiB) keep every pass of a multi-pass kernel in cache. This is what
lets the numpy reference keep pace with TensorFlow's multi-threaded Eigen kernels.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import TypeVar

import numpy as np

from ._checks import require_finite

_BLOCK = 1 << 17
_PARALLEL_FROM = 1 << 19  # below this, thread hand-off costs more than it saves
_WORKERS = min(os.cpu_count() or 1, 8)
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_T = TypeVar("_T")


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_WORKERS)
        return _pool


def blockwise(
    kernel: Callable[[np.ndarray, np.ndarray], None], x: np.ndarray, out: np.ndarray, name: str
) -> np.ndarray:
    """Call ``kernel(x_block, out_block)`` over matching flat blocks; return ``out``.

    Each worker takes one contiguous share of the array and walks it block by block
    (one task per worker: a task per block costs more in hand-off than it gains).
    Each block is checked for NaN/Inf while it is in cache; any raises the usual
    ``ValueError`` naming ``name`` (so callers skip the separate full-array check).
    """
    flat_x = np.ascontiguousarray(x).reshape(-1)
    flat_out = out.reshape(-1)
    n = flat_x.size
    bad: list[int] = []

    def run(lo: int, hi: int) -> None:
        for s in range(lo, hi, _BLOCK):
            e = min(s + _BLOCK, hi)
            xb = flat_x[s:e]
            if not np.isfinite(xb).all():
                bad.append(s)
                continue
            kernel(xb, flat_out[s:e])

    workers = _WORKERS if n >= _PARALLEL_FROM else 1
    if workers == 1:
        run(0, n)
    else:
        cuts = [n * i // workers for i in range(workers + 1)]
        tasks = [_executor().submit(run, lo, hi) for lo, hi in pairwise(cuts)]
        for task in tasks:
            task.result()
    if bad:
        require_finite(x, name)
    return out


def over_shares(task: Callable[[int, int], _T], nblocks: int, *, parallel: bool) -> list[_T]:
    """Call ``task(first, stop)`` on one contiguous share of block numbers ``[0, nblocks)``
    per worker (all in this thread unless ``parallel``); return the results in order.

    The blocks are numbered, not the workers: a task that files its figures under the
    block number gives results that do not depend on how many cores the machine has.
    """
    workers = min(_WORKERS, nblocks) if parallel else 1
    if workers <= 1:
        return [task(0, nblocks)]
    cuts = [nblocks * i // workers for i in range(workers + 1)]
    tasks = [_executor().submit(task, lo, hi) for lo, hi in pairwise(cuts)]
    return [t.result() for t in tasks]
