"""The on-disk conversion cache: keys, checksummed atomic locked writes, cached failures.

Conversions are cached on disk, keyed by the model's content (Keras flavour, architecture
and weights in model order, or the files of a SavedModel), the mode, the route, the
converter settings, the TensorFlow version and, in the calibrated modes only, the
representative data. Writes are atomic and serialized per key with a file lock, so
pytest-xdist workers converting the same model convert it once and never read a torn
file. A deterministic converter failure (an error exit or a crash) is cached too, and
replayed as the same :class:`~pytest_quant.tflite.converter.ConversionError` until the
entry is deleted.

An entry is ``<key>.json`` (its record) and, for a model, ``<key>.tflite``. The record
carries a sha256 of itself and of the model, checked on every read: a truncated,
bit-rotted or hand-edited entry is reported (a :class:`CacheEntryWarning` naming it),
deleted and converted again, so the test goes on. The record is written before the
model, so a reader never takes a model without its checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._paths import path_problem
from ..assertions import QuantWarning
from ._deps import require
from .failures import ConversionError, failure_hint
from .fingerprint import model_fingerprint
from .flatbuffer import check_tflite
from .modes import CALIBRATED_MODES

if TYPE_CHECKING:
    from .converter import _Job

# v3: weights keyed by position, not by Keras's auto-numbered variable paths; converter
# settings; representative data dtypes. v4: checksummed entries (a v3 entry, which has
# none, is never looked up: no warning per entry after an upgrade, one conversion each)
_KEY_VERSION = b"pytest-quant-convert-v4"


class CacheEntryWarning(QuantWarning):
    """A conversion cache entry was damaged (truncated, bit-rotted, edited): it was
    deleted and the model converted again. Repeated, it points at the disk or at
    something else writing into the cache directory."""


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
    replay; a damaged entry is reported, deleted and converted again."""
    __tracebackhide__ = True
    _make_dir(cache)
    key = job.key()
    target, meta_path = cache / f"{key}.tflite", cache / f"{key}.json"
    kind, found = _read_entry(target, meta_path)
    if kind == "model":
        return found
    if kind == "failure":
        _replay_failure(found, meta_path, job)
    filelock = require("filelock")
    with filelock.FileLock(str(cache / f"{key}.lock"), timeout=job.timeout):
        # read again: another worker may have converted it (or repaired it) meanwhile
        kind, found = _read_entry(target, meta_path)
        if kind == "model":
            return found
        if kind == "failure":
            _replay_failure(found, meta_path, job)
        if kind == "damaged":
            target.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            warnings.warn(CacheEntryWarning(damaged_message(found)), stacklevel=2)
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
                _write_record(meta_path, {**meta, "error": exc.report, "output": exc.output})
            raise
        record = {**meta, "bytes": len(content), "tflite_sha256": _sha256(content)}
        _write_record(meta_path, record)  # first: a model is never seen without its sum
        _atomic_write(target, content)
    return content


def _make_dir(cache: Path) -> None:
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        problem = path_problem(str(cache), Path.cwd(), kind="dir", probe=False)
        raise ValueError(
            f"cache_dir: {problem or f'{cache} is not a directory'} (--quant-cache-dir / "
            "ini quant_cache_dir, or the cache_dir argument)"
        ) from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record_sum(record: Mapping[str, Any]) -> str:
    """The checksum of a record: sha256 of its canonical JSON without the checksum."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return _sha256(json.dumps(body, sort_keys=True).encode())


def _write_record(meta_path: Path, record: dict[str, Any]) -> None:
    record = {**record, "record_sha256": _record_sum(record)}
    _atomic_write(meta_path, json.dumps(record, sort_keys=True).encode())


def _read_entry(target: Path, meta_path: Path) -> tuple[str, Any]:
    """What the cache holds for a key, checked against its checksums:
    ``("model", bytes)``, ``("failure", record)``, ``("missing", None)`` or
    ``("damaged", (path, what is wrong))``."""
    try:
        raw = meta_path.read_bytes()
    except FileNotFoundError:
        if target.is_file():
            return "damaged", (target, f"its record {meta_path.name} is missing")
        return "missing", None
    try:
        record = json.loads(raw)
        ok = isinstance(record, dict) and record.get("record_sha256") == _record_sum(record)
    except ValueError:  # not JSON, not UTF-8
        ok = False
    if not ok:
        return "damaged", (meta_path, "its record does not match its sha256 (or has none)")
    if "error" in record:
        return "failure", record
    try:
        content = target.read_bytes()
    except FileNotFoundError:
        return "missing", None  # written up to the record only (a crash): convert again
    actual, recorded = _sha256(content), record.get("tflite_sha256")
    if actual != recorded:
        return "damaged", (
            target,
            f"{len(content)} bytes with sha256 {actual[:16]}..., its record "
            f"{meta_path.name} says {record.get('bytes')} bytes with sha256 "
            f"{str(recorded)[:16]}...",
        )
    return "model", check_tflite(content, str(target))


def damaged_message(found: tuple[Path, str]) -> str:
    """The warning for a damaged entry.

    Example::

        >>> print(damaged_message((Path("cache/k.tflite"), "0 bytes")))
        ... # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
        conversion cache entry cache/k.tflite is damaged (0 bytes): deleted, and the model
        converted again; ... (--quant-cache-clear empties it)
    """
    path, what = found
    return (
        f"conversion cache entry {path} is damaged ({what}): deleted, and the model "
        "converted again; if this recurs, check the disk and what else writes to the "
        "cache directory (--quant-cache-clear empties it)"
    )


def _replay_failure(record: Mapping[str, Any], meta_path: Path, job: _Job) -> None:
    """Raise the cached failure ``record`` (read from ``meta_path``) with the hint
    today's :func:`failure_hint` reads in the converter output it kept."""
    __tracebackhide__ = True
    error, output = record.get("error"), str(record.get("output", ""))
    calibrated = job.rep is not None
    hint = failure_hint(output, mode=job.mode, calibrated=calibrated, entry=job.route.entry)
    raise ConversionError(replay_message(f"{error}\n  {hint}" if hint else str(error), meta_path))


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
