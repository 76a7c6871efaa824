from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import settings

from pytest_quant.strategies import PROFILE

pytest_plugins = ["pytester"]
_SUITE_CACHE = pytest.StashKey[Path]()

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


def _suite_cache(rootpath: Path) -> Path:
    """The suite's conversion cache: ``$PYTEST_QUANT_TEST_CACHE``, else a directory in the
    user's cache named by a hash of the TFLite layer's code, so a clone, a fresh checkout
    or CI on the same machine reuse each other's conversions, and any change to the code
    that converts starts from an empty one (the entries' keys already hold the model, the
    data, the settings and the TensorFlow version). Falls back to ``.pytest_cache``."""
    if os.environ.get("PYTEST_QUANT_TEST_CACHE"):
        return Path(os.environ["PYTEST_QUANT_TEST_CACHE"])
    digest = hashlib.sha256()
    for source in sorted((rootpath / "pytest_quant" / "tflite").glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    try:
        where = home / "pytest-quant-tests" / digest.hexdigest()[:16]
        where.mkdir(parents=True, exist_ok=True)
        os.utime(where)  # in use: spared by the pruning below
        return where
    except OSError:
        return rootpath / ".pytest_cache" / "d" / "pytest-quant-tests"


def pytest_configure(config):
    config.stash[_SUITE_CACHE] = cache = _suite_cache(config.rootpath)
    os.environ["PYTEST_QUANT_TEST_CACHE"] = str(cache)  # subprocess runs share it
    if hasattr(config, "workerinput") or cache.parent.name != "pytest-quant-tests":
        return
    week_ago = time.time() - 7 * 86400  # caches of older code, unused for a week
    for old in cache.parent.iterdir():
        if old != cache and old.is_dir() and old.stat().st_mtime < week_ago:
            shutil.rmtree(old, ignore_errors=True)


@pytest.fixture(scope="session")
def tflite_cache(request):
    """One conversion cache for the whole suite (xdist workers share it safely: that is
    what the cache's file locks are for), kept between runs (see ``_suite_cache``)."""
    return request.config.stash[_SUITE_CACHE]


#: what pytester changes in the environment for its runs that our converter child sees
_PYTESTER_ENV = ("HOME", "USERPROFILE", "PY_COLORS", "PYTEST_DEBUG_TEMPROOT")


@pytest.fixture(scope="session")
def tf_inprocess(tf):
    """For pytester runs in this process whose tests use TensorFlow (``runpytest_tf``),
    which spare a subprocess its TensorFlow import (3.4 s here). pytester removes from
    ``sys.modules`` what a run imported, and a second TensorFlow import in one process
    aborts it; modules imported before the ``pytester`` fixture are kept. Session-scoped,
    so set up before any ``pytester``: TensorFlow, Keras and the TFLite layer (whose
    converter child then stays this process's). Returns the environment as it was."""
    import importlib
    import pkgutil

    import keras  # noqa: F401

    import pytest_quant.tflite as layer

    for module in pkgutil.iter_modules(layer.__path__):
        if module.name != "_worker":  # the child's entry point
            importlib.import_module(f"{layer.__name__}.{module.name}")
    return {name: os.environ.get(name) for name in _PYTESTER_ENV}


@pytest.fixture
def runpytest_tf(tf_inprocess, pytester):
    """``pytester.runpytest_inprocess`` for a run whose tests use TensorFlow, with the
    variables pytester sets for its runs (``HOME``...) as this process has them: the
    converter child is kept for one environment, so the run's conversions go to this
    process's child instead of starting another and stopping it."""

    def run(*args: str) -> pytest.RunResult:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in tf_inprocess.items():
                if value is None:
                    mp.delenv(name, raising=False)
                else:
                    mp.setenv(name, value)
            return pytester.runpytest_inprocess(*args)

    return run


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
