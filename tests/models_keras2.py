"""Small real Keras 2 (tf_keras) models for the TFLite tests, as TensorFlow Model
Optimization (TFMOT) builds them: a float model and QAT models, deterministic to build.

Importing ``tensorflow_model_optimization`` sets ``TF_USE_LEGACY_KERAS=1`` in
``os.environ`` (so that ``tf.keras`` means tf_keras); :func:`tfmot` puts the variable
back, so Keras 3 tests run later in the same xdist worker, and the processes they
start, see the environment they would have seen without us.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from .models import data

N_IN, N_OUT = 16, 4


def tfmot() -> Any:
    """``tensorflow_model_optimization``, imported without leaving ``TF_USE_LEGACY_KERAS``
    set (``ModuleNotFoundError`` if it is not installed)."""
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        with warnings.catch_warnings():  # its own distutils LooseVersion use
            warnings.simplefilter("ignore", DeprecationWarning)
            import tensorflow_model_optimization

        return tensorflow_model_optimization
    finally:
        if before is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = before


def _seed() -> None:
    import tf_keras

    tf_keras.utils.set_random_seed(1234)


def _loss() -> Any:
    import tf_keras

    # a loss object, not a string: its config is what Keras 3 cannot reload
    return tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def mlp(name: str = "k2_mlp") -> Any:
    """A float tf_keras MLP compiled with a loss object (untrained: weights are random)."""
    import tf_keras

    _seed()
    bias = tf_keras.initializers.RandomNormal(stddev=0.1, seed=1)  # zero biases are dropped
    inp = tf_keras.Input((N_IN,), name="features")
    # named layers: auto names count up per process, and names are in the cache key
    # 16 x 128 weights: over the 1024 elements below which "dynamic" leaves a weight float
    x = tf_keras.layers.Dense(128, activation="relu", bias_initializer=bias, name="hidden")(inp)
    out = tf_keras.layers.Dense(N_OUT, bias_initializer=bias, name="logits")(x)
    model = tf_keras.Model(inp, out, name=name)
    model.compile("adam", _loss())
    return model


def _fit(model: Any) -> Any:
    """One short epoch: enough for the fake-quant ranges to move off their initial values."""
    x = data((N_IN,), n=512)
    y = np.argmax(x[:, :N_OUT] @ np.random.default_rng(1).normal(size=(N_OUT, N_OUT)), axis=1)
    model.compile("adam", _loss())
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return model


def qat_mlp() -> Any:
    """``tfmot.quantization.keras.quantize_model`` of :func:`mlp`, trained one epoch."""
    quantize_model = tfmot().quantization.keras.quantize_model
    model = quantize_model(mlp("k2_qat_mlp"))
    _seed()
    return _fit(model)


def annotated_mlp() -> Any:
    """``quantize_annotate_model`` then ``quantize_apply`` of :func:`mlp`, trained one epoch."""
    q = tfmot().quantization.keras
    model = q.quantize_apply(q.quantize_annotate_model(mlp("k2_annotated_mlp")))
    _seed()
    return _fit(model)
