"""Model-level checks on a converted model, with per-tensor blame when they fail."""

from __future__ import annotations

import math
from typing import Any

from ..assertions import assert_quant_close
from .blame import HOW_TO_READ

BLAME_ROWS = 5
IDEAL_RMSE_PER_SCALE = 12**-0.5  # uniform rounding error: 0.29 steps


def _is_tflite_runner(obj: Any) -> bool:
    return hasattr(obj, "content") and hasattr(obj, "quantized") and callable(obj)


def _expected(reference: Any, x: Any) -> Any:
    if _is_tflite_runner(reference):
        return reference(x)
    if hasattr(reference, "predict"):
        return reference.predict(x, verbose=0)
    return reference


def assert_tflite_close(
    runner: Any,
    reference: Any,
    x: Any,
    *,
    tolerance: float | None = None,
    metric: str | None = None,
    blame: bool = True,
    suggest: bool | None = None,
) -> None:
    """Assert the TFLite model's outputs on ``x`` are close to the float ``reference``.

    :param runner: the quantized model's :class:`~pytest_quant.tflite.TFLiteRunner`.
    :param reference: the float model (anything with ``predict``, e.g. a Keras model;
        or a runner of the float ``.tflite``) or its outputs (an array, a list in output
        order, or a dict by output name).
    :param blame: on failure, add the tensors whose ops add the most error, comparing the
        quantized model with a float reference tensor by tensor (see
        :func:`pytest_quant.tflite.layer_errors`). The reference for that is the float
        source ``quant_tflite`` converted the runner from, else ``reference`` when it is
        a model.
    :param suggest: on failure of an int8 runner made by ``quant_tflite``, also search
        for the fewest ops to keep in float that meet the bound
        (:func:`pytest_quant.tflite.suggest_float_layers`; it re-converts the model per
        step) and add what it found. ``None``: ``--quant-suggest`` (ini ``quant_suggest``),
        off by default; when off, the message says how to turn it on.

    The bound is :func:`pytest_quant.assert_quant_close`'s.

    Example::

        def test_model(quant_tflite, model, x_calib, x_test):
            assert_tflite_close(quant_tflite(model, x_calib), model, x_test)
    """
    __tracebackhide__ = True
    expected = _expected(reference, x)
    actual = runner(x)
    try:
        if isinstance(actual, dict):
            for i, (name, value) in enumerate(actual.items()):
                assert_quant_close(
                    value, _output(expected, name, i), tolerance=tolerance, metric=metric
                )
        else:
            assert_quant_close(actual, expected, tolerance=tolerance, metric=metric)
    except AssertionError as failure:
        from .._settings import current

        on = current().suggest if suggest is None else bool(suggest)
        if not blame and not on:
            raise
        parts = [str(failure)]
        if blame:
            parts.append(_blame(runner, reference, x))
        if _can_suggest(runner):
            if on:
                parts.append(_suggestion(runner, reference, x, tolerance, metric))
            elif blame:
                parts.append(SUGGEST_HINT)
        raise AssertionError("\n".join(parts)) from None


def _output(expected: Any, name: str, i: int) -> Any:
    """Output ``name`` (the ``i``-th) of the reference's outputs, whatever their form."""
    if isinstance(expected, dict):
        if name in expected:
            return expected[name]
        if len(expected) > i:
            return list(expected.values())[i]
    if isinstance(expected, (list, tuple)):
        # a converted list-output model names its outputs output_0, output_1, ... in the
        # Keras order, which need not be the interpreter's order
        k = int(name[7:]) if name.startswith("output_") and name[7:].isdigit() else i
        if len(expected) > k:
            return expected[k]
    raise ValueError(
        f"the reference outputs have no output {name!r} (output {i}): give a list in the "
        "model's output order or a dict by output name"
    )


#: what a failing int8 check says when --quant-suggest is off
SUGGEST_HINT = (
    "  (to find which ops to keep in float so this int8 model meets its bound, run with "
    "--quant-suggest or ini quant_suggest = true: it re-converts the model once per step, "
    "about 1 to 4 s each, cached)"
)


def _can_suggest(runner: Any) -> bool:
    """Whether the float-ops search applies: an int8 runner ``quant_tflite`` converted
    from a float model with calibration data."""
    origin = getattr(runner, "origin", None)
    return origin is not None and origin.mode == "int8" and origin.representative_data is not None


def _suggestion(
    runner: Any, reference: Any, x: Any, tolerance: float | None, metric: str | None
) -> str:
    __tracebackhide__ = True
    from .converter import ConversionError
    from .suggest import suggest_float_layers

    try:
        found = suggest_float_layers(
            runner, x, tolerance=tolerance, metric=metric, reference=reference
        )
    except (ValueError, TypeError, ConversionError, ModuleNotFoundError) as exc:
        return f"  (float-ops suggestion unavailable: {str(exc).splitlines()[0]})"
    head = "  suggestion (--quant-suggest): " + found.summary()
    return "\n".join([head, *found.lines()[1:]])


def _blame(runner: Any, reference: Any, x: Any) -> str:
    __tracebackhide__ = True
    from ..assertions import record
    from .converter import ConversionError

    if getattr(runner, "origin", None) is None and not (
        _is_tflite_runner(reference) or hasattr(reference, "predict")
    ):
        return (
            "  (per-tensor blame unavailable: the reference is outputs, not a model; pass "
            "the float model or its .tflite runner as reference, or make the runner with "
            "quant_tflite(model, ...))"
        )
    try:
        errors = runner.layer_errors(x, reference=None if runner.origin is not None else reference)
    except (ValueError, TypeError, ConversionError, ModuleNotFoundError) as exc:
        return f"  (per-tensor blame unavailable: {str(exc).splitlines()[0]})"
    steps = [e.rmse_per_scale for e in errors if math.isfinite(e.rmse_per_scale)]
    record(
        "assert_tflite_close",
        "worst_layer_rmse_per_scale",
        max(steps, default=0.0),
        IDEAL_RMSE_PER_SCALE,
        True,
        info=True,
        detail={
            "layers": [
                [e.layer, e.rmse_per_scale] for e in errors if math.isfinite(e.rmse_per_scale)
            ]
        },
    )
    head = (
        f"  layers adding the most error ({min(BLAME_ROWS, len(errors))} of {len(errors)} "
        "tensors, ranked by 'added': the RMS error / full scale the op adds over its "
        "inputs; rmse/scale: the error so far in steps of the tensor's scale, about 0.29 "
        "is ideal):"
    )
    return "\n".join([head, f"  ({HOW_TO_READ})", *errors.table(top=BLAME_ROWS)])
