"""Child process of the TFLite layer: one conversion or one debugger run, then exit.

python -m pytest_quant.tflite._worker convert ENTRY SAVED REP.npz|- MODE OUT.tflite [SETTINGS]
python -m pytest_quant.tflite._worker blame SAVED_MODEL REP.npz DEBUG.npz OUT.json

ENTRY is the ``TFLiteConverter`` constructor the parent chose for the route:
``from_saved_model`` (SAVED is a SavedModel), ``from_concrete_functions`` (a SavedModel;
its serving signature is converted) or ``from_keras_model`` (a Keras 3 ``.keras`` file).
SETTINGS is JSON: ``{"options": {attribute: value}, "float_fallback": bool}`` (see
``convert(converter_options=..., float_fallback=...)``). A setting the converter cannot
take exits with status ``USAGE_EXIT`` and a ``USAGE_MARK`` line: the parent raises it as
a ``ValueError``, not as a converter failure.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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
    Path(out).write_bytes(conv.convert())


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

if __name__ == "__main__":
    try:
        COMMANDS[sys.argv[1]](*sys.argv[2:])
    except UsageError as exc:
        sys.stderr.write(f"{USAGE_MARK}{exc}\n")
        sys.exit(USAGE_EXIT)
