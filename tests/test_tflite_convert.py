from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="Keras/TensorFlow not installed: pytest-quant[tf]")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed: pytest-quant[tf]")

from pytest_quant import assert_quant_close, compare  # noqa: E402
from pytest_quant.tflite import (  # noqa: E402
    MODES,
    ConversionError,
    MalformedModelError,
    TFLiteRunner,
    convert,
)
from pytest_quant.tflite import converter as convert_mod  # noqa: E402
from pytest_quant.tflite import export as export_mod  # noqa: E402
from pytest_quant.tflite.flatbuffer import decode, read_model  # noqa: E402

from . import models, models_arch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mlp():
    return models.mlp()


@pytest.fixture(scope="module")
def calib():
    return models.data((64,), n=200)


@pytest.fixture(scope="module")
def cache(tflite_cache):
    return tflite_cache


@pytest.mark.parametrize(
    "mode, io_dtype, tolerance",
    [
        ("int8", np.int8, 0.02),
        ("dynamic", np.float32, 0.02),
        ("float16", np.float32, 1e-3),
        ("int16x8", np.float32, 0.005),
    ],
)
def test_every_mode_converts_and_runs(mlp, calib, cache, mode, io_dtype, tolerance):
    content = convert(
        mlp, calib if mode in ("int8", "int16x8") else None, mode=mode, cache_dir=cache
    )
    runner = TFLiteRunner(content)
    assert runner._inputs[0]["dtype"] == io_dtype and runner._outputs[0]["dtype"] == io_dtype
    x = models.data((64,), n=100, seed=1)
    assert_quant_close(runner(x), mlp.predict(x, verbose=0), tolerance=tolerance)


def test_modes_listed():
    assert MODES == ("int8", "dynamic", "float16", "int16x8")


def test_second_conversion_is_a_cache_hit(mlp, calib, cache, forbid_conversion):
    first = convert(mlp, calib, mode="int8", cache_dir=cache)

    forbid_conversion()
    assert convert(mlp, calib, mode="int8", cache_dir=cache) == first
    # other representative data, or other weights, is another key
    with pytest.raises(AssertionError, match="ran again"):
        convert(mlp, calib[:100], mode="int8", cache_dir=cache)
    other = models.mlp()
    other.set_weights([w * 1.01 for w in other.get_weights()])
    with pytest.raises(AssertionError, match="ran again"):
        convert(other, calib, mode="int8", cache_dir=cache)


