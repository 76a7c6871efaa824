"""The converter child kept for the session (``_child``): reuse, crashes, timeouts,
isolation between jobs, and no child outliving its parent.

Most tests drive ``tests/abort_worker.py`` in its ``serve`` form (the real serving loop,
commands that crash on demand, no TensorFlow); the last section converts real models."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

keras = pytest.importorskip("keras", reason="Keras/TensorFlow not installed: pytest-quant[tf]")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed: pytest-quant[tf]")

from pytest_quant.tflite import ConversionError, _child, convert  # noqa: E402
from pytest_quant.tflite import converter as convert_mod  # noqa: E402

from . import models, models_arch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEST_WORKER = "tests.abort_worker"

pytestmark = pytest.mark.skipif(not _child.PERSISTENT, reason="the child is kept on POSIX only")


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie that no init reaped is not)."""
    state = _child.process_state(pid)
    if state is None:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X", "")


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while _running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def worker(monkeypatch):
    """The serving test worker, as the converter's child: returns ``run(*args)``, one job
    through the converter's ``_run_child`` (a ``ConversionError`` when it fails)."""
    monkeypatch.setattr(convert_mod, "WORKER", TEST_WORKER)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("ABORT_WORKER", "serve")

    def run(*args: str, timeout: float = 60.0) -> None:
        convert_mod._run_child(list(args), "testing", "X", timeout)

    return run


def _env() -> dict[str, str]:
    return convert_mod._child_env()


def _only_child() -> int:
    (pid,) = _child.children()
    return pid


# --- the serving loop, with the test worker ------------------------------------------------


def test_one_child_runs_every_job_and_each_gets_its_own_output(worker):
    outputs = []
    for word in ("first", "second", "third"):
        done = _child.run(TEST_WORKER, ["say", word], _env(), 60.0)
        assert done.returncode == 0
        outputs.append((done.stdout, done.stderr))
        if word == "first":
            pid = _only_child()
    assert _child.children() == [pid]  # the same child all along
    for word, (stdout, stderr) in zip(("first", "second", "third"), outputs, strict=True):
        # C's buffered stdout too: the child flushes it before it answers
        assert f"python stdout: {word}" in stdout and f"C stdout: {word}" in stdout
        assert f"python stderr: {word}" in stderr and f"C stderr: {word}" in stderr
        others = {"first", "second", "third"} - {word}
        assert not any(other in stdout + stderr for other in others)


def test_an_abort_fails_only_that_job(worker):
    worker("say", "warm")
    pid = _only_child()
    with pytest.raises(ConversionError) as info:
        worker("abort")
    msg = str(info.value)
    assert msg.startswith("TensorFlow X converter crashed (the converter process was killed")
    assert "killed by SIGABRT) testing" in msg
    assert "LLVM ERROR: Failed to infer result type(s)." in msg
    assert info.value.deterministic  # a converter crash: cached as the model's failure
    assert _gone(pid)
    worker("say", "after")  # a fresh child
    assert _child.children() != [pid]


@pytest.mark.parametrize(
    "args, how, deterministic",
    [
        (["segfault"], "crashed (the converter process was killed by SIGSEGV)", True),
        (["exit", "7"], "failed (exit status 7)", True),
    ],
)
def test_a_child_that_dies_is_reported_as_a_one_job_child_was(worker, args, how, deterministic):
    worker("say", "warm")
    pid = _only_child()
    with pytest.raises(ConversionError, match=re.escape(f"converter {how} testing")) as info:
        worker(*args)
    assert info.value.deterministic is deterministic
    assert _gone(pid)


def test_a_python_error_fails_the_job_and_keeps_the_child(worker):
    worker("say", "warm")
    pid = _only_child()
    with pytest.raises(ConversionError) as info:
        worker("raise")
    msg = str(info.value)
    assert "converter failed (exit status 1) testing" in msg
    assert "RuntimeError: a Python error in the job" in msg
    assert info.value.deterministic
    worker("say", "after")
    assert _child.children() == [pid]


