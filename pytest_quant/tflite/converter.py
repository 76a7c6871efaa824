"""Convert a model to TFLite in any post-training mode, in a child process, with a cache.

The converter runs in a child process because it can abort the whole process: TF 2.16.2
with Keras 3 dies with ``LLVM ERROR: Failed to infer result type(s)`` converting a small
Conv2D model to int8. In the child, such a crash becomes a :class:`ConversionError`
naming the TensorFlow version and the crash, and the test session goes on.

Keras 3 and Keras 2 (``tf_keras``, what TensorFlow Model Optimization's QAT builds) models
both work: the parent saves the model with the Keras that built it (a SavedModel, or a
``.keras`` file for Keras 3 ``via="keras"``), and the child never reloads it with another.

Conversions are cached on disk, keyed by the model's content (Keras flavour, architecture
and weights in model order, or the files of a SavedModel), the mode, the route, the
converter settings, the TensorFlow version and, in the calibrated modes only, the
representative data. Writes are atomic and serialized per key with a file lock, so
pytest-xdist workers converting the same model convert it once and never read a torn
file. A deterministic converter failure (an error exit or a crash) is cached too, and
replayed as the same :class:`ConversionError` until the entry is deleted.

A Keras model is exported (SavedModel or ``.keras`` file) once per process and per
route, whatever the number of modes converted and blame runs: the exports live in a
temporary directory, removed when the model is garbage collected or at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
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
# v3: weights keyed by position, not by Keras's auto-numbered variable paths; converter
# settings; representative data dtypes
_KEY_VERSION = b"pytest-quant-convert-v3"
TFLITE_IDENTIFIER = b"TFL3"
#: The module the child process runs (``python -m``).
WORKER = "pytest_quant.tflite._worker"
#: The child's exit status for a converter setting it cannot apply (a usage error, raised
#: as ``ValueError`` and never cached); the message follows :data:`USAGE_MARK` on stderr.
USAGE_EXIT = 3
USAGE_MARK = "pytest-quant usage error: "
#: Crash signals that a converter bug raises; SIGKILL (the OOM killer), SIGTERM and
#: SIGINT come from outside and are not cached as the model's failure.
_CRASH_SIGNALS = ("SIGABRT", "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP")
#: How much of a failed converter's output the failure cache keeps (its end)
_KEPT_OUTPUT = 20_000


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


# int16x8 of a model with an op that has no 16x8 kernel (HARD_SWISH, NEG, SQRT, ...)
_NO_16X8_KERNEL = re.compile(r"16x8-bit not yet supported for op: '(\w+)'")
# int16x8 of a model with integer tensors feeding integer arithmetic (token ids through
# Keras 3 Embedding's index handling: LESS, ADD, SELECT_V2; a WHILE loop's counter): TF's
# int16x8 quantizer (the legacy one, which int16x8 always uses) wants a range for them
_INT_TENSOR_16X8 = re.compile(
    r"Max and min for dynamic tensors should be recorded during calibration: "
    r"Failed for tensor (\S+)"
)
# Keras 3 LSTM/GRU (not unrolled): a while loop over TensorLists
_TENSOR_LIST = re.compile(r"TensorList\w+")


class ConversionError(RuntimeError):
    """The TFLite converter failed or crashed; the message says which, with its output."""

    #: whether the same conversion would fail the same way again (an error exit or a
    #: crash signal of the converter; not a timeout, not a kill from outside): only those
    #: failures are cached
    deterministic: bool = False
    #: the message without the hint, and the converter's output: what the cache keeps, so
    #: a replay gets the hint of the pytest-quant that replays it
    report: str = ""
    output: str = ""


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
    """Normalize representative data: float arrays to float32, integer arrays (token ids,
    indices) kept integer, as int32 when their values fit (what Keras integer inputs
    take; the child casts each to the dtype its input expects), one per model input."""
    if data is None:
        return None
    if isinstance(data, Mapping):
        out_d = {
            str(k): _calibration_array(v, f"representative_data[{k!r}]") for k, v in data.items()
        }
        sizes = {v.shape[0] if v.ndim else 0 for v in out_d.values()}
    else:
        arrays = list(data) if isinstance(data, (list, tuple)) else [data]
        out_l = [_calibration_array(v, "representative_data") for v in arrays]
        sizes = {v.shape[0] if v.ndim else 0 for v in out_l}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            "representative_data must hold the same number (>= 1) of samples for every "
            f"input, along axis 0; got {sorted(sizes)}"
        )
    return out_d if isinstance(data, Mapping) else out_l


def _calibration_array(value: Any, name: str) -> np.ndarray:
    from .._checks import as_float_array

    arr = np.asarray(value) if not isinstance(value, np.ndarray) else value
    if arr.dtype.kind not in "iu":
        return as_float_array(value, name).astype(np.float32)
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one sample")
    for dtype in (np.int32, np.int64):  # never a wrap-around
        info = np.iinfo(dtype)
        if arr.min() >= info.min and arr.max() <= info.max:
            return arr.astype(dtype)
    raise ValueError(f"{name} has integers beyond int64 (max {arr.max()})")


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
    # Weights by position in model order, not by variable path: Keras numbers the paths
    # of unnamed weights per process (ConvNeXt's LayerScale ``gamma`` is
    # ``layer_scale/variable_3`` or ``_7`` depending on what was built before), so
    # identical models got different keys. Layer names stay in, through to_json.
    h.update(f"{keras_flavour(model)}|".encode())
    h.update(model.to_json().encode())
    for i, w in enumerate(model.weights):
        arr = np.asarray(w)
        h.update(f"|{i}{arr.shape}{arr.dtype}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())


def _dir_fingerprint(path: Path, h: Any) -> None:
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())


def model_fingerprint(source: Any) -> str:
    """sha256 of a model's content: a Keras model's flavour, architecture (``to_json``,
    which carries the layer names) and weights in model order (shape, dtype, bytes; not
    their auto-numbered variable paths), or the files of a SavedModel directory.

    Example::

        assert model_fingerprint(build()) == model_fingerprint(build())
    """
    h = hashlib.sha256()
    if isinstance(source, Path):
        _dir_fingerprint(source, h)
    else:
        _keras_fingerprint(source, h)
    return h.hexdigest()


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


_OPTION_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")
#: Converter attributes pytest-quant sets itself from its arguments
_OWNED_OPTIONS = ("representative_dataset",)


def _settings(converter_options: Any, float_fallback: bool, mode: str) -> dict[str, Any]:
    """The converter settings the child applies, validated and JSON-normalized (they are
    part of the cache key)."""
    if float_fallback and mode != "int16x8":
        raise ValueError(
            f"float_fallback=True applies to mode='int16x8' only, not mode={mode!r} (TF "
            "2.21's int8 quantizer already leaves an op without an int8 kernel, e.g. NEG, "
            "in float)"
        )
    options: dict[str, Any] = {}
    if converter_options is not None:
        if not isinstance(converter_options, Mapping):
            raise TypeError(
                "converter_options must be a dict of TFLiteConverter attribute names to "
                f"JSON values, got {type(converter_options).__name__}"
            )
        for name, value in converter_options.items():
            if not isinstance(name, str) or not _OPTION_NAME.match(name):
                raise ValueError(
                    f"converter_options key {name!r}: use a TFLiteConverter attribute name, "
                    "with dots for nested attributes (e.g. 'target_spec.supported_ops')"
                )
            if name in _OWNED_OPTIONS:
                raise ValueError(
                    f"converter_options[{name!r}]: pass representative_data to convert() instead"
                )
            options[name] = _json_value(value, f"converter_options[{name!r}]")
    return {"options": options, "float_fallback": bool(float_fallback)}


def _json_value(value: Any, name: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name} = {value!r}: use a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v, f"{name}[{i}]") for i, v in enumerate(value)]
    if type(value).__module__.startswith("tensorflow") and isinstance(
        getattr(value, "name", None), str
    ):
        return value.name  # tf.lite.OpsSet.X, tf.float16, tf.lite.Optimize.X: by name
    raise TypeError(
        f"{name} is a {type(value).__name__}: converter_options values are JSON values "
        "(bool, int, float, str, None, lists of them); op sets, dtypes and "
        "optimizations by name"
    )


def convert(
    source: Any,
    representative_data: Any = None,
    *,
    mode: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = 600.0,
    via: str = "saved_model",
    converter_options: Mapping[str, Any] | None = None,
    float_fallback: bool = False,
) -> bytes:
    """Return the TFLite flatbuffer of ``source`` converted in ``mode`` (default int8).

    :param source: a Keras model, Keras 3 or Keras 2 (``tf_keras``: what TensorFlow Model
        Optimization builds, e.g. ``tfmot.quantization.keras.quantize_model(model)``), a
        SavedModel directory, a ``.tflite`` path, or bytes (the last two are returned as
        they are, after a format check).
    :param representative_data: calibration inputs for ``"int8"`` and ``"int16x8"``: an
        array ``(n, ...)``, a list of arrays (one per input) or a dict by input name. A
        model trained with fake-quant nodes (QAT) converts to int8 without it. The other
        modes ignore it: it changes neither their model nor their cache key. Integer
        arrays (token ids for an ``Embedding``) stay integer: each is cast to the dtype of
        the model input it feeds (int32 for Keras integer inputs); float arrays become
        float32.
    :param mode: ``"int8"`` (full integer, int8 input and output; an integer token input
        stays as it is), ``"dynamic"`` (int8 weights, float activations), ``"float16"``,
        ``"int16x8"`` (int16 activations, int8 weights; needs ``representative_data``),
        or ``"float"`` (:data:`REFERENCE_MODE`, not in :data:`MODES`: no optimization, the
        float model that per-tensor blame compares against; a QAT model keeps its
        fake-quant nodes as QUANTIZE/DEQUANTIZE pairs).
    :param cache_dir: where converted models are kept (``None``: no cache). A
        deterministic converter failure is kept too and replayed (the message says so)
        until the entry is deleted or the run uses ``--quant-cache-clear``.
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
    :param converter_options: ``TFLiteConverter`` attributes to set before ``convert()``,
        after the mode's own settings (so they override them): a dict of attribute name
        (dots for nested attributes: ``"target_spec.supported_ops"``; private ones such as
        ``"_experimental_lower_tensor_list_ops"`` work) to a JSON value. Op sets
        (``target_spec.supported_ops``), types (``target_spec.supported_types``,
        ``inference_input_type``, ``inference_output_type``) and ``optimizations`` are
        given by name (``"SELECT_TF_OPS"``, ``"float16"``, ``"DEFAULT"``; the TensorFlow
        objects themselves are accepted and stored by name). They are part of the cache
        key. An attribute the converter does not have is a ``ValueError`` naming it. A
        model that needs ``SELECT_TF_OPS`` converts but needs the Flex delegate, which
        ai-edge-litert does not ship: :class:`~pytest_quant.tflite.TFLiteRunner` says so.
    :param float_fallback: ``mode="int16x8"`` only: let ops without a 16x8 kernel
        (HARD_SWISH, NEG, SQRT in TF 2.21) stay float between DEQUANTIZE and QUANTIZE
        (``TFLITE_BUILTINS`` beside the 16x8 op set) instead of failing. Off by default:
        measured on TF 2.21 (three small models), a model that converts without it gives
        the same bytes with it, so the switch only turns failures into mixed int16/float
        models, which an int16-only target cannot run; the failure's message names it.
    :raises ConversionError: the converter failed or crashed (its message, the route and
        the TF version are in the error, with a hint when the cause is plain).
    :raises ValueError: an unknown ``mode`` or ``via``, bad representative data,
        ``"int16x8"`` without it (the converter would return a float model), a
        ``converter_options`` attribute the converter does not have, or a ``mode`` or
        ``representative_data`` given with an already-converted ``.tflite`` (it is
        returned as it is: neither would apply).

    Example::

        content = convert(keras_model, x_train[:200], mode="int8", cache_dir=".cache")
        reference = convert(keras_model, mode="float", cache_dir=".cache")
        lstm = convert(
            lstm_model, mode="dynamic",
            converter_options={"_experimental_default_to_single_batch_in_tensor_list_ops": True},
        )
        mobilenet_v3 = convert(model, x_calib, mode="int16x8", float_fallback=True)
    """
    __tracebackhide__ = True
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
    settings = _settings(converter_options, float_fallback, mode)
    rep = _representative(representative_data) if mode in CALIBRATED_MODES else None
    if mode == "int16x8" and rep is None:
        raise ValueError(
            "mode='int16x8' needs representative_data: the int16 activation ranges come "
            "from it (without it the converter returns a float model)"
        )
    route = _route(source, via, mode, rep is not None)
    # a SavedModel directory without a cache needs no fingerprint (it is not exported)
    need_fingerprint = cache_dir is not None or not isinstance(source, Path)
    fingerprint = model_fingerprint(source) if need_fingerprint else ""
    job = _Job(source, rep, mode, tf_version(), timeout, route, settings, fingerprint)
    if cache_dir is None:
        return _convert_in_child(job)
    return _cached(job, Path(cache_dir))


@dataclass(frozen=True)
class _Job:
    """One conversion: what the child needs, and what the cache key is made of."""

    source: Any
    rep: Any
    mode: str
    version: str
    timeout: float
    route: _Route
    settings: dict[str, Any]
    fingerprint: str = ""

    def key(self) -> str:
        return cache_key(
            self.source,
            self.rep,
            self.mode,
            self.version,
            self.route.via,
            settings=self.settings,
            fingerprint=self.fingerprint or None,
        )


def _cached(job: _Job, cache: Path) -> bytes:
    """``job``'s model from the cache, converted once per key (a file lock serializes
    workers); a cached deterministic failure is raised again, saying it is a replay."""
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
            content = _convert_in_child(job)
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
    __tracebackhide__ = True
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", WORKER, *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise ConversionError(
            f"TensorFlow {version} converter did not finish {action} within {timeout:g} s"
        ) from None
    if done.returncode == USAGE_EXIT and USAGE_MARK in done.stderr:
        usage = done.stderr[done.stderr.rindex(USAGE_MARK) + len(USAGE_MARK) :].strip()
        raise ValueError(usage)
    if done.returncode != 0:
        message = _failure(done, action, version)
        extra = hint(done.stderr) if hint is not None else ""
        error = ConversionError(f"{message}\n  {extra}" if extra else message)
        error.deterministic = _deterministic(done)
        error.report, error.output = message, done.stderr[-_KEPT_OUTPUT:]
        raise error


def _deterministic(done: subprocess.CompletedProcess[str]) -> bool:
    """Whether the same conversion would fail again: an error exit or a crash signal; not
    a kill from outside (the OOM killer's SIGKILL, SIGTERM) or running out of memory."""
    if "MemoryError" in done.stderr or "std::bad_alloc" in done.stderr:
        return False
    if done.returncode > 0:
        return True
    try:
        return signal.Signals(-done.returncode).name in _CRASH_SIGNALS
    except ValueError:  # not a signal this platform names
        return False


def _convert_in_child(job: _Job) -> bytes:
    __tracebackhide__ = True
    route = job.route
    with tempfile.TemporaryDirectory(prefix="pytest-quant-convert-") as tmp:
        work = Path(tmp)
        saved = _saved(job.source, work, route, job.fingerprint)
        rep_path = "-" if job.rep is None else _save_dataset(job.rep, work / "rep.npz")
        out = work / "model.tflite"
        action = f"converting {_describe(job.source)} to {job.mode} {route.describe()}"
        if job.settings["options"]:
            action += f" with converter_options={job.settings['options']}"
        if job.settings["float_fallback"]:
            action += " with float_fallback=True"
        settings = json.dumps(job.settings)
        args = ["convert", route.entry, str(saved), rep_path, job.mode, str(out), settings]

        def hint(output: str) -> str:
            return failure_hint(
                output, mode=job.mode, calibrated=job.rep is not None, entry=route.entry
            )

        _run_child(args, action, job.version, job.timeout, hint)
        return check_tflite(out.read_bytes(), "the converter's output")


#: What converts a Keras 3 LSTM/GRU (a while loop over TensorLists), measured on TF 2.21.
TENSOR_LIST_HINT = (
    "the model loops over TensorLists (a Keras 3 LSTM/GRU/RNN layer), which TFLite "
    "builtins cannot hold with a dynamic batch. What converts: (1) the layer built with "
    "unroll=True (needs a fixed sequence length): builtins only, every mode, any batch "
    "size; (2) converter_options={'_experimental_default_to_single_batch_in_tensor_list_"
    "ops': True}: a WHILE loop, float/dynamic/float16/int8 (not int16x8), runs with batch "
    "size 1 only; (3) converter_options={'_experimental_lower_tensor_list_ops': False, "
    "'target_spec.supported_ops': ['TFLITE_BUILTINS', 'SELECT_TF_OPS']}: float, dynamic "
    "and float16 convert (not int8/int16x8: calibration cannot run Select TF ops), but "
    "need the Flex delegate, which ai-edge-litert does not ship. A fixed "
    "batch size (keras.Input(batch_size=1)) is not enough: via='saved_model' fails the "
    "same way, via='keras' converts float but the int8 conversion crashed"
)


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
    if mode == "int16x8" and (op := _NO_16X8_KERNEL.search(output)):
        return (
            f"{op.group(1)} has no int16x8 kernel in this TensorFlow: pass "
            "float_fallback=True to keep such ops in float (between DEQUANTIZE and "
            "QUANTIZE; an int16-only target cannot run the result), or use mode='int8'"
        )
    if mode == "int16x8" and (tensor := _INT_TENSOR_16X8.search(output)):
        return (
            f"TF's int16x8 quantizer wants a calibrated range for {tensor.group(1)}, an "
            "integer tensor (an integer input such as token ids, which Keras 3's Embedding "
            "adds to and selects on, or a loop counter), and calibration records none for "
            "integer tensors: this TensorFlow cannot convert the model to int16x8, "
            "float_fallback=True or not; use mode='int8', 'dynamic' or 'float16'"
        )
    if _TENSOR_LIST.search(output):
        return TENSOR_LIST_HINT
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
