"""Reference math vs TensorFlow's kernels on 16M float32 values, side by side in one run.

    python benchmarks/bench_reference.py [--size 16777216] [--repeat 5]

Prints the best-of-N wall time of each, and ratios against TF and against a plain
numpy copy of the same array (the floor any elementwise pass pays). Figures go in
the README; never in a timed unit test.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from _timing import best_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=16 * 2**20)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    import tensorflow as tf

    from pytest_quant import QuantParams, fake_quant, quantize

    rng = np.random.default_rng(0)
    x = rng.uniform(-1.5, 1.5, args.size).astype(np.float32)
    xt = tf.constant(x)
    qp = QuantParams(2.0 / 255, -1, "int8")

    def tf_fake_quant():
        tf.quantization.fake_quant_with_min_max_vars(xt, -1.0, 1.0).numpy()

    def tf_quantize():  # TF's own float->int8 affine quantize: divide, round, add zp, clip, cast
        tf.cast(
            tf.clip_by_value(tf.round(xt / qp.scale) + qp.zero_point, -128, 127), tf.int8
        ).numpy()

    rows = {
        "numpy copy": lambda: x.copy(),
        "tf fake_quant_with_min_max_vars": tf_fake_quant,
        "pytest_quant.fake_quant": lambda: fake_quant(x, -1.0, 1.0),
        "tf round/clip/cast (int8)": tf_quantize,
        "pytest_quant.quantize (reference)": lambda: quantize(x, qp),
        "pytest_quant.quantize (xnnpack)": lambda: quantize(x, qp, kernel="xnnpack"),
    }
    for fn in rows.values():  # warm up (TF graph caches, page faults)
        fn()
    t = {name: best_of(fn, args.repeat) for name, fn in rows.items()}
    copy = t["numpy copy"]
    print(
        f"{args.size:,} float32 values, best of {args.repeat}, TF {tf.__version__}, "
        f"numpy {np.__version__}, {os.cpu_count()} cores"
    )
    for name, sec in t.items():
        print(f"  {name:36s} {sec * 1e3:8.1f} ms  {sec / copy:6.1f}x copy")
    fq = t["pytest_quant.fake_quant"] / t["tf fake_quant_with_min_max_vars"]
    qz = t["pytest_quant.quantize (reference)"] / t["tf round/clip/cast (int8)"]
    print(f"ratio fake_quant   ours/TF: {fq:.2f}")
    print(f"ratio quantize     ours/TF: {qz:.2f}")


if __name__ == "__main__":
    main()
