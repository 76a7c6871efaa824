from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib", reason="matplotlib not installed: pytest-quant[plots]")

SUITE = """
import numpy as np
from pytest_quant import QuantParams, assert_quant_close, assert_within_lsb

def test_codes():
    rng = np.random.default_rng(0)
    golden = rng.integers(-100, 100, 2000).astype(np.int8)
    now = (golden + rng.choice([-1, 0, 0, 0, 1], 2000)).astype(np.int8)
    assert_within_lsb(now, golden)

def test_close():
    x = np.linspace(-1, 1, 500)
    qp = QuantParams(2 / 255, 0)
    assert_quant_close(np.round(x / qp.scale) * qp.scale, x, qparams=qp)
"""


def test_report_dir_writes_json_and_pngs(pytester):
    pytester.makepyfile(test_plots_suite=SUITE)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--quant-report-dir=out")
    r.assert_outcomes(passed=2)
    r.stdout.fnmatch_lines(["*2 plot(s) written to out*"])
    out = pytester.path / "out"
    assert json.loads((out / "quant.json").read_text())["summary"]["checks"] == 2
    pngs = sorted(out.glob("*.png"))
    assert [p.name.split("__")[1] for p in pngs] == ["assert_quant_close", "assert_within_lsb"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in pngs)


def test_layer_bars(tmp_path):
    from pytest_quant.plots import write_plots

    rec = {
        "test_id": "t::x",
        "check": "assert_tflite_close",
        "metric": "worst_layer",
        "value": 794.2,
        "bound": 0.29,
        "margin": -793.9,
        "passed": False,
        "detail": {"layers": [["dense_1/MatMul", 794.2], ["dense_2/MatMul", 5.7], ["logits", 0.3]]},
    }
    paths = write_plots(tmp_path, [rec, {**rec, "detail": None}])
    assert [p.name for p in paths] == ["t_x__assert_tflite_close__worst_layer__layers.png"]
