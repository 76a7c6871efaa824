from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ("numpy", "tensorflow", "hypothesis", "ai_edge_litert", "keras")


def test_importing_package_and_plugin_loads_nothing_heavy():
    code = textwrap.dedent(
        f"""
        import sys, pytest_quant, pytest_quant.plugin
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _run(pytester, *args):
    """A pytest run in this process (fast), or in a subprocess when it starts xdist
    workers; runs that import TensorFlow or test start-up call runpytest_subprocess."""
    if "-n" in args:
        return pytester.runpytest_subprocess(*args)
    return pytester.runpytest(*args)


def test_pytest_run_that_does_not_use_us_imports_nothing_heavy(pytester):
    pytester.makepyfile(
        f"""
        import sys

        def test_plain():
            assert 1 + 1 == 2

        def test_zz_report():
            heavy = [m for m in {HEAVY!r} if m in sys.modules and m != "hypothesis"]
            assert heavy == [], heavy
        """
    )
    # -p no:hypothesispytest: hypothesis's own plugin is not ours to account for.
    result = pytester.runpytest_subprocess("-p", "no:hypothesispytest", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_plugin_is_registered_and_can_be_disabled(pytester):
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["*@pytest.mark.quant(tolerance=None, max_lsb=None)*"])
    result = pytester.runpytest_subprocess("-p", "no:quant", "--markers")
    assert "pytest.mark.quant(" not in result.stdout.str()


def test_ci_profile_selectable_from_command_line(pytester):
    pytester.makepyfile(
        """
        from hypothesis import given, settings, strategies as st

        def test_profile():
            assert settings.get_current_profile_name() == "pytest-quant-ci"
            assert settings.default.derandomize
        """
    )
    result = pytester.runpytest_subprocess("--hypothesis-profile=pytest-quant-ci")
    result.assert_outcomes(passed=1)


CHECKS = """
import numpy as np
import pytest
from pytest_quant import assert_quant_close, assert_within_lsb

REF = np.linspace(-1.0, 1.0, 101)

def test_rms_3pct():
    assert_quant_close(REF + 0.06, REF)  # RMS error 3% of full scale

@pytest.mark.quant(tolerance=0.05)
def test_marked_loose():
    assert_quant_close(REF + 0.06, REF)

def test_lsb_2():
    assert_within_lsb(np.array([2], np.int8), np.array([0], np.int8))

def test_fixtures(quant_tolerance, quant_max_lsb, quant_settings):
    print("RESOLVED", quant_tolerance, quant_max_lsb, quant_settings.tolerance_from)
"""


def test_defaults_cli_ini_and_marker_precedence(pytester):
    pytester.makepyfile(test_checks=CHECKS)
    r = _run(pytester, "-s")
    r.assert_outcomes(passed=2, failed=2)  # default 0.02 fails the 3% test; max_lsb 1
    r.stdout.fnmatch_lines(["*RESOLVED 0.02 1 the default 0.02*"])
    r.stdout.fnmatch_lines(["*bound from the default 0.02; change it with --quant-tolerance*"])

    r = _run(pytester, "-s", "--quant-tolerance=0.04", "--quant-max-lsb=2")
    r.assert_outcomes(passed=4)
    r.stdout.fnmatch_lines(["*RESOLVED 0.04 2 --quant-tolerance=0.04 (command line)*"])

    pytester.makeini("[pytest]\nquant_tolerance = 0.035\nquant_max_lsb = 3\n")
    r = _run(pytester, "-s")
    r.assert_outcomes(passed=4)
    r.stdout.fnmatch_lines(["*RESOLVED 0.035 3 ini quant_tolerance = 0.035*"])
    r = _run(pytester, "-s", "--quant-tolerance=0.01")  # CLI beats ini
    r.assert_outcomes(passed=3, failed=1)  # the marker (0.05) beats the CLI; ini max_lsb 3 holds


def test_marker_bound_named_in_message(pytester):
    pytester.makepyfile(
        """
        import numpy as np, pytest
        from pytest_quant import assert_quant_close

        @pytest.mark.quant(tolerance=0.001)
        def test_tight():
            ref = np.linspace(-1.0, 1.0, 11)
            assert_quant_close(ref + 0.01, ref)
        """
    )
    r = _run(
        pytester,
    )
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*bound from @pytest.mark.quant(tolerance=0.001) on test_tight*"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--quant-tolerance=abc"], "*argument --quant-tolerance: 'abc' is not a number*"),
        (
            ["--quant-tolerance=-1"],
            "*argument --quant-tolerance: '-1' must be a finite number >= 0*",
        ),
        (["--quant-tolerance=nan"], "*argument --quant-tolerance: 'nan' must be a finite*"),
        (["--quant-max-lsb=1.5"], "*argument --quant-max-lsb: '1.5' must be a whole number >= 0*"),
    ],
)
def test_invalid_options_are_usage_errors(pytester, args, message):
    pytester.makepyfile("def test_x(): pass")
    r = _run(pytester, *args)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines([message])


def test_invalid_ini_and_marker_are_usage_errors(pytester):
    pytester.makepyfile("def test_x(): pass")
    pytester.makeini("[pytest]\nquant_tolerance = lots\n")
    r = _run(
        pytester,
    )
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*ini quant_tolerance = 'lots': 'lots' is not a number*"])

    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.quant(tolerance="loose")
        def test_x(): pass
        """
    )
    r = _run(
        pytester,
    )
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(
        ["*test_x: @pytest.mark.quant(tolerance='loose'): 'loose' is not a number*"]
    )


