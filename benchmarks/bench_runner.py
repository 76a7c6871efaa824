"""Batched LiteRT runner vs a per-sample loop vs Keras ``predict``, in one run.

    python benchmarks/bench_runner.py [--n 2000] [--repeat 5]

2,000 digit-sized samples (8x8 = 64 features) through a small MLP: the int8 TFLite
model run as one batch, the same model one sample at a time, and the float Keras model's
``predict``. Prints best-of-N times and the ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _timing import best_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