def test_a_timeout_kills_the_child_and_the_next_job_gets_a_fresh_one(worker):
    worker("say", "warm")
    pid = _only_child()
    t0 = time.monotonic()
    with pytest.raises(ConversionError) as info:
        worker("sleep", "60", timeout=1.0)
    assert time.monotonic() - t0 < 30
    assert str(info.value) == "TensorFlow X converter did not finish testing within 1 s"
    assert not info.value.deterministic  # never cached
    assert _gone(pid)
    worker("say", "after")
    assert _child.children() not in ([], [pid])


def test_a_child_killed_while_idle_is_replaced(worker):
    worker("say", "warm")
    pid = _only_child()
    os.kill(pid, signal.SIGKILL)
    assert _gone(pid, within=5)
    worker("say", "after")  # not reported as a failure: it died before the job
    assert _child.children() not in ([], [pid])


def test_an_environment_change_starts_another_child(worker, monkeypatch):
    worker("say", "warm")
    pid = _only_child()
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "another test (call)")  # changes per test
    worker("say", "same")
    assert _child.children() == [pid]
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")  # what tfmot sets: another child
    worker("say", "other")
    assert _child.children() not in ([], [pid])
    assert _gone(pid)  # at most one idle child


def test_threads_converting_at_once_each_get_a_child(worker):
    errors: list[BaseException] = []

    def job() -> None:
        try:
            worker("sleep", "0.5")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(_child.children()) == 1  # one kept, the others stopped


def test_the_one_job_path_is_still_there(worker, monkeypatch):
    """``PERSISTENT = False``: a child per job, the path the benchmark compares with."""
    monkeypatch.setattr(_child, "PERSISTENT", False)
    monkeypatch.delenv("ABORT_WORKER")  # the one-job worker aborts whatever the job
    before = _child.children()
    with pytest.raises(ConversionError, match="killed by SIGABRT"):
        worker("say", "x")
    assert _child.children() == before


# --- no child outlives its parent, nothing reaches the terminal ------------------------------

PARENT = """
import os, sys, time
sys.path.insert(0, {root!r})
os.environ.update(PYTHONPATH={root!r}, ABORT_WORKER="serve")
from pytest_quant.tflite import _child, converter
converter.WORKER = "tests.abort_worker"
converter._run_child(["say", "hi"], "testing", "X", 60)
print(_child.children()[0], flush=True)
{then}
"""


@pytest.mark.parametrize(
    "then",
    [
        "",  # a normal exit: atexit stops the child
        "os.kill(os.getpid(), 9)",  # killed, the child idle: its request pipe closes
        "converter._run_child(['sleep', '60'], 'testing', 'X', 90)",  # killed in a job
    ],
    ids=["exit", "killed-idle", "killed-busy"],
)
def test_no_child_outlives_its_parent(then):
    script = PARENT.format(root=str(ROOT), then=then)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    if "sleep" in then:
        time.sleep(0.5)
        parent.kill()
    parent.wait(timeout=60)
    assert _gone(pid), f"child {pid} outlived its parent"


SUITE = """
from pytest_quant.tflite import converter

def test_one(monkeypatch):
    monkeypatch.setattr(converter, "WORKER", "tests.abort_worker")
    converter._run_child(["say", "CHILD-SAYS"], "testing", "X", 60)
    converter._run_child(["say_later", "CHILD-SAYS-LATE"], "testing", "X", 60)
"""


