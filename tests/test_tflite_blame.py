from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="Keras/TensorFlow not installed: pytest-quant[tf]")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed: pytest-quant[tf]")

from pytest_quant.tflite import TFLiteRunner, convert, layer_errors  # noqa: E402
from pytest_quant.tflite.blame import HOW_TO_READ, blame, match  # noqa: E402
from pytest_quant.tflite.blame import _Graph as Graph  # noqa: E402
from pytest_quant.tflite.flatbuffer import decode, read_model, write_model  # noqa: E402
from pytest_quant.tflite.runner import Origin  # noqa: E402

from . import models  # noqa: E402


@pytest.fixture(scope="module")
def mlp():
    return models.mlp()


@pytest.fixture(scope="module")
def float_tflite(mlp, tflite_cache):
    return convert(mlp, mode="float", cache_dir=tflite_cache)


@pytest.fixture(scope="module")
def x_test():
    return models.data((64,), n=100, seed=2)


def test_bad_calibration_blames_the_first_layer(mlp, tflite_cache, x_test):
    # calibrated on inputs 50x too small: the first layer's input and output clip
    rep = models.data((64,), n=200) * 0.02
    runner = TFLiteRunner(convert(mlp, rep, mode="int8", cache_dir=tflite_cache))
    runner.origin = Origin(mlp, rep, "int8", str(tflite_cache))
    errors = runner.layer_errors(x_test)
    assert len(errors) == 3 and not errors.unmatched
    first = decode(read_model(runner.content))[0]  # the first layer, clipped by calibration
    assert first.name == "FULLY_CONNECTED" and errors[0].layer == first.outputs[0].name
    assert errors[0].added > 0.05 and errors[0].rmse_per_scale > 10
    assert [e.added for e in errors] == sorted((e.added for e in errors), reverse=True)


def test_good_calibration_stays_near_rounding_error(mlp, tflite_cache, float_tflite, x_test):
    quantized = convert(mlp, models.data((64,), n=200), mode="int8", cache_dir=tflite_cache)
    errors = layer_errors(quantized, x_test, reference=float_tflite)
    assert len(errors) == 3
    assert all(0.0 < e.rmse_per_scale < 2.0 and e.scale > 0 for e in errors)
    assert all(abs(e.added) < 0.02 for e in errors)


@pytest.mark.parametrize("mode", ["dynamic", "float16", "int16x8"])
def test_every_mode_has_a_table(mlp, tflite_cache, float_tflite, x_test, mode):
    quantized = convert(mlp, models.data((64,), n=200), mode=mode, cache_dir=tflite_cache)
    errors = layer_errors(quantized, x_test, reference=float_tflite)
    # every FULLY_CONNECTED output, the int16x8 output ("..._int16") matched by structure
    assert [e.op for e in errors] == ["FULLY_CONNECTED"] * 3 and not errors.unmatched
    assert all(math.isfinite(e.rmse) and e.rmse < 0.1 for e in errors)
    scaled = [math.isfinite(e.scale) for e in errors]
    assert all(scaled) if mode == "int16x8" else not any(scaled)


def test_rows_carry_the_models_own_tensor_names(mlp, tflite_cache, float_tflite, x_test):
    quantized = convert(mlp, models.data((64,), n=200), mode="int8", cache_dir=tflite_cache)
    names = {t.name.decode() for t in read_model(quantized).subgraphs[0].tensors}
    errors = layer_errors(quantized, x_test, reference=float_tflite)
    assert {e.layer for e in errors} <= names


def _renamed(content: bytes, prefix: str) -> bytes:
    model = read_model(content)
    for t in model.subgraphs[0].tensors:
        t.name = prefix.encode() + t.name
    return write_model(model)


def test_tensors_match_by_structure_when_names_differ(mlp, tflite_cache, float_tflite, x_test):
    quantized = convert(mlp, models.data((64,), n=200), mode="int8", cache_dir=tflite_cache)
    by_name = layer_errors(quantized, x_test, reference=float_tflite)
    renamed = layer_errors(_renamed(quantized, "other/"), x_test, reference=float_tflite)
    assert not renamed.unmatched
    assert [e.rmse for e in renamed] == [e.rmse for e in by_name]
    assert all(e.layer.startswith("other/") for e in renamed)


def test_what_cannot_be_matched_is_reported(tflite_cache, x_test, mlp, float_tflite):
    other = models.cnn()  # a different graph: nothing in it matches the MLP
    cnn_int8 = convert(other, models.data((8, 8, 1), n=50), mode="int8", cache_dir=tflite_cache)
    qg, rg = Graph(cnn_int8), Graph(float_tflite)
    pairs, unmatched = match(qg, rg)
    assert len(unmatched) >= 4 and len(pairs) <= 1  # at most the input, by position