def test_help_lists_the_options(pytester):
    r = _run(pytester, "--help")
    r.stdout.fnmatch_lines(
        [
            "*quantization checks (pytest-quant):*",
            "*--quant-tolerance=FLOAT*",
            "*--quant-max-lsb=INT*",
            "*--quant-report=PATH*",
            "*quant_tolerance (string)*",
        ]
    )


def test_summary_report_and_junit(pytester):
    pytester.makepyfile(test_checks=CHECKS)
    r = _run(pytester, "--quant-report=out/quant.json", "--junitxml=junit.xml")
    r.stdout.fnmatch_lines(
        [
            "*= quant checks =*",
            "*test_checks.py::test_rms_3pct*assert_quant_close*rms_error*FAIL*",
            "*3 quant checks, 2 failed*",
            "*quant report written to out/quant.json*",
        ]
    )
    doc = json.loads((pytester.path / "out" / "quant.json").read_text())
    assert doc["summary"] == {"checks": 3, "failed": 2}
    assert {r["test_id"].split("::")[-1] for r in doc["records"]} == {
        "test_rms_3pct",
        "test_marked_loose",
        "test_lsb_2",
    }
    first = doc["records"][0]
    required = {"test_id", "check", "metric", "value", "bound", "margin", "passed"}
    assert required <= set(first) and set(first) - required <= {"detail"}  # detail: for plots
    assert 'name="quant_check"' in (pytester.path / "junit.xml").read_text()


def test_xdist_one_summary_one_report_no_lost_records(pytester):
    body = "\n".join(
        f"def test_{i}():\n    assert_quant_close(REF + {i} * 1e-3, REF)\n" for i in range(30)
    )
    pytester.makepyfile(
        test_many="import numpy as np\nfrom pytest_quant import assert_quant_close\n"
        "REF = np.linspace(-1.0, 1.0, 11)\n" + body
    )
    r = pytester.runpytest_subprocess("-n", "2", "--quant-report=q.json")
    r.assert_outcomes(passed=30)
    assert r.stdout.str().count("= quant checks =") == 1
    assert r.stdout.str().count("quant report written to q.json") == 1
    doc = json.loads((pytester.path / "q.json").read_text())
    assert doc["summary"]["checks"] == 30
    assert sorted(rec["test_id"] for rec in doc["records"]) == sorted(
        f"test_many.py::test_{i}" for i in range(30)
    )


def test_no_summary_when_no_checks(pytester):
    pytester.makepyfile("def test_x(): pass")
    r = _run(
        pytester,
    )
    assert "quant checks" not in r.stdout.str()


TFLITE_SUITE = """
import numpy as np
import pytest
from pytest_quant import assert_quant_close
from pytest_quant.tflite import converter
from tests import models


@pytest.fixture(scope="module")
def model():
    return models.mlp()


@pytest.fixture(scope="module")
def int8(quant_tflite, model):
    return quant_tflite(model, models.data((64,), n=100), mode="int8")


def test_int8_close(int8, model):
    x = models.data((64,), n=50, seed=1)
    assert_quant_close(int8(x), model.predict(x, verbose=0))


def test_crash_fails_only_this_test(quant_tflite, model, monkeypatch):
    monkeypatch.setattr(converter, "WORKER", "abort_worker")  # a copy, in this directory
    quant_tflite(model, models.data((64,), n=99), mode="int8")


def test_after_the_crash(int8):
    assert int8.options["kernels"] == "xnnpack"
"""


