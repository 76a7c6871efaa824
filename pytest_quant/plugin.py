"""pytest wiring for pytest-quant. Imports nothing heavy: numpy, hypothesis and
TensorFlow load only when a test uses them."""

from __future__ import annotations

import pytest

_PROFILE = "pytest-quant-ci"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("quant", "quantization checks (pytest-quant)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "quant(tolerance=None, max_lsb=None): per-test bounds for pytest-quant checks"
    )
    # Register our hypothesis profile just before hypothesis's own plugin loads the
    # profile named by --hypothesis-profile; importing hypothesis only when asked for it.
    try:
        requested = config.getoption("hypothesis_profile")
    except ValueError:  # hypothesis's plugin not installed or disabled
        return
    if requested == _PROFILE:
        from . import _profiles  # noqa: F401  (registers the profile)
