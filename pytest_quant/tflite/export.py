"""Keras models saved by the Keras that built them, once per process, for the converter child.

A Keras model is exported (SavedModel or ``.keras`` file) once per process and per
route, whatever the number of modes converted and blame runs: the exports live in a
temporary directory, removed when the model is garbage collected or at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._deps import require
from .fingerprint import model_fingerprint

if TYPE_CHECKING:
    from .converter import _Route


#: Keras models exported in this process: (fingerprint, flavour, kind) -> path
_EXPORTS: dict[tuple[str, str | None, str], Path] = {}
_EXPORTS_LOCK = threading.RLock()
_EXPORT_ROOT: list[Path] = []  # the process's temporary directory, made on first use


def _export_root() -> Path:
    if not _EXPORT_ROOT or not _EXPORT_ROOT[0].is_dir():
        root = Path(tempfile.mkdtemp(prefix="pytest-quant-exports-"))
        atexit.register(shutil.rmtree, root, True)
        _EXPORT_ROOT[:] = [root]
    return _EXPORT_ROOT[0]


def _forget_export(key: tuple[str, str | None, str], directory: Path) -> None:
    with _EXPORTS_LOCK:
        if _EXPORTS.get(key, directory / "-").parent == directory:
            del _EXPORTS[key]
    shutil.rmtree(directory, ignore_errors=True)


def _saved(source: Any, work: Path | None, route: _Route, fingerprint: str = "") -> Path:
    """What the child converts: ``source`` saved by the Keras that built it, exported once
    per process, model content and kind of export (``work`` is not used: exports live in
    the process's export directory, removed when the model is collected or at exit)."""
    if isinstance(source, Path):
        return source
    kind = "keras_file" if route.entry == "from_keras_model" else "saved_model"
    key = (fingerprint or model_fingerprint(source), route.flavour, kind)
    with _EXPORTS_LOCK:
        known = _EXPORTS.get(key)
        if known is not None and known.exists():
            return known
        directory = Path(tempfile.mkdtemp(prefix="model-", dir=_export_root()))
        where = directory / ("model.keras" if kind == "keras_file" else "saved_model")
        try:
            _export(source, where, route)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        _EXPORTS[key] = where
    # the export goes with the model (finalizers also run at exit); a model that takes no
    # weak reference keeps it until exit, when the whole root goes
    with contextlib.suppress(TypeError):
        weakref.finalize(source, _forget_export, key, directory)
    return where


def _export(source: Any, where: Path, route: _Route) -> None:
    """Save ``source`` at ``where`` with the Keras that built it."""
    if route.entry == "from_keras_model":
        source.save(where)
    elif route.flavour == "keras3":
        source.export(str(where), verbose=False)
    else:  # Keras 2 has no export(); its SavedModel keeps custom (e.g. QAT) layers' graphs
        require("tensorflow").saved_model.save(source, str(where))
