"""pytest wiring for pytest-quant: options, ini keys, the marker, fixtures, the summary.

Imports nothing heavy: numpy, hypothesis and TensorFlow load only when a test uses
them. Logic lives in ``_settings`` (bounds), ``report`` (records) and the check modules.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import __version__, _settings
from . import report as _report
from ._paths import path_problem
from ._settings import (
    QuantSettings,
    marker_errors_message,
    parse_bool,
    parse_max_lsb,
    parse_tolerance,
)

_PROFILE = "pytest-quant-ci"


@dataclass
class _RunState:
    tolerance: float
    tolerance_from: str
    max_lsb: int
    max_lsb_from: str
    report_path: str | None
    cache_dir: str
    golden_dir: str | None = None
    report_dir: str | None = None
    suggest: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)
    goldens: dict[str, bool] = field(default_factory=dict)  # path -> written this run


_STATE = pytest.StashKey[_RunState]()
_GOLDEN_PROPERTY = "quant_golden"
# An xdist worker's usage error travels to the controller in ``workeroutput``.
_WORKER_USAGE_ERROR = "pytest_quant_usage_error"


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Quiet TensorFlow's C++ info and warning logs before anything imports it (they go
    straight to the process's stderr). TF 2.21 still prints the few it logs before absl
    is initialised (oneDNN, CUDA probes): :func:`pytest_sessionfinish` drops those.
    Errors still print; a value the user set is kept. Costs an environment variable."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


#: TensorFlow's C++ log lines (absl): ``I0000 00:00:17.94 123 port.cc:153] ...``, absl's
#: notice that precedes them, and the CPU-feature note's second line. TF 2.21 prints the
#: first ones whatever ``TF_CPP_MIN_LOG_LEVEL`` says (before absl's InitializeLog).
#: Fatal lines (``F0000 ...``) are kept: they say why a process is about to abort.
_TF_LOG = re.compile(
    r"[IWE]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.-]+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\)"
    r"|To enable the following instructions: .*rebuild TensorFlow"
)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """What was printed outside any test and is still held by pytest's capture (under
    xdist: the controller's conftests, e.g. one importing TensorFlow) would be written
    when the process exits, after pytest's summary. Write it now, before the summary,
    without TensorFlow's C++ log lines."""
    capman = session.config.pluginmanager.getplugin("capturemanager")
    if capman is None or not capman.is_globally_capturing():
        return
    held = capman.read_global_capture()
    kept = [
        (stream, "".join(line for line in text.splitlines(True) if not _TF_LOG.match(line)))
        for stream, text in (("stdout", held.out), ("stderr", held.err))
    ]
    if any(text for _, text in kept):
        capman.suspend_global_capture()
        try:
            for stream, text in kept:
                getattr(sys, stream).write(text)
                getattr(sys, stream).flush()
        finally:
            capman.resume_global_capture()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("quant", "quantization checks (pytest-quant)")
    group.addoption(
        "--quant-tolerance",
        type=parse_tolerance,
        default=None,
        metavar="FLOAT",
        help="default error budget of quant checks: RMS error as a fraction of the "
        "reference's full-scale range for tensors, absolute top-1 drop for accuracy "
        f"(default {_settings.DEFAULT_TOLERANCE}; ini quant_tolerance)",
    )
    group.addoption(
        "--quant-max-lsb",
        type=parse_max_lsb,
        default=None,
        metavar="INT",
        help="allowed difference of integer outputs, in quantization steps "
        f"(default {_settings.DEFAULT_MAX_LSB}; ini quant_max_lsb)",
    )
    group.addoption(
        "--quant-report",
        default=None,
        metavar="PATH",
        help="write a JSON file with one record per quant check (ini quant_report)",
    )
    group.addoption(
        "--quant-report-dir",
        default=None,
        metavar="DIR",
        help="write quant.json and per-check PNGs (LSB histograms, per-layer errors) into "
        "DIR; PNGs need pytest-quant[plots] (ini quant_report_dir)",
    )
    group.addoption(
        "--quant-cache-dir",
        default=None,
        metavar="PATH",
        help="where converted TFLite models are cached (default "
        ".pytest_cache/d/pytest-quant-tflite under the rootdir; ini quant_cache_dir)",
    )
    group.addoption(
        "--quant-cache-clear",
        action="store_true",
        default=False,
        help="delete the TFLite conversion cache before the run",
    )
    group.addoption(
        "--quant-golden-dir",
        default=None,
        metavar="PATH",
        help="where golden outputs live (default: golden/<test module> next to each test "
        "module; ini quant_golden_dir)",
    )
    group.addoption(
        "--quant-golden-update",
        action="store_true",
        default=False,
        help="write missing or mismatching goldens from this run's outputs",
    )
    group.addoption(
        "--quant-golden-prune",
        action="store_true",
        default=False,
        help="delete goldens no test checked in this full run (listed at the end)",
    )
    group.addoption(
        "--quant-suggest",
        action="store_true",
        default=None,
        help="when an int8 assert_tflite_close fails, search for the fewest ops to keep "
        "in float that bring the model within its bound, and add them to the message "
        "(re-converts the model per step; ini quant_suggest)",
    )
    parser.addini("quant_tolerance", "default --quant-tolerance", default=None)
    parser.addini("quant_suggest", "default --quant-suggest (true/false)", default=None)
    parser.addini("quant_golden_dir", "default --quant-golden-dir", default=None)
    parser.addini("quant_cache_dir", "default --quant-cache-dir", default=None)
    parser.addini("quant_report_dir", "default --quant-report-dir", default=None)
    parser.addini("quant_max_lsb", "default --quant-max-lsb", default=None)
    parser.addini("quant_report", "default --quant-report path", default=None)


