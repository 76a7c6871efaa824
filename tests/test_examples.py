"""examples/model_repo works as its README says: the gate passes on the good model and
fails, with the documented messages, on a deliberately broken one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras", reason="Keras/TensorFlow not installed: pytest-quant[tf]")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "model_repo"
IGNORE = shutil.ignore_patterns(
    ".pytest_cache", ".hypothesis", ".benchmarks", "reports", "__pycache__"
)


@pytest.fixture
def repo(tmp_path):
    target = tmp_path / "model_repo"
    shutil.copytree(EXAMPLE, target, ignore=IGNORE)
    return target


def _pytest(repo, *args, broken=None):
    env = {k: v for k, v in os.environ.items() if k != "EXAMPLE_BROKEN"}
    if broken:
        env["EXAMPLE_BROKEN"] = broken
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_example_gate_passes_on_the_good_model(repo):
    done = _pytest(repo, "-n", "2")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "6 passed" in done.stdout
    assert (repo / "reports" / "quant.json").is_file()


def test_example_gate_fails_on_a_broken_calibration(repo):
    done = _pytest(repo, broken="calibration")
    assert done.returncode == 1
    out = done.stdout
    assert "3 failed, 3 passed" in out
    assert "quantized output is off: rms error" in out
    assert "layers adding the most error" in out
    assert "top-1 accuracy dropped by" in out
    assert "golden 'digits_int8'" in out and "differs by up to" in out