def test_quant_tflite_fixture_cache_and_crash_isolation(runpytest_tf, pytester):
    pytester.makepyfile(test_tfl=TFLITE_SUITE)
    # the crashing converter child: run as `python -m abort_worker` from here
    shutil.copy(Path(__file__).with_name("abort_worker.py"), pytester.path)
    cache = pytester.path / "qcache"
    opts = (f"--quant-cache-dir={cache}", "-p", "no:cacheprovider")
    r = runpytest_tf(*opts)
    r.assert_outcomes(passed=2, failed=1)
    r.stdout.fnmatch_lines(
        [
            "*ConversionError: TensorFlow * converter crashed (the converter process was killed by "
            "SIGABRT)*"
        ]
    )
    files = sorted(cache.glob("*.tflite"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    r = runpytest_tf(*opts, "-k", "close")
    r.assert_outcomes(passed=1, deselected=2)
    assert sorted(cache.glob("*.tflite")) == files  # served from the cache: no new entry
    assert files[0].stat().st_mtime_ns == stamp  # and not rewritten
    r = runpytest_tf(*opts, "--quant-cache-clear", "-k", "nothing_matches")
    assert not cache.exists()


# --- session-level failures: usage errors before any test runs, with and without xdist --

RAN = """
import pathlib

def test_ran():
    pathlib.Path("ran.txt").write_text("a test ran")
"""


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_bad_markers_are_usage_errors_with_and_without_xdist(pytester, xdist):
    pytester.makepyfile(
        test_ran=RAN,
        test_b="""
        import pytest

        @pytest.mark.quant(tolerance="loose")
        def test_x(): pass

        @pytest.mark.quant(0.1)
        def test_y(): pass

        def test_z(): pass
        """,
    )
    r = _run(pytester, "-p", "no:cacheprovider", *xdist)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "INTERNALERROR" not in r.stdout.str() + r.stderr.str()
    r.stderr.fnmatch_lines(
        [
            "ERROR: @pytest.mark.quant is misused on 2 tests "
            "(it takes only tolerance= and max_lsb=):",
            "test_b.py::test_x: @pytest.mark.quant(tolerance='loose'): 'loose' is not a number",
            "test_b.py::test_y: @pytest.mark.quant takes only tolerance= and max_lsb=, "
            "got args=(0.1,) kwargs=[]",
        ]
    )
    assert not (pytester.path / "ran.txt").exists()  # stopped before any test ran


def test_marker_errors_are_capped_and_say_so():
    from pytest_quant._settings import marker_errors_message

    msg = marker_errors_message([f"t.py::test_{i}: bad" for i in range(13)])
    lines = msg.splitlines()
    assert lines[0].startswith("@pytest.mark.quant is misused on 13 tests")
    assert lines[1:3] == ["t.py::test_0: bad", "t.py::test_1: bad"]
    assert lines[-1] == "... and 3 more"
    assert marker_errors_message(["t.py::test_0: bad"]) == "t.py::test_0: bad"


def _unwritable_dir(path: Path) -> Path | None:
    """A directory this process cannot create files in, or None (then the test skips)."""
    import os
    import tempfile

    candidates = [Path("/sys")]
    if os.geteuid() != 0:  # root writes through permission bits
        locked = path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        candidates.insert(0, locked)
    for d in candidates:
        try:
            fd, tmp = tempfile.mkstemp(dir=d)
        except OSError:
            return d
        os.close(fd)
        os.unlink(tmp)
    return None


REPORT_CASES = [
    pytest.param(
        ["--quant-report=adir"],
        "ERROR: --quant-report=adir: adir is a directory; give a file path, e.g. adir/quant.json",
        id="report-is-dir",
    ),
    pytest.param(
        ["--quant-report=afile/q.json"],
        "ERROR: --quant-report=afile/q.json: afile is a file, so nothing can be created "
        "under it; choose another path",
        id="report-under-file",
    ),
    pytest.param(
        ["--quant-report-dir=afile"],
        "ERROR: --quant-report-dir=afile: afile is a file; give a directory (created if missing)",
        id="report-dir-is-file",
    ),
    pytest.param(
        ["--quant-report-dir=adir/sub/deeper", "--quant-report=afile/x/q.json"],
        "ERROR: --quant-report=afile/x/q.json: afile is a file, so nothing can be created "
        "under it; choose another path",
        id="good-dir-bad-report",
    ),
    pytest.param(
        ["--quant-cache-dir=afile"],
        "ERROR: --quant-cache-dir=afile: * is a file; give a directory (created if missing)",
        id="cache-dir-is-file",
    ),
    pytest.param(
        ["--quant-golden-dir=afile"],
        "ERROR: --quant-golden-dir=afile: * is a file; give a directory (created if missing)",
        id="golden-dir-is-file",
    ),
    pytest.param(
        "ini",
        "ERROR: ini quant_report = 'adir': adir is a directory; give a file path, *",
        id="ini-report-is-dir",
    ),
]


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "xdist"])
@pytest.mark.parametrize("args, message", REPORT_CASES)
def test_bad_report_paths_are_usage_errors_before_any_test(pytester, args, message, xdist):
    pytester.makepyfile(test_ran=RAN)
    (pytester.path / "adir").mkdir()
    (pytester.path / "afile").write_text("not a directory")
    if args == "ini":
        pytester.makeini("[pytest]\nquant_report = adir\n")
        args = []
    r = _run(pytester, "-p", "no:cacheprovider", *args, *xdist)
    assert r.ret == pytest.ExitCode.USAGE_ERROR, r.stdout.str()
    r.stderr.fnmatch_lines([message])
    assert "Traceback" not in r.stderr.str()
    assert not (pytester.path / "ran.txt").exists()