def _resolve(
    config: pytest.Config, name: str, parse: Callable[[Any], Any], default: Any
) -> tuple[Any, str]:
    """CLI > ini > default, each validated; returns (value, where it came from)."""
    flag = "--" + name.replace("_", "-")
    cli = config.getoption(name)
    if cli is not None:
        return cli, f"{flag}={cli} (command line)"
    ini = config.getini(name)
    if ini not in (None, "", []):
        try:
            value = parse(ini)
        except Exception as exc:
            msg = f"ini {name} = {ini!r}: {exc} (see {flag} in pytest --help)"
            raise pytest.UsageError(msg) from None
        return value, f"ini {name} = {value}"
    return default, f"the default {default}"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "quant(tolerance=None, max_lsb=None): per-test bounds for pytest-quant checks "
        "(override --quant-tolerance / --quant-max-lsb)",
    )
    tolerance, tolerance_from = _resolve(
        config, "quant_tolerance", parse_tolerance, _settings.DEFAULT_TOLERANCE
    )
    max_lsb, max_lsb_from = _resolve(
        config, "quant_max_lsb", parse_max_lsb, _settings.DEFAULT_MAX_LSB
    )
    path = _path_option(config, "quant_report")[0]
    cache_dir = str(
        _path_option(config, "quant_cache_dir")[0]
        or config.rootpath / ".pytest_cache" / "d" / "pytest-quant-tflite"
    )
    golden_dir = _path_option(config, "quant_golden_dir")[0]
    if golden_dir:
        golden_dir = str(config.rootpath / golden_dir)
    state = _RunState(tolerance, tolerance_from, max_lsb, max_lsb_from, path, cache_dir, golden_dir)
    state.report_dir = _path_option(config, "quant_report_dir")[0]
    state.suggest = _resolve(config, "quant_suggest", parse_bool, False)[0]
    config.stash[_STATE] = state
    if not hasattr(config, "workerinput"):
        _validate_paths(config)  # workers get the values the controller checked
        if config.getoption("quant_cache_clear"):
            shutil.rmtree(cache_dir, ignore_errors=True)  # before any xdist worker starts
        config.pluginmanager.register(_Controller(state), "quant-controller")
    # Register our hypothesis profile just before hypothesis's own plugin loads the
    # profile named by --hypothesis-profile; importing hypothesis only when asked for it.
    try:
        requested = config.getoption("hypothesis_profile")
    except ValueError:  # hypothesis's plugin not installed or disabled
        return
    if requested == _PROFILE:
        from . import _profiles  # noqa: F401  (registers the profile)


def _path_option(config: pytest.Config, name: str) -> tuple[str | None, str]:
    """A path option's value (command line > ini) and how to name it in a message."""
    flag = "--" + name.replace("_", "-")
    cli = config.getoption(name)
    if cli:
        return str(cli), f"{flag}={cli}"
    ini = config.getini(name)
    if ini:
        return str(ini), f"ini {name} = {ini!r}"
    return None, flag


