"""The built wheel carries every module: an editable install hides a missing subpackage
(it did: pytest_quant.tflite was left out of wheels until a fresh-venv trial caught it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_every_module(tmp_path):
    # build from a clean copy: an in-tree build/ directory would mask a missing package
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "pytest_quant", src / "pytest_quant", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("pytest_quant-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(ROOT)) for p in (ROOT / "pytest_quant").rglob("*.py")}
    expected.add("pytest_quant/py.typed")
    assert expected <= names, sorted(expected - names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "quant = pytest_quant.plugin" in zipfile.ZipFile(wheel).read(entry).decode()
