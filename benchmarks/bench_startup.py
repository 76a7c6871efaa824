"""What installing pytest-quant costs a pytest run that never uses it.

    python benchmarks/bench_startup.py [--runs 21]

Runs a trivial 50-test suite with ``pytest -p no:quant`` and with the plugin, the two
interleaved run by run (so machine noise hits both alike), and prints the medians and
their ratio. Target: within 3%.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=21)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "test_trivial.py").write_text(
            "".join(f"def test_{i}():\n    assert {i} + 1 == {i + 1}\n" for i in range(50))
        )
        base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", tmp]
        variants = {"without (-p no:quant)": [*base, "-p", "no:quant"], "with plugin": base}
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.runs):
            for name, cmd in variants.items():
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, m in med.items():
        print(f"  {name:24s} median {m * 1e3:7.1f} ms over {args.runs} runs")
    ratio = med["with plugin"] / med["without (-p no:quant)"]
    print(f"ratio with/without: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