def test_two_inputs_by_list_and_by_dict(tflite_cache):
    model = models.two_in_two_out()
    data = {"a": models.data((4,), n=100), "b": models.data((6,), n=100, seed=1)}
    quantized = convert(model, data, mode="int8", cache_dir=tflite_cache)
    reference = convert(model, mode="float", cache_dir=tflite_cache)
    x = {"a": models.data((4,), n=40, seed=5), "b": models.data((6,), n=40, seed=6)}
    by_dict = layer_errors(quantized, x, reference=reference)
    order = TFLiteRunner(reference).input_names
    by_list = layer_errors(quantized, [x[k] for k in order], reference=reference)
    assert len(by_dict) >= 4 and not by_dict.unmatched
    assert [e.rmse for e in by_list] == [e.rmse for e in by_dict]


def test_chunks_give_the_same_figures(mlp, tflite_cache, float_tflite, x_test):
    quantized = convert(mlp, models.data((64,), n=200) * 0.02, mode="int8", cache_dir=tflite_cache)
    whole = blame(quantized, float_tflite, x_test, chunk=1000)
    chunked = blame(quantized, float_tflite, x_test, chunk=7)
    for a, b in zip(whole, chunked, strict=True):
        assert a.layer == b.layer and a.max_abs_error == b.max_abs_error
        assert a.rmse == pytest.approx(b.rmse, rel=1e-9)  # float64 sums in another order


def test_reference_may_be_a_keras_model(mlp, tflite_cache, float_tflite, x_test):
    quantized = convert(mlp, models.data((64,), n=200), mode="int8", cache_dir=tflite_cache)
    from_keras = layer_errors(quantized, x_test, reference=mlp, cache_dir=tflite_cache)
    from_tflite = layer_errors(quantized, x_test, reference=float_tflite)
    assert [e.rmse for e in from_keras] == [e.rmse for e in from_tflite]


def test_table_says_how_to_read_it(mlp, tflite_cache, float_tflite, x_test):
    quantized = convert(mlp, models.data((64,), n=200) * 0.02, mode="int8", cache_dir=tflite_cache)
    lines = layer_errors(quantized, x_test, reference=float_tflite).table(top=2)
    assert lines[0].split() == ["added", "rmse/scale", "rmse", "max", "|err|", "scale", "op",
                                "tensor"]  # fmt: skip
    assert len(lines) == 4 and lines[-1] == "  ... 1 more"
    assert "accumulating" in HOW_TO_READ and "culprit" in HOW_TO_READ


def test_layer_errors_needs_a_reference(float_tflite, x_test):
    with pytest.raises(TypeError, match="reference="):
        layer_errors(float_tflite, x_test)
    with pytest.raises(ValueError, match="needs the float reference"):
        TFLiteRunner(float_tflite).layer_errors(x_test)


