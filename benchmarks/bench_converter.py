"""A child per conversion (before) vs the converter child kept for the session, in one run.

    python benchmarks/bench_converter.py [--rounds 2]

A session converts 6 small Keras models (tests/models*.py) in 2 modes each (int8 with
representative data, dynamic), through ``convert()`` with a cold cache: 12 conversions.
Each round runs the session twice, each in a fresh process: once with a child per
conversion (``_child.PERSISTENT = False``: every conversion imports TensorFlow anew, as
before), once with the kept child. Prints per round the total, the first conversion
(the child's TensorFlow import, the first model's export) and the mean of the others,
then the ratio kept/before of the mean after the first (the medians over rounds). The
models are built before the clock starts; each model's export (once, at its first mode)
is in both.
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
MODES = ("int8", "dynamic")


def _models() -> list[tuple[str, object, object]]:
    """(name, model, representative data) of the 6 models."""
    from tests import models, models_arch

    return [
        ("mlp", models.mlp(), models.data((64,), n=64)),
        ("cnn", models.cnn(), models.data((8, 8, 1), n=64)),
        ("two_in_two_out", models.two_in_two_out(), [models.data((4,)), models.data((6,))]),
        ("hard_swish_cnn", models_arch.hard_swish_cnn(), models_arch.images(16)),
        ("text_classifier", models_arch.text_classifier(), models_arch.tokens(64)),
        ("layer_scale_mlp", models_arch.layer_scale_mlp(), models.data((4,), n=64)),
    ]


def session(persistent: bool) -> list[float]:
    """The 12 conversions' wall times, in order, in this process."""
    from pytest_quant.tflite import _child, convert

    _child.PERSISTENT = persistent
    built = _models()
    times = []
    with tempfile.TemporaryDirectory() as cache:
        for _, model, rep in built:
            for mode in MODES:
                t0 = time.perf_counter()
                convert(model, rep if mode == "int8" else None, mode=mode, cache_dir=cache)
                times.append(time.perf_counter() - t0)
    return times


def _run(persistent: bool) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, __file__, "--session", "kept" if persistent else "before"]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--session", choices=["before", "kept"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.session:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(session(args.session == "kept")))
        return
    n = len(MODES) * 6
    print(f"{n} conversions (6 models x {len(MODES)} modes), cold cache, per session:")
    print(f"{'round':>5} {'child':>22} {'total s':>8} {'first s':>8} {'others, mean s':>15}")
    rows: dict[bool, list[list[float]]] = {False: [], True: []}
    for r in range(args.rounds):
        for persistent in (False, True):
            times = _run(persistent)
            rows[persistent].append(times)
            what = "kept for the session" if persistent else "one per conversion"
            rest = statistics.mean(times[1:])
            print(f"{r + 1:>5} {what:>22} {sum(times):8.2f} {times[0]:8.2f} {rest:15.3f}")
    before, kept = (statistics.median(statistics.mean(t[1:]) for t in rows[p]) for p in rows)
    whole_before, whole_kept = (statistics.median(sum(t) for t in rows[p]) for p in rows)
    print(f"conversions after the first, median of the means: {before:.3f} s -> {kept:.3f} s")
    print(f"ratio kept/before: {kept / before:.2f} (goal <= 0.40)")
    ratio = whole_kept / whole_before
    print(f"whole session, median: {whole_before:.1f} s -> {whole_kept:.1f} s ({ratio:.2f})")


if __name__ == "__main__":
    main()