def test_nothing_the_child_writes_reaches_the_terminal(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("ABORT_WORKER", "serve")
    pytester.makepyfile(test_child=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)
    assert "CHILD-SAYS" not in result.stdout.str() + result.stderr.str()


# --- real conversions ---------------------------------------------------------------------------


def test_conversions_share_one_child(monkeypatch):
    model = models.mlp()
    convert(model, mode="dynamic")
    pid = _only_child()
    convert(model, mode="float16")
    with pytest.raises(ValueError, match="has no attribute 'nope'"):  # a usage error
        convert(model, mode="dynamic", converter_options={"nope": 1})
    convert(model, models.data((64,), n=32), mode="int8")
    assert _child.children() == [pid]


def test_after_an_abort_the_next_conversion_succeeds_in_a_new_child(worker):
    with pytest.raises(ConversionError, match="killed by SIGABRT"):
        worker("abort")
    assert convert(models.mlp(), mode="dynamic")  # the real convert command


def _cases(tmp_path):
    """(name, call) of conversions that cover the routes: Keras 3 by SavedModel and by
    .keras file (not on TF 2.16, whose converter aborts that way), a SavedModel
    directory, a QAT model's concrete function, tf_keras."""
    mlp, qat, rep = models.mlp(), models.qat_mlp(), models.data((64,), n=64)
    heads = models.two_in_two_out()
    saved = tmp_path / "saved"
    models.mlp(n_in=8, n_out=3).export(str(saved), verbose=False)
    cases = [
        ("keras3-int8", lambda: convert(mlp, rep, mode="int8")),
        ("savedmodel-float16", lambda: convert(saved, mode="float16")),
        ("qat-int8", lambda: convert(qat, mode="int8")),
    ]
    if not convert_mod.tf_version().startswith("2.16."):  # it aborts on any model that way
        cases.append(
            ("keras3-dynamic-via-keras", lambda: convert(heads, mode="dynamic", via="keras"))
        )
    try:
        from . import models_keras2

        k2 = models_keras2.mlp()
        cases.append(("tf_keras-dynamic", lambda: convert(k2, mode="dynamic")))
    except ModuleNotFoundError:  # tf_keras not installed
        pass
    return cases


def test_a_kept_child_converts_byte_for_byte_as_a_fresh_one(tmp_path, monkeypatch):
    """What a conversion gives does not depend on what its child converted before: the
    cases after another model in one child, then in a new child in reverse order (so
    each case has another history, the last one none), and the first case in a child of
    its own, the way every conversion ran before the child was kept."""
    cases = _cases(tmp_path)
    convert(models_arch.text_classifier(), mode="dynamic")
    pid = _only_child()
    kept = {name: call() for name, call in cases}
    assert _child.children() == [pid]
    _child._stop_all()
    again = {name: call() for name, call in reversed(cases)}
    assert _child.children() not in ([], [pid])
    assert [n for n in kept if kept[n] != again[n]] == []
    monkeypatch.setattr(_child, "PERSISTENT", False)
    name, call = cases[0]
    assert call() == kept[name]


def test_conversion_errors_read_the_same_from_a_kept_child(tmp_path, monkeypatch):
    """The child's output per job: a failure after other jobs shows its own output."""
    model = models.mlp()
    convert(model, mode="dynamic")
    with pytest.raises(ConversionError) as kept:
        convert(model, None, mode="int8")
    monkeypatch.setattr(_child, "PERSISTENT", False)
    with pytest.raises(ConversionError) as fresh:
        convert(model, None, mode="int8")
    assert str(kept.value) == str(fresh.value)
    assert kept.value.deterministic and fresh.value.deterministic


def test_rss_stays_bounded_over_many_jobs():
    """10 conversions in one child; measured on TF 2.21: 613 MB after the first job,
    643 MB after 81 (this test allows 300 MB of growth)."""
    model, rep = models.mlp(), models.data((64,), n=32)
    for i in range(10):
        convert(model, rep if i % 2 else None, mode="int8" if i % 2 else "dynamic")
        if i == 0:
            first = _rss(_only_child())
    assert _rss(_only_child()) - first < 300 * 2**20


def _rss(pid: int) -> int:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except OSError:
        pytest.skip("no /proc to read a child's memory")
    return pages * os.sysconf("SC_PAGE_SIZE")


def test_a_relative_savedmodel_path_means_the_callers_directory(tmp_path, monkeypatch):
    convert(models.mlp(), mode="dynamic")  # a child started in another directory
    models.mlp(n_in=8, n_out=3).export(str(tmp_path / "saved"), verbose=False)
    monkeypatch.chdir(tmp_path)
    assert convert("saved", mode="dynamic")