def _validate_paths(config: pytest.Config) -> None:
    """Stop before any test runs when a path option cannot be used as given."""
    here = config.invocation_params.dir
    checks = (  # option, relative to, file or directory, must be writable now
        ("quant_report", here, "file", True),
        ("quant_report_dir", here, "dir", True),
        ("quant_golden_dir", config.rootpath, "dir", False),  # read-only is fine to check
        ("quant_cache_dir", here, "dir", False),
    )
    for name, base, kind, probe in checks:
        value, where = _path_option(config, name)
        if value is None:
            continue
        problem = path_problem(value, base, kind=kind, probe=probe)
        if problem is None and name == "quant_report_dir":
            inner = str(Path(value, "quant.json"))
            problem = path_problem(inner, base, kind="file", probe=False)
        if problem is not None:
            raise pytest.UsageError(f"{where}: {problem}")


def _marker_problem(item: pytest.Item) -> tuple[dict[str, Any], str | None]:
    """The marker's bounds, or what is wrong with it (naming the test)."""
    marker = item.get_closest_marker("quant")
    if marker is None:
        return {}, None
    if marker.args or set(marker.kwargs) - {"tolerance", "max_lsb"}:
        return {}, (
            f"{item.nodeid}: @pytest.mark.quant takes only tolerance= and max_lsb=, got "
            f"args={marker.args!r} kwargs={sorted(marker.kwargs)}"
        )
    out = {}
    for key, parse in (("tolerance", parse_tolerance), ("max_lsb", parse_max_lsb)):
        if marker.kwargs.get(key) is not None:
            try:
                out[key] = parse(marker.kwargs[key])
            except Exception as exc:
                bad = f"@pytest.mark.quant({key}={marker.kwargs[key]!r})"
                return {}, f"{item.nodeid}: {bad}: {exc}"
    return out, None


def _marker_kwargs(item: pytest.Item) -> dict[str, Any]:
    out, problem = _marker_problem(item)
    if problem is not None:
        raise pytest.UsageError(problem)
    return out


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    problems = [p for p in (_marker_problem(item)[1] for item in items) if p is not None]
    if not problems:
        return
    message = marker_errors_message(problems)
    if hasattr(config, "workerinput"):
        # xdist: a worker's usage error would reach the controller as a crash. Hand the
        # message over (the controller raises it) and stop the run cleanly.
        config.workeroutput[_WORKER_USAGE_ERROR] = message  # type: ignore[attr-defined]
        session.shouldstop = message
    raise pytest.UsageError(message)  # before any test runs


def settings_for(item: pytest.Item) -> QuantSettings:
    """Resolve one test's bounds: marker > command line > ini > default."""
    state = item.config.stash[_STATE]
    marked = _marker_kwargs(item)
    tolerance, tolerance_from = state.tolerance, state.tolerance_from
    max_lsb, max_lsb_from = state.max_lsb, state.max_lsb_from
    if "tolerance" in marked:
        tolerance = marked["tolerance"]
        tolerance_from = f"@pytest.mark.quant(tolerance={tolerance}) on {item.name}"
    if "max_lsb" in marked:
        max_lsb = marked["max_lsb"]
        max_lsb_from = f"@pytest.mark.quant(max_lsb={max_lsb}) on {item.name}"

    def sink(entry: dict[str, Any]) -> None:
        item.user_properties.append((_report.PROPERTY, json.dumps(entry, allow_nan=False)))

    return QuantSettings(
        tolerance, max_lsb, tolerance_from, max_lsb_from, item.nodeid, sink, suggest=state.suggest
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, Any, Any]:
    token = _settings.activate(settings_for(item))
    try:
        return (yield)
    finally:
        _settings.deactivate(token)


