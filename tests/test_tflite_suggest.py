from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from pytest_quant import assert_tflite_close
from pytest_quant.tflite import TFLiteRunner, convert, suggest_float_layers
from pytest_quant.tflite.checks import SUGGEST_HINT
from pytest_quant.tflite.flatbuffer import decode, read_model
from pytest_quant.tflite.runner import Origin
from pytest_quant.tflite.suggest import FloatSuggestion, SearchStep

from . import models

needs_tf = pytest.mark.skipif(
    importlib.util.find_spec("keras") is None or importlib.util.find_spec("ai_edge_litert") is None,
    reason="TensorFlow is not installed: install pytest-quant[tf] to run this",
)

# --- the report, without TensorFlow ------------------------------------------------------


def _step(keep, error, size, why="", bound=0.02):
    kept = tuple(keep)
    return SearchStep(kept, len(kept), error, error <= bound, size, len(kept), why)


def _suggestion(keep_float, steps, **kw):
    defaults = dict(metric="rms", bound=0.02, bound_from="the default 0.02", ops=54)
    defaults.update(max_layers=8, conversions=len(steps), seconds=12.34)
    defaults.update(kw)
    return FloatSuggestion(keep_float, steps=steps, **defaults)


def test_report_of_a_suggestion():
    steps = [
        _step((), 0.107, 10240, "int8, nothing kept float"),
        _step(("b",), 0.1, 12288, "blamed: b"),
        _step(("a", "b"), 0.013, 14336, "writer and readers of a (input of b)"),
        _step(("a",), 0.1, 12288, "pruned: without b"),
    ]
    found = _suggestion(("a", "b"), steps)
    assert found.found and found.best is steps[2] and found.baseline is steps[0]
    lines = str(found).splitlines()
    assert lines[0] == (
        "keep 2 of 54 int8 ops in float and the rms error drops from 10.70% to 1.30% of "
        "full scale (bound 2%); cost: +4.0 KB (10.0 KB -> 14.0 KB), 2 float ops"
    )
    assert lines[1:5] == [
        "  adopt it with quant_tflite(model, data, keep_float=[",
        "      'a',",
        "      'b',",
        "  ])",
    ]
    assert lines[5] == "  search: 4 conversions (cached ones are free), 12.3 s"
    assert lines[9].split()[:4] == ["1.30%", "14.0", "KB", "2"] and "ok writer" in lines[9]
    assert found.step(["b", "a"]) is steps[2]


def test_report_when_nothing_is_needed_or_nothing_found():
    clean = _suggestion((), [_step((), 0.003, 6451, "int8")], conversions=1)
    assert clean.summary() == (
        "nothing needs to stay float: the int8 model's rms error is 0.30% of full scale (bound 2%)"
    )
    assert "1 conversion (cached" in str(clean) and "keep_float" not in str(clean)
    steps = [_step((), 0.14, 8400), _step(("d3",), 0.139, 11000), _step(("d1",), 0.08, 9000)]
    none = _suggestion(None, steps, max_layers=1, stopped="no blamed op left")
    assert not none.found and none.best is steps[2]
    assert none.summary() == (
        "no set of up to 1 op kept in float brings the rms error within the bound 2% of "
        "full scale in the 3 models tried: the best, 1 of 54 int8 ops in float, gives "
        "8.00% (int8: 14.00%)"
    )
    assert "  closest tried: quant_tflite(model, data, keep_float=[" in str(none)
    assert "; no blamed op left" in str(none)
    spread = _suggestion(None, steps[:2])  # gains less than 5% of the gap: not worth naming
    assert "keep_float" not in str(spread)
    assert "  no set tried closes 5% of the gap to the bound: this error is not made" in str(spread)


def test_report_caps_its_table():
    steps = [_step((), 0.5, 1000)] + [_step((f"op{i}",), 0.4, 2000) for i in range(20)]
    lines = str(_suggestion(None, steps)).splitlines()
    assert lines[-1] == "  ... 9 more"


# --- the search on real conversions --------------------------------------------------------

X_CALIB = models.data((64,), n=200)
X_TEST = models.data((64,), n=100, seed=2)


@pytest.fixture(scope="module")
def outlier():
    return models.outlier_mlp()


@pytest.fixture(scope="module")
def int8(outlier, tflite_cache):
    runner = TFLiteRunner(convert(outlier, X_CALIB, mode="int8", cache_dir=tflite_cache))
    runner.origin = Origin(outlier, X_CALIB, "int8", str(tflite_cache))  # as quant_tflite
    return runner


