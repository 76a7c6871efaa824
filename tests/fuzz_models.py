"""Byte-flip the golden models and run the linter and the runner on each (a child process).

    python tests/fuzz_models.py --seed 0 --flips 50 --seconds 6

Each flip XORs 1 to 3 random bytes of a golden ``.tflite`` (seeded by seed, model and
flip number). Stages: ``lint`` (``lint_tflite`` and ``detect_scheme``) and ``run``
(``TFLiteRunner``, then one invocation on a sample of zeros). Prints ``start
MODEL FLIP`` before each flip (so a crash of the interpreter names the flip that killed
the process), then one JSON line: the outcome counts per stage (``ok``,
``MalformedModelError``, or another exception's type) and the first unexpected errors.
It stops early, saying so, at the time bound.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "models"
EXPECTED = ("ok", "MalformedModelError")


def flipped(content: bytes, seed: int, model: int, flip: int) -> bytes:
    """``content`` with 1 to 3 bytes XORed with random non-zero values."""
    import numpy as np

    rng = np.random.default_rng([seed, model, flip])
    out = bytearray(content)
    for pos in rng.integers(0, len(out), size=int(rng.integers(1, 4))):
        out[int(pos)] ^= int(rng.integers(1, 256))
    return bytes(out)


def _outcome(fn: Any, content: bytes) -> tuple[str, str]:
    try:
        fn(content)
    except Exception as exc:  # the point: anything but the documented error is a finding
        return type(exc).__name__, f"{type(exc).__name__}: {exc}"[:300]
    return "ok", ""


def _lint(content: bytes) -> None:
    from pytest_quant.tflite import detect_scheme, lint_tflite

    lint_tflite(content)
    detect_scheme(content)


def _run(content: bytes) -> None:
    import numpy as np

    from pytest_quant.tflite import TFLiteRunner

    runner = TFLiteRunner(content)
    # one sample of the interpreter's own shapes and types; a flip can make a sample
    # absurdly large (a well-formed model all the same): those are only loaded
    shapes = [[1, *(max(1, int(s)) for s in d["shape"][1:])] for d in runner._inputs]
    if max(math.prod(shape) for shape in shapes) > 1 << 24:
        return
    zeros = [np.zeros(shape, d["dtype"]) for shape, d in zip(shapes, runner._inputs, strict=True)]
    runner.quantized(zeros if len(zeros) > 1 else zeros[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flips", type=int, default=50, help="flips per golden model")
    ap.add_argument("--seconds", type=float, default=6.0, help="time bound of the flips")
    args = ap.parse_args()
    names = sorted(p.stem for p in GOLDEN.glob("*.tflite"))
    counts: dict[str, Counter[str]] = {"lint": Counter(), "run": Counter()}
    unexpected: list[str] = []
    deadline = time.monotonic() + args.seconds
    done, stopped = 0, False
    for i in range(args.flips):  # round robin: a time bound still covers every model
        for m, name in enumerate(names):
            if time.monotonic() > deadline:
                stopped = True
                break
            content = flipped((GOLDEN / f"{name}.tflite").read_bytes(), args.seed, m, i)
            print(f"start {name} {i}", flush=True)
            for stage, fn in (("lint", _lint), ("run", _run)):
                kind, message = _outcome(fn, content)
                counts[stage][kind] += 1
                if kind not in EXPECTED and len(unexpected) < 10:
                    unexpected.append(f"{name} flip {i} ({stage}): {message}")
            done += 1
        if stopped:
            break
    summary = {"done": done, "stopped": stopped, "counts": counts, "unexpected": unexpected}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
