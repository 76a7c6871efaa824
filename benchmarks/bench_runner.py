"""Batched LiteRT runner vs a per-sample loop vs Keras ``predict``; peak memory by batch_size.

    python benchmarks/bench_runner.py [--n 2000] [--repeat 5] [--unet-n 200]

Time: 2,000 digit-sized samples (8x8 = 64 features) through a small MLP: the int8 TFLite
model run as one batch, the same model one sample at a time, and the float Keras model's
``predict``. Prints best-of-N times and the ratios.

Memory: an int8 U-Net (64x64x3 images, the zoo's) runs a batch of ``--unet-n`` images
with ``batch_size`` = the whole batch (one invocation), the default (activations within
64 MiB), 32 and 8; each case in a fresh process, which prints its peak RSS after loading
the model and after the run (Linux's ``VmHWM``, reset at the child's start: a spawned
child's ``ru_maxrss`` starts at its parent's, which has TensorFlow loaded).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _timing import best_of

IMAGE = 64


def unet():
    """The zoo's small U-Net (``zoo/architectures.py``), 64x64x3 -> 64x64x1, seeded."""
    import keras

    from zoo.architectures import _unet

    keras.utils.set_random_seed(1234)
    return _unet()


def peak_rss_mib() -> float:
    """This process's peak resident memory since it started (or since the reset)."""
    status = Path("/proc/self/status")
    if status.exists():
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(path: str, batch_size: str, n: int) -> None:
    """Run ``n`` images through the model at ``path``; print peak RSS (MiB) and time."""
    clear = Path("/proc/self/clear_refs")
    if clear.exists():
        clear.write_text("5")  # reset the peak RSS this process inherited from the fork
    import numpy as np

    from pytest_quant.tflite import TFLiteRunner

    size = None if batch_size == "default" else int(batch_size)
    runner = TFLiteRunner(Path(path), batch_size=size)
    x = np.random.default_rng(0).normal(size=(n, IMAGE, IMAGE, 3)).astype(np.float32)
    loaded = peak_rss_mib()
    t0 = time.perf_counter()
    y = runner(x)
    seconds = time.perf_counter() - t0
    peak = peak_rss_mib()
    print(runner.batch_size, f"{loaded:.1f}", f"{peak:.1f}", f"{seconds:.3f}", float(y.sum()))


def memory(n: int) -> None:
    from pytest_quant.tflite import TFLiteRunner, convert

    model = unet()
    x_calib = __import__("numpy").random.default_rng(1).normal(size=(32, IMAGE, IMAGE, 3))
    with tempfile.TemporaryDirectory() as tmp:
        content = convert(model, x_calib.astype("float32"), mode="int8", cache_dir=tmp)
        path = Path(tmp) / "unet_int8.tflite"
        path.write_bytes(content)
        params = model.count_params()
        print(f"\npeak RSS, int8 U-Net ({params:,} parameters), {n} images of {IMAGE}x{IMAGE}x3,")
        print(
            "each case in a fresh process (input batch alone: "
            f"{n * IMAGE * IMAGE * 3 * 4 / 2**20:.1f} MiB float32):"
        )
        print(
            f"  {'batch_size':>14} {'per call':>9} {'loaded MiB':>11} {'peak MiB':>9} "
            f"{'run - loaded':>13} {'run s':>7}"
        )
        sums = set()
        for case in (str(n), "default", "32", "8"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(path), case, str(n)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            chunk, loaded, peak, seconds, total = out
            sums.add(total)
            label = f"{case} ({chunk})" if case == "default" else case
            print(
                f"  {label:>14} {chunk:>9} {loaded:>11} {peak:>9} "
                f"{float(peak) - float(loaded):>13.1f} {seconds:>7}"
            )
        print("outputs identical in every case:", len(sums) == 1)
        per_sample = TFLiteRunner(content).batch_size
        print(f"(the default keeps activations within 64 MiB: {per_sample} images a call)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--unet-n", type=int, default=200)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    from pytest_quant.tflite import TFLiteRunner, convert
    from tests import models

    model = models.mlp()
    x = models.data((64,), n=args.n, seed=1)
    with tempfile.TemporaryDirectory() as cache:
        runner = TFLiteRunner(convert(model, models.data((64,), n=200), cache_dir=cache))
    rows = {
        "TFLite int8, one batch": lambda: runner(x),
        "TFLite int8, per-sample loop": lambda: [runner(x[i : i + 1]) for i in range(len(x))],
        "Keras predict (float)": lambda: model.predict(x, verbose=0, batch_size=len(x)),
    }
    t = {k: best_of(f, args.repeat) for k, f in rows.items()}
    for k, v in t.items():
        print(f"  {k:32s} {v * 1e3:9.2f} ms")
    batched = t["TFLite int8, one batch"]
    print(f"per-sample / batched: {t['TFLite int8, per-sample loop'] / batched:.1f}x")
    print(f"Keras predict / batched: {t['Keras predict (float)'] / batched:.1f}x")
    print(f"(the MLP's default batch_size, {runner.batch_size}, runs {args.n} as one call)")
    memory(args.unet_n)


if __name__ == "__main__":
    main()
