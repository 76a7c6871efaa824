"""Wiring of the zoo run: where rows go (``--zoo-out`` / ``ZOO_OUT``), one model per
worker at a time, and a summary that puts pytest-quant's own defects first."""

from __future__ import annotations

import gc
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

_FRESH_KEY = pytest.StashKey[bool]()
_FRESH = "zoo_fresh_cache"  # the same, in xdist's workerinput


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("zoo", "architecture zoo (zoo/)")
    group.addoption(
        "--zoo-out",
        default=None,
        metavar="DIR",
        help="write each zoo row to DIR as <architecture>--<mode>.json, atomically "
        "(default: $ZOO_OUT; neither: rows go to the tests' user_properties only)",
    )


def _cache_dir(config: pytest.Config) -> str | None:
    return config.getoption("quant_cache_dir") or config.getini("quant_cache_dir") or None


@pytest.hookimpl(trylast=True)  # after pytest-quant's --quant-cache-clear
def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        cache = _cache_dir(config)
        # cold times are cold only in a cache that held no conversion (converted, or a
        # failure replayed from its .json) when the run began
        config.stash[_FRESH_KEY] = cache is not None and not any(
            p.suffix in (".tflite", ".json") for p in Path(cache).glob("*")
        )
        config.pluginmanager.register(_Summary(), "zoo-summary")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:  # pytest-xdist, on the controller
    node.workerinput[_FRESH] = node.config.stash[_FRESH_KEY]


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's own
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``-n`` (``--dist load``, the default), all modes of one architecture go to one
    worker, which builds the model once. ``--dist loadgroup`` with ``xdist_group`` marks
    would say the same, but under pytest 9.2 pytest-xdist 3.8 no longer manages to add the
    group to the node ids and groups nothing (pytest-dev/pytest-xdist#1386). Any other
    ``--dist`` is left to xdist."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByArchitecture(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            # zoo/test_zoo.py::test_zoo[resnet50-int8] -> resnet50
            if "::test_zoo[" in nodeid and nodeid.endswith("]"):
                return nodeid[nodeid.index("[") + 1 : -1].rsplit("-", 1)[0]
            return nodeid  # any other test is its own unit, as under --dist load

    return ByArchitecture(config, log)


def _fresh(config: pytest.Config) -> bool:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return bool(workerinput.get(_FRESH, False))
    return config.stash.get(_FRESH_KEY, False)


@pytest.fixture(scope="session")
def zoo_fresh_cache(request: pytest.FixtureRequest) -> bool:
    """Whether the conversion cache (``--quant-cache-dir``) held no model at the start."""
    return _fresh(request.config)


@pytest.fixture(scope="session")
def zoo_model() -> Callable[[Any], Any]:
    """``zoo_model(arch)``: the architecture's Keras model, built once and kept while the
    worker's tests use it (only the last one: the zoo's models do not fit in memory
    together on a small machine).

    Example::

        def test_x(zoo_model):
            model = zoo_model(ARCHITECTURES["unet"])
    """
    last: dict[str, Any] = {}

    def get(arch: Any) -> Any:
        if arch.name not in last:
            last.clear()
            gc.collect()
            last[arch.name] = arch.build()
        return last[arch.name]

    return get


@pytest.fixture
def zoo_record(request: pytest.FixtureRequest) -> Callable[[dict[str, Any]], None]:
    """``zoo_record(row)``: keep a row in the test's user_properties (they reach the
    controller under xdist) and, with ``--zoo-out``/``ZOO_OUT``, in its own JSON file."""
    out = request.config.getoption("zoo_out") or os.environ.get("ZOO_OUT")

    def record(row: dict[str, Any]) -> None:
        text = json.dumps(row, sort_keys=True)
        request.node.user_properties.append(("zoo", text))
        if out:
            write_row(Path(out), f"{row['architecture']}--{row['mode']}.json", text)

    return record


def write_row(directory: Path, name: str, text: str) -> None:
    """Write ``text`` to ``directory/name`` atomically (a temp file, then ``os.replace``)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Summary:
    """On the controller: the rows of every test (from workers too), summarized at the end."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            self.rows += [json.loads(v) for k, v in report.user_properties if k == "zoo"]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.rows:
            terminalreporter.section("zoo")
            for line in summary_lines(self.rows):
                terminalreporter.write_line(line)


def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The zoo's terminal summary: pytest-quant defects first, then conversions by mode."""
    from .table import MODES, defects

    found = defects(rows)
    if found:
        lines = [f"ZOO FOUND {len(found)} PYTEST-QUANT DEFECT(S) ('ours'):"]
        for step, kind, first, where in found:
            lines.append(f"  [{step}] {kind}: {first}")
            lines.append(f"      in {', '.join(where)}")
    else:
        lines = ["zoo: no pytest-quant defect ('ours') found"]
    counts = {
        m: (
            sum(r["converts"] == "yes" for r in rows if r["mode"] == m),
            sum(r["mode"] == m for r in rows),
        )
        for m in MODES
    }
    lines.append(
        "zoo: converts "
        + ", ".join(f"{m} {ok}/{n}" for m, (ok, n) in counts.items() if n)
        + " (the table: python zoo/table.py ZOO_OUT_DIR)"
    )
    return lines
