import os
import sys
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from train import load_data  # noqa: E402


@pytest.fixture(scope="session")
def data():
    return load_data()


@pytest.fixture(scope="session")
def model():
    return keras.models.load_model(ROOT / "model" / "digits.keras")


@pytest.fixture(scope="session")
def calibration(data):
    x = data["x_train"][:200]
    # EXAMPLE_BROKEN=calibration: calibrate on inputs 50x too small, a classic mistake
    return x * 0.02 if os.environ.get("EXAMPLE_BROKEN") == "calibration" else x


@pytest.fixture(scope="session")
def int8_model(quant_tflite, model, calibration):
    return quant_tflite(model, calibration, mode="int8")
