"""pytest-quant's own golden set (golden/): stored models against their golden outputs,
accuracy, re-conversion with the installed TensorFlow, and regressions caught on purpose.

The manifest check (the stored files are the ones golden/build.py recorded) needs only
hashlib, so it runs without TensorFlow too (the notf tox env); everything else is
marked ``needs_tf``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from pytest_quant import QuantGolden, assert_accuracy_drop, assert_tflite_spec, dequantize
from pytest_quant.golden import read

try:
    import ai_edge_litert  # noqa: F401
    import keras
except ImportError:
    keras = None
needs_tf = pytest.mark.skipif(
    keras is None, reason="Keras/TensorFlow or ai-edge-litert not installed: pytest-quant[tf]"
)
if keras is not None:
    from pytest_quant.tflite import TFLiteRunner, convert
    from pytest_quant.tflite.converter import tf_version
    from pytest_quant.tflite.flatbuffer import decode, read_model, write_model

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
ENTRIES = sorted(MANIFEST["entries"])
N_GOLDEN = 200


@pytest.fixture(scope="module")
def digits():
    with np.load(GOLDEN / "digits.npz", allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def _x(digits, split, image):
    x = digits[f"x_{split}"].astype(np.float32) / 16.0
    return x.reshape(-1, 8, 8, 1) if image else x


def _same_versions(fp):
    return fp.get("tensorflow") == tf_version() and fp.get("ai_edge_litert") == metadata.version(
        "ai-edge-litert"
    )


def _runner(entry):
    return TFLiteRunner((GOLDEN / "models" / f"{entry}.tflite").read_bytes())


_SOURCES: dict[str, object] = {}


def _float_model(entry):
    """The float source: a Keras model, or a callable for the QAT SavedModel."""
    source = MANIFEST["entries"][entry]["source"]
    if source not in _SOURCES:
        path = GOLDEN / source
        if path.suffix == ".keras":
            _SOURCES[source] = keras.models.load_model(path)
        else:
            import tensorflow as tf

            _SOURCES[source] = tf.saved_model.load(str(path))
    return _SOURCES[source]


def _predict(model, x):
    if hasattr(model, "predict"):
        return model.predict(x, verbose=0)
    out = model.signatures["serving_default"](pixels=x)
    return next(iter(out.values())).numpy()


def _top1(outputs):
    arr = outputs["digit"] if isinstance(outputs, dict) else outputs
    return np.argmax(np.asarray(arr), axis=1)


def _output_qparams(runner):
    qps = runner.output_qparams
    if isinstance(qps, tuple):
        return dict(zip(runner.output_names, qps, strict=True))
    return {"output": qps}


def _golden_check(entry, outputs, runner, **kw):
    QuantGolden(GOLDEN / "outputs", update=False).check(entry, outputs, runner=runner, **kw)


@needs_tf
@pytest.mark.parametrize("entry", ENTRIES)
def test_stored_model_reproduces_its_golden_outputs(entry, digits):
    """1. Exactly on the versions that wrote the golden; within the LSB budget elsewhere."""
    meta = MANIFEST["entries"][entry]
    runner = _runner(entry)
    outputs = runner.quantized(_x(digits, "test", meta["image_input"])[:N_GOLDEN])
    golden = read(GOLDEN / "outputs", entry)
    exact = _same_versions(golden.fingerprint)
    _golden_check(
        entry, outputs, runner, max_lsb=0 if exact else None, tolerance=1e-6 if exact else None
    )


@needs_tf
@pytest.mark.parametrize("entry", ENTRIES)
def test_quantized_accuracy_within_tolerance_of_float(entry, digits):
    """2. Top-1 accuracy drop within --quant-tolerance."""
    meta = MANIFEST["entries"][entry]
    x = _x(digits, "test", meta["image_input"])
    quant = _runner(entry)(x)
    floats = _predict(_float_model(entry), x)
    assert_accuracy_drop(_top1(quant), _top1(floats), digits["y_test"])


# Measured in the tf216 env: TF 2.16.2 quantizes FULLY_CONNECTED weights per tensor where
# 2.18.1 and 2.21.0 quantize them per channel (axis 0), so re-converting a model with Dense
# layers moves its int8 outputs by 2 (mlp), 5 (heads) and 12 (cnn) LSB; accuracy does not
# change. An expected failure on TF 2.16 only; strict, so a fix there shows up.
_TF216 = keras is not None and tf_version().startswith("2.16.")
_PER_TENSOR_FC = pytest.mark.xfail(
    _TF216,
    reason="TF 2.16 quantizes FULLY_CONNECTED weights per tensor (2.18+: per channel)",
    strict=True,
)
_RECONVERT = [
    pytest.param(e, marks=_PER_TENSOR_FC) if e in ("mlp_int8", "cnn_int8", "heads_int8") else e
    for e in ENTRIES
]


@needs_tf
@pytest.mark.parametrize("entry", _RECONVERT)
def test_reconversion_stays_within_budget_and_lints(entry, digits, tflite_cache):
    """3. Re-converting the float source with the installed TensorFlow."""
    meta = MANIFEST["entries"][entry]
    source = GOLDEN / meta["source"]
    model = source if source.suffix != ".keras" else _float_model(entry)
    rep = _x(digits, "train", meta["image_input"])[:200] if meta["calibration"] else None
    runner = TFLiteRunner(convert(model, rep, mode=meta["mode"], cache_dir=tflite_cache))
    x = _x(digits, "test", meta["image_input"])[:N_GOLDEN]
    golden = read(GOLDEN / "outputs", entry)
    now = runner.quantized(x)
    now = dict(now) if isinstance(now, dict) else {"output": now}
    for key, gold in golden.arrays.items():
        qp = golden.qparams.get(key)
        if qp is None:  # float outputs
            np.testing.assert_allclose(now[key], gold, atol=0.02 * float(np.ptp(gold)))
            continue
        # in steps of the golden's scale, whatever scale the new conversion chose
        new_qp = _output_qparams(runner)[key]
        diff = (dequantize(now[key], new_qp).astype(np.float64) - dequantize(gold, qp)) / qp.scale
        assert np.abs(diff).max() <= 1.0 + 1e-6, f"{entry}/{key}: {np.abs(diff).max():.3g} LSB"
    if meta["mode"] in ("int8", "int16x8", "dynamic"):
        assert_tflite_spec(runner)


# --- 4. regressions the set must catch ----------------------------------------------


def _edit(entry, fn):
    model = read_model((GOLDEN / "models" / f"{entry}.tflite").read_bytes())
    fn(model, decode(model))
    return write_model(model)


@needs_tf
def test_one_weight_changed_by_one_step_is_caught(digits):
    def bump(model, ops):
        fc = [o for o in ops if o.name == "FULLY_CONNECTED"][-1]  # the logits layer
        w = fc.inputs[1]
        buf = model.buffers[model.subgraphs[0].tensors[w.index].buffer]
        data = np.array(buf.data, np.uint8).view(np.int8)
        i = int(np.argmax(np.abs(data)))
        data[i] = data[i] - np.sign(data[i])  # one step towards zero: stays in range
        buf.data = data.view(np.uint8)

    runner = TFLiteRunner(_edit("mlp_int8", bump))
    outputs = runner.quantized(_x(digits, "test", False)[:N_GOLDEN])
    with pytest.raises(AssertionError) as info:
        _golden_check("mlp_int8", outputs, runner, max_lsb=0)
    msg = str(info.value)
    assert "golden 'mlp_int8'" in msg and "differs by up to" in msg
    assert "worst elements (index: now vs golden)" in msg and "model " in msg


@needs_tf
def test_per_channel_turned_off_is_caught(digits):
    """Weights requantized per tensor (one scale for all channels), biases to match."""

    def per_tensor(model, ops):
        tensors = model.subgraphs[0].tensors
        for op in ops:
            if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D") or op.inputs[1].scale.size < 2:
                continue
            w, b, x = op.inputs[1], op.inputs[2], op.inputs[0]
            real = w.data.astype(np.float64) * np.expand_dims(
                w.scale, [d for d in range(w.data.ndim) if d != w.axis]
            )
            s = float(w.scale.max())
            q = np.clip(np.round(real / s), -127, 127).astype(np.int8)
            model.buffers[tensors[w.index].buffer].data = q.view(np.uint8).ravel()
            wq = tensors[w.index].quantization
            wq.scale, wq.zeroPoint, wq.quantizedDimension = [s], [0], 0
            if b is not None:
                b_real = b.data.astype(np.float64) * b.scale
                bs = float(x.scale[0]) * s
                model.buffers[tensors[b.index].buffer].data = (
                    np.round(b_real / bs).astype(np.int32).view(np.uint8)
                )
                bq = tensors[b.index].quantization
                bq.scale, bq.zeroPoint, bq.quantizedDimension = [bs], [0], 0

    runner = TFLiteRunner(_edit("cnn_int8", per_tensor))
    outputs = runner.quantized(_x(digits, "test", True)[:N_GOLDEN])
    with pytest.raises(
        AssertionError, match=r"golden 'cnn_int8' .* differs by up to \d+ LSB, bound 1"
    ):
        _golden_check("cnn_int8", outputs, runner)


@needs_tf
def test_poor_calibration_is_caught(digits, tflite_cache):
    model = _float_model("mlp_int8")
    rep = _x(digits, "train", False)[:200] * 0.02  # calibrated on inputs 50x too small
    runner = TFLiteRunner(convert(model, rep, mode="int8", cache_dir=tflite_cache))
    x = _x(digits, "test", False)
    with pytest.raises(AssertionError, match=r"golden 'mlp_int8'.*differs by up to"):
        _golden_check("mlp_int8", runner.quantized(x[:N_GOLDEN]), runner)
    with pytest.raises(AssertionError, match="top-1 accuracy dropped by"):
        assert_accuracy_drop(_top1(runner(x)), _top1(_predict(model, x)), digits["y_test"])


# --- 5. the stored files are the ones golden/build.py recorded -----------------------

REBUILD = (
    "if the change is deliberate, rebuild the set with `python golden/build.py` (see "
    "golden/README.md); otherwise restore the files from version control"
)


def manifest_problems(root: Path) -> list[str]:
    """Each file ``root/manifest.json`` vouches for whose bytes differ from the sha256 it
    recorded (each stored model, and the model sha256 in each golden output's sidecar),
    and each stored model it does not record; ``[]`` when the set is as built."""
    manifest = json.loads((root / "manifest.json").read_text())
    entries = manifest["entries"]

    def shown(path: Path) -> str:
        return f"{root.name}/{path.relative_to(root).as_posix()}"

    problems = []
    for entry in sorted(entries):
        recorded = entries[entry]["tflite_sha256"]
        where = f"{root.name}/manifest.json entries[{entry!r}].tflite_sha256"
        model = root / "models" / f"{entry}.tflite"
        if not model.is_file():
            problems.append(f"{shown(model)}: missing ({where} records {recorded})")
        else:
            actual = hashlib.sha256(model.read_bytes()).hexdigest()
            if actual != recorded:
                problems.append(f"{shown(model)}: sha256 is {actual}, {where} records {recorded}")
        side = root / "outputs" / f"{entry}.json"
        if side.is_file():
            written_by = json.loads(side.read_text()).get("fingerprint", {}).get("model_sha256")
            if written_by != recorded:
                problems.append(
                    f"{shown(side)}: written by model {written_by}, {where} records {recorded}"
                )
        else:
            problems.append(f"{shown(side)}: missing (the golden outputs of {entry!r})")
    for model in sorted((root / "models").glob("*.tflite")):
        if model.stem not in entries:
            problems.append(f"{shown(model)}: not recorded in {root.name}/manifest.json")
    return problems


def _manifest_failure(problems: list[str]) -> str:
    return (
        f"{len(problems)} golden set file(s) differ from the manifest:\n"
        + "\n".join(problems)
        + f"\n{REBUILD}"
    )


def test_stored_files_match_the_manifest():
    """The golden outputs cannot see every edit of a model (a weight moved by one step may
    change no output code on the golden inputs): the manifest's sha256 can."""
    problems = manifest_problems(GOLDEN)
    if problems:
        pytest.fail(_manifest_failure(problems), pytrace=False)


def test_one_flipped_byte_is_caught_by_the_manifest_without_tensorflow(tmp_path):
    """What test_stored_files_match_the_manifest relies on, in any env: one bit of one
    stored model flipped is named, with the recorded sha256 and how to rebuild."""
    root = tmp_path / "golden"
    shutil.copytree(GOLDEN, root)
    assert manifest_problems(root) == []
    path = root / "models" / "mlp_int8.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    problems = manifest_problems(root)
    assert problems == [
        f"golden/models/mlp_int8.tflite: sha256 is {hashlib.sha256(data).hexdigest()}, "
        "golden/manifest.json entries['mlp_int8'].tflite_sha256 records "
        + MANIFEST["entries"]["mlp_int8"]["tflite_sha256"]
    ]
    message = _manifest_failure(problems)
    assert message.startswith("1 golden set file(s) differ from the manifest:\n")
    assert "rebuild the set with `python golden/build.py`" in message


@needs_tf
def test_a_weight_moved_by_one_step_is_caught_by_the_manifest(tmp_path, digits):
    root = tmp_path / "golden"
    shutil.copytree(GOLDEN, root)
    assert manifest_problems(root) == []
    path = root / "models" / "heads_int8.tflite"
    model = read_model(path.read_bytes())
    hidden = next(o for o in decode(model) if o.name == "FULLY_CONNECTED")  # the trunk
    buf = model.buffers[model.subgraphs[0].tensors[hidden.inputs[1].index].buffer]
    data = np.array(buf.data, np.uint8).view(np.int8)
    data[0] += 1 if data[0] < 127 else -1  # one step
    buf.data = data.view(np.uint8)
    path.write_bytes(write_model(model))

    x = _x(digits, "test", False)[:N_GOLDEN]
    before, after = _runner("heads_int8").quantized(x), TFLiteRunner(path.read_bytes()).quantized(x)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # invisible to the goldens

    problems = manifest_problems(root)
    assert len(problems) == 1
    assert problems[0].startswith("golden/models/heads_int8.tflite: sha256 is ")
    assert problems[0].endswith(
        "golden/manifest.json entries['heads_int8'].tflite_sha256 records "
        + MANIFEST["entries"]["heads_int8"]["tflite_sha256"]
    )
    assert _manifest_failure(problems).endswith(
        "rebuild the set with `python golden/build.py` (see golden/README.md); otherwise "
        "restore the files from version control"
    )
    (root / "models" / "stray.tflite").write_bytes(b"")
    (root / "outputs" / "mlp_int8.json").unlink()
    assert manifest_problems(root)[1:] == [
        "golden/outputs/mlp_int8.json: missing (the golden outputs of 'mlp_int8')",
        "golden/models/stray.tflite: not recorded in golden/manifest.json",
    ]
