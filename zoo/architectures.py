"""The zoo's architectures: Keras 3 models with random weights, and their random inputs.

Everything is offline: ``keras.applications`` only with ``weights=None``, small inputs and
a 10-class top; the hand-built models stand for the other kinds of network a team ships
(recurrent, attention, token inputs, several inputs and outputs, segmentation). Weights
are random (seeded, never trained): errors measure the converter and the kernels on these
weights, not the accuracy of a trained model.

Example::

    spec = ARCHITECTURES["mobilenet_v2"]
    model = spec.build()
    x_calib, x_test = spec.inputs(CALIB_SAMPLES, seed=0), spec.inputs(TEST_SAMPLES, seed=1)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

SEED = 1234
#: Calibration samples (int8, int16x8) and test samples (RMS, blame, stability).
CALIB_SAMPLES = 32
TEST_SAMPLES = 16
CLASSES = 10
IMAGE = 64  # pixels: the smallest size every keras.applications model here accepts well
STEPS, FEATURES = 16, 8  # recurrent and attention sequences
VOCAB, TOKENS = 1000, 32  # the text classifier


@dataclass(frozen=True)
class Architecture:
    """A zoo entry: how to build the model and what its inputs look like.

    :param kind: what it stands for in the zoo (depthwise/SE, residual, recurrent, ...).
    :param inputs_of: ``(n, seed) -> the model's input batch`` (an array or a list).
    """

    name: str
    kind: str
    builder: Callable[[], Any]
    inputs_of: Callable[[int, int], Any]

    def build(self) -> Any:
        import keras

        # fresh layer-name counters: the same architecture gets the same names, hence the
        # same conversion-cache key, in every worker and whatever was built before it
        keras.backend.clear_session()
        keras.utils.set_random_seed(SEED)
        model = self.builder()
        _estimate_batchnorm(model, self.inputs(CALIB_SAMPLES, seed=2))
        return model

    def inputs(self, n: int, *, seed: int) -> Any:
        return self.inputs_of(n, seed)


def _normal(*shape: int) -> Callable[[int, int], np.ndarray]:
    def make(n: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)

    return make


def _tokens(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(n, TOKENS), dtype=np.int32)


def _two_inputs(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(n, 32, 32, 3)).astype(np.float32),
        rng.normal(size=(n, 8)).astype(np.float32),
    ]


def _app(factory: str, **kwargs: Any) -> Callable[[], Any]:
    def build() -> Any:
        import keras

        return getattr(keras.applications, factory)(
            input_shape=(IMAGE, IMAGE, 3),
            weights=None,
            include_top=True,
            classes=CLASSES,
            **kwargs,
        )

    return build


def _recurrent(layer: str, unroll: bool) -> Callable[[], Any]:
    def build() -> Any:
        import keras

        inp = keras.Input((STEPS, FEATURES), name="sequence")
        x = getattr(keras.layers, layer)(32, unroll=unroll)(inp)
        out = keras.layers.Dense(CLASSES, name="logits")(x)
        return keras.Model(inp, out, name=f"{layer.lower()}{'_unrolled' if unroll else ''}")

    return build


def _transformer() -> Any:
    import keras

    inp = keras.Input((STEPS, 32), name="embeddings")
    att = keras.layers.MultiHeadAttention(num_heads=4, key_dim=8)(inp, inp)
    x = keras.layers.LayerNormalization()(inp + att)
    ffn = keras.layers.Dense(64, activation="relu")(x)
    ffn = keras.layers.Dense(32)(ffn)
    x = keras.layers.LayerNormalization()(x + ffn)
    x = keras.layers.GlobalAveragePooling1D()(x)
    out = keras.layers.Dense(CLASSES, name="logits")(x)
    return keras.Model(inp, out, name="transformer_encoder")


def _text_classifier() -> Any:
    import keras

    inp = keras.Input((TOKENS,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCAB, 16)(inp)
    x = keras.layers.Conv1D(32, 3, activation="relu")(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    out = keras.layers.Dense(CLASSES, name="logits")(x)
    return keras.Model(inp, out, name="text_classifier")


def _two_in_two_out() -> Any:
    import keras

    image = keras.Input((32, 32, 3), name="image")
    meta = keras.Input((8,), name="meta")
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(image)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    m = keras.layers.Dense(16, activation="relu")(meta)
    h = keras.layers.Concatenate()([x, m])
    h = keras.layers.Dense(32, activation="relu")(h)
    label = keras.layers.Dense(CLASSES, activation="softmax", name="label")(h)
    score = keras.layers.Dense(1, name="score")(h)
    return keras.Model([image, meta], [label, score], name="two_in_two_out")


def _unet() -> Any:
    import keras

    L = keras.layers

    def block(x: Any, filters: int) -> Any:
        x = L.Conv2D(filters, 3, padding="same", activation="relu")(x)
        return L.Conv2D(filters, 3, padding="same", activation="relu")(x)

    inp = keras.Input((IMAGE, IMAGE, 3), name="image")
    e1 = block(inp, 8)
    e2 = block(L.MaxPooling2D()(e1), 16)
    bottom = block(L.MaxPooling2D()(e2), 32)
    d2 = block(L.Concatenate()([L.Conv2DTranspose(16, 2, strides=2)(bottom), e2]), 16)
    d1 = block(L.Concatenate()([L.UpSampling2D()(d2), e1]), 8)
    out = L.Conv2D(1, 1, activation="sigmoid", name="mask")(d1)
    return keras.Model(inp, out, name="unet")


def _bn_dropout_cnn() -> Any:
    import keras

    L = keras.layers
    inp = keras.Input((32, 32, 3), name="image")
    x = inp
    for filters in (16, 32):
        x = L.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
        x = L.MaxPooling2D()(x)
        x = L.Dropout(0.25)(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(CLASSES, name="logits")(x)
    return keras.Model(inp, out, name="bn_dropout_cnn")


def _estimate_batchnorm(model: Any, x: Any) -> None:
    """Give every BatchNormalization the moving statistics of its inputs on ``x``, as a
    trained model has. Fresh layers have mean 0 and variance 1 (the identity): with
    random weights, activations then shrink layer after layer and vanish (MobileNetV2's
    logits come out near 1e-11), and every error would be measured on nothing."""
    import keras

    def walk(layer: Any) -> Any:
        for sub in getattr(layer, "layers", []):
            yield sub
            yield from walk(sub)

    norms = [layer for layer in walk(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0  # one training-mode pass sets the moving statistics
    try:
        model(x, training=True)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum


_IMG = _normal(IMAGE, IMAGE, 3)

_ALL = [
    Architecture("mobilenet_v2", "depthwise", _app("MobileNetV2", alpha=0.35), _IMG),
    Architecture("mobilenet_v3_small", "depthwise+SE", _app("MobileNetV3Small"), _IMG),
    Architecture(
        "mobilenet_v3_small_min", "depthwise", _app("MobileNetV3Small", minimalistic=True), _IMG
    ),
    Architecture("efficientnet_b0", "depthwise+SE", _app("EfficientNetB0"), _IMG),
    Architecture("resnet50", "residual", _app("ResNet50"), _IMG),
    Architecture("densenet121", "dense", _app("DenseNet121"), _IMG),
    Architecture("nasnet_mobile", "NAS cells", _app("NASNetMobile"), _IMG),
    Architecture("convnext_tiny", "ConvNeXt", _app("ConvNeXtTiny"), _IMG),
    Architecture("lstm", "recurrent", _recurrent("LSTM", False), _normal(STEPS, FEATURES)),
    Architecture("gru", "recurrent", _recurrent("GRU", False), _normal(STEPS, FEATURES)),
    Architecture("lstm_unrolled", "recurrent", _recurrent("LSTM", True), _normal(STEPS, FEATURES)),
    Architecture("gru_unrolled", "recurrent", _recurrent("GRU", True), _normal(STEPS, FEATURES)),
    Architecture("transformer_encoder", "attention", _transformer, _normal(STEPS, 32)),
    Architecture("text_classifier", "token input", _text_classifier, _tokens),
    Architecture("two_in_two_out", "multi-IO", _two_in_two_out, _two_inputs),
    Architecture("unet", "U-Net", _unet, _IMG),
    Architecture("bn_dropout_cnn", "BatchNorm+Dropout", _bn_dropout_cnn, _normal(32, 32, 3)),
]

#: By name, sorted: collection order is deterministic.
ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in sorted(_ALL, key=lambda a: a.name)}
