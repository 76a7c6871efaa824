"""The converter's child process, kept for the session: jobs in, answers out, crashes contained.

A child that imports TensorFlow costs seconds before its first conversion, so a process
keeps one (started on first use, one per distinct environment, at most one idle) and
sends it every job: :func:`run` is ``subprocess.run`` of the worker, answered by the
child it keeps. A job that crashes the child (an abort, a segfault, a kill) or runs out
of time ends that child: the job gets the child's exit status as a one-job child would
have given it, and the next job starts a fresh child. The child's stdout and stderr go
to files read per job, never to the terminal; its answers come on a pipe of their own.

Example::

    done = run("pytest_quant.tflite._worker", ["convert", ...], dict(os.environ), 600.0)
    done.returncode, done.stderr  # as subprocess.run(..., capture_output=True) gives them
"""

from __future__ import annotations

import atexit
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

#: Keep a child between jobs. ``False``: one child per job, the way every conversion ran
#: before the child was kept (the benchmark compares both); POSIX only (pipes passed by
#: file descriptor).
PERSISTENT = os.name == "posix"
#: A child is replaced after this many jobs, or once its memory passes :data:`MAX_RSS`
#: after a job. Measured (TF 2.21, 81 conversions of 5 small models in 3 modes and 2
#: routes): resident memory 613 MB after the first, 643 MB after the last.
MAX_JOBS = 1000
MAX_RSS = 3 * 2**30
#: Environment variables that change from test to test and mean nothing to the
#: converter: they do not call for another child.
_VOLATILE = frozenset({"PYTEST_CURRENT_TEST"})


class _Child:
    """One ``--serve`` worker process: its pipes, and the files its output goes to."""

    def __init__(self, worker: str, env: dict[str, str], key: tuple[Any, ...]) -> None:
        self.key, self.jobs, self.retire, self.closed = key, 0, False, False
        self.cmd = [sys.executable, "-m", worker, "--serve"]
        self.out, self.err = _output_file(), _output_file()
        job_r, self.requests = os.pipe()
        self.answers, answer_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [*self.cmd, str(job_r), str(answer_w)],
                stdin=subprocess.DEVNULL,
                stdout=self.out,
                stderr=self.err,
                env=env,
                pass_fds=(job_r, answer_w),
                # no terminal signal (Ctrl-C) reaches it: the parent decides its end
                start_new_session=True,
            )
        except BaseException:
            for fd in (self.requests, self.answers, self.out, self.err):
                os.close(fd)
            raise
        finally:
            os.close(job_r)
            os.close(answer_w)

    def run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run one job; ``subprocess.TimeoutExpired`` when it takes over ``timeout`` s
        (the caller then stops the child)."""
        self.jobs += 1
        deadline = time.monotonic() + timeout
        try:
            cwd = os.getcwd()
        except OSError:  # the parent's working directory was removed
            cwd = "/"
        job = memoryview((json.dumps({"args": args, "cwd": cwd}) + "\n").encode())
        try:
            while job:
                job = job[os.write(self.requests, job) :]
        except BrokenPipeError:  # it died before the job
            answer = None
        else:
            answer = self._answer(deadline, timeout)
        if answer is None:  # the child ended: its exit status is the job's
            status = self._reap(deadline)
        else:
            status = int(answer["status"])
            self.retire = bool(answer.get("retire")) or int(answer.get("rss", 0)) > MAX_RSS
        stdout, stderr = _take(self.out), _take(self.err)
        return subprocess.CompletedProcess([*self.cmd, *args], status, stdout, stderr)

    def _answer(self, deadline: float, timeout: float) -> dict[str, Any] | None:
        """The child's answer, or ``None`` when it ended without one."""
        import select

        poll = select.poll()
        poll.register(self.answers, select.POLLIN)
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(self.cmd, timeout)
            if poll.poll(math.ceil(left * 1000)):
                chunk = os.read(self.answers, 65536)
                if not chunk:
                    return None
                line += chunk
        return json.loads(line)

    def _reap(self, deadline: float) -> int:
        try:
            return self.proc.wait(timeout=max(deadline - time.monotonic(), 5.0))
        except subprocess.TimeoutExpired:  # closed its pipe but does not exit
            self.proc.kill()
            return self.proc.wait()

    def alive(self) -> bool:
        """Running, and not dying: a killed child whose other threads still exit is a
        zombie leader that ``waitpid`` does not report yet, but it will answer no job."""
        return self.proc.poll() is None and process_state(self.proc.pid) not in ("Z", "X", "")

    def stop(self) -> None:
        """Kill the child if it runs, reap it, close its pipes and files (once: a file
        descriptor number closed twice may be someone else's by then)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if not self.closed:
            self.closed = True
            for fd in (self.requests, self.answers, self.out, self.err):
                os.close(fd)


def process_state(pid: int) -> str | None:
    """The kernel's state letter for ``pid`` (``"R"``, ``"S"``, ``"Z"`` for a zombie, ...),
    ``""`` when there is no such process, ``None`` when ``/proc`` cannot say (not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0].decode()
    except FileNotFoundError:
        return "" if os.path.isdir("/proc/self") else None
    except (OSError, IndexError):
        return None


