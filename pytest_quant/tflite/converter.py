"""Convert a model to TFLite in any post-training mode, in a child process, with a cache.

The converter runs in a child process because it can abort the whole process: TF 2.16.2
with Keras 3 dies with ``LLVM ERROR: Failed to infer result type(s)`` converting a small
Conv2D model to int8. In the child, such a crash becomes a :class:`ConversionError`
naming the TensorFlow version and the crash, and the test session goes on. The child is
kept for the session (:mod:`._child`): TensorFlow is imported once, not per conversion,
and a child that crashes is replaced for the next conversion.

Keras 3 and Keras 2 (``tf_keras``, what TensorFlow Model Optimization's QAT builds) models
both work: the parent saves the model with the Keras that built it (a SavedModel, or a
``.keras`` file for Keras 3 ``via="keras"``), and the child never reloads it with another.

The disk cache is :mod:`.cache`, the per-process Keras export :mod:`.export`, failure
messages and hints :mod:`.failures`: this module routes a model and runs the child.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from . import _child
from ._deps import HINT
from .cache import _cached, cache_key
from .calibration import _representative, _save_dataset, by_input_name
from .export import _saved
from .failures import _KEPT_OUTPUT, ConversionError, _deterministic, _failure, failure_hint
from .fingerprint import keras_flavour, model_fingerprint
from .flatbuffer import check_tflite, is_tflite_source
from .modes import CALIBRATED_MODES, MODES, REFERENCE_MODE
from .options import _settings

#: The module the child process runs (``python -m``; see :mod:`._child`).
WORKER = "pytest_quant.tflite._worker"
#: The child's exit status for a converter setting it cannot apply (a usage error, raised
#: as ``ValueError`` and never cached); the message follows :data:`USAGE_MARK` on stderr.
USAGE_EXIT = 3
USAGE_MARK = "pytest-quant usage error: "


def tf_version() -> str:
    """The installed TensorFlow distribution's version, without importing TensorFlow."""
    for dist in ("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-intel"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    raise ModuleNotFoundError(f"TensorFlow is not installed. {HINT}")


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
    keep_float: Sequence[str] | None = None,
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
    :param keep_float: ``mode="int8"`` with ``representative_data`` only: the ops to keep
        in float, named by the tensors they write (as the blame table and
        :func:`~pytest_quant.tflite.suggest_float_layers` show them). TF's selective
        quantization: the model is calibrated, then quantized by the MLIR quantizer with
        these tensors as ``denylisted_nodes`` (what ``QuantizationDebugOptions(
        denylisted_nodes=...)`` does); each kept op reads through a DEQUANTIZE and writes
        through a QUANTIZE, and the model's int8 inputs and outputs stay int8. Part of the
        cache key; ``None`` or ``[]`` is the plain int8 model. A name that is no op's
        output is a ``ValueError`` listing close ones.
    :raises ConversionError: the converter failed or crashed (its message, the route and
        the TF version are in the error, with a hint when the cause is plain).
    :raises ValueError: an unknown ``mode`` or ``via``, bad representative data,
        ``"int16x8"`` without it (the converter would return a float model), a
        ``converter_options`` attribute the converter does not have, or a ``mode`` or
        ``representative_data`` (or ``keep_float``) given with an already-converted
        ``.tflite`` (it is returned as it is: neither would apply).
    :raises MalformedModelError: ``source`` is bytes or a ``.tflite`` path that is not a
        TFLite model (a ``ValueError`` too).

    Example::

        content = convert(keras_model, x_train[:200], mode="int8", cache_dir=".cache")
        reference = convert(keras_model, mode="float", cache_dir=".cache")
        lstm = convert(
            lstm_model, mode="dynamic",
            converter_options={"_experimental_default_to_single_batch_in_tensor_list_ops": True},
        )
        mobilenet_v3 = convert(model, x_calib, mode="int16x8", float_fallback=True)
        selective = convert(model, x_calib, keep_float=found.keep_float)  # int8
    """
    __tracebackhide__ = True
    if mode is not None and mode not in (*MODES, REFERENCE_MODE):
        raise ValueError(f"mode={mode!r}: use one of {', '.join((*MODES, REFERENCE_MODE))}")
    if via not in ("saved_model", "keras"):
        raise ValueError(f"via={via!r}: use 'saved_model' or 'keras'")
    if keep_float and is_tflite_source(source):
        raise ValueError(
            "keep_float cannot apply to an already-converted .tflite: pass the float model "
            "(Keras or SavedModel) and its representative_data"
        )
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
    settings = _settings(converter_options, float_fallback, mode, keep_float)
    if mode in CALIBRATED_MODES:  # a list follows a Keras model's own input order
        representative_data = by_input_name(source, representative_data)
    rep = _representative(representative_data) if mode in CALIBRATED_MODES else None
    if mode == "int16x8" and rep is None:
        raise ValueError(
            "mode='int16x8' needs representative_data: the int16 activation ranges come "
            "from it (without it the converter returns a float model)"
        )
    if "keep_float" in settings and rep is None:
        raise ValueError(
            "keep_float needs representative_data: the ops kept in float are chosen after "
            "calibrating the model on it (a QAT model's int8 ops come from its fake-quant "
            "nodes instead)"
        )
    route = _route(source, via, mode, rep is not None)
    # a SavedModel directory without a cache needs no fingerprint (it is not exported)
    need_fingerprint = cache_dir is not None or not isinstance(source, Path)
    fingerprint = model_fingerprint(source) if need_fingerprint else ""
    job = _Job(source, rep, mode, tf_version(), timeout, route, settings, fingerprint)
    if cache_dir is None:
        return _convert_in_child(job)
    return _cached(job, Path(cache_dir), _convert_in_child)


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


def _describe(source: Any) -> str:
    if isinstance(source, Path):
        return f"SavedModel {source}"
    return f"Keras model {getattr(source, 'name', type(source).__name__)!r}"


def _child_env() -> dict[str, str]:
    """The child's environment: the parent's, at the time of the job (a child started
    with another is not reused), with TensorFlow's C++ info and warning logs off."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _start_child() -> None:
    """Start the child now if none waits, so that its TensorFlow import overlaps with
    the export of the model."""
    _child.start(WORKER, _child_env())


def _run_child(
    args: list[str],
    action: str,
    version: str,
    timeout: float,
    hint: Callable[[str], str] | None = None,
) -> None:
    __tracebackhide__ = True
    try:
        done = _child.run(WORKER, args, _child_env(), timeout)
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


def _convert_in_child(job: _Job) -> bytes:
    __tracebackhide__ = True
    route = job.route
    _start_child()
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
        if job.settings.get("keep_float"):
            action += f" keeping {len(job.settings['keep_float'])} op(s) in float (keep_float)"
        settings = json.dumps(job.settings)
        args = ["convert", route.entry, str(saved), rep_path, job.mode, str(out), settings]

        def hint(output: str) -> str:
            return failure_hint(
                output, mode=job.mode, calibrated=job.rep is not None, entry=route.entry
            )

        _run_child(args, action, job.version, job.timeout, hint)
        return check_tflite(out.read_bytes(), "the converter's output")