@pytest.fixture(scope="module")
def layer_names(int8):
    """The output tensor names of dense_1, dense_2, dense_3 and logits in the int8 model."""
    ops = decode(read_model(int8.content))
    assert [op.name for op in ops] == ["FULLY_CONNECTED"] * 4
    return [op.outputs[0].name for op in ops]


@pytest.fixture(scope="module")
def found(outlier, tflite_cache):
    return suggest_float_layers(outlier, X_CALIB, X_TEST, cache_dir=tflite_cache)


def _error(runner, model):
    ref = model.predict(X_TEST, verbose=0)
    return float(np.sqrt(np.mean((runner(X_TEST) - ref) ** 2)) / (ref.max() - ref.min()))


@needs_tf
def test_the_outlier_tensor_needs_both_of_its_ops_in_float(outlier, int8, layer_names, found):
    # the mechanism, measured: neither op alone helps, both together do
    d2, d3 = layer_names[1], layer_names[2]
    assert _error(int8, outlier) == pytest.approx(0.119, abs=0.01)  # measured: 11.94%
    assert found.step([d2]).error == pytest.approx(found.baseline.error, abs=0.005)
    assert found.step([d3]).error == pytest.approx(found.baseline.error, abs=0.005)
    assert found.step([d2, d3]).error < 0.005  # measured: 0.19%
    # blame sees the loss where the int8 tensor is read, not where it is written
    errors = int8.layer_errors(X_TEST)
    assert errors[0].layer == d3 and errors[0].added > 0.1
    assert next(e for e in errors if e.layer == d2).added < 0.01


@needs_tf
def test_the_search_keeps_the_outlier_pair(found, layer_names):
    d2, d3 = layer_names[1], layer_names[2]
    assert found.keep_float == tuple(sorted([d2, d3]))
    assert found.best.error <= found.bound == 0.02 and found.best.passed
    assert found.baseline.error > 0.1 and found.baseline.keep_float == ()
    assert found.best.float_ops == 2 and found.best.size > found.baseline.size
    assert found.ops == 4
    # the int8 model, dense_3 alone, the pair, the pair pruned of dense_3 (dense_2 alone),
    # and the float model blame compares against
    assert len(found.steps) == 4 and found.conversions == 5
    summary = found.summary()
    assert summary.startswith("keep 2 of 4 int8 ops in float and the rms error drops from ")
    assert "(bound 2%); cost: +" in summary and "2 float ops" in summary
    assert f"      {d2!r}," in str(found)


@needs_tf
def test_keep_float_reproduces_the_suggestion(outlier, found, layer_names, tflite_cache):
    content = convert(
        outlier, X_CALIB, mode="int8", cache_dir=tflite_cache, keep_float=found.keep_float
    )
    runner = TFLiteRunner(content)
    assert_tflite_close(runner, outlier, X_TEST)  # the gate passes
    ops = decode(read_model(content))
    assert [op.name for op in ops] == [
        "FULLY_CONNECTED",
        "DEQUANTIZE",
        "FULLY_CONNECTED",
        "FULLY_CONNECTED",
        "QUANTIZE",
        "FULLY_CONNECTED",
    ]
    floats = [op.outputs[0].name for op in ops if op.outputs[0].dtype == "FLOAT32"]
    assert floats[1:] == [layer_names[1], layer_names[2]]  # [0]: the DEQUANTIZE
    # int8 in, int8 out: the kept ops sit between a DEQUANTIZE and a QUANTIZE
    assert runner.input_qparams.dtype == runner.output_qparams.dtype == "int8"
    assert _error(runner, outlier) == pytest.approx(found.best.error, rel=1e-6)


@needs_tf
def test_keep_float_of_nothing_is_the_int8_model(outlier, int8, tflite_cache, forbid_conversion):
    forbid_conversion()  # the same cache entry
    for nothing in (None, []):
        same = convert(outlier, X_CALIB, mode="int8", cache_dir=tflite_cache, keep_float=nothing)
        assert same == int8.content


@needs_tf
def test_a_clean_model_needs_nothing(tflite_cache):
    mlp = models.mlp()
    clean = suggest_float_layers(
        mlp, models.data((64,), n=200), models.data((64,), n=100, seed=2), cache_dir=tflite_cache
    )
    assert clean.keep_float == () and clean.found and clean.conversions == 1
    assert clean.summary().startswith("nothing needs to stay float: the int8 model's rms error")


