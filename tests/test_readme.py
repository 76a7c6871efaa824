"""The README's Python examples run, as a user would paste them into a test file."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_examples_pass(pytester):
    blocks = _python_blocks()
    assert len(blocks) >= 4
    for i, block in enumerate(blocks):
        pytester.makepyfile(**{f"test_readme_{i}": "import pytest\nimport numpy as np\n" + block})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(
        passed=sum(b.count("\ndef test_") + b.startswith("def test_") for b in blocks)
    )