class _Controller:
    """Collects check records and reports them; registered only where reports end up
    (the single process, or the xdist controller: workers forward their reports)."""

    def __init__(self, state: _RunState) -> None:
        self.state = state
        self.plot_note: str | None = None
        self.usage_error: str | None = None

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        message = getattr(node, "workeroutput", {}).get(_WORKER_USAGE_ERROR)
        if message:
            self.usage_error = message

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, Any, Any]:
        # A worker's usage error (a misused marker) ends the xdist run as the same usage
        # error a single process gives, not as xdist's "Interrupted" or a crash.
        try:
            result = yield
        except BaseException:
            if self.usage_error is None:
                raise
            result = None
        if self.usage_error is not None:
            raise pytest.UsageError(self.usage_error)
        return result

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Every phase's report carries all user_properties so far: take the last one.
        if report.when == "teardown":
            self.state.records.extend(_report.from_user_properties(report.user_properties))
            for key, value in report.user_properties:
                if key == _GOLDEN_PROPERTY:
                    path, written = json.loads(str(value))
                    self.state.goldens[path] = self.state.goldens.get(path, False) or written

    def pytest_sessionfinish(self) -> None:
        state = self.state
        meta = {
            "pytest_quant": __version__,
            "tolerance": state.tolerance,
            "tolerance_from": state.tolerance_from,
            "max_lsb": state.max_lsb,
            "max_lsb_from": state.max_lsb_from,
        }
        if state.report_path:
            _report.write_json(state.report_path, state.records, meta)
        if state.report_dir:
            _report.write_json(Path(state.report_dir) / "quant.json", state.records, meta)
            try:
                from .plots import write_plots
            except ImportError:  # pragma: no cover - exercised in envs without matplotlib
                self.plot_note = "PNGs skipped: install pytest-quant[plots] (matplotlib)"
            else:
                try:
                    n = len(write_plots(state.report_dir, state.records))
                except ModuleNotFoundError:
                    self.plot_note = "PNGs skipped: install pytest-quant[plots] (matplotlib)"
                else:
                    self.plot_note = f"{n} plot(s) written to {state.report_dir}"

    def _unused_goldens(self, config: pytest.Config) -> list[Path]:
        """Goldens in the directories this run used that no test touched; only for a full
        run (no -k, -m or node ids), where 'untouched' means 'unused'."""
        opt = config.option
        if (
            getattr(opt, "keyword", "")
            or getattr(opt, "markexpr", "")
            or any("::" in str(a) for a in config.args)
        ):
            return []
        dirs = {Path(p).parent for p in self.state.goldens}
        if self.state.golden_dir:
            dirs.add(Path(self.state.golden_dir))
        touched = {Path(p) for p in self.state.goldens}
        found = {p for d in dirs if d.is_dir() for p in d.glob("*.npz")}
        return sorted(found - touched)

    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        written = sorted(p for p, w in self.state.goldens.items() if w)
        unused = self._unused_goldens(config)
        if written or unused:
            terminalreporter.section("quant goldens")
            for w in written:
                terminalreporter.write_line(f"written: {w}")
            prune = config.getoption("quant_golden_prune")
            for u in unused:
                if prune:
                    u.unlink(missing_ok=True)
                    u.with_suffix(".json").unlink(missing_ok=True)
                    terminalreporter.write_line(f"deleted (no test checked it): {u}")
                else:
                    terminalreporter.write_line(f"unused (no test checked it): {u}")
            if unused and not prune:
                terminalreporter.write_line("(pytest --quant-golden-prune deletes unused goldens)")
        if not self.state.records:
            return
        terminalreporter.section("quant checks")
        for line in _report.table(self.state.records, report_path=self.state.report_path):
            terminalreporter.write_line(line)
        if self.state.report_path:
            terminalreporter.write_line(f"quant report written to {self.state.report_path}")
        if self.plot_note:
            terminalreporter.write_line(self.plot_note)


@pytest.fixture
def quant_settings(request: pytest.FixtureRequest) -> QuantSettings:
    """The bounds in force for this test (marker > command line > ini > default).

    Example::

        def test_bounds(quant_settings):
            print(quant_settings.tolerance, quant_settings.tolerance_from)
    """
    return settings_for(request.node)


@pytest.fixture
def quant_tolerance(quant_settings: QuantSettings) -> float:
    """This test's tolerance (``--quant-tolerance``, ini, or ``@pytest.mark.quant``).

    Example::

        @pytest.mark.quant(tolerance=0.05)
        def test_loose(quant_tolerance):
            assert quant_tolerance == 0.05
    """
    return quant_settings.tolerance


@pytest.fixture
def quant_max_lsb(quant_settings: QuantSettings) -> int:
    """This test's LSB budget (``--quant-max-lsb``, ini, or ``@pytest.mark.quant``).

    Example::

        def test_codes(quant_max_lsb):
            assert quant_max_lsb >= 0
    """
    return quant_settings.max_lsb


