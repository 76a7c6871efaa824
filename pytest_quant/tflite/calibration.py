"""Representative data: normalized for the converter, and saved for its child process."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def keras_input_names(model: Any) -> list[str] | None:
    """A Keras model's input names in its own input order (what a list of arrays
    follows), or None when ``model`` is not a Keras model with named inputs."""
    inputs = getattr(model, "inputs", None)
    if not isinstance(inputs, (list, tuple)) or not inputs:
        return None
    names = [str(getattr(t, "name", "")).split(":")[0] for t in inputs]
    return names if all(names) and len(set(names)) == len(names) else None


def by_input_name(model: Any, data: Any) -> Any:
    """``data`` as a dict by input name when it is a list in a multi-input Keras
    ``model``'s order: the converted model's inputs come in another order (measured:
    Keras [image, meta], the interpreter [meta, image]), so a list cannot be positional."""
    names = keras_input_names(model)
    if names is None or len(names) < 2 or not isinstance(data, (list, tuple)):
        return data
    if len(data) != len(names):
        raise ValueError(
            f"representative_data has {len(data)} arrays; the model has {len(names)} "
            f"inputs {names}: give one array per input, in that order, or a dict by name"
        )
    return dict(zip(names, data, strict=True))


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


def _save_dataset(data: Any, path: Path) -> str:
    """Arrays for the child, as .npz (loaded with allow_pickle=False) plus a .json sidecar."""
    arrays = data if isinstance(data, dict) else {f"input_{i}": a for i, a in enumerate(data)}
    np.savez(path, **arrays)
    path.with_suffix(".json").write_text(json.dumps({"by_name": isinstance(data, dict)}))
    return str(path)
