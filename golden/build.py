"""Rebuild pytest-quant's own golden set: data split, float models, TFLite models, golden
outputs and the manifest. Deterministic (fixed seeds, TF op determinism).

    pip install -e ".[test,golden-build]"      # scikit-learn, for the digits data only
    python golden/build.py                      # about two minutes on 2 cores

Run it when the set itself should change (a new model, a new mode, a deliberate move
to a new TensorFlow). Never to make a failing golden test pass: that failure is what the
set is for.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

N_GOLDEN = 200  # test inputs whose outputs are stored
N_CALIB = 200  # training inputs used to calibrate


def step(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def digits_split() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    x = d.data[order].astype(np.uint8)  # 0..16
    y = d.target[order].astype(np.int64)
    return {"x_train": x[:1400], "y_train": y[:1400], "x_test": x[1400:], "y_test": y[1400:]}


def as_float(x: np.ndarray, image: bool = False) -> np.ndarray:
    x = x.astype(np.float32) / 16.0
    return x.reshape(-1, 8, 8, 1) if image else x


def build_models(data: dict[str, np.ndarray]) -> dict[str, object]:
    import keras
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    xtr, ytr = as_float(data["x_train"]), data["y_train"]
    models = {}

    inp = keras.Input((64,), name="pixels")
    h = keras.layers.Dense(32, activation="relu")(inp)
    h = keras.layers.Dense(16, activation="relu")(h)
    out = keras.layers.Dense(10, name="logits")(h)
    mlp = keras.Model(inp, out, name="digits_mlp")
    mlp.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    mlp.fit(xtr, ytr, epochs=40, batch_size=32, verbose=0)
    models["mlp"] = mlp

    inp = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = keras.layers.DepthwiseConv2D(3, padding="same")(h)
    h = keras.layers.Activation("hard_swish")(h)
    h = keras.layers.AveragePooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(10, activation="softmax", name="probs")(h)
    cnn = keras.Model(inp, out, name="digits_cnn")
    cnn.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    cnn.fit(as_float(data["x_train"], image=True), ytr, epochs=30, batch_size=32, verbose=0)
    models["cnn"] = cnn

    inp = keras.Input((64,), name="pixels")
    h = keras.layers.Dense(32, activation="relu")(inp)
    digit = keras.layers.Dense(10, activation="softmax", name="digit")(h)
    high = keras.layers.Dense(1, activation="sigmoid", name="is_high")(h)  # digit >= 5
    centred = keras.layers.Dense(1, activation="tanh", name="centred")(h)  # (digit - 4.5) / 4.5
    heads = keras.Model(
        inp, {"digit": digit, "is_high": high, "centred": centred}, name="digits_heads"
    )
    heads.compile(
        "adam", {"digit": "sparse_categorical_crossentropy", "is_high": "bce", "centred": "mse"}
    )
    targets = {
        "digit": ytr,
        "is_high": (ytr >= 5).astype(np.float32)[:, None],
        "centred": ((ytr - 4.5) / 4.5).astype(np.float32)[:, None],
    }
    heads.fit(xtr, targets, epochs=40, batch_size=32, verbose=0)
    models["heads"] = heads

    models["qat_mlp"] = qat_mlp(xtr, ytr)
    return models


def qat_mlp(xtr: np.ndarray, ytr: np.ndarray) -> object:
    """Manual QAT: FakeQuantWithMinMaxVars on the input, weights and activations."""
    import keras

    from tests.models import qat_layers

    FakeQuant, QDense = qat_layers()
    inp = keras.Input((64,), name="pixels")
    h = FakeQuant(0.0, 1.0)(inp)
    h = QDense(32, 0.0, 8.0, relu=True)(h)
    out = QDense(10, -24.0, 24.0)(h)
    model = keras.Model(inp, out, name="digits_qat_mlp")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(xtr, ytr, epochs=40, batch_size=32, verbose=0)
    return model


#: entry -> (float source, mode, image input?, calibrated?)
ENTRIES = {
    "mlp_int8": ("mlp", "int8", False, True),
    "mlp_dynamic": ("mlp", "dynamic", False, False),
    "mlp_float16": ("mlp", "float16", False, False),
    "mlp_int16x8": ("mlp", "int16x8", False, True),
    "cnn_int8": ("cnn", "int8", True, True),
    "heads_int8": ("heads", "int8", False, True),
    "qat_mlp_int8": ("qat_mlp", "int8", False, False),
}


def top1(outputs: object) -> np.ndarray:
    arr = outputs["digit"] if isinstance(outputs, dict) else outputs
    return np.argmax(np.asarray(arr), axis=1)


def main() -> None:
    from pytest_quant.golden import fingerprint, write
    from pytest_quant.tflite import TFLiteRunner, convert
    from pytest_quant.tflite.converter import tf_version

    step("digits split (scikit-learn)")
    data = digits_split()
    np.savez_compressed(HERE / "digits.npz", **data)
    step("training float models")
    models = build_models(data)
    (HERE / "models").mkdir(exist_ok=True)
    for name, model in models.items():
        if name == "qat_mlp":  # custom layers: kept as a SavedModel, which needs no code
            model.export(str(HERE / "models" / f"{name}.savedmodel"), verbose=False)
        else:
            model.save(HERE / "models" / f"{name}.keras")
    manifest = {}
    for entry, (src, mode, image, calibrated) in ENTRIES.items():
        step(f"converting {entry}")
        model = models[src]
        rep = as_float(data["x_train"][:N_CALIB], image) if calibrated else None
        content = convert(model, rep, mode=mode)
        (HERE / "models" / f"{entry}.tflite").write_bytes(content)
        runner = TFLiteRunner(content)
        x_test = as_float(data["x_test"], image)
        float_acc = float(np.mean(top1(model.predict(x_test, verbose=0)) == data["y_test"]))
        quant_acc = float(np.mean(top1(runner(x_test)) == data["y_test"]))
        golden = runner.quantized(x_test[:N_GOLDEN])
        arrays = dict(golden) if isinstance(golden, dict) else {"output": golden}
        qps = runner.output_qparams
        if isinstance(qps, tuple):
            qps = dict(zip(runner.output_names, qps, strict=True))
        elif qps is not None:
            qps = {"output": qps}
        write(HERE / "outputs", entry, arrays, qps or {}, fingerprint(runner=runner))
        manifest[entry] = {
            "source": f"models/{src}.savedmodel" if src == "qat_mlp" else f"models/{src}.keras",
            "mode": mode,
            "image_input": image,
            "calibration": f"x_train[:{N_CALIB}]" if calibrated else None,
            "float_accuracy": round(float_acc, 4),
            "quant_accuracy": round(quant_acc, 4),
            "n_test": len(data["y_test"]),
            "golden_inputs": f"x_test[:{N_GOLDEN}]",
            "tflite_sha256": hashlib.sha256(content).hexdigest(),
        }
        step(f"  {entry}: float {float_acc:.4f}, quantized {quant_acc:.4f}")
    doc = {
        "built_with": {
            "tensorflow": tf_version(),
            "ai_edge_litert": metadata.version("ai-edge-litert"),
            "keras": metadata.version("keras"),
            "numpy": np.__version__,
        },
        "entries": manifest,
    }
    (HERE / "manifest.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    step("done")


if __name__ == "__main__":
    main()