@pytest.fixture(scope="session")
def quant_tflite(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Convert a model to TFLite (cached) and return a runner for it.

    ``quant_tflite(source, representative_data=None, *, mode=None, kernels="xnnpack",
    num_threads=1, via="saved_model", converter_options=None, float_fallback=False,
    keep_float=None, batch_size=None)``:
    ``source`` is a Keras model (Keras 3, or Keras 2 ``tf_keras`` as TFMOT builds), a
    SavedModel directory, a ``.tflite`` path (``str`` or ``Path``) or bytes; ``mode`` is
    ``"int8"`` (the default for a model to convert), ``"dynamic"``, ``"float16"``,
    ``"int16x8"`` or ``"float"``, and is not given with a ``.tflite``, which is used as it
    is; ``via="keras"`` converts as ``from_keras_model``; ``converter_options`` (a dict of
    ``TFLiteConverter`` attributes, ops sets by name, e.g.
    ``{"_experimental_lower_tensor_list_ops": False}``) and ``float_fallback`` (int16x8:
    ops without a 16x8 kernel stay float) and ``keep_float`` (int8: the ops, by output
    tensor name, to keep in float, as :func:`pytest_quant.tflite.suggest_float_layers`
    suggests them) are passed to :func:`pytest_quant.tflite.convert`, which documents
    them; ``batch_size`` (the most samples one invocation runs; default: activations
    within 64 MiB) to :class:`~pytest_quant.tflite.TFLiteRunner`.
    A runner made from a model knows it: ``runner.layer_errors(x)`` blames against it.
    Session-scoped, so module- and session-scoped fixtures can convert once and share.
    A converter crash fails the test that asked, naming the TF version; the run goes on.

    Example::

        @pytest.fixture(scope="module")
        def int8_model(quant_tflite, keras_model, x_calib):
            return quant_tflite(keras_model, x_calib, mode="int8")

        def test_int8(int8_model, keras_model, x_test):
            assert_quant_close(int8_model(x_test), keras_model.predict(x_test))

        def test_mobilenet_v3_int16x8(quant_tflite, mobilenet_v3, x_calib):
            runner = quant_tflite(mobilenet_v3, x_calib, mode="int16x8", float_fallback=True)

        def test_selective(quant_tflite, model, x_calib):
            # KEEP_FLOAT: the tensor names that --quant-suggest printed
            runner = quant_tflite(model, x_calib, keep_float=KEEP_FLOAT)
    """
    cache_dir = request.config.stash[_STATE].cache_dir

    def factory(
        source: Any,
        representative_data: Any = None,
        *,
        mode: str | None = None,
        kernels: str = "xnnpack",
        num_threads: int = 1,
        via: str = "saved_model",
        converter_options: dict[str, Any] | None = None,
        float_fallback: bool = False,
        keep_float: list[str] | None = None,
        batch_size: int | None = None,
    ) -> Any:
        __tracebackhide__ = True
        from .tflite.converter import convert
        from .tflite.flatbuffer import is_tflite_source
        from .tflite.runner import Origin, TFLiteRunner

        content = convert(
            source,
            representative_data,
            mode=mode,
            cache_dir=cache_dir,
            via=via,
            converter_options=converter_options,
            float_fallback=float_fallback,
            keep_float=keep_float,
        )
        stored = is_tflite_source(source)
        runner = TFLiteRunner(  # a stored .tflite by its path: messages name the file
            source if stored and isinstance(source, (str, os.PathLike)) else content,
            kernels=kernels,
            num_threads=num_threads,
            batch_size=batch_size,
        )
        if not stored:  # a float model: blame's default reference
            runner.origin = Origin(
                source,
                representative_data,
                mode or "int8",
                cache_dir,
                via,
                converter_options,
                tuple(keep_float) if keep_float else None,
            )
        return runner

    return factory


@pytest.fixture
def quant_golden(request: pytest.FixtureRequest) -> Any:
    """Golden outputs: ``quant_golden.check(name, outputs, *, qparams=None, max_lsb=None,
    tolerance=None, runner=None)``.

    Integer outputs are compared in LSB (``--quant-max-lsb``), float outputs by RMS error
    (``--quant-tolerance``). Files live in ``--quant-golden-dir`` (ini
    ``quant_golden_dir``), by default ``golden/<test module>/`` next to the test module.
    A missing golden fails and says how to create it; ``--quant-golden-update`` writes
    missing or mismatching ones.

    Example::

        def test_outputs(quant_golden, int8_model, x_fixed):
            quant_golden.check("mlp_int8", int8_model.quantized(x_fixed), runner=int8_model)
    """
    from .golden_check import QuantGolden

    config = request.config
    state = config.stash[_STATE]
    test_file = Path(str(request.node.path))
    directory = (
        Path(state.golden_dir)
        if state.golden_dir
        else (test_file.parent / "golden" / test_file.stem)
    )
    node = request.node

    def touch(path: Path, written: bool) -> None:
        node.user_properties.append((_GOLDEN_PROPERTY, json.dumps([str(path), written])))

    return QuantGolden(directory, update=config.getoption("quant_golden_update"), on_touch=touch)
