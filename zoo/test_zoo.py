"""Every zoo architecture in every mode through ``quant_tflite``: one measured row each.

A measurement, not a gate: a conversion the converter refuses is a row, not a failure.
pytest-quant's own defects ('ours') are rows too, listed first in the session summary.
"""

from __future__ import annotations

import pytest

pytest.importorskip("keras", reason="the zoo needs TensorFlow and Keras: pytest-quant[tf]")
pytest.importorskip("ai_edge_litert", reason="the zoo needs ai-edge-litert: pytest-quant[tf]")

from pytest_quant.tflite import MODES

from .architectures import ARCHITECTURES
from .measure import measure

# architecture-major; under -n, conftest.py sends each architecture to one worker
CASES = [
    pytest.param(name, mode, id=f"{name}-{mode}")
    for name in sorted(ARCHITECTURES)
    for mode in MODES
]


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_zoo(name, mode, quant_tflite, zoo_model, zoo_record, zoo_fresh_cache):
    arch = ARCHITECTURES[name]
    zoo_record(measure(quant_tflite, arch, mode, model=zoo_model(arch), fresh=zoo_fresh_cache))
