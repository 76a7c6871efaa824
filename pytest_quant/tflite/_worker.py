"""Child process of the TFLite layer: conversions and debugger runs, one at a time.

python -m pytest_quant.tflite._worker --serve REQUESTS ANSWERS
python -m pytest_quant.tflite._worker convert ENTRY SAVED REP.npz|- MODE OUT.tflite [SETTINGS]
python -m pytest_quant.tflite._worker blame SAVED_MODEL REP.npz DEBUG.npz OUT.json

``--serve`` is the child :mod:`._child` keeps for the session: it imports TensorFlow,
then runs the jobs it reads on the file descriptor REQUESTS (JSON lines: ``{"args":
[COMMAND, ...], "cwd": DIR}``, the arguments of the one-job form below) and answers each
on ANSWERS (``{"status": 0 | 1 | USAGE_EXIT, "rss": bytes, "retire": bool}``), a pipe
that nothing TensorFlow prints can reach (stdout and stderr are files the parent reads
per job). It exits when REQUESTS closes or its parent dies. The one-job form runs one
command and exits with the status the answer would carry.

ENTRY is the ``TFLiteConverter`` constructor the parent chose for the route:
``from_saved_model`` (SAVED is a SavedModel), ``from_concrete_functions`` (a SavedModel;
its serving signature is converted) or ``from_keras_model`` (a Keras 3 ``.keras`` file).
SETTINGS is JSON: ``{"options": {attribute: value}, "float_fallback": bool}``, plus
``"keep_float": [tensor names]`` for a selective int8 conversion (see
``convert(converter_options=..., float_fallback=..., keep_float=...)``). A setting the
converter cannot take exits (or answers) with status ``USAGE_EXIT`` and a ``USAGE_MARK``
line on stderr: the parent raises it as a ``ValueError``, not as a converter failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import difflib
import json
import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .converter import CALIBRATED_MODES, REFERENCE_MODE, USAGE_EXIT, USAGE_MARK


class UsageError(ValueError):
    """A converter setting the converter cannot take: reported to the parent as such."""


def _dataset(path: str, dtypes: Mapping[str, Any] | None = None) -> Any:
    """The representative dataset at ``path``, each array cast to the dtype of the input
    it feeds (``dtypes``: input name -> numpy dtype, from the model's signature)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    by_name = json.loads((Path(path).with_suffix(".json")).read_text())["by_name"]
    arrays = _cast_to_inputs(arrays, by_name, dict(dtypes or {}))
    n = next(iter(arrays.values())).shape[0]

    def dataset() -> Any:  # one sample at a time, as the converter expects
        for i in range(n):
            if by_name:
                yield {k: v[i : i + 1] for k, v in arrays.items()}
            else:
                yield [arrays[f"input_{j}"][i : i + 1] for j in range(len(arrays))]

    return dataset


def _cast_to_inputs(
    arrays: dict[str, np.ndarray], by_name: bool, dtypes: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Cast each array to its input's dtype: by name, or, for arrays in input order, to
    the one dtype of their kind (integer or float) among the inputs. Only lossless casts:
    a value that would change is a ``ValueError`` naming the input."""
    kinds: dict[str, set[np.dtype]] = {"i": set(), "f": set()}
    for dt in dtypes.values():
        kinds.setdefault(np.dtype(dt).kind.replace("u", "i"), set()).add(np.dtype(dt))
    same = set(map(np.dtype, dtypes.values()))
    out = {}
    for name, arr in arrays.items():
        target: np.dtype | None = None
        if by_name and name in dtypes:
            target = np.dtype(dtypes[name])
        elif len(same) == 1:
            target = next(iter(same))
        elif len(kinds.get(arr.dtype.kind.replace("u", "i"), ())) == 1:
            target = next(iter(kinds[arr.dtype.kind.replace("u", "i")]))
        out[name] = arr if target is None else _lossless(arr, target, name)
    return out


def _lossless(arr: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    if arr.dtype == dtype or dtype.kind not in "iuf":
        return arr
    cast = arr.astype(dtype)
    if dtype.kind in "iu" and not np.array_equal(cast, arr):
        raise ValueError(
            f"representative data {name!r} cannot feed the model's {dtype} input without "
            f"changing values (non-integral or out of range): pass {dtype} values"
        )
    return cast


def _input_dtypes(tf: Any, entry: str, saved: str, model: Any = None) -> dict[str, Any]:
    """Input name -> numpy dtype of the model the converter sees (empty when unknown:
    the arrays then go as they are)."""
    if model is not None:  # a Keras 3 model loaded for from_keras_model
        return {t.name: np.dtype(str(t.dtype)) for t in model.inputs}
    try:  # the serving signature, read from saved_model.pb without loading the graph
        from tensorflow.python.tools import saved_model_utils

        meta = saved_model_utils.get_meta_graph_def(saved, "serve")
        signature = meta.signature_def["serving_default"]
    except (ImportError, KeyError, RuntimeError, OSError):
        return {}
    return {
        name: np.dtype(tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
        for name, info in signature.inputs.items()
    }


def _converter(tf: Any, entry: str, saved: str) -> tuple[Any, Any]:
    """The converter for ``entry``, and the Keras model it was made from (if one)."""
    if entry == "from_keras_model":
        import keras

        # compile=False: the loss and optimizer do not matter to conversion, and a loss
        # object's config need not reload
        model = keras.models.load_model(saved, compile=False)
        return tf.lite.TFLiteConverter.from_keras_model(model), model
    if entry == "from_concrete_functions":
        loaded = tf.saved_model.load(saved)
        conv = tf.lite.TFLiteConverter.from_concrete_functions(
            [loaded.signatures["serving_default"]], loaded
        )
        return conv, None
    if entry == "from_saved_model":
        return tf.lite.TFLiteConverter.from_saved_model(saved), None
    raise ValueError(f"unknown converter entry {entry!r}")


def _by_name(tf: Any, attribute: str, value: Any) -> Any:
    """A converter setting's value from its JSON form: op sets, dtypes and optimizations
    are given by name."""
    enums = {
        "supported_ops": ("op set", tf.lite.OpsSet),
        "optimizations": ("optimization", tf.lite.Optimize),
    }
    if attribute in enums:
        what, enum = enums[attribute]
        if not isinstance(value, list):
            raise UsageError(f"{attribute} takes a list of {what} names, got {value!r}")
        names = [m.name for m in enum]
        unknown = [v for v in value if v not in names]
        if unknown:
            raise UsageError(f"unknown {what} {unknown[0]!r} in {attribute}: use {names}")
        return [enum[v] for v in value]
    if attribute in ("supported_types", "inference_input_type", "inference_output_type"):
        try:
            if attribute == "supported_types":
                return [tf.dtypes.as_dtype(v) for v in value]
            return tf.dtypes.as_dtype(value)
        except TypeError as exc:
            raise UsageError(f"{attribute}: {exc}; use dtype names such as 'float16'") from None
    return value


def apply_options(tf: Any, conv: Any, options: Mapping[str, Any]) -> None:
    """Set ``options`` (dotted attribute name -> JSON value) on the converter ``conv``;
    an attribute it does not have is a :class:`UsageError` naming it."""
    for name, value in options.items():
        *path, attribute = name.split(".")
        owner = conv
        for i, part in enumerate([*path, attribute]):
            if not hasattr(owner, part):
                where = ".".join([type(conv).__name__, *path[:i]])
                near = difflib.get_close_matches(part, dir(owner), n=3)
                also = f" (close: {', '.join(near)})" if near else ""
                raise UsageError(
                    f"converter_options[{name!r}]: {where} has no attribute {part!r}{also}"
                )
            if i < len(path):
                owner = getattr(owner, part)
        setattr(owner, attribute, _by_name(tf, attribute, value))


def convert(
    entry: str, saved: str, rep_path: str, mode: str, out: str, settings: str = "{}"
) -> None:
    import tensorflow as tf

    config = json.loads(settings)
    conv, model = _converter(tf, entry, saved)
    if mode != REFERENCE_MODE:  # the float reference: no optimization at all
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    # Only the calibrated modes get the data: given to "dynamic" it makes a full-integer
    # model with float I/O instead of a weights-only one.
    calibrated = rep_path != "-" and mode in CALIBRATED_MODES
    if calibrated:
        conv.representative_dataset = _dataset(rep_path, _input_dtypes(tf, entry, saved, model))
    if mode == "int8":
        if calibrated:  # (QAT: this setting would demand calibration data again)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    elif mode == "float16":
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "int16x8":
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        if config.get("float_fallback"):  # ops without a 16x8 kernel stay float
            conv.target_spec.supported_ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    apply_options(tf, conv, config.get("options", {}))
    if config.get("keep_float"):
        key = _calibration_key(entry, saved, rep_path, config.get("options", {}))
        Path(out).write_bytes(_selective(tf, conv, config["keep_float"], key))
        return
    Path(out).write_bytes(conv.convert())


#: Calibrated models of this (kept) child, by what they were made of: the selective
#: conversions of one search differ only in what they keep float, so each re-quantizes
#: one calibration instead of calibrating again (the last few are kept).
_CALIBRATED: dict[tuple[Any, ...], bytes] = {}
_CALIBRATED_KEEP = 4


def _calibration_key(
    entry: str, saved: str, rep_path: str, options: Mapping[str, Any]
) -> tuple[Any, ...]:
    """What a calibration depends on: the model files (path, size, modification time:
    a parent's exports are fresh directories, a user's SavedModel may change), the
    representative data's bytes and the converter options."""
    import hashlib

    root = Path(saved)
    files = sorted(root.rglob("*")) if root.is_dir() else [root]
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file())
    data = hashlib.sha256(Path(rep_path).read_bytes()).hexdigest()
    return (entry, stamp, data, json.dumps(dict(options), sort_keys=True))


def _op_outputs(content: bytes) -> list[str]:
    """The names of the tensors the model's ops write (what ``denylisted_nodes`` takes),
    read with the project's own flatbuffer reader (TF's ``flatbuffer_utils`` object API
    gave the same names in 5.5 s instead of 0.18 s on a 111 MB ResNet50)."""
    from .flatbuffer import read_ops

    return [t.name for op in read_ops(content) for t in op.outputs]


def _check_keep_float(names: list[str], known: list[str]) -> None:
    """A name that is no op's output would be ignored by the quantizer: an error that
    lists what is close to it."""
    present = set(known)
    for name in names:
        if name in present:
            continue
        near = [k for k in known if name in k][:3] or difflib.get_close_matches(
            name, known, n=3, cutoff=0.4
        )
        also = f"; close: {', '.join(repr(n) for n in near)}" if near else ""
        raise UsageError(
            f"keep_float: {name!r} is not the output tensor of an op of this model{also}. "
            "Use the tensor names of the blame table or of suggest_float_layers"
        )


def _selective(tf: Any, conv: Any, keep_float: list[str], key: tuple[Any, ...]) -> bytes:
    """int8 with the ops writing ``keep_float`` kept float: TF's selective quantization,
    as ``QuantizationDebugger.get_nondebug_quantized_model`` does it for
    ``QuantizationDebugOptions(denylisted_nodes=...)``: calibrate only, then the MLIR
    quantizer with a denylist, given the I/O types and per-channel settings a plain
    conversion passes it (measured on TF 2.21: with nothing denylisted, the same ops and
    weights as a plain conversion; only the conversion metadata differs)."""
    from tensorflow.lite.python import convert as tf_convert
    from tensorflow.lite.python import lite as tf_lite

    if not conv.experimental_new_quantizer:
        raise UsageError(
            "keep_float needs the MLIR quantizer: drop experimental_new_quantizer=False "
            "from converter_options"
        )
    calibrated = _CALIBRATED.get(key)
    if calibrated is None:
        conv._experimental_calibrate_only = True
        calibrated = conv.convert()
        while len(_CALIBRATED) >= _CALIBRATED_KEEP:
            del _CALIBRATED[next(iter(_CALIBRATED))]
        _CALIBRATED[key] = calibrated
    _check_keep_float(keep_float, _op_outputs(calibrated))
    extra = {}
    dense = getattr(conv, "_experimental_disable_per_channel_quantization_for_dense_layers", None)
    if dense is not None:  # TF >= 2.18; 2.16's quantizer has no such setting
        extra["disable_per_channel_for_dense_layers"] = dense
    content = tf_convert.mlir_quantize(
        calibrated,
        disable_per_channel=conv._experimental_disable_per_channel,
        input_data_type=conv.inference_input_type or tf.float32,
        output_data_type=conv.inference_output_type or tf.float32,
        enable_variable_quantization=conv._experimental_variable_quantization,
        denylisted_nodes=list(keep_float),
        **extra,
    )
    return tf_lite._deduplicate_readonly_buffers(content)


def blame(saved_model: str, rep_path: str, debug_path: str, out: str) -> None:
    """Per-layer error of the int8 model with TF's QuantizationDebugger: each quantized
    layer's output against the float op run on the same (dequantized) inputs."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    dtypes = _input_dtypes(tf, "from_saved_model", saved_model)
    conv.representative_dataset = _dataset(rep_path, dtypes)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=conv, debug_dataset=_dataset(debug_path, dtypes)
    )
    debugger.run()
    interp = debugger._quant_interpreter  # the debug model: NumericVerify(q, float) per layer
    rows = []
    for detail in debugger._get_numeric_verify_tensor_details():
        name = detail["name"]
        stats = {k: float(v) for k, v in debugger.layer_statistics[name].items()}
        op = interp._get_op_details(debugger._defining_op[detail["index"]])
        quantized = interp._get_tensor_details(op["inputs"][0], 0)  # the layer's own tensor
        quant = quantized["quantization_parameters"]
        scale = float(quant["scales"][0]) if len(quant["scales"]) else math.nan
        rows.append({"layer": quantized["name"], "scale": scale, **stats})
    Path(out).write_text(json.dumps(rows))


COMMANDS: dict[str, Callable[..., None]] = {"convert": convert, "blame": blame}


def run(args: list[str]) -> int:
    """Run one command (``args``: its name, then its arguments); its status: 0, 1 (an
    error, its traceback on stderr) or ``USAGE_EXIT`` (a ``USAGE_MARK`` line on stderr)."""
    try:
        COMMANDS[args[0]](*args[1:])
    except UsageError as exc:
        sys.stderr.write(f"{USAGE_MARK}{exc}\n")
        return USAGE_EXIT
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def serve(requests: int, answers: int) -> NoReturn:
    """Run the jobs read from the file descriptor ``requests`` until it closes, answering
    each on ``answers``; see the module docstring for the protocol."""
    _exit_with_parent()
    with os.fdopen(requests, "rb") as jobs:
        for line in iter(jobs.readline, b""):
            job = json.loads(line)
            with contextlib.suppress(OSError):  # a relative path means the parent's cwd
                os.chdir(job["cwd"])
            retire = False
            try:
                status = run(job["args"])
            except MemoryError:  # the process may be in no state for the next job
                traceback.print_exc()
                status, retire = 1, True
            # no gc.collect() here: measured (TF 2.21), it costs 0.2 s a job and the
            # resident memory stays flat without it (613 MB after 1 job, 643 after 81)
            _flush()
            answer = {"status": status, "rss": _rss(), "retire": retire}
            os.write(answers, (json.dumps(answer) + "\n").encode())
    _flush()
    os._exit(0)  # no interpreter teardown: TensorFlow's takes seconds and prints


def _flush() -> None:
    """Flush Python's and the C library's buffers, so a job's output is in its files
    before its answer."""
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(OSError, AttributeError):  # no C library to ask
        ctypes.CDLL(None).fflush(None)


def _rss() -> int:
    """This process's resident memory in bytes (0 when the platform does not say)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _exit_with_parent() -> None:
    """Exit as soon as the parent dies, even during a job: no orphan converter."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="pytest-quant-parent-watch", daemon=True).start()


def main(argv: list[str]) -> None:
    if argv[:1] == ["--serve"]:
        import tensorflow  # noqa: F401  (once, before the first job: the cost we keep)

        serve(int(argv[1]), int(argv[2]))
    sys.exit(run(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
