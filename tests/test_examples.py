"""examples/model_repo works as its README says: the gate passes on the good model and
fails, with the documented messages, on a deliberately broken one."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from pytest_quant.tflite.converter import tf_version

pytest.importorskip("keras", reason="Keras/TensorFlow not installed: pytest-quant[tf]")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "model_repo"
IGNORE = shutil.ignore_patterns(
    ".pytest_cache", ".hypothesis", ".benchmarks", "reports", "__pycache__"
)


@pytest.fixture
def repo(tmp_path):
    target = tmp_path / "model_repo"
    shutil.copytree(EXAMPLE, target, ignore=IGNORE)
    return target


def _pytest(runpytest_tf, pytester, monkeypatch, *args, broken=None):
    """The example's `pytest`, run in this process on a copy of the repo made by the
    first call (its TensorFlow already imported: conftest.py, ``runpytest_tf``), with the
    suite's conversion cache."""
    if not (pytester.path / "pyproject.toml").exists():
        shutil.copytree(EXAMPLE, pytester.path, ignore=IGNORE, dirs_exist_ok=True)
    if broken:
        monkeypatch.setenv("EXAMPLE_BROKEN", broken)
    else:
        monkeypatch.delenv("EXAMPLE_BROKEN", raising=False)
    cache = os.environ["PYTEST_QUANT_TEST_CACHE"]
    return runpytest_tf(f"--quant-cache-dir={cache}", "-p", "no:cacheprovider", *args)


def test_example_gate_passes_on_the_good_model(runpytest_tf, pytester, monkeypatch):
    golden = EXAMPLE / "tests" / "golden" / "test_quantization" / "digits_int8.json"
    written_by = json.loads(golden.read_text())["fingerprint"]["tensorflow"]
    if written_by != tf_version():  # another converter: rewritten, as after an upgrade
        update = _pytest(runpytest_tf, pytester, monkeypatch, "--quant-golden-update")
        assert update.ret == 0, update.stdout.str()[-3000:]
    done = _pytest(runpytest_tf, pytester, monkeypatch)
    assert done.ret == 0, done.stdout.str()[-3000:]
    done.assert_outcomes(passed=6)
    assert (pytester.path / "reports" / "quant.json").is_file()


def test_example_gate_fails_on_a_broken_calibration(runpytest_tf, pytester, monkeypatch):
    done = _pytest(runpytest_tf, pytester, monkeypatch, broken="calibration")
    assert done.ret == 1
    done.assert_outcomes(failed=3, passed=3)
    out = done.stdout.str()
    assert "quantized output is off: rms error" in out
    assert "layers adding the most error" in out
    assert "top-1 accuracy dropped by" in out
    assert "golden 'digits_int8'" in out and "differs by up to" in out


def _readme_commands() -> list[str]:
    readme = (EXAMPLE / "README.md").read_text()
    block = readme.split("## Commands", 1)[1].split("```", 2)[1]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_example_installs_as_its_readme_says(tmp_path, repo):
    """The README's `pip install -e ".[test]"` builds the example and resolves its
    requirements (it once failed: setuptools refused the flat layout): offline, as a dry
    run against this environment, where pytest-quant and TensorFlow are installed as a
    team installs them first. The workflow runs the same command; the extra it names exists."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    install = next(c for c in _readme_commands() if c.startswith("pip install -e"))
    workflow = (EXAMPLE / ".github" / "workflows" / "quantization.yml").read_text()
    assert f"- run: {install}\n" in workflow
    example = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [r for r in example["project"]["optional-dependencies"]["test"] if "pytest-quant" in r]
    extras = {e for r in wanted for e in r.split("[", 1)[1].rstrip("]").split(",")}
    assert wanted and extras <= set(ours["project"]["optional-dependencies"]), wanted

    try:  # the example's extra, pytest-quant[tf], names the `tensorflow` distribution
        metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        pytest.skip(
            "the dry run resolves against this environment, whose TensorFlow is not the "
            "`tensorflow` distribution the example names (its README: a team on "
            "tensorflow-cpu switches the extra to [tf-cpu])"
        )
    report = tmp_path / "report.json"
    offline = ["--dry-run", "--no-index", "--no-build-isolation", "-q", "--report", str(report)]
    args = shlex.split(install)[2:]  # after "pip install"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", *offline, *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    planned = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
    assert planned == ["digits-model"], planned  # everything else is already satisfied
