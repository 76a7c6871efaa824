"""Small real Keras models for the TFLite tests, deterministic to build."""

from __future__ import annotations

import numpy as np


def _seed() -> None:
    import keras

    keras.utils.set_random_seed(1234)


def mlp(n_in: int = 64, n_out: int = 10):
    import keras

    _seed()
    bias = keras.initializers.RandomNormal(stddev=0.1)  # zero biases would be dropped
    inp = keras.Input((n_in,), name="pixels")
    x = keras.layers.Dense(32, activation="relu", bias_initializer=bias)(inp)
    x = keras.layers.Dense(16, activation="relu", bias_initializer=bias)(x)
    out = keras.layers.Dense(n_out, name="logits", bias_initializer=bias)(x)
    return keras.Model(inp, out, name="mlp")


def cnn():
    import keras

    _seed()
    inp = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", padding="same")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Activation("hard_swish")(x)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inp, out, name="cnn")


def two_in_two_out():
    import keras

    _seed()
    a = keras.Input((4,), name="a")
    b = keras.Input((6,), name="b")
    h = keras.layers.Concatenate()([keras.layers.Dense(8)(a), keras.layers.Dense(8)(b)])
    h = keras.layers.Dense(8, activation="relu")(h)
    y1 = keras.layers.Dense(3, name="head_sigmoid", activation="sigmoid")(h)
    y2 = keras.layers.Dense(2, name="head_tanh", activation="tanh")(h)
    return keras.Model({"a": a, "b": b}, {"head_sigmoid": y1, "head_tanh": y2}, name="two_heads")


def data(shape, n=256, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)
