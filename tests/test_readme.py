"""The README's Python examples run, as a user would paste them into a test file."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"

# What the TFLite examples take from the user's own conftest.
CONFTEST = """
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
"""


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_examples_pass(pytester, monkeypatch):
    has_tf = importlib.util.find_spec("keras") is not None
    blocks = [b for b in _python_blocks() if has_tf or "quant_tflite" not in b]
    assert len(blocks) >= 4
    monkeypatch.setenv("PYTHONPATH", str(README.parent))
    pytester.makeconftest(CONFTEST if has_tf else "")
    for i, block in enumerate(blocks):
        pytester.makepyfile(**{f"test_readme_{i}": "import pytest\nimport numpy as np\n" + block})
    # first run: the golden example writes its golden; second run: it is checked
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--quant-golden-update")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    expected = sum(len(re.findall(r"^def test_", b, re.M)) for b in blocks)
    result.assert_outcomes(passed=expected)
