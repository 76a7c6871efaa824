"""The on-disk conversion cache: keys, atomic locked writes, and cached failures replayed.

Conversions are cached on disk, keyed by the model's content (Keras flavour, architecture
and weights in model order, or the files of a SavedModel), the mode, the route, the
converter settings, the TensorFlow version and, in the calibrated modes only, the
representative data. Writes are atomic and serialized per key with a file lock, so
pytest-xdist workers converting the same model convert it once and never read a torn
file. A deterministic converter failure (an error exit or a crash) is cached too, and
replayed as the same :class:`~pytest_quant.tflite.converter.ConversionError` until the
entry is deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._deps import require
from .failures import ConversionError, failure_hint
from .fingerprint import model_fingerprint
from .modes import CALIBRATED_MODES, check_tflite

if TYPE_CHECKING:
    from .converter import _Job

# v3: weights keyed by position, not by Keras's auto-numbered variable paths; converter
# settings; representative data dtypes
_KEY_VERSION = b"pytest-quant-convert-v3"


def cache_key(
    source: Any,
    rep: Any,
    mode: str,
    version: str,
    via: str = "saved_model",
    *,
    settings: Mapping[str, Any] | None = None,
    fingerprint: str | None = None,
) -> str:
    """sha256 of everything that determines the converter's output (the representative
    data only in :data:`CALIBRATED_MODES`: the other modes never see it). ``settings``:
    the converter settings (:func:`_settings`); ``fingerprint``: the model's
    :func:`model_fingerprint`, when the caller has it already."""
    h = hashlib.sha256(_KEY_VERSION)
    h.update(f"|{mode}|{version}|{via}|".encode())
    h.update(json.dumps(dict(settings or {}), sort_keys=True).encode())
    h.update(f"|{fingerprint or model_fingerprint(source)}|".encode())
    if mode not in CALIBRATED_MODES:
        return h.hexdigest()
    items = sorted(rep.items()) if isinstance(rep, dict) else enumerate(rep or [])
    for name, arr in items:
        h.update(f"{name}{arr.shape}{arr.dtype}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _cached(job: _Job, cache: Path, convert: Callable[[_Job], bytes]) -> bytes:
    """``job``'s model from the cache, converted once per key by ``convert`` (a file lock
    serializes workers); a cached deterministic failure is raised again, saying it is a
    replay."""
    __tracebackhide__ = True
    cache.mkdir(parents=True, exist_ok=True)
    key = job.key()
    target, meta_path = cache / f"{key}.tflite", cache / f"{key}.json"
    if target.is_file():
        return check_tflite(target.read_bytes(), str(target))
    _replay_failure(meta_path, job)
    filelock = require("filelock")
    with filelock.FileLock(str(cache / f"{key}.lock"), timeout=job.timeout):
        if target.is_file():  # another worker converted it while we waited
            return check_tflite(target.read_bytes(), str(target))
        _replay_failure(meta_path, job)
        meta = {
            "mode": job.mode,
            "tensorflow": job.version,
            "keras": job.route.flavour,
            "via": job.route.via,
            "entry": job.route.entry,
            "settings": job.settings,
            "created": time.time(),
        }
        try:
            content = convert(job)
        except ConversionError as exc:
            if exc.deterministic:
                failed = {**meta, "error": exc.report, "output": exc.output}
                _atomic_write(meta_path, json.dumps(failed).encode())
            raise
        _atomic_write(target, content)
        _atomic_write(meta_path, json.dumps({**meta, "bytes": len(content)}).encode())
    return content


def _replay_failure(meta_path: Path, job: _Job) -> None:
    """Raise the cached failure recorded in ``meta_path``, if there is one, with the hint
    today's :func:`failure_hint` reads in the converter output it kept."""
    __tracebackhide__ = True
    if not meta_path.is_file():
        return
    try:
        meta = json.loads(meta_path.read_text())
        error, output = meta.get("error"), str(meta.get("output", ""))
    except (OSError, ValueError, AttributeError):
        return  # unreadable: convert again, and write it anew
    if isinstance(error, str):
        calibrated = job.rep is not None
        hint = failure_hint(output, mode=job.mode, calibrated=calibrated, entry=job.route.entry)
        raise ConversionError(replay_message(f"{error}\n  {hint}" if hint else error, meta_path))


def replay_message(error: str, meta_path: Path) -> str:
    """The message of a failure replayed from the cache entry ``meta_path``.

    Example::

        >>> print(replay_message("converter failed", Path("cache/k.json")))
        ... # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
        converter failed
          (replayed from the conversion cache: ... or delete cache/k.json, to convert again)
    """
    return (
        f"{error}\n  (replayed from the conversion cache: this model, data, mode and "
        f"settings failed to convert before, and converter failures are cached; run with "
        f"--quant-cache-clear, or delete {meta_path}, to convert again)"
    )


def _atomic_write(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
