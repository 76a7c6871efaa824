"""Measure one (architecture, mode) of the zoo: a row of plain JSON values.

A failure never propagates: each step that raises is recorded with its exception, and
classified as the converter's (a ``ConversionError``: TensorFlow's converter failed,
crashed or timed out) or ours (any other exception: a pytest-quant defect). Two probes
turn a symptom into "ours" where the cause is ours: several inputs given as a list in the
Keras model's input order (what a user passes) that fail to calibrate or to run, when the
same arrays by input name work.

Example::

    row = measure(quant_tflite, ARCHITECTURES["lstm"], "int8", model=model)
    row["converts"]      # "yes", "converter" or "ours"
"""

from __future__ import annotations

import os
import resource
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from .architectures import CALIB_SAMPLES, TEST_SAMPLES, Architecture
from .table import tf_says

#: The steps measured after a successful conversion, in order.
STEPS = ("warm", "rms", "list_inputs", "spec", "blame", "stability")


def classify(exc: BaseException) -> dict[str, Any]:
    """What an exception says about who failed: ``kind`` is ``"converter"`` for a
    ``ConversionError`` (``timeout`` when it ran out of time), else ``"ours"``."""
    from pytest_quant.tflite import ConversionError

    message = str(exc)
    entry: dict[str, Any] = {"type": type(exc).__name__, "message": message}
    if isinstance(exc, ConversionError):
        entry["kind"] = "converter"
        entry["timeout"] = "did not finish" in message
        entry["replayed"] = "replayed from the conversion cache" in message
    else:
        entry["kind"] = "ours"
        entry["traceback"] = "".join(traceback.format_exception(exc)[-12:])
    return entry


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def by_name(model: Any, x: Any) -> Any:
    """``x`` (a list in the Keras model's input order) as a dict by input name."""
    if isinstance(x, list):
        return dict(zip([t.name for t in model.inputs], x, strict=True))
    return x


def _outputs(model: Any, y: Any) -> list[Any]:
    """The runner's outputs ``y`` in the Keras model's output order: a converted model
    names them ``output_0``, ``output_1``... in Keras order, or by the Keras names;
    the interpreter's own order can differ."""
    if not isinstance(y, dict):
        return [y]
    names = list(getattr(model, "output_names", []))
    if sorted(names) == sorted(y):
        return [y[n] for n in names]
    keys = [f"output_{i}" for i in range(len(y))]
    if sorted(keys) == sorted(y):
        return [y[k] for k in keys]
    return list(y.values())


def _rms(model: Any, runner: Any, x: Any) -> dict[str, Any]:
    from pytest_quant import compare

    expected = model.predict(x, verbose=0)
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    actual = _outputs(model, runner(by_name(model, x)))
    if len(actual) != len(expected):
        raise ValueError(f"{len(actual)} TFLite outputs for {len(expected)} Keras outputs")
    return {
        "rmse_fs": [
            compare(a, np.asarray(e)).rmse_fs for a, e in zip(actual, expected, strict=True)
        ]
    }


def _list_inputs(model: Any, runner: Any, x: Any) -> dict[str, Any]:
    """Several inputs as a list in the Keras model's order, as a user passes them: the
    same outputs as by name, or an error (ours: the runner knows its Keras source)."""
    if not isinstance(x, list):
        return {}
    named = runner(by_name(model, x))
    try:
        listed = runner(x)
    except Exception as exc:
        raise RuntimeError(
            f"runner(list in the Keras model's input order {[t.name for t in model.inputs]}) "
            f"fails where the same arrays by name run (the interpreter's input order is "
            f"{runner.input_names}): {type(exc).__name__}: {exc}"
        ) from exc
    same = all(
        np.array_equal(a, b)
        for a, b in zip(_outputs(model, named), _outputs(model, listed), strict=True)
    )
    if not same:
        raise RuntimeError(
            "runner(list in the Keras model's input order) gives other outputs than the same "
            f"arrays by name: the list is read in the interpreter's order {runner.input_names}"
        )
    return {"list_inputs": "ok"}


def _spec(runner: Any) -> dict[str, Any]:
    from pytest_quant.tflite import detect_scheme, lint_tflite

    violations = lint_tflite(runner)
    return {
        "scheme": detect_scheme(runner),
        "violations": len(violations),
        "violation_examples": [str(v) for v in violations[:3]],
    }


def _blame(model: Any, runner: Any, x: Any) -> dict[str, Any]:
    errors, seconds = _timed(lambda: runner.layer_errors(by_name(model, x)))
    top = errors[0] if errors else None
    return {
        "blame_s": seconds,
        "blame_rows": len(errors),
        "blame_unmatched": len(errors.unmatched),
        "top_op": top.op if top else None,
        "top_tensor": top.layer if top else None,
        "top_added": top.added if top else None,
        "top_rmse_per_scale": top.rmse_per_scale if top else None,
        # the float tensor's range, what 'added' divides by
        "top_full_scale": top.rmse / top.rmse_fs if top and top.rmse_fs else None,
    }


