"""Convert a model to TFLite in any post-training mode, in a child process, with a cache.

The converter runs in a child process because it can abort the whole process: TF 2.16.2
with Keras 3 dies with ``LLVM ERROR: Failed to infer result type(s)`` converting a small
Conv2D model to int8. In the child, such a crash becomes a :class:`ConversionError`
naming the TensorFlow version and the crash, and the test session goes on.

Conversions are cached on disk, keyed by the model's content (architecture and weights,
or the files of a SavedModel), the mode, the representative data and the TensorFlow
version. Writes are atomic and serialized per key with a file lock, so pytest-xdist
workers converting the same model convert it once and never read a torn file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ._deps import HINT, require

MODES = ("int8", "dynamic", "float16", "int16x8")
_KEY_VERSION = b"pytest-quant-convert-v1"
TFLITE_IDENTIFIER = b"TFL3"
#: The module the child process runs (``python -m``).
WORKER = "pytest_quant.tflite._worker"


_LOG = re.compile(r"^[IWE]\d{4} |^WARNING: All log messages")  # absl log lines
_ERROR = re.compile(r"\b\w*(Error|Exception)\b:|LLVM ERROR|error:")


class ConversionError(RuntimeError):
    """The TFLite converter failed or crashed; the message says which, with its output."""


def tf_version() -> str:
    """The installed TensorFlow distribution's version, without importing TensorFlow."""
    for dist in ("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-intel"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    raise ModuleNotFoundError(f"TensorFlow is not installed. {HINT}")


def check_tflite(content: bytes, origin: str) -> bytes:
    """Return ``content`` if it is a TFLite flatbuffer, else raise ``ValueError`` naming it."""
    if len(content) < 8 or content[4:8] != TFLITE_IDENTIFIER:
        raise ValueError(
            f"{origin} is not a TFLite model (no 'TFL3' identifier at bytes 4-8; "
            f"{len(content)} bytes): pass a .tflite file or the converter's output"
        )
    return content


def _representative(data: Any) -> dict[str, np.ndarray] | list[np.ndarray] | None:
    """Normalize representative data to float32 arrays (one per model input)."""
    if data is None:
        return None
    from .._checks import as_float_array

    if isinstance(data, Mapping):
        out_d = {
            str(k): as_float_array(v, f"representative_data[{k!r}]").astype(np.float32)
            for k, v in data.items()
        }
        sizes = {v.shape[0] for v in out_d.values()}
    else:
        arrays = list(data) if isinstance(data, (list, tuple)) else [data]
        out_l = [as_float_array(v, "representative_data").astype(np.float32) for v in arrays]
        sizes = {v.shape[0] if v.ndim else 0 for v in out_l}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            "representative_data must hold the same number (>= 1) of samples for every "
            f"input, along axis 0; got {sorted(sizes)}"
        )
    return out_d if isinstance(data, Mapping) else out_l


def _keras_fingerprint(model: Any, h: Any) -> None:
    h.update(model.to_json().encode())
    for w in model.weights:
        arr = np.asarray(w)
        h.update(f"{getattr(w, 'path', getattr(w, 'name', ''))}{arr.shape}{arr.dtype}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())


def _dir_fingerprint(path: Path, h: Any) -> None:
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())