def test_concurrent_workers_convert_once_and_never_tear(mlp, calib, tmp_path):
    saved = tmp_path / "saved"
    mlp.export(str(saved), verbose=False)
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        from pytest_quant.tflite import converter as m
        real = m._convert_in_child
        def counting(*a, **k):
            print("CONVERTED", flush=True)
            return real(*a, **k)
        m._convert_in_child = counting
        content = m.convert({str(saved)!r}, np.load({str(tmp_path / "rep.npy")!r}),
                            mode="int8", cache_dir={str(cache)!r})
        sys.stdout.write(content.hex()[:64] + " " + str(len(content)) + "\\n")
        """
    )
    np.save(tmp_path / "rep.npy", calib)
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(o.count("CONVERTED") for o in outs) == 1
    assert outs[0].splitlines()[-1] == outs[1].splitlines()[-1]
    names = sorted(p.name for p in cache.iterdir())
    assert [n for n in names if n.startswith(".")] == []  # no temp file left
    assert len([n for n in names if n.endswith(".tflite")]) == 1
    meta = json.loads(next(cache.glob("*.json")).read_text())
    assert meta["mode"] == "int8"


def test_a_converter_crash_fails_cleanly_and_the_session_goes_on(mlp, calib, monkeypatch):
    monkeypatch.setattr(convert_mod, "WORKER", "tests.abort_worker")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    with pytest.raises(ConversionError) as info:
        convert(mlp, calib, mode="int8")
    msg = str(info.value)
    assert f"TensorFlow {convert_mod.tf_version()} converter crashed" in msg
    assert "killed by SIGABRT" in msg and "LLVM ERROR: Failed to infer result type(s)" in msg
    assert "the test session goes on" not in msg  # noise: every failure is per test
    assert "QAT" not in msg  # a crash gets no hint about an unrelated route


@pytest.mark.parametrize("via", ["saved_model", "keras"])
def test_conv2d_int8_on_this_tensorflow(cache, via):
    """Measured: TF 2.16.2 with Keras 3 aborts the process (LLVM ERROR) converting a
    Conv2D/DepthwiseConv2D model to int8 through from_keras_model, and converts it through
    the SavedModel path; 2.18 and 2.21 convert both. Either way the run survives: this is
    the real crash, isolated."""
    model = models.cnn()
    rep = models.data((8, 8, 1), n=64)
    version = tuple(int(p) for p in convert_mod.tf_version().split(".")[:2])
    if version == (2, 16) and via == "keras":
        with pytest.raises(ConversionError) as info:
            convert(model, rep, mode="int8", cache_dir=cache, via=via)
        msg = str(info.value)
        assert "TensorFlow 2.16" in msg and "killed by SIGABRT" in msg
        assert "LLVM ERROR: Failed to infer result type(s)" in msg
        return
    runner = TFLiteRunner(convert(model, rep, mode="int8", cache_dir=cache, via=via))
    # softmax output: fixed scale 1/256; an untrained model's outputs span a few steps,
    # so judge it in LSB
    stats = compare(runner(rep), model.predict(rep, verbose=0), qparams=runner.output_qparams)
    assert stats.max_lsb <= 2.0


def test_converter_errors_are_reported(mlp):
    with pytest.raises(ConversionError) as info:
        convert(mlp, None, mode="int8")  # full integer needs calibration data
    msg = str(info.value)
    assert "converter failed (exit status 1) converting Keras model 'mlp' to int8" in msg
    assert "ValueError: " in msg  # the converter's own words
    assert "int8 without representative_data works only for a model trained with fake-quant" in msg
    assert "oneDNN" not in msg  # log noise filtered out


@pytest.mark.parametrize(
    "source, err, match",
    [
        (b"not a model at all", MalformedModelError, "the model bytes: .* not a TFLite model"),
        (42, TypeError, "source=int"),
    ],
)
def test_bad_sources(source, err, match):
    with pytest.raises(err, match=match):
        convert(source)


def test_bad_paths_and_modes(tmp_path, mlp):
    (tmp_path / "junk.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(MalformedModelError, match=r"junk\.tflite: .*not a TFLite model"):
        convert(tmp_path / "junk.tflite")
    with pytest.raises(ValueError, match=r"neither a \.tflite file nor a SavedModel"):
        convert(tmp_path)
    with pytest.raises(ValueError, match="mode='int4'"):
        convert(mlp, mode="int4")
    with pytest.raises(ValueError, match="via='onnx'"):
        convert(mlp, via="onnx")
    with pytest.raises(ValueError, match="same number"):
        convert(mlp, [np.zeros((3, 64)), np.zeros((4, 64))])
    with pytest.raises(ValueError, match="non-finite"):
        convert(mlp, np.full((3, 64), np.nan))


def test_qat_model_converts_without_calibration_and_agrees_within_one_lsb(cache):
    """QAT parity: the fake-quant Keras model and its int8 TFLite model agree within 1 LSB."""
    model = models.qat_mlp()
    runner = TFLiteRunner(convert(model, None, mode="int8", cache_dir=cache))
    assert runner.input_qparams.dtype == "int8"
    # the output range is the last fake-quant node's: [-8, 8] nudged, 16/255 per step
    assert runner.output_qparams.scale == pytest.approx(16 / 255)
    x = models.data((16,), n=500, seed=7)
    stats = compare(runner(x), model.predict(x, verbose=0), qparams=runner.output_qparams)
    assert stats.max_lsb <= 1.0 + 1e-5
    assert stats.fraction_over_lsb(0.5) < 0.02  # measured: 0.25% of outputs one step off


# --- cache key: weights by position, not by Keras's auto-numbered variable paths --------


def test_cache_key_ignores_auto_numbered_weight_paths():
    """ConvNeXt's LayerScale weights have no name: Keras numbers their paths per process
    (``layer_scale/variable``, ``_1``, ...), and the key used to change with what the
    process built before."""
    a, b = models_arch.layer_scale_mlp(), models_arch.layer_scale_mlp()
    assert [w.path for w in a.weights] != [w.path for w in b.weights]
    version = convert_mod.tf_version()
    assert convert_mod.cache_key(a, None, "dynamic", version) == convert_mod.cache_key(
        b, None, "dynamic", version
    )
    other = models_arch.layer_scale_mlp(scale=2.0)  # other weights: another key
    assert convert_mod.cache_key(other, None, "dynamic", version) != convert_mod.cache_key(
        a, None, "dynamic", version
    )
    assert convert_mod.model_fingerprint(a) == convert_mod.model_fingerprint(b)


def test_cache_key_ignores_the_compile_config():
    """A compiled model built twice in one process: its optimizer is ``adam``, then
    ``adam_1`` (numbered like unnamed layers); the converted model has no optimizer, so
    the key does not change. The compile config used to be hashed."""
    a, b = models.mlp(), models.mlp()
    a.compile("adam", "mse")
    b.compile("adam", "mse")
    assert a.optimizer.name != b.optimizer.name
    assert convert_mod.model_fingerprint(a) == convert_mod.model_fingerprint(b)
    b.compile("sgd", "mae")  # another optimizer and loss: the same model to convert
    assert convert_mod.model_fingerprint(a) == convert_mod.model_fingerprint(b)


def test_cache_key_covers_settings_and_data_dtype(mlp):
    version = convert_mod.tf_version()
    keys = {
        convert_mod.cache_key(mlp, None, "dynamic", version, settings=s)
        for s in (None, {"options": {"_experimental_disable_per_channel": True}})
    }
    assert len(keys) == 2
    rep = np.arange(64 * 2).reshape(2, 64)
    as_int, as_float = (
        convert_mod.cache_key(mlp, convert_mod._representative(r), "int8", version)
        for r in (rep, rep.astype(np.float32))
    )
    assert as_int != as_float


# --- failed conversions are cached --------------------------------------------------------


@pytest.fixture
def crashing_worker(monkeypatch):
    monkeypatch.setattr(convert_mod, "WORKER", "tests.abort_worker")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def test_a_deterministic_failure_is_cached_and_replayed(
    mlp, calib, tmp_path, crashing_worker, forbid_conversion
):
    with pytest.raises(ConversionError) as first:
        convert(mlp, calib, mode="int8", cache_dir=tmp_path)
    (meta,) = tmp_path.glob("*.json")
    kept = json.loads(meta.read_text())
    assert kept["error"] == str(first.value)  # the message; a hint is made again on replay
    assert "LLVM ERROR: Failed to infer result type(s)." in kept["output"]
    assert not list(tmp_path.glob("*.tflite"))

    forbid_conversion()
    with pytest.raises(ConversionError) as again:
        convert(mlp, calib, mode="int8", cache_dir=tmp_path)
    msg = str(again.value)
    assert msg.startswith(str(first.value))  # the same error, the same hints
    assert "replayed from the conversion cache" in msg
    assert "--quant-cache-clear" in msg and str(meta) in msg
    # deleting the entry retries
    meta.unlink()
    with pytest.raises(AssertionError, match="ran again"):
        convert(mlp, calib, mode="int8", cache_dir=tmp_path)


def test_a_timeout_is_not_cached(mlp, calib, tmp_path, crashing_worker):
    with pytest.raises(ConversionError, match="did not finish"):
        convert(mlp, calib, mode="int8", cache_dir=tmp_path, timeout=0.001)
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize(
    "returncode, stderr, cached",
    [
        (1, "ValueError: no", True),
        (-6, "LLVM ERROR", True),  # SIGABRT: a converter bug
        (-11, "", True),  # SIGSEGV
        (-9, "", False),  # SIGKILL: the OOM killer, or a user
        (-15, "", False),  # SIGTERM
        (1, "MemoryError", False),
    ],
)
def test_only_deterministic_failures_are_cached(returncode, stderr, cached):
    done = subprocess.CompletedProcess([], returncode, "", stderr)
    assert convert_mod._deterministic(done) is cached


# --- one export per model and process -------------------------------------------------------


def test_a_model_is_exported_once_for_every_mode(tmp_path, monkeypatch):
    """DenseNet121 took 9.7 s per export, once per convert() call; now once per process."""
    model = models.mlp()
    model.set_weights([w * 1.5 for w in model.get_weights()])  # no other test's export
    exports = []
    real = export_mod._export

    def spy(source, where, route):
        exports.append(route.entry)
        real(source, where, route)

    monkeypatch.setattr(export_mod, "_export", spy)
    for mode in ("float", "dynamic", "float16"):
        convert(model, mode=mode, cache_dir=tmp_path)
    assert exports == ["from_saved_model"]
    assert len(list(tmp_path.glob("*.tflite"))) == 3


def test_exports_go_with_their_model(monkeypatch):
    model = models_arch.layer_scale_mlp(scale=3.0)
    route = convert_mod._route(model, "keras", "dynamic", False)
    saved = convert_mod._saved(model, None, route)
    assert saved.name == "model.keras" and saved.is_file()
    monkeypatch.setattr(export_mod, "_export", lambda *a: pytest.fail("exported again"))
    assert convert_mod._saved(model, None, route) == saved
    del model
    gc.collect()
    assert not saved.exists()


# --- converter options -----------------------------------------------------------------------


def test_converter_options_reach_the_converter(tflite_cache):
    """``_experimental_disable_per_channel``: one scale for the Conv2D weights, not one per
    output channel."""
    model, rep = models_arch.hard_swish_cnn(), models_arch.images(16)
    per_tensor = convert(
        model,
        rep,
        mode="int8",
        cache_dir=tflite_cache,
        converter_options={"_experimental_disable_per_channel": True},
    )
    default = convert(model, rep, mode="int8", cache_dir=tflite_cache)

    def conv_weight_scales(content):
        (op,) = [op for op in decode(read_model(content)) if op.name == "CONV_2D"]
        return op.inputs[1].scale.size

    assert conv_weight_scales(default) == 4 and conv_weight_scales(per_tensor) == 1


@pytest.mark.parametrize(
    "options, err, match",
    [
        ([("a", 1)], TypeError, "converter_options must be a dict"),
        ({"target_spec..supported_ops": []}, ValueError, "use a TFLiteConverter attribute name"),
        ({"representative_dataset": None}, ValueError, "pass representative_data"),
        ({"x": object()}, TypeError, r"converter_options\['x'\] is a object"),
        ({"x": float("nan")}, ValueError, "finite"),
    ],
)
def test_converter_options_are_validated_before_converting(mlp, options, err, match):
    with pytest.raises(err, match=match):
        convert(mlp, mode="dynamic", converter_options=options)


def test_tensorflow_objects_are_stored_by_name(tf):
    settings = convert_mod._settings(
        {"target_spec.supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS], "x": tf.float16},
        False,
        "dynamic",
    )
    assert settings["options"] == {"target_spec.supported_ops": ["TFLITE_BUILTINS"], "x": "float16"}


def test_a_setting_the_converter_cannot_take_is_a_value_error(mlp, tmp_path):
    """Checked in the converter process, where the converter is: a ValueError naming the
    attribute, never a cached converter failure."""
    options = {"_experimental_lower_tensorlist_ops": False}
    with pytest.raises(ValueError) as info:
        convert(mlp, mode="dynamic", cache_dir=tmp_path, converter_options=options)
    assert str(info.value) == (
        "converter_options['_experimental_lower_tensorlist_ops']: TFLiteSavedModelConverterV2 "
        "has no attribute '_experimental_lower_tensorlist_ops' (close: "
        "_experimental_lower_tensor_list_ops, _experimental_low_bit_qat, "
        "_experimental_preserve_assert_op)"
    )
    assert not list(tmp_path.glob("*.json"))


def test_settings_are_applied_by_name(tf):
    from pytest_quant.tflite import _worker as worker

    fn = tf.function(lambda x: x + 1.0, input_signature=[tf.TensorSpec([1], tf.float32)])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    worker.apply_options(
        tf,
        conv,
        {
            "target_spec.supported_ops": ["TFLITE_BUILTINS", "SELECT_TF_OPS"],
            "target_spec.supported_types": ["float16"],
            "optimizations": ["DEFAULT"],
            "_experimental_lower_tensor_list_ops": False,
        },
    )
    ops = tf.lite.OpsSet
    assert conv.target_spec.supported_ops == [ops.TFLITE_BUILTINS, ops.SELECT_TF_OPS]
    assert conv.target_spec.supported_types == [tf.float16]
    assert conv.optimizations == [tf.lite.Optimize.DEFAULT]
    assert conv._experimental_lower_tensor_list_ops is False
    for bad, match in [
        ({"target_spec.supported_ops": ["BUILTINS"]}, "unknown op set 'BUILTINS'"),
        ({"target_spec.nope": 1}, "TFLiteConverterV2.target_spec has no attribute 'nope'"),
        ({"inference_input_type": "int3"}, "inference_input_type: .*use dtype names"),
    ]:
        with pytest.raises(worker.UsageError, match=match):
            worker.apply_options(tf, conv, bad)


# --- what pytest shows of a conversion error -----------------------------------------------

TRACEBACK_SUITE = """
import numpy as np
import pytest
from pytest_quant.tflite import converter


def test_convert(quant_tflite, tmp_path, monkeypatch):
    monkeypatch.setattr(converter, "WORKER", "tests.abort_worker")
    (tmp_path / "saved_model.pb").write_bytes(b"")  # the stand-in worker reads nothing
    quant_tflite(tmp_path, np.zeros((2, 3)), mode="int8", converter_options={"a.b": 1})
"""


def test_a_conversion_error_shows_the_users_line_not_ours(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_user=TRACEBACK_SUITE)
    result = pytester.runpytest_subprocess(
        f"--quant-cache-dir={pytester.path / 'qcache'}", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "quant_tflite(tmp_path, np.zeros((2, 3))" in out  # the user's line
    assert "converter crashed (the converter process was killed by SIGABRT)" in out
    assert "converter_options={'a.b': 1}" in out  # passed through by the fixture
    for ours in ("converter.py", "plugin.py"):
        assert ours not in out
