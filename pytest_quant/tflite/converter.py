"""Convert a model to TFLite in any post-training mode, in a child process, with a cache.

The converter runs in a child process because it can abort the whole process: TF 2.16.2
with Keras 3 dies with ``LLVM ERROR: Failed to infer result type(s)`` converting a small
Conv2D model to int8. In the child, such a crash becomes a :class:`ConversionError`
naming the TensorFlow version and the crash, and the test session goes on.

Keras 3 and Keras 2 (``tf_keras``, what TensorFlow Model Optimization's QAT builds) models
both work: the parent saves the model with the Keras that built it (a SavedModel, or a
``.keras`` file for Keras 3 ``via="keras"``), and the child never reloads it with another.

Conversions are cached on disk, keyed by the model's content (Keras flavour, architecture
and weights, or the files of a SavedModel), the mode, the route, the TensorFlow version
and, in the calibrated modes only, the representative data. Writes are atomic and
serialized per key with a file lock, so pytest-xdist workers converting the same model
convert it once and never read a torn file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ._deps import HINT, require

MODES = ("int8", "dynamic", "float16", "int16x8")
#: No optimization at all: the float model that per-tensor blame compares against.
REFERENCE_MODE = "float"
#: The modes that calibrate with representative data; the others never see it.
CALIBRATED_MODES = ("int8", "int16x8")
_KEY_VERSION = b"pytest-quant-convert-v2"
TFLITE_IDENTIFIER = b"TFL3"
#: The module the child process runs (``python -m``).
WORKER = "pytest_quant.tflite._worker"


_LOG = re.compile(r"^[IWE]\d{4} |^WARNING: All log messages")  # absl log lines
_ERROR = re.compile(r"\b\w*(Error|Exception)\b:|LLVM ERROR|error:")
# What the converter says when a model has no ranges to quantize with: asked for int8 I/O
# without calibration (the model is not integer-quantized, so only float32 I/O is valid),
# or asked for full integer without a representative dataset.
_NO_RANGES = re.compile(
    r"must be tf\.float32|representative_dataset|calibrat|min/max|statistics", re.IGNORECASE
)
# int16x8 of a model with fake-quant nodes: those ranges are int8 and the converter
# cannot requantize them.
_FAKE_QUANT_16X8 = "16x8-bit not yet supported for op: 'DEQUANTIZE'"
# Keras 3 could not rebuild a saved .keras model (unregistered custom class, a config it
# does not accept).
_RELOAD = re.compile(
    r"Could not locate (class|function)|Unknown (layer|object)|could not be deserialized|"
    r"unexpected keyword argument"
)


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


def keras_flavour(model: Any) -> str | None:
    """``"keras3"`` or ``"keras2"`` (``tf_keras``, or TensorFlow's legacy ``tf.keras``),
    read from the model's own classes; ``None`` if none comes from a Keras.

    Example::

        >>> keras_flavour(object()) is None
        True
    """
    for cls in type(model).__mro__:
        module = cls.__module__ or ""
        root = module.partition(".")[0]
        if root == "tf_keras" or module.startswith("tensorflow.python.keras"):
            return "keras2"
        if root == "keras":  # the keras package: Keras 3 since TF 2.16, Keras 2 before
            version = str(getattr(sys.modules.get("keras"), "__version__", "3"))
            return "keras3" if int(version.split(".")[0]) >= 3 else "keras2"
    return None


def _keras_fingerprint(model: Any, h: Any) -> None:
    h.update(f"{keras_flavour(model)}|".encode())
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
    """sha256 of everything that determines the converter's output (the representative
    data only in :data:`CALIBRATED_MODES`: the other modes never see it)."""
    h = hashlib.sha256(_KEY_VERSION)
    h.update(f"|{mode}|{version}|{via}|".encode())
    if isinstance(source, Path):
        _dir_fingerprint(source, h)
    else:
        _keras_fingerprint(source, h)
    if mode not in CALIBRATED_MODES:
        return h.hexdigest()
    items = sorted(rep.items()) if isinstance(rep, dict) else enumerate(rep or [])
    for name, arr in items:
        h.update(f"{name}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def convert(
    source: Any,
    representative_data: Any = None,
    *,
    mode: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = 600.0,
    via: str = "saved_model",
) -> bytes:
    """Return the TFLite flatbuffer of ``source`` converted in ``mode`` (default int8).

    :param source: a Keras model, Keras 3 or Keras 2 (``tf_keras``: what TensorFlow Model
        Optimization builds, e.g. ``tfmot.quantization.keras.quantize_model(model)``), a
        SavedModel directory, a ``.tflite`` path, or bytes (the last two are returned as
        they are, after a format check).
    :param representative_data: calibration inputs for ``"int8"`` and ``"int16x8"``: an
        array ``(n, ...)``, a list of arrays (one per input) or a dict by input name. A
        model trained with fake-quant nodes (QAT) converts to int8 without it. The other
        modes ignore it: it changes neither their model nor their cache key.
    :param mode: ``"int8"`` (full integer, int8 input and output), ``"dynamic"``
        (int8 weights, float activations), ``"float16"``, ``"int16x8"`` (int16
        activations, int8 weights; needs ``representative_data``), or ``"float"``
        (:data:`REFERENCE_MODE`, not in :data:`MODES`: no optimization, the float model
        that per-tensor blame compares against; a QAT model keeps its fake-quant nodes
        as QUANTIZE/DEQUANTIZE pairs).
    :param cache_dir: where converted models are kept (``None``: no cache).
    :param via: how a Keras model reaches the converter. ``"saved_model"``: a SavedModel
        (Keras 3: ``model.export``; Keras 2: ``tf.saved_model.save``), converted with
        ``from_saved_model`` (int8 without representative data: ``from_concrete_functions``
        on its serving signature, the entry that finds a QAT model's ranges); custom
        layers work. ``"keras"``: what ``TFLiteConverter.from_keras_model`` does, what most
        Keras code calls. Keras 3: the model is saved as ``.keras``, reloaded with
        ``keras.models.load_model(compile=False)`` (custom classes must be registered) and
        converted with ``from_keras_model``. Keras 2: the model is saved with
        ``tf.saved_model.save`` and its traced call (the serving signature) converted with
        ``from_concrete_functions``, as ``from_keras_model`` converts a Keras 2 model; no
        Keras reloads it (a tfmot QAT ``.keras`` file does not reload, even in
        ``quantize_scope``). Measured: TF 2.16.2 with Keras 3 aborts on a Conv2D model to
        int8 via ``"keras"`` and converts it via ``"saved_model"``.
    :raises ConversionError: the converter failed or crashed (its message, the route and
        the TF version are in the error, with a hint when the cause is plain).
    :raises ValueError: an unknown ``mode`` or ``via``, bad representative data,
        ``"int16x8"`` without it (the converter would return a float model), or a
        ``mode`` or ``representative_data`` given with an already-converted ``.tflite``
        (it is returned as it is: neither would apply).

    Example::

        content = convert(keras_model, x_train[:200], mode="int8", cache_dir=".cache")
        reference = convert(keras_model, mode="float", cache_dir=".cache")
    """
    if mode is not None and mode not in (*MODES, REFERENCE_MODE):
        raise ValueError(f"mode={mode!r}: use one of {', '.join((*MODES, REFERENCE_MODE))}")
    if via not in ("saved_model", "keras"):
        raise ValueError(f"via={via!r}: use 'saved_model' or 'keras'")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _converted(check_tflite(bytes(source), "the model bytes"), mode, representative_data)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_file():
            return _converted(check_tflite(path.read_bytes(), str(path)), mode, representative_data)
        if not (path / "saved_model.pb").is_file():
            raise ValueError(
                f"{path} is neither a .tflite file nor a SavedModel directory "
                "(no saved_model.pb in it)"
            )
        source = path
    elif not (hasattr(source, "to_json") and keras_flavour(source)):
        raise TypeError(
            f"source={type(source).__name__}: pass a Keras model (Keras 3 or tf_keras), a "
            "SavedModel directory, a .tflite path or the model bytes"
        )
    mode = mode or "int8"
    rep = _representative(representative_data) if mode in CALIBRATED_MODES else None
    if mode == "int16x8" and rep is None:
        raise ValueError(
            "mode='int16x8' needs representative_data: the int16 activation ranges come "
            "from it (without it the converter returns a float model)"
        )
    route = _route(source, via, mode, rep is not None)
    version = tf_version()
    if cache_dir is None:
        return _convert_in_child(source, rep, mode, version, timeout, route)
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
        content = _convert_in_child(source, rep, mode, version, timeout, route)
        _atomic_write(target, content)
        meta = {
            "mode": mode,
            "tensorflow": version,
            "keras": route.flavour,
            "via": via,
            "entry": route.entry,
            "created": time.time(),
            "bytes": len(content),
        }
        _atomic_write(cache / f"{key}.json", json.dumps(meta).encode())
    return content


def _converted(content: bytes, mode: str | None, representative_data: Any) -> bytes:
    """An already-converted model, returned as it is; a mode or calibration data given
    with it would be silently ignored, so they are an error that says so."""
    if mode is None and representative_data is None:
        return content
    from .scheme import describe, detect_scheme

    given = " and ".join(
        w
        for w, v in (("representative_data", representative_data), (f"mode={mode!r}", mode))
        if v is not None
    )
    raise ValueError(
        f"the source is an already-converted .tflite ({describe(detect_scheme(content))}), "
        f"used as it is: {given} cannot apply to it. Pass the float model (Keras or "
        "SavedModel) to convert it, or drop the argument; to quantize a float .tflite use "
        "ai-edge-quantizer"
    )


@dataclass(frozen=True)
class _Route:
    """How a model reaches the converter: what the parent writes, what the child calls."""

    flavour: str | None  # keras_flavour(model); None for a SavedModel directory
    via: str
    entry: str  # the TFLiteConverter constructor the child calls

    def describe(self) -> str:
        call = f"TFLiteConverter.{self.entry}"
        if self.entry == "from_concrete_functions":
            call += " on the serving signature"
        if self.flavour is None:
            return f"(SavedModel, {call})"
        if self.entry == "from_keras_model":
            how = "Keras 3: .keras file reloaded by Keras 3 in the converter process"
        elif self.flavour == "keras3":
            how = "Keras 3: model.export"
        else:
            how = "Keras 2: tf.saved_model.save"
        return f"via={self.via!r} ({how}, then {call})"


def _route(source: Any, via: str, mode: str, calibrated: bool) -> _Route:
    flavour = None if isinstance(source, Path) else keras_flavour(source)
    if via == "keras" and flavour == "keras3":
        entry = "from_keras_model"
    elif via == "keras" and flavour is not None:
        # from_keras_model on a Keras 2 model converts its traced call; the child gets
        # that as a SavedModel, never a Keras file another Keras would have to reload
        entry = "from_concrete_functions"
    elif mode == "int8" and not calibrated:
        # A QAT model: its ranges come from the fake-quant nodes; from_saved_model on a
        # Keras 3 export demands calibration data, the concrete function does not
        entry = "from_concrete_functions"
    else:
        entry = "from_saved_model"
    return _Route(flavour, via, entry)


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


def _saved(source: Any, work: Path, route: _Route) -> Path:
    """What the child converts: ``source`` saved by the Keras that built it."""
    if isinstance(source, Path):
        return source
    if route.entry == "from_keras_model":
        source.save(work / "model.keras")
        return work / "model.keras"
    where = work / "saved_model"
    if route.flavour == "keras3":
        source.export(str(where), verbose=False)
    else:  # Keras 2 has no export(); its SavedModel keeps custom (e.g. QAT) layers' graphs
        require("tensorflow").saved_model.save(source, str(where))
    return where


def _save_dataset(data: Any, path: Path) -> str:
    """Arrays for the child, as .npz (loaded with allow_pickle=False) plus a .json sidecar."""
    arrays = data if isinstance(data, dict) else {f"input_{i}": a for i, a in enumerate(data)}
    np.savez(path, **arrays)
    path.with_suffix(".json").write_text(json.dumps({"by_name": isinstance(data, dict)}))
    return str(path)


def _run_child(
    args: list[str],
    action: str,
    version: str,
    timeout: float,
    hint: Callable[[str], str] | None = None,
) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", WORKER, *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise ConversionError(
            f"TensorFlow {version} converter did not finish {action} within {timeout:g} s"
        ) from None
    if done.returncode != 0:
        message = _failure(done, action, version)
        extra = hint(done.stderr) if hint is not None else ""
        raise ConversionError(f"{message}\n  {extra}" if extra else message)


def _convert_in_child(
    source: Any, rep: Any, mode: str, version: str, timeout: float, route: _Route
) -> bytes:
    with tempfile.TemporaryDirectory(prefix="pytest-quant-convert-") as tmp:
        work = Path(tmp)
        saved = _saved(source, work, route)
        rep_path = "-" if rep is None else _save_dataset(rep, work / "rep.npz")
        out = work / "model.tflite"
        action = f"converting {_describe(source)} to {mode} {route.describe()}"
        args = ["convert", route.entry, str(saved), rep_path, mode, str(out)]

        def hint(output: str) -> str:
            return failure_hint(output, mode=mode, calibrated=rep is not None, entry=route.entry)

        _run_child(args, action, version, timeout, hint)
        return check_tflite(out.read_bytes(), "the converter's output")


def failure_hint(output: str, *, mode: str, calibrated: bool, entry: str) -> str:
    """The likely cause of a failed conversion and its fix, read from the converter's
    ``output`` (``entry``: the ``TFLiteConverter`` constructor that ran); ``""`` when the
    output names no cause we know: no guess.

    Example::

        >>> failure_hint("LLVM ERROR: Failed to infer result type(s).", mode="int8",
        ...              calibrated=False, entry="from_concrete_functions")
        ''
    """
    if mode == "int8" and not calibrated and _NO_RANGES.search(output):
        return (
            "int8 without representative_data works only for a model trained with "
            "fake-quant nodes (QAT); otherwise pass representative_data (a few hundred "
            "real inputs)"
        )
    if mode == "int16x8" and _FAKE_QUANT_16X8 in output:
        return (
            "the model has fake-quant (QAT) nodes, whose ranges are int8: convert it with "
            "mode='int8', or convert the float model (before QAT) to int16x8"
        )
    if entry == "from_keras_model" and _RELOAD.search(output):
        return (
            "via='keras' reloads the .keras file with Keras 3 in the converter process: "
            "register the model's custom classes (keras.saving.register_keras_serializable) "
            "or pass via='saved_model', which needs no reload"
        )
    return ""


def _failure(done: subprocess.CompletedProcess[str], action: str, version: str) -> str:
    lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not _LOG.match(ln)]
    interesting = [ln for ln in lines if _ERROR.search(ln)]
    tail = "\n".join("    " + ln for ln in (interesting[-3:] or lines[-5:]))
    if done.returncode < 0:
        sig = signal.Signals(-done.returncode).name
        how = f"crashed (the converter process was killed by {sig})"
    else:
        how = f"failed (exit status {done.returncode})"
    return f"TensorFlow {version} converter {how} {action}. Converter output:\n{tail}"
