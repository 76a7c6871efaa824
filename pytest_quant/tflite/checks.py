"""Model-level checks on a converted model, with per-layer blame when they fail."""

from __future__ import annotations

from typing import Any

from ..assertions import assert_quant_close
from .converter import ConversionError, blame_table

BLAME_ROWS = 5
IDEAL_RMSE_PER_SCALE = 12**-0.5  # uniform rounding error: 0.29 steps


def assert_tflite_close(
    runner: Any,
    reference: Any,
    x: Any,
    *,
    tolerance: float | None = None,
    metric: str | None = None,
    blame: bool = True,
) -> None:
    """Assert the TFLite model's outputs on ``x`` are close to the float ``reference``.

    ``reference`` is the float model (anything with ``predict``) or its outputs. The
    bound is :func:`pytest_quant.assert_quant_close`'s. When it fails and the runner
    knows its float source (``quant_tflite(model, representative_data, mode="int8")``),
    the message adds the layers that add the most error, from TF's QuantizationDebugger
    (RMSE in steps of each layer's scale; about 0.29 is ideal).

    Example::

        def test_model(quant_tflite, model, x_calib, x_test):
            assert_tflite_close(quant_tflite(model, x_calib), model, x_test)
    """
    __tracebackhide__ = True
    expected = reference.predict(x, verbose=0) if hasattr(reference, "predict") else reference
    actual = runner(x)
    try:
        if isinstance(actual, dict):
            for name, value in actual.items():
                assert_quant_close(value, expected[name], tolerance=tolerance, metric=metric)
        else:
            assert_quant_close(actual, expected, tolerance=tolerance, metric=metric)
    except AssertionError as failure:
        if not blame:
            raise
        raise AssertionError(f"{failure}\n{_blame(runner, x)}") from None


def _blame(runner: Any, x: Any) -> str:
    try:
        errors = runner.layer_errors(x)
    except (ValueError, ConversionError) as exc:
        return f"  (per-layer blame unavailable: {str(exc).splitlines()[0]})"
    from ..assertions import record

    worst = errors[0].rmse_per_scale if errors else 0.0
    record(
        "assert_tflite_close",
        "worst_layer_rmse_per_scale",
        worst,
        IDEAL_RMSE_PER_SCALE,
        False,
        detail={"layers": [[e.layer, e.rmse_per_scale] for e in errors]},
    )
    head = (
        f"  layers adding the most error ({min(BLAME_ROWS, len(errors))} of {len(errors)}, "
        "RMSE in steps of each layer's scale; about 0.29 is ideal):"
    )
    return "\n".join([head, *blame_table(errors, top=BLAME_ROWS)])
