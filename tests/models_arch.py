"""Small Keras 3 models of the architectures that broke conversion on real models:
token inputs (Embedding), recurrent layers (LSTM/GRU), ops without an int16x8 kernel
(HARD_SWISH, as in MobileNetV3), unnamed weights (ConvNeXt's LayerScale).

Every layer is named: Keras numbers unnamed layers per process (``dense``, ``dense_3``),
and the names are part of the architecture, hence of the conversion cache key."""

from __future__ import annotations

import numpy as np

VOCAB, SEQ = 50, 16
STEPS, FEATURES = 10, 4


def _seed() -> None:
    import keras

    keras.utils.set_random_seed(1234)


def text_classifier(width: int = 8):
    """Embedding on int32 token ids, Conv1D, global average pooling, Dense. ``width=32``
    gives tables over the 1024 weights below which dynamic mode keeps them float."""
    import keras

    _seed()
    inp = keras.Input((SEQ,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCAB, width, name="embedding")(inp)
    x = keras.layers.Conv1D(width, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    out = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inp, out, name="text_classifier")


def tokens(n: int, seed: int = 0, dtype: type = np.int64) -> np.ndarray:
    """Token id batches: int64, what numpy gives by default."""
    return np.random.default_rng(seed).integers(0, VOCAB, size=(n, SEQ)).astype(dtype)


def recurrent(kind: str = "lstm", *, unroll: bool = False):
    """LSTM or GRU over (STEPS, FEATURES) sequences, Dense head."""
    import keras

    _seed()
    layer = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[kind]
    inp = keras.Input((STEPS, FEATURES), name="sequence")
    x = layer(8, unroll=unroll, name=kind)(inp)
    out = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inp, out, name=f"{kind}{'_unrolled' if unroll else ''}")


def sequences(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, STEPS, FEATURES)).astype(np.float32)


def hard_swish_cnn():
    """Conv2D then HARD_SWISH (MobileNetV3's activation: no int16x8 kernel in TF 2.21)."""
    import keras

    _seed()
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    x = keras.layers.Activation("hard_swish", name="hard_swish")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inp, out, name="hard_swish_cnn")


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 32, 32, 3)).astype(np.float32)


def layer_scale_mlp(scale: float = 1.0):
    """A Dense layer and a LayerScale-like custom layer whose weight has no name: Keras
    numbers its variable path per process (``layer_scale/variable``, ``_1``, ...), as in
    keras.applications' ConvNeXt."""
    import keras

    class LayerScale(keras.layers.Layer):
        def build(self, shape):
            self.gamma = self.add_weight(shape=(shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.gamma

    _seed()
    inp = keras.Input((4,), name="x")
    x = keras.layers.Dense(3, name="dense")(inp)
    out = LayerScale(name="layer_scale")(x)
    model = keras.Model(inp, out, name="layer_scale_mlp")
    if scale != 1.0:
        model.get_layer("layer_scale").gamma.assign(np.full(3, scale, np.float32))
    return model


def attention_block(seq: int = 8, dim: int = 16):
    """A Transformer encoder block: multi-head self-attention (BATCH_MATMUL, SOFTMAX),
    residuals, LayerNormalization, a feed-forward pair, pooled to a Dense head."""
    import keras

    _seed()
    inp = keras.Input((seq, dim), name="sequence")
    att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="attention")(inp, inp)
    x = keras.layers.LayerNormalization(name="norm_1")(keras.layers.Add(name="res_1")([inp, att]))
    ff = keras.layers.Dense(32, activation="relu", name="ff_1")(x)
    ff = keras.layers.Dense(dim, name="ff_2")(ff)
    x = keras.layers.LayerNormalization(name="norm_2")(keras.layers.Add(name="res_2")([x, ff]))
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    out = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inp, out, name="attention_block")


def embeddings(n: int, seed: int = 0, seq: int = 8, dim: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, seq, dim)).astype(np.float32)


def squeeze_excite_cnn():
    """A MobileNetV3-style block: depthwise convolution, BatchNorm, HARD_SWISH, and a
    squeeze-and-excite gate (global pool, two Dense, hard sigmoid, Multiply)."""
    import keras

    _seed()
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("hard_swish", name="hard_swish")(x)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    s = keras.layers.Dense(4, activation="relu", name="reduce")(s)
    s = keras.layers.Dense(8, activation="hard_sigmoid", name="expand")(s)
    x = keras.layers.Multiply(name="excite")([x, s])
    x = keras.layers.Conv2D(8, 1, name="project")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inp, out, name="squeeze_excite_cnn")
