"""First vs second run of a suite that converts several models (the conversion cache).

    python benchmarks/bench_cache.py

Writes a small test suite converting 3 models in 2 modes each through ``quant_tflite``,
runs it twice against one fresh cache directory, and prints both wall times.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SUITE = """
import pytest
from tests import models

CASES = [("mlp", (64,)), ("cnn", (8, 8, 1)), ("qat_mlp", None)]

@pytest.mark.parametrize("name, shape", CASES)
@pytest.mark.parametrize("mode", ["int8", "dynamic"])
def test_convert(quant_tflite, name, shape, mode):
    model = getattr(models, name)()
    rep = models.data(shape, n=64) if shape and mode == "int8" else None
    runner = quant_tflite(model, rep, mode=mode)
    assert runner.content
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "test_suite.py").write_text(SUITE)
        cache = Path(tmp, "cache")
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            tmp,
            f"--quant-cache-dir={cache}",
            f"--rootdir={tmp}",
        ]
        env = {"PYTHONPATH": str(ROOT)}
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            subprocess.run(
                cmd, check=True, capture_output=True, env={**__import__("os").environ, **env}
            )
            times.append(time.perf_counter() - t0)
    print(f"  first run (converts 6 models):  {times[0]:7.1f} s")
    print(f"  second run (cache hits):        {times[1]:7.1f} s")
    print(f"ratio first/second: {times[0] / times[1]:.1f}x")


if __name__ == "__main__":
    main()