def cache_key(source: Any, rep: Any, mode: str, version: str, via: str = "saved_model") -> str:
    """sha256 of everything that determines the converter's output."""
    h = hashlib.sha256(_KEY_VERSION)
    h.update(f"|{mode}|{version}|{via}|".encode())
    if isinstance(source, Path):
        _dir_fingerprint(source, h)
    else:
        _keras_fingerprint(source, h)
    items = sorted(rep.items()) if isinstance(rep, dict) else enumerate(rep or [])
    for name, arr in items:
        h.update(f"{name}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def convert(
    source: Any,
    representative_data: Any = None,
    *,
    mode: str = "int8",
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = 600.0,
    via: str = "saved_model",
) -> bytes:
    """Return the TFLite flatbuffer of ``source`` converted in ``mode``.

    :param source: a Keras model, a SavedModel directory, a ``.tflite`` path, or bytes
        (the last two are returned as they are, after a format check).
    :param representative_data: calibration inputs for ``"int8"`` and ``"int16x8"``: an
        array ``(n, ...)``, a list of arrays (one per input) or a dict by input name. A
        model trained with fake-quant nodes (QAT) converts to int8 without it.
    :param mode: ``"int8"`` (full integer, int8 input and output), ``"dynamic"``
        (int8 weights, float activations), ``"float16"`` or ``"int16x8"``.
    :param cache_dir: where converted models are kept (``None``: no cache).
    :param via: how a Keras model reaches the converter: ``"saved_model"`` (exported with
        ``model.export``, then ``from_saved_model``; custom layers work) or ``"keras"``
        (``TFLiteConverter.from_keras_model``, what most Keras code calls; the model must
        load with ``keras.models.load_model``). Measured: TF 2.16.2 with Keras 3 aborts on
        a Conv2D model to int8 via ``"keras"`` and converts it via ``"saved_model"``.
    :raises ConversionError: the converter failed or crashed (its message and the TF
        version are in the error).

    Example::

        content = convert(keras_model, x_train[:200], mode="int8", cache_dir=".cache")
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: use one of {', '.join(MODES)}")
    if via not in ("saved_model", "keras"):
        raise ValueError(f"via={via!r}: use 'saved_model' or 'keras'")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return check_tflite(bytes(source), "the model bytes")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_file():
            return check_tflite(path.read_bytes(), str(path))
        if not (path / "saved_model.pb").is_file():
            raise ValueError(
                f"{path} is neither a .tflite file nor a SavedModel directory "
                "(no saved_model.pb in it)"
            )
        source = path
    elif not (hasattr(source, "weights") and hasattr(source, "to_json")):
        raise TypeError(
            f"source={type(source).__name__}: pass a Keras model, a SavedModel directory, "
            "a .tflite path or the model bytes"
        )
    rep = _representative(representative_data)
    version = tf_version()
    if cache_dir is None:
        return _convert_in_child(source, rep, mode, version, timeout, via)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    key = cache_key(source, rep, mode, version, via)
    target = cache / f"{key}.tflite"
    if target.is_file():
        return check_tflite(target.read_bytes(), str(target))
    filelock = require("filelock")
    with filelock.FileLock(str(cache / f"{key}.lock"), timeout=timeout):
        if target.is_file():  # another worker converted it while we waited
            return check_tflite(target.read_bytes(), str(target))
        content = _convert_in_child(source, rep, mode, version, timeout, via)
        _atomic_write(target, content)
        meta = {"mode": mode, "tensorflow": version, "created": time.time(), "bytes": len(content)}
        _atomic_write(cache / f"{key}.json", json.dumps(meta).encode())
    return content


def _atomic_write(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _describe(source: Any) -> str:
    if isinstance(source, Path):
        return f"SavedModel {source}"
    return f"Keras model {getattr(source, 'name', type(source).__name__)!r}"


def _export(model: Any, where: Path) -> None:
    """A Keras model as a SavedModel the child process can load (custom layers included)."""
    if hasattr(model, "export"):  # Keras 3
        model.export(str(where), verbose=False)
    else:  # tf.keras (Keras 2)
        require("tensorflow").saved_model.save(model, str(where))


def _save_dataset(data: Any, path: Path) -> str:
    """Arrays for the child, as .npz (loaded with allow_pickle=False) plus a .json sidecar."""
    arrays = data if isinstance(data, dict) else {f"input_{i}": a for i, a in enumerate(data)}
    np.savez(path, **arrays)
    path.with_suffix(".json").write_text(json.dumps({"by_name": isinstance(data, dict)}))
    return str(path)


def _run_child(args: list[str], action: str, version: str, timeout: float) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", WORKER, *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise ConversionError(
            f"TensorFlow {version} converter did not finish {action} within {timeout:g} s"
        ) from None
    if done.returncode != 0:
        raise ConversionError(_failure(done, action, version))


def _saved(source: Any, work: Path, via: str = "saved_model") -> Path:
    if isinstance(source, Path):
        return source
    if via == "keras":
        source.save(work / "model.keras")
        return work / "model.keras"
    _export(source, work / "saved_model")
    return work / "saved_model"


def _convert_in_child(
    source: Any, rep: Any, mode: str, version: str, timeout: float, via: str = "saved_model"
) -> bytes:
    with tempfile.TemporaryDirectory(prefix="pytest-quant-convert-") as tmp:
        work = Path(tmp)
        saved = _saved(source, work, via)
        rep_path = "-" if rep is None else _save_dataset(rep, work / "rep.npz")
        out = work / "model.tflite"
        try:
            action = f"converting {_describe(source)} to {mode}"
            _run_child(["convert", str(saved), rep_path, mode, str(out)], action, version, timeout)
        except ConversionError as exc:
            if rep is None and mode in ("int8", "int16x8"):
                raise ConversionError(
                    f"{exc}\n  {mode} without representative_data works only for a model "
                    "trained with fake-quant nodes (QAT); otherwise pass representative_data "
                    "(a few hundred real inputs)"
                ) from None
            raise
        return check_tflite(out.read_bytes(), "the converter's output")


def _failure(done: subprocess.CompletedProcess[str], action: str, version: str) -> str:
    lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not _LOG.match(ln)]
    interesting = [ln for ln in lines if _ERROR.search(ln)]
    tail = "\n".join("    " + ln for ln in (interesting[-3:] or lines[-5:]))
    if done.returncode < 0:
        sig = signal.Signals(-done.returncode).name
        how = f"crashed (the converter process was killed by {sig})"
    else:
        how = f"failed (exit status {done.returncode})"
    return (
        f"TensorFlow {version} converter {how} {action}; "
        f"the test session goes on. Converter output:\n{tail}"
    )


@dataclass(frozen=True)
class LayerError:
    """One quantized layer's own error: its output against the float op on its inputs."""

    layer: str
    scale: float
    rmse: float
    rmse_per_scale: float
    max_abs_error: float
    mean_error: float