def test_blame_with_the_interpreter_alone(tmp_path, mlp, tflite_cache, float_tflite):
    """TensorFlow made unimportable: blame of a quantized .tflite against its float .tflite."""
    quantized = convert(mlp, models.data((64,), n=200) * 0.02, mode="int8", cache_dir=tflite_cache)
    (tmp_path / "model.tflite").write_bytes(float_tflite)
    (tmp_path / "model_int8.tflite").write_bytes(quantized)
    np.save(tmp_path / "x.npy", models.data((64,), n=50, seed=2))
    script = textwrap.dedent(
        """
        import sys
        class NoTensorFlow:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
                    raise ImportError(f"{name} is blocked: an interpreter-only install")
        sys.meta_path.insert(0, NoTensorFlow())
        import numpy as np
        from pytest_quant.tflite import TFLiteRunner, layer_errors
        from pytest_quant import assert_tflite_close
        x = np.load("x.npy")
        errors = layer_errors("model_int8.tflite", x, reference="model.tflite")
        print(errors[0].op, errors[0].layer, len(errors))
        try:
            assert_tflite_close(TFLiteRunner("model_int8.tflite"),
                                TFLiteRunner("model.tflite"), x)
        except AssertionError as exc:
            print("table" if "layers adding the most error" in str(exc) else str(exc))
        assert "tensorflow" not in sys.modules
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first = decode(read_model(quantized))[0]  # the first layer, clipped by calibration
    assert done.stdout.split() == ["FULLY_CONNECTED", first.outputs[0].name, "3", "table"]


@pytest.mark.parametrize("recipe", ["static_wi8_ai8", "dynamic_wi8_afp32", "static_wi8_ai16"])
def test_blame_of_an_ai_edge_quantizer_model(float_tflite, x_test, recipe):
    pytest.importorskip("ai_edge_quantizer", reason="ai-edge-quantizer is not installed")
    from . import aeq_models

    quantized = aeq_models.quantize(float_tflite, recipe, models.data((64,), n=50))
    errors = layer_errors(quantized, x_test, reference=float_tflite)
    assert [e.op for e in errors] == ["FULLY_CONNECTED"] * 3 and not errors.unmatched
    assert all(0.0 < e.rmse < 0.5 for e in errors)


def test_blame_of_a_tfmot_qat_model(tflite_cache):
    pytest.importorskip("tf_keras", reason="tf_keras (Keras 2) is not installed")
    from . import models_keras2

    try:
        qat = models_keras2.qat_mlp()
    except ModuleNotFoundError:
        pytest.skip("tensorflow-model-optimization is not installed")
    x = models_keras2.data((models_keras2.N_IN,), n=64, seed=3)
    runner = TFLiteRunner(convert(qat, mode="int8", cache_dir=tflite_cache))
    # the reference is the QAT model itself, converted to float (fake-quant as QDQ pairs)
    errors = layer_errors(runner, x, reference=qat, cache_dir=tflite_cache)
    assert [e.op for e in errors] == ["FULLY_CONNECTED"] * 2 and not errors.unmatched
    print("\n".join(errors.table()))
    # compared with what the fake-quant nodes simulate, each layer is within a step
    assert all(e.rmse_per_scale < 0.3 and abs(e.added) < 0.01 for e in errors)


@pytest.mark.parametrize("mode", ["dynamic", "int16x8"])
def test_quant_tflite_runner_blames_against_its_source(mode, mlp, tflite_cache, x_test):
    """A runner made by quant_tflite in any mode knows its float source."""
    rep = models.data((64,), n=200)
    runner = TFLiteRunner(convert(mlp, rep, mode=mode, cache_dir=tflite_cache))
    runner.origin = Origin(mlp, rep, mode, str(tflite_cache))
    errors = runner.layer_errors(x_test)
    assert len(errors) == 3 and not errors.unmatched


def test_gate_catches_ai_edge_quantizer_calibrated_one_sample_at_a_time(tflite_cache):
    """AEQ keeps a moving average of each calibration batch's min/max: fed one sample at
    a time, its ranges shrink and the model clips (measured 4.5% RMS vs 0.26%)."""
    pytest.importorskip("ai_edge_quantizer", reason="ai-edge-quantizer is not installed")
    from pytest_quant import assert_tflite_close

    from . import aeq_models

    mlp = models.mlp()
    reference = TFLiteRunner(convert(mlp, mode="float", cache_dir=tflite_cache))
    x_calib, x = models.data((64,), n=200), models.data((64,), n=100, seed=1)
    one_batch = aeq_models.quantize(reference.content, "static_wi8_ai8", x_calib, batch=200)
    assert_tflite_close(TFLiteRunner(one_batch), reference, x)
    one_by_one = aeq_models.quantize(reference.content, "static_wi8_ai8", x_calib, batch=1)
    with pytest.raises(AssertionError) as info:
        assert_tflite_close(TFLiteRunner(one_by_one), reference, x)
    msg = str(info.value)
    assert "rms error = 4." in msg and "layers adding the most error (3 of 3 tensors" in msg


def test_non_finite_tensors_rank_first_and_are_never_averaged_away(
    mlp, tflite_cache, float_tflite, x_test
):
    quantized = convert(mlp, models.data((64,), n=200), mode="int8", cache_dir=tflite_cache)
    model = read_model(quantized)
    last = decode(model)[-1].outputs[0]
    model.subgraphs[0].tensors[last.index].quantization.scale = [float("inf")]
    errors = layer_errors(write_model(model), x_test, reference=float_tflite)
    assert errors[0].layer == last.name and math.isinf(errors[0].rmse)
    assert math.isinf(errors[0].added) and all(math.isfinite(e.rmse) for e in errors[1:])
    assert errors.table()[1].split()[:3] == ["inf", "-", "inf"]  # added, steps, rmse


def test_a_near_constant_tensor_is_not_blamed_for_a_fraction_of_a_step(tflite_cache):
    """Found by the zoo: ConvNeXt's LayerNorm variance (0.99999, range 7.7e-7) topped the
    table at 0.35 steps with 'added' +179,000%, measured against that range."""
    from pytest_quant.tflite.blame import _Acc

    acc = _Acc()
    reference = np.full(1000, 0.99999, np.float32) + np.linspace(0, 7.7e-7, 1000, dtype=np.float32)
    acc.add(reference + np.float32(0.0014), reference)  # 0.35 steps of scale 1/255
    assert acc.rmse / acc.full_scale < 0.002  # against its magnitude, not its range
    ramp = np.linspace(-1, 3, 1000)  # a range spanning 0: the range, as before
    acc = _Acc()
    acc.add(ramp + 0.01, ramp)
    assert acc.full_scale == pytest.approx(4.0)
