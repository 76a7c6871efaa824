"""A stand-in for the converter child that dies the way TF 2.16.2's converter does on a
Keras 3 Conv2D model (``LLVM ERROR`` then abort): used only to test that the parent
isolates the crash. The real crash is tested in the tf216 tox env.

With ``ABORT_WORKER=serve`` in its environment it is the real kept child instead
(``_worker.serve``; TensorFlow is imported by a ``convert`` job only), with commands that
misbehave on demand: ``abort`` (that LLVM ERROR, then SIGABRT), ``segfault``, ``raise``
(a Python error), ``sleep SECONDS``, ``say TEXT`` (TEXT on stdout and stderr, from
Python and from C, as TensorFlow's C++ logs write), ``say_later TEXT`` (on stderr, after
the job answered) and ``exit STATUS``.
"""

import ctypes
import os
import sys
import threading
import time


def _abort() -> None:
    sys.stderr.write("LLVM ERROR: Failed to infer result type(s).\n")
    sys.stderr.flush()
    os.abort()


def _say(text: str) -> None:
    print(f"python stdout: {text}")
    sys.stderr.write(f"python stderr: {text}\n")
    ctypes.CDLL(None).printf(f"C stdout: {text}\n".encode())  # buffered: not a tty
    os.write(2, f"C stderr: {text}\n".encode())


def _say_later(text: str) -> None:
    def late() -> None:
        time.sleep(0.3)
        os.write(2, f"{text}\n".encode())

    threading.Thread(target=late).start()


def _raise() -> None:
    raise RuntimeError("a Python error in the job")


COMMANDS = {
    "abort": _abort,
    "segfault": lambda: ctypes.string_at(0),
    "raise": _raise,
    "sleep": lambda seconds: time.sleep(float(seconds)),
    "say": _say,
    "say_later": _say_later,
    "exit": lambda status: sys.exit(int(status)),
}

if __name__ == "__main__":
    if os.environ.get("ABORT_WORKER") == "serve":
        from pytest_quant.tflite import _worker

        _worker.COMMANDS.update(COMMANDS)
        _worker.serve(int(sys.argv[2]), int(sys.argv[3]))
    _abort()
