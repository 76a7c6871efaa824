"""Train and export the example digits classifier (what a model repo's training script does).

python train.py            # writes model/digits.keras
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

HERE = Path(__file__).resolve().parent


def load_data() -> dict[str, np.ndarray]:
    with np.load(HERE / "data" / "digits.npz", allow_pickle=False) as d:
        return {k: (d[k].astype(np.float32) / 16.0 if k.startswith("x") else d[k]) for k in d.files}


def build() -> keras.Model:
    inp = keras.Input((64,), name="pixels")
    h = keras.layers.Dense(32, activation="relu")(inp)
    h = keras.layers.Dense(16, activation="relu")(h)
    out = keras.layers.Dense(10, name="logits")(h)
    return keras.Model(inp, out, name="digits")


def main() -> None:
    keras.utils.set_random_seed(0)
    data = load_data()
    model = build()
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    model.fit(data["x_train"], data["y_train"], epochs=40, batch_size=32, verbose=0)
    _, acc = model.evaluate(data["x_test"], data["y_test"], verbose=0)
    (HERE / "model").mkdir(exist_ok=True)
    model.save(HERE / "model" / "digits.keras")
    print(f"float test accuracy {acc:.4f}; saved model/digits.keras")


if __name__ == "__main__":
    main()
