"""A Keras model exported once per process vs once per conversion; a failed conversion
replayed from the cache vs converted again. Side by side in one run.

    python benchmarks/bench_export.py [--rounds 2]

Export: a keras.applications MobileNetV2 (alpha 0.35, 96 px, ``weights=None``) converted
in int8, dynamic and float16 plus the float reference blame uses, cold cache, each
session in a fresh process: once as pytest-quant does it (the model is exported once,
the four conversions share the export), once with the export forgotten before every
conversion (what every conversion paid before). Prints each session's total and the
ratio.

Failures: a Keras 3 LSTM converted to int8 fails (TensorList ops); the second attempt on
the same cache directory replays the cached failure. Prints both times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("int8", "dynamic", "float16", "float")


def _mobilenet() -> tuple[object, object]:
    import keras
    import numpy as np

    keras.utils.set_random_seed(1234)
    model = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10
    )
    return model, np.random.default_rng(0).normal(size=(16, 96, 96, 3)).astype(np.float32)


def export_session(once: bool) -> list[float]:
    """The four conversions' wall times, in this process."""
    from pytest_quant.tflite import convert, export

    model, rep = _mobilenet()
    times = []
    with tempfile.TemporaryDirectory() as cache:
        for mode in MODES:
            if not once:
                export._EXPORTS.clear()  # forgotten: the next conversion exports again
            t0 = time.perf_counter()
            convert(model, rep if mode == "int8" else None, mode=mode, cache_dir=cache)
            times.append(time.perf_counter() - t0)
    return times


def failure_session() -> list[float]:
    """A failing conversion, then the same again on the same cache: two wall times."""
    from pytest_quant.tflite import ConversionError, convert
    from tests import models_arch

    model = models_arch.recurrent("lstm")
    rep = models_arch.sequences(16)
    times = []
    with tempfile.TemporaryDirectory() as cache:
        for _ in range(2):
            t0 = time.perf_counter()
            try:
                convert(model, rep, mode="int8", cache_dir=cache)
            except ConversionError:
                pass
            else:  # pragma: no cover - a TensorFlow that converts it
                raise SystemExit("the LSTM converted: this benchmark needs a failing model")
            times.append(time.perf_counter() - t0)
    return times


def _in_child(what: str) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, __file__, "--child", what],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run = {
            "once": lambda: export_session(True),
            "every": lambda: export_session(False),
            "failure": failure_session,
        }[args.child]
        print(json.dumps(run()))
        return
    totals: dict[str, list[float]] = {"once": [], "every": []}
    print(f"MobileNetV2 0.35/96 px, conversions: {', '.join(MODES)}; cold cache")
    for r in range(1, args.rounds + 1):
        for how in ("every", "once"):  # interleaved, so load hits both alike
            times = _in_child(how)
            totals[how].append(sum(times))
            label = "exported once" if how == "once" else "exported per conversion"
            per = " ".join(f"{t:.1f}" for t in times)
            print(f"round {r}  {label:<24} total {sum(times):6.1f} s  ({per})")
    once, every = statistics.median(totals["once"]), statistics.median(totals["every"])
    print(f"median totals: per conversion {every:.1f} s, once {once:.1f} s, ratio {once / every:.2f}")
    first, again = _in_child("failure")
    print(f"failed conversion (Keras 3 LSTM to int8): first {first:.2f} s, replayed {again:.3f} s")


if __name__ == "__main__":
    main()