def test_unwritable_report_path_is_a_usage_error(pytester):
    locked = _unwritable_dir(pytester.path)
    if locked is None:
        pytest.skip("no directory here that this process cannot write to")
    pytester.makepyfile(test_ran=RAN)
    target = locked / "sub" / "q.json"
    r = _run(pytester, "-p", "no:cacheprovider", f"--quant-report={target}")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(
        [f"ERROR: --quant-report={target}: cannot create files in {locked} (*); choose *"]
    )
    assert not (pytester.path / "ran.txt").exists()


def test_good_report_paths_are_created(pytester):
    pytester.makepyfile(test_checks=CHECKS)
    r = _run(
        pytester,
        "-p",
        "no:cacheprovider",
        "--quant-report=new/a/q.json",
        "--quant-report-dir=new/b",
    )
    r.assert_outcomes(passed=2, failed=2)
    assert (pytester.path / "new" / "a" / "q.json").is_file()
    assert (pytester.path / "new" / "b" / "quant.json").is_file()


# --- --quant-suggest: the float-ops search in failure messages ------------------------------

SUGGEST_SWITCH = """
import pathlib

from pytest_quant import _settings

def test_switch(quant_settings):
    assert quant_settings.suggest is _settings.current().suggest
    pathlib.Path("suggest.txt").write_text(str(quant_settings.suggest))
"""

SUGGEST_CASES = [
    ("", [], "False"),
    ("", ["--quant-suggest"], "True"),
    ("quant_suggest = true", [], "True"),
    ("quant_suggest = off", ["--quant-suggest"], "True"),  # the command line wins
    ("quant_suggest = no", [], "False"),
]


@pytest.mark.parametrize(
    "xdist, cases",
    [([], SUGGEST_CASES), (["-n", "2"], SUGGEST_CASES[2:3])],  # xdist: the ini reaches workers
    ids=["plain", "xdist"],
)
def test_quant_suggest_flag_and_ini(pytester, xdist, cases):
    pytester.makepyfile(test_switch=SUGGEST_SWITCH)
    for ini, args, expected in cases:
        pytester.makeini(f"[pytest]\n{ini}\n")
        r = _run(pytester, "-p", "no:cacheprovider", *args, *xdist)
        r.assert_outcomes(passed=1)
        assert (pytester.path / "suggest.txt").read_text() == expected, (ini, args)


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_bad_quant_suggest_ini_is_a_usage_error(pytester, xdist):
    pytester.makepyfile(test_ran=RAN)
    pytester.makeini("[pytest]\nquant_suggest = maybe\n")
    r = _run(pytester, "-p", "no:cacheprovider", *xdist)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(
        ["*ini quant_suggest = 'maybe': 'maybe' is not a switch: use true or false*"]
    )
    assert not (pytester.path / "ran.txt").exists()


