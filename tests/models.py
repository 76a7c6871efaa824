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
    # named as in a fresh process: auto-numbered names depend on what the process built
    # before, and the cache key holds them (pytester runs in this process rebuild it)
    x = keras.layers.Dense(32, activation="relu", bias_initializer=bias, name="dense")(inp)
    x = keras.layers.Dense(16, activation="relu", bias_initializer=bias, name="dense_1")(x)
    out = keras.layers.Dense(n_out, name="logits", bias_initializer=bias)(x)
    return keras.Model(inp, out, name="mlp")


def cnn():
    import keras

    _seed()
    inp = keras.Input((8, 8, 1), name="image")
    # every layer named as in a fresh process (see mlp)
    x = keras.layers.Conv2D(8, 3, activation="relu", padding="same", name="conv2d")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise_conv2d")(x)
    x = keras.layers.Activation("hard_swish", name="activation")(x)
    x = keras.layers.AveragePooling2D(2, name="average_pooling2d")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    out = keras.layers.Dense(10, activation="softmax", name="dense")(x)
    return keras.Model(inp, out, name="cnn")


def two_in_two_out():
    import keras

    _seed()
    a = keras.Input((4,), name="a")
    b = keras.Input((6,), name="b")
    dense_a, dense_b = keras.layers.Dense(8, name="dense"), keras.layers.Dense(8, name="dense_1")
    h = keras.layers.Concatenate(name="concatenate")([dense_a(a), dense_b(b)])
    h = keras.layers.Dense(8, activation="relu", name="dense_2")(h)
    y1 = keras.layers.Dense(3, name="head_sigmoid", activation="sigmoid")(h)
    y2 = keras.layers.Dense(2, name="head_tanh", activation="tanh")(h)
    return keras.Model({"a": a, "b": b}, {"head_sigmoid": y1, "head_tanh": y2}, name="two_heads")


def data(shape, n=256, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def qat_layers():
    """Keras layers for manual QAT with TF's FakeQuantWithMinMaxVars: ``FakeQuant(lo, hi)``
    on a tensor, and ``QDense(units, lo, hi, relu=False)`` with fake-quant weights
    (symmetric, narrow range, per tensor) and a fake-quant output range."""
    import keras
    import tensorflow as tf

    class FakeQuant(keras.layers.Layer):
        def __init__(self, lo, hi, **kw):
            super().__init__(**kw)
            self.lo, self.hi = lo, hi

        def call(self, x):
            return tf.quantization.fake_quant_with_min_max_vars(x, self.lo, self.hi)

    class QDense(keras.layers.Layer):
        def __init__(self, units, lo, hi, relu=False, **kw):
            super().__init__(**kw)
            self.units, self.lo, self.hi, self.relu = units, lo, hi, relu

        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], self.units), initializer="glorot_uniform")
            self.b = self.add_weight(shape=(self.units,), initializer="zeros")

        def call(self, x):
            m = tf.reduce_max(tf.abs(self.w))
            wq = tf.quantization.fake_quant_with_min_max_vars(self.w, -m, m, narrow_range=True)
            y = tf.matmul(x, wq) + self.b
            y = tf.nn.relu(y) if self.relu else y
            return tf.quantization.fake_quant_with_min_max_vars(y, self.lo, self.hi)

    return FakeQuant, QDense


def qat_mlp():
    """A small MLP trained with fake-quant nodes on inputs, weights and activations."""
    import keras

    FakeQuant, QDense = qat_layers()
    _seed()
    inp = keras.Input((16,), name="features")
    x = FakeQuant(-4.0, 4.0, name="fake_quant")(inp)
    x = QDense(32, 0.0, 6.0, relu=True, name="q_dense")(x)
    out = QDense(4, -8.0, 8.0, name="q_dense_1")(x)
    model = keras.Model(inp, out, name="qat_mlp")
    x_train = data((16,), n=2000)
    y_train = x_train[:, :4] @ np.random.default_rng(1).normal(size=(4, 4)).astype(np.float32)
    model.compile("adam", "mse")
    model.fit(x_train, y_train, epochs=3, verbose=0)
    return model


#: how much wider one unit of ``outlier_mlp``'s second layer ranges than the others
OUTLIER_FACTOR = 2000.0


def outlier_mlp(n_in: int = 64, factor: float = OUTLIER_FACTOR):
    """A 4-layer MLP that int8 quantizes badly in one place, by construction: unit 0 of
    ``dense_2`` ranges ``factor`` times wider than its 31 siblings, and ``dense_3`` reads
    it back divided by ``factor`` (the float function is an ordinary MLP). One int8 scale
    for the whole ``dense_2`` output rounds the 31 ordinary units to a few steps, so the
    information is lost in the tensor between ``dense_2`` and ``dense_3``: keeping either
    op float alone does not help (a float op still reads or writes that int8 tensor);
    keeping both does. It takes the inputs of :func:`mlp`. Every layer is named (the
    names are in the cache key)."""
    import keras

    _seed()
    bias = keras.initializers.RandomNormal(stddev=0.1)
    inp = keras.Input((n_in,), name="features")
    x = inp
    for name in ("dense_1", "dense_2", "dense_3"):
        x = keras.layers.Dense(32, activation="relu", bias_initializer=bias, name=name)(x)
    out = keras.layers.Dense(8, bias_initializer=bias, name="logits")(x)
    model = keras.Model(inp, out, name="outlier_mlp")
    w2, b2 = model.get_layer("dense_2").get_weights()
    w2[:, 0] *= factor
    b2[0] = abs(b2[0]) * factor  # positive: the unit stays active after the relu
    model.get_layer("dense_2").set_weights([w2, b2])
    w3, b3 = model.get_layer("dense_3").get_weights()
    w3[0, :] /= factor
    model.get_layer("dense_3").set_weights([w3, b3])
    return model
