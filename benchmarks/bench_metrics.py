"""The metric-backed assertions vs plain numpy on 100M float32 elements: time and memory.

    python benchmarks/bench_metrics.py [--size 100000000] [--repeat 5] [--case NAME ...]

Each case runs in a fresh subprocess that builds its inputs (two float32 arrays of
``--size`` elements: a reference and its int8 round trip; for ``assert_within_lsb``
two int8 code arrays, 1% of them one step off), then measures:

- peak extra memory of one call: the peak resident set size (VmHWM, reset once the
  inputs exist) minus the resident size with the inputs in place, first thing in the
  process (memory a warm-up leaves in the allocator would hide it);
- wall time, best of ``--repeat``, interleaved call by call with the numpy baseline in
  the same process, so that the load of a shared machine hits both alike.

The float baseline is the plain numpy ``sqrt(mean((a - b) ** 2))``; the int8 one
``abs(a.astype(int16) - b).max()``. Goal: time <= 2x the baseline, peak extra memory
<= 2x the size of one input.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

MB = 1 << 20
CHUNK = 1 << 22


def _float_inputs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """A reference in [-1, 1) and its int8 round trip, built chunk by chunk so that
    making them leaves no transient peak behind."""
    rng = np.random.default_rng(0)
    ref = np.empty(n, np.float32)
    act = np.empty(n, np.float32)
    for s in range(0, n, CHUNK):
        r = rng.random(min(CHUNK, n - s), np.float32) * 2 - 1
        ref[s : s + r.size] = r
        act[s : s + r.size] = np.round(r * 127) / 127
    return act, ref


def _int_inputs(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    exp = np.empty(n, np.int8)
    act = np.empty(n, np.int8)
    for s in range(0, n, CHUNK):
        e = rng.integers(-127, 127, min(CHUNK, n - s), np.int8)
        exp[s : s + e.size] = e
        act[s : s + e.size] = e + (rng.random(e.size) < 0.01)  # 1% off by one step
    return act, exp


def _cases() -> dict[str, tuple[str, Callable[[np.ndarray, np.ndarray], object]]]:
    """name -> (input kind, callable(actual, reference))."""
    from pytest_quant import (
        QuantParams,
        assert_quant_close,
        assert_sqnr,
        assert_within_lsb,
        compare,
    )

    qp = QuantParams(1 / 127, 0, symmetric=True)
    return {
        "compare": ("float", compare),
        "assert_quant_close (rms)": ("float", assert_quant_close),
        "assert_quant_close (p99)": ("float", lambda a, r: assert_quant_close(a, r, metric="p99")),
        "assert_quant_close (qparams)": (
            "float",
            lambda a, r: assert_quant_close(a, r, qparams=qp),
        ),
        "assert_sqnr": ("float", lambda a, r: assert_sqnr(a, r, min_db=30.0)),
        "assert_within_lsb (int8)": ("int", assert_within_lsb),
    }


BASELINES = {
    "float": ("numpy sqrt(mean((a-b)**2))", lambda a, r: np.sqrt(np.mean((a - r) ** 2))),
    "int": (
        "numpy abs(a.astype(int16)-b).max()",
        lambda a, e: np.abs(a.astype(np.int16) - e).max(),
    ),
}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def _peak_extra_mb(fn: Callable[[], object]) -> float:
    base = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    fn()
    return (_rss_kib("VmHWM") - base) / 1024


def _child(name: str, size: int, repeat: int) -> None:
    kind, fn = _cases()[name]
    _, baseline = BASELINES[kind]
    a, r = (_float_inputs if kind == "float" else _int_inputs)(size)
    gc.collect()
    fn(a[:4096], r[:4096])  # imports only: the full-size calls come first
    extra = _peak_extra_mb(lambda: fn(a, r))
    base_extra = _peak_extra_mb(lambda: baseline(a, r))
    times: dict[str, list[float]] = {"case": [], "baseline": []}
    for _ in range(repeat):  # interleaved: machine load hits both alike
        for key, call in (("baseline", baseline), ("case", fn)):
            t0 = time.perf_counter()
            call(a, r)
            times[key].append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "seconds": min(times["case"]),
                "baseline_seconds": min(times["baseline"]),
                "extra_mb": extra,
                "baseline_extra_mb": base_extra,
                "input_mb": a.nbytes / MB,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=100_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--case", action="append", help="run only these cases (repeatable)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.size, args.repeat)
        return
    rows = {}
    for name in [n for n in _cases() if not args.case or n in args.case]:
        cmd = [sys.executable, __file__, "--child", name, f"--size={args.size}"]
        done = subprocess.run(
            [*cmd, f"--repeat={args.repeat}"], capture_output=True, text=True, check=False
        )
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr}")
        rows[name] = json.loads(done.stdout.splitlines()[-1])
    import pytest_quant

    print(
        f"{args.size:,} elements, best of {args.repeat}, numpy {np.__version__}, "
        f"{os.cpu_count()} cores, pytest_quant from {Path(pytest_quant.__file__).parent}"
    )
    print(
        f"  {'':30s} {'time':>8s} {'baseline':>9s} {'ratio':>6s} "
        f"{'peak extra':>11s} {'baseline':>9s} {'vs input':>9s}"
    )
    for name, row in rows.items():
        kind = _cases()[name][0]
        print(
            f"  {name:30s} {row['seconds']:7.2f}s {row['baseline_seconds']:8.2f}s "
            f"{row['seconds'] / row['baseline_seconds']:5.2f}x "
            f"{row['extra_mb']:8.0f} MB {row['baseline_extra_mb']:6.0f} MB "
            f"{row['extra_mb'] / row['input_mb']:8.2f}x   (baseline: {BASELINES[kind][0]})"
        )


if __name__ == "__main__":
    main()