def _output_file() -> int:
    """An unnamed file (nothing to clean up) a child writes to in append mode, so that
    the parent can empty it between jobs."""
    import fcntl

    fd, path = tempfile.mkstemp(prefix="pytest-quant-child-", suffix=".log")
    os.unlink(path)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    return fd


def _take(fd: int) -> str:
    """What the child wrote to ``fd`` since the last call; the file is emptied."""
    data = os.pread(fd, os.fstat(fd).st_size, 0)
    os.ftruncate(fd, 0)
    return data.decode("utf-8", "replace")


_LOCK = threading.Lock()
_IDLE: list[_Child] = []  # at most one: the child kept between jobs
_ALL: list[_Child] = []  # every child this process started and has not stopped
_OWNER = [0]  # the pid these children belong to (a forked copy owns none)


def run(
    worker: str, args: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([python, -m, worker, *args], capture_output=True, text=True,
    timeout=timeout, env=env)``, run by the child this process keeps for ``worker`` and
    ``env`` (see the module docstring)."""
    if not PERSISTENT:
        cmd = [sys.executable, "-m", worker, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    child = _acquire(worker, env)
    try:
        done = child.run(args, timeout)
    except BaseException:  # a timeout, or the parent interrupted: the child's job is lost
        _stop(child)
        raise
    _release(child)
    return done


def start(worker: str, env: dict[str, str]) -> None:
    """Start the child for ``worker`` and ``env`` now, if none is idle, so that its
    TensorFlow import overlaps with what the parent does before its first job."""
    if not PERSISTENT:
        return
    key = _key(worker, env)
    with _LOCK:
        _forget_if_forked()
        if any(c.key == key for c in _IDLE):
            return
    _release(_spawn(worker, env, key))


def children() -> list[int]:
    """The process ids of the children this process runs now (tests, diagnostics)."""
    with _LOCK:
        _forget_if_forked()
        return [c.proc.pid for c in _ALL if c.alive()]


def _key(worker: str, env: dict[str, str]) -> tuple[Any, ...]:
    return (worker, tuple(sorted((k, v) for k, v in env.items() if k not in _VOLATILE)))


def _forget_if_forked() -> None:
    """In a forked copy of the process, the children are the original's: leave them."""
    if _OWNER[0] != os.getpid():
        _IDLE.clear()
        _ALL.clear()
        _OWNER[0] = os.getpid()


def _acquire(worker: str, env: dict[str, str]) -> _Child:
    key = _key(worker, env)
    with _LOCK:
        _forget_if_forked()
        child = next((c for c in _IDLE if c.key == key), None)
        if child is not None:
            _IDLE.remove(child)
    if child is not None and child.alive():
        return child
    if child is not None:  # died while idle (killed from outside, a crash on start)
        _stop(child)
    return _spawn(worker, env, key)


def _spawn(worker: str, env: dict[str, str], key: tuple[Any, ...]) -> _Child:
    child = _Child(worker, env, key)
    with _LOCK:
        _ALL.append(child)
    return child


def _release(child: _Child) -> None:
    """Keep ``child`` as the idle child (stopping the one kept before), or stop it when
    it died, is retired, or has run :data:`MAX_JOBS` jobs."""
    if child.retire or child.jobs >= MAX_JOBS or not child.alive():
        _stop(child)
        return
    with _LOCK:
        replaced, _IDLE[:] = list(_IDLE), [child]
    for old in replaced:
        _stop(old)


def _stop(child: _Child) -> None:
    with _LOCK:
        if child in _ALL:
            _ALL.remove(child)
        if child in _IDLE:
            _IDLE.remove(child)
    child.stop()


def _stop_all() -> None:
    """At exit: no child outlives the process (each would also exit on its own, its
    request pipe closed or its parent gone)."""
    with _LOCK:
        if _OWNER[0] != os.getpid():
            return
        mine = list(_ALL)
    for child in mine:
        _stop(child)


atexit.register(_stop_all)
