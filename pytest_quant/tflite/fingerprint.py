"""What a model is: which Keras built it, and the sha256 of its content."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


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
    # identical models got different keys. Layer names stay in, through to_json (the
    # converted model's tensors carry them); the compile config (optimizer, loss,
    # metrics) goes: the converted model has none of it, and the optimizer's name is
    # numbered per process too (``adam``, ``adam_1``).
    h.update(f"{keras_flavour(model)}|".encode())
    spec = json.loads(model.to_json())
    spec.pop("compile_config", None)
    h.update(json.dumps(spec, sort_keys=True).encode())
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
    which carries the layer names, without the compile config) and weights in model order
    (shape, dtype, bytes; not their auto-numbered variable paths), or the files of a
    SavedModel directory.

    Example::

        assert model_fingerprint(build()) == model_fingerprint(build())
    """
    h = hashlib.sha256()
    if isinstance(source, Path):
        _dir_fingerprint(source, h)
    else:
        _keras_fingerprint(source, h)
    return h.hexdigest()