@needs_tf
def test_too_small_a_budget_finds_nothing(outlier, tflite_cache, layer_names):
    none = suggest_float_layers(outlier, X_CALIB, X_TEST, cache_dir=tflite_cache, max_layers=1)
    assert none.keep_float is None and not none.found
    assert all(s.kept <= 1 for s in none.steps)
    assert none.summary().startswith("no set of up to 1 op kept in float brings the rms error")
    capped = suggest_float_layers(
        outlier, X_CALIB, X_TEST, cache_dir=tflite_cache, max_conversions=2
    )
    assert capped.keep_float is None and capped.conversions == 2
    assert "stopped after 2 conversions (max_conversions)" in str(capped)


@needs_tf
def test_from_a_runner_and_with_another_bound(int8, found, outlier):
    again = suggest_float_layers(int8, X_TEST)  # the runner's model, data and cache
    assert again.keep_float == found.keep_float
    loose = suggest_float_layers(int8, X_TEST, tolerance=0.2)
    assert loose.keep_float == () and loose.bound == 0.2
    with pytest.raises(ValueError, match="metric='worst': use one of rms, max"):
        suggest_float_layers(int8, X_TEST, metric="worst")
    with pytest.raises(TypeError, match="a runner made by quant_tflite"):
        suggest_float_layers(TFLiteRunner(int8.content), X_TEST)


@needs_tf
def test_a_runners_keep_float_is_where_the_search_starts(
    request, monkeypatch, outlier, found, layer_names, tflite_cache
):
    """A runner made with keep_float: the search measures that set first and grows it
    (it used to start again from the plain int8 model, which blame would not lead to
    dense_2 first)."""
    from pytest_quant.plugin import _STATE

    monkeypatch.setattr(request.config.stash[_STATE], "cache_dir", str(tflite_cache))
    quant_tflite = request.getfixturevalue("quant_tflite")  # converting into the suite's cache
    d2, d3 = layer_names[1], layer_names[2]
    runner = quant_tflite(outlier, X_CALIB, keep_float=[d2])
    assert runner.origin.keep_float == (d2,)
    again = suggest_float_layers(runner, X_TEST)
    assert [s.keep_float for s in again.steps[:2]] == [(), (d2,)]
    assert again.steps[1].why == "the runner's keep_float" and not again.steps[1].passed
    assert again.keep_float == found.keep_float == tuple(sorted([d2, d3]))


@needs_tf
def test_unknown_keep_float_name_lists_close_matches(outlier, tflite_cache, layer_names):
    with pytest.raises(ValueError) as info:
        convert(outlier, X_CALIB, mode="int8", cache_dir=tflite_cache, keep_float=["dense_2"])
    msg = str(info.value)
    assert "keep_float: 'dense_2' is not the output tensor of an op of this model" in msg
    assert repr(layer_names[1]) in msg  # what to write instead


@needs_tf
def test_keep_float_misuse_is_an_error_before_converting(outlier, tflite_cache, forbid_conversion):
    forbid_conversion()
    for mode in ("dynamic", "float16", "int16x8", "float"):
        with pytest.raises(
            ValueError, match=f"keep_float applies to mode='int8' only, not mode='{mode}'"
        ):
            convert(outlier, X_CALIB, mode=mode, cache_dir=tflite_cache, keep_float=["x"])
    with pytest.raises(TypeError, match="keep_float takes a list of tensor names"):
        convert(outlier, X_CALIB, cache_dir=tflite_cache, keep_float="dense_2")
    with pytest.raises(ValueError, match="keep_float needs representative_data"):
        convert(outlier, mode="int8", cache_dir=tflite_cache, keep_float=["x"])


@needs_tf
def test_failure_message_with_and_without_the_suggestion(int8, outlier, found):
    with pytest.raises(AssertionError) as info:
        assert_tflite_close(int8, outlier, X_TEST)
    msg = str(info.value)
    assert "layers adding the most error" in msg and SUGGEST_HINT in msg
    assert "suggestion (--quant-suggest)" not in msg
    with pytest.raises(AssertionError) as info:
        assert_tflite_close(int8, outlier, X_TEST, suggest=True)
    msg = str(info.value)
    assert SUGGEST_HINT not in msg
    assert "  suggestion (--quant-suggest): " + found.summary() in msg
    assert "adopt it with quant_tflite(model, data, keep_float=[" in msg
