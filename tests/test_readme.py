"""The README's Python examples run, as a user would paste them into a test file."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"

# What the TFLite examples take from the user's own conftest: a Keras model, data, and
# the float and int8 .tflite files a team keeps in its repo (models/).
CONFTEST = """
import os

import numpy as np
import pytest
from tests import models

@pytest.fixture(scope="session")
def keras_model():
    return models.mlp()

@pytest.fixture(scope="session")
def x_calib():
    return models.data((64,), n=200)

@pytest.fixture(scope="session")
def x_test():
    return models.data((64,), n=100, seed=1)

@pytest.fixture(scope="session", autouse=True)
def tflite_files(keras_model, x_calib, pytestconfig):
    from pytest_quant.tflite import convert

    cache = os.environ.get("PYTEST_QUANT_TEST_CACHE") or pytestconfig.rootpath / "cache"
    models_dir = pytestconfig.rootpath / "models"
    models_dir.mkdir(exist_ok=True)
    (models_dir / "mlp.tflite").write_bytes(convert(keras_model, mode="float", cache_dir=cache))
    (models_dir / "mlp_int8.tflite").write_bytes(convert(keras_model, x_calib, cache_dir=cache))
"""


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def _import_statements(block: str) -> list[tuple[str, list[str]]]:
    """(module, names taken from it) of each absolute import in a block: ``import a.b``
    gives ("a.b", []), ``from a import b, c`` gives ("a", ["b", "c"])."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(block)):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def _imports(block: str) -> set[str]:
    """The top-level modules a block imports."""
    return {module.split(".")[0] for module, _ in _import_statements(block)}


def _import_as(block: str) -> None:
    """Import what ``block`` imports, as its import statements do (modules and the
    submodules named by ``from M import name``), so that a pytester run in this process
    keeps them (see ``tf_inprocess`` in conftest.py)."""
    for name, taken in _import_statements(block):
        module = importlib.import_module(name)
        for attr in taken:
            if not hasattr(module, attr):
                importlib.import_module(f"{name}.{attr}")


def _runs_here(block: str, has_tf: bool) -> bool:
    """A block runs where what it imports is installed; TFLite blocks need TensorFlow
    (the conftest converts the models they use)."""
    if not has_tf and ("quant_tflite" in block or "TFLiteRunner" in block):
        return False
    return all(importlib.util.find_spec(m) is not None for m in _imports(block))


def test_every_route_block_is_recognised():
    routes = [b for b in _python_blocks() if _imports(b) & {"tf_keras", "ai_edge_quantizer"}]
    assert len(routes) == 2


def test_readme_examples_pass(request, monkeypatch, tflite_cache):
    has_tf = importlib.util.find_spec("keras") is not None
    blocks = [b for b in _python_blocks() if _runs_here(b, has_tf)]
    assert len(blocks) >= 4
    # the golden examples run TFLite models, so only where TensorFlow is (_runs_here)
    golden = [f"test_readme_{i}.py" for i, b in enumerate(blocks) if "quant_golden" in b]
    if golden:  # imported before pytester exists, so its run keeps them (tf_inprocess)
        request.getfixturevalue("tf_inprocess")
        for i, block in enumerate(blocks):
            if f"test_readme_{i}.py" in golden:
                _import_as(block)
        runpytest_tf = request.getfixturevalue("runpytest_tf")
    pytester = request.getfixturevalue("pytester")
    pytester.makeconftest(CONFTEST if has_tf else "")
    for i, block in enumerate(blocks):  # as written: a block imports what it uses
        pytester.makepyfile(**{f"test_readme_{i}": block})
    # The profile the README recommends for CI (derandomized, no too_slow health check on
    # a busy machine). First run: the golden examples write their goldens (only those
    # files), in this process. Second run: every block, goldens checked, in a fresh
    # process as a user runs them (the Keras 2 route's TensorFlow Model Optimization
    # sets TF_USE_LEGACY_KERAS when it is imported: not in this process).
    opts = ["-p", "no:cacheprovider", "--hypothesis-profile=pytest-quant-ci"]
    opts.append(f"--quant-cache-dir={tflite_cache}")  # the suite's: conversions shared
    if golden:
        first = runpytest_tf(*opts, "--quant-golden-update", *golden)
        assert first.ret == 0, str(first.stdout)[-3000:]
    monkeypatch.setenv("PYTHONPATH", str(README.parent))  # `from tests import models`
    result = pytester.runpytest_subprocess(*opts)
    expected = sum(len(re.findall(r"^def test_", b, re.M)) for b in blocks)
    result.assert_outcomes(passed=expected)