def _stability(model: Any, first: Any, second: Any, x: Any) -> dict[str, Any]:
    """The raw outputs of a second runner on the same cached model, and of a re-run."""
    feed = by_name(model, x)

    def raw(runner: Any) -> list[np.ndarray]:
        y = runner.quantized(feed)
        return list(y.values()) if isinstance(y, dict) else [y]

    a, b, c = raw(first), raw(second), raw(first)
    return {
        "same_bytes": first.content == second.content,
        "stable_second_runner": all(np.array_equal(p, q) for p, q in zip(a, b, strict=True)),
        "stable_rerun": all(np.array_equal(p, q) for p, q in zip(a, c, strict=True)),
    }


def _convert(
    quant_tflite: Callable[..., Any], model: Any, x_calib: Any, mode: str, row: dict[str, Any]
) -> tuple[Any, Any]:
    """Convert as a user would (several inputs: a list in Keras order); on a converter
    failure, the same arrays by name. Returns the runner (or None) and the calibration
    data that worked; records times, outcome and errors in ``row``."""
    from pytest_quant.tflite import ConversionError

    start = time.perf_counter()
    try:
        runner = quant_tflite(model, x_calib, mode=mode)
    except Exception as exc:
        row["convert_cold_s"] = time.perf_counter() - start
        row["errors"]["convert"] = classify(exc)
        if not (isinstance(exc, ConversionError) and isinstance(x_calib, list)):
            return None, x_calib
        first = exc
    else:
        row["convert_cold_s"] = time.perf_counter() - start
        return runner, x_calib
    named = by_name(model, x_calib)
    try:  # the list is what failed if the same arrays by name convert
        runner = quant_tflite(model, named, mode=mode)
    except Exception:
        return None, x_calib
    row["errors"]["convert"] = {
        "kind": "ours",
        "type": type(first).__name__,
        "message": (
            "representative_data as a list in the Keras model's input order "
            f"{list(named)} fails to convert ({tf_says(str(first))}), the same arrays by "
            f"name convert: the list feeds the inputs in the interpreter's order "
            f"{runner.input_names}\n{first}"
        ),
    }
    row["convert_cold_s"] = time.perf_counter() - start  # both attempts
    return runner, named


def measure(
    quant_tflite: Callable[..., Any],
    arch: Architecture,
    mode: str,
    *,
    model: Any,
    fresh: bool | None = None,
) -> dict[str, Any]:
    """Convert ``model`` (built from ``arch``) in ``mode`` through ``quant_tflite`` and
    measure it; every figure the zoo table shows, as plain JSON values."""
    x_calib = arch.inputs(CALIB_SAMPLES, seed=0)
    x_test = arch.inputs(TEST_SAMPLES, seed=1)
    row: dict[str, Any] = {
        "architecture": arch.name,
        "kind": arch.kind,
        "params": int(model.count_params()),
        "mode": mode,
        "calib_samples": CALIB_SAMPLES,
        "test_samples": TEST_SAMPLES,
        "fresh_cache": fresh,
        "errors": {},
    }
    try:  # blame's reference, converted first so that the blame time is blame alone
        _, row["float_convert_s"] = _timed(lambda: quant_tflite(model, mode="float"))
    except Exception as exc:
        row["errors"]["float_reference"] = classify(exc)

    runner, calib = _convert(quant_tflite, model, x_calib, mode, row)
    row["converts"] = row["errors"]["convert"]["kind"] if "convert" in row["errors"] else "yes"
    if runner is None:
        start = time.perf_counter()
        try:  # the same call again: a deterministic failure is replayed from the cache
            quant_tflite(model, calib, mode=mode)
            row["warm_outcome"] = "converted"
        except Exception as again:
            entry = classify(again)
            row["warm_outcome"] = {k: entry.get(k) for k in ("kind", "type", "replayed")}
        row["convert_warm_s"] = time.perf_counter() - start
        return _finish(row)
    row["tflite_bytes"] = len(runner.content)

    second = None
    for step in STEPS:
        try:
            if step == "warm":
                second, row["convert_warm_s"] = _timed(
                    lambda: quant_tflite(model, calib, mode=mode)
                )
            elif step == "rms":
                row.update(_rms(model, runner, x_test))
            elif step == "list_inputs":
                row.update(_list_inputs(model, runner, x_test))
            elif step == "spec":
                row.update(_spec(runner))
            elif step == "blame":
                row.update(_blame(model, runner, x_test))
            elif step == "stability" and second is not None:
                row.update(_stability(model, runner, second, x_test))
        except Exception as exc:
            row["errors"][step] = classify(exc)
    return _finish(row)


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    row["ours"] = sorted(s for s, e in row["errors"].items() if e["kind"] == "ours")
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB
    row["worker"] = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return row
