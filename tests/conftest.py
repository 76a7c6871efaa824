from __future__ import annotations

import os

import pytest
from hypothesis import settings

from pytest_quant.strategies import PROFILE

pytest_plugins = ["pytester"]

# Derandomized and deadline-free unless a developer asks for another profile
# (HYPOTHESIS_PROFILE=dev explores with fresh random examples).
settings.register_profile("dev", max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", PROFILE))


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, or a skip that says why (the no-TF tox env runs everything else)."""
    return pytest.importorskip(
        "tensorflow", reason="TensorFlow is not installed: install pytest-quant[tf] to run this"
    )


@pytest.fixture(scope="session")
def litert():
    """The LiteRT interpreter module, or a skip that says why."""
    return pytest.importorskip(
        "ai_edge_litert.interpreter",
        reason="ai-edge-litert is not installed: install pytest-quant[tf] to run this",
    )


@pytest.fixture(autouse=True)
def _pristine_quant_settings():
    """Unit tests of the checks see the built-in defaults and record nothing, whatever
    --quant-tolerance this suite itself runs with (plugin behaviour is tested in
    subprocesses through pytester)."""
    from pytest_quant import _settings

    token = _settings.activate(_settings.QuantSettings())
    yield
    _settings.deactivate(token)


@pytest.fixture(scope="session")
def tflite_cache(request):
    """One conversion cache for the whole suite (xdist workers share it safely: that is
    what the cache's file locks are for), kept between local runs."""
    return request.config.rootpath / ".pytest_cache" / "d" / "pytest-quant-tests"


@pytest.fixture
def forbid_conversion(monkeypatch):
    """Call it after a first conversion: from then on, running the converter fails the
    test with "the converter ran again" (what a cache hit must avoid)."""

    def arm() -> None:
        from pytest_quant.tflite import converter

        def refuse(*args, **kwargs):
            raise AssertionError("the converter ran again despite the cache")

        monkeypatch.setattr(converter, "_convert_in_child", refuse)

    return arm


# Longest first: under xdist, a long test handed out last keeps one worker busy while the
# other idles; these start at once instead (each runs pytest or TensorFlow in a subprocess).
_LONG_FIRST = ("tests/test_readme.py", "tests/test_examples.py", "tests/test_tflite_child.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        path = item.nodeid.split("::", 1)[0]
        return _LONG_FIRST.index(path) if path in _LONG_FIRST else len(_LONG_FIRST)

    items.sort(key=rank)  # stable: the order within each file is kept