SUGGEST_SUITE = """
import pytest
from pytest_quant import assert_tflite_close
from tests import models

X_CALIB, X_TEST = models.data((64,), n=200), models.data((64,), n=100, seed=2)
KEEP_FLOAT = [  # what the suggestion printed
    "outlier_mlp_1/dense_2_1/MatMul;outlier_mlp_1/dense_2_1/Relu;outlier_mlp_1/dense_2_1/BiasAdd",
    "outlier_mlp_1/dense_3_1/MatMul;outlier_mlp_1/dense_3_1/Relu;outlier_mlp_1/dense_3_1/BiasAdd",
]

@pytest.fixture(scope="module")
def model():
    return models.outlier_mlp()

def test_outlier_gate(quant_tflite, model):
    assert_tflite_close(quant_tflite(model, X_CALIB), model, X_TEST)

def test_suggestion_adopted(quant_tflite, model):
    assert_tflite_close(quant_tflite(model, X_CALIB, keep_float=KEEP_FLOAT), model, X_TEST)
"""


def test_quant_suggest_message_and_keep_float_adopted(runpytest_tf, pytester):
    pytester.makepyfile(test_gate=SUGGEST_SUITE)
    cache = os.environ["PYTEST_QUANT_TEST_CACHE"]  # the suite's own cache (conftest.py)
    r = runpytest_tf(f"--quant-cache-dir={cache}", "-p", "no:cacheprovider", "--quant-suggest")
    r.assert_outcomes(failed=1, passed=1)  # the gate fails; with keep_float it passes
    r.stdout.fnmatch_lines(
        [
            "*layers adding the most error (4 of 4 tensors*",
            # TF 2.21: 11.94% to 0.19%; 2.16: 11.90% to 0.20%
            "*suggestion (--quant-suggest): keep 2 of 4 int8 ops in float and the rms error "
            "drops from 11.9?% to 0.??% of full scale (bound 2%); cost: +*",
            "*adopt it with quant_tflite(model, data, keep_float=[",
            "*'outlier_mlp_1/dense_2_1/MatMul;outlier_mlp_1/dense_2_1/Relu;*",
            "*'outlier_mlp_1/dense_3_1/MatMul;outlier_mlp_1/dense_3_1/Relu;*",
            "*search: * conversions (cached ones are free)*",
        ]
    )
    assert "run with --quant-suggest" not in r.stdout.str()


@pytest.mark.parametrize("preset, expected", [(None, "2"), ("0", "0")], ids=["unset", "user-set"])
def test_tensorflow_logs_quiet_before_conftests_import_it(pytester, monkeypatch, preset, expected):
    """TensorFlow reads TF_CPP_MIN_LOG_LEVEL when it loads, which can be a conftest's
    import: the plugin sets it before any conftest runs, and keeps a user's value."""
    if preset is None:
        monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", preset)
    pytester.makeconftest(
        "import os\nSEEN = os.environ.get('TF_CPP_MIN_LOG_LEVEL')\n"
        "def pytest_report_header():\n    return f'tf log level at conftest import: {SEEN}'\n"
    )
    pytester.makepyfile(test_ran=RAN)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.stdout.fnmatch_lines([f"tf log level at conftest import: {expected}"])


NOISY_CONFTEST = r"""
import os

# what `import tensorflow` 2.21 writes to fd 2 whatever TF_CPP_MIN_LOG_LEVEL says
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written"
            b" to STDERR\n")
os.write(2, b"I0000 00:00:1795827740.283171    6971 port.cc:153] oneDNN custom operations"
            b" are on.\n")
os.write(2, b"E0000 00:00:1795821600.318540   31007 cuda_platform.cc:52] failed call to cuInit\n")
os.write(2, b"F0000 00:00:1795821600.318541   31007 fatal.cc:1] a fatal line is kept\n")
os.write(2, b"the user's own words at import\n")
"""


def test_summary_is_last_and_tensorflow_logs_are_dropped(pytester):
    """Found in a new user's run of the example repo with -n auto: the xdist controller's
    conftest imported TensorFlow, whose C++ log lines pytest's capture held and printed
    after the summary. They are dropped; anything else printed outside a test is
    written before the summary."""
    pytester.makeconftest(NOISY_CONFTEST)
    pytester.makepyfile(test_ran=RAN)
    done = subprocess.run(  # one stream, in the order a terminal shows it
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2"],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 0 and " 1 passed in " in lines[-1], done.stdout
    for noise in ("InitializeLog", "port.cc:153]", "cuInit"):
        assert noise not in done.stdout
    assert "the user's own words at import" in done.stdout
    assert "a fatal line is kept" in done.stdout  # why a process aborts is never noise