def layer_errors(
    source: Any, representative_data: Any, debug_data: Any, *, timeout: float = 600.0
) -> list[LayerError]:
    """Per-layer quantization error of ``source`` converted to int8, worst first.

    Runs TF's ``QuantizationDebugger`` (in a child process): each layer's quantized
    output is compared with the float op applied to the same dequantized inputs, so a
    layer is charged only for the error it adds. ``rmse_per_scale`` is the RMSE in steps
    of the layer's output scale: about 0.29 (1/sqrt(12)) for a well-quantized layer.
    """
    if isinstance(source, (str, os.PathLike)):
        source = Path(source)
    rep = _representative(representative_data)
    dbg = _representative(debug_data)
    if rep is None or dbg is None:
        raise ValueError("layer_errors needs representative_data and debug_data")
    version = tf_version()
    with tempfile.TemporaryDirectory(prefix="pytest-quant-blame-") as tmp:
        work = Path(tmp)
        saved = _saved(source, work)
        out = work / "layers.json"
        args = [
            "blame",
            str(saved),
            _save_dataset(rep, work / "rep.npz"),
            _save_dataset(dbg, work / "debug.npz"),
            str(out),
        ]
        _run_child(args, f"debugging {_describe(source)}", version, timeout)
        rows = json.loads(out.read_text())
    errors = [
        LayerError(
            r["layer"],
            r["scale"],
            math.sqrt(r["mean_squared_error"]),
            math.sqrt(r["mean_squared_error"]) / r["scale"] if r["scale"] > 0 else math.nan,
            r["max_abs_error"],
            r["mean_error"],
        )
        for r in rows
    ]
    return sorted(
        errors, key=lambda e: -(e.rmse_per_scale if math.isfinite(e.rmse_per_scale) else 0)
    )


def blame_table(errors: list[LayerError], *, top: int | None = None) -> list[str]:
    """Lines of a table of :func:`layer_errors`, worst first (``top`` rows if given)."""
    rows = errors[:top] if top else errors
    lines = [f"  {'rmse/scale':>10}  {'rmse':>10}  {'max |err|':>10}  {'scale':>10}  layer"]
    for e in rows:
        lines.append(
            f"  {e.rmse_per_scale:10.3f}  {e.rmse:10.4g}  {e.max_abs_error:10.4g}  "
            f"{e.scale:10.4g}  {e.layer}"
        )
    if top and len(errors) > top:
        lines.append(f"  ... {len(errors) - top} more layers")
    return lines
