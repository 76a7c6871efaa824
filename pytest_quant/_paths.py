"""Whether a path option (a report file, a report, cache or golden directory) can be
used as given: checked before any test runs. Imports nothing heavy."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def path_problem(value: str, base: Path, *, kind: str, probe: bool) -> str | None:
    """Why a file (``kind="file"``) or directory (``kind="dir"``) cannot be written at
    ``value`` (relative to ``base``), or ``None``. With ``probe``, creates and removes a
    temp file in the nearest existing directory: permission bits do not bind root.

    Example::

        path_problem("out/quant.json", Path.cwd(), kind="file", probe=True)  # None
    """
    path = base / value

    def shown(p: Path) -> str:
        return str(p) if Path(value).is_absolute() else os.path.relpath(p, base)

    try:
        if kind == "file" and path.is_dir():
            return f"{value} is a directory; give a file path, e.g. {Path(value, 'quant.json')}"
        if kind == "dir" and path.exists() and not path.is_dir():
            return f"{value} is a file; give a directory (created if missing)"
        existing = path.parent if kind == "file" else path
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            return (
                f"{shown(existing)} is a file, so nothing can be created under it; "
                "choose another path"
            )
    except OSError as exc:  # e.g. a directory on the way that we may not list
        return f"cannot use {value} ({exc.strerror or exc}); choose another path"
    if probe:
        try:
            fd, tmp = tempfile.mkstemp(prefix=".pytest-quant-probe.", dir=existing)
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            return (
                f"cannot create files in {shown(existing)} ({exc.strerror or exc}); "
                "choose a writable path"
            )
    return None
