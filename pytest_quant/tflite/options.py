"""``converter_options``, ``float_fallback`` and ``keep_float``: validated into the settings
the child applies."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

_OPTION_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")
#: Converter attributes pytest-quant sets itself from its arguments
_OWNED_OPTIONS = ("representative_dataset",)


def _settings(
    converter_options: Any, float_fallback: bool, mode: str, keep_float: Any = None
) -> dict[str, Any]:
    """The converter settings the child applies, validated and JSON-normalized (they are
    part of the cache key). ``keep_float`` appears only when it names ops, so the keys of
    models converted without it stay as they were."""
    if float_fallback and mode != "int16x8":
        raise ValueError(
            f"float_fallback=True applies to mode='int16x8' only, not mode={mode!r} (TF "
            "2.21's int8 quantizer already leaves an op without an int8 kernel, e.g. NEG, "
            "in float)"
        )
    options: dict[str, Any] = {}
    if converter_options is not None:
        if not isinstance(converter_options, Mapping):
            raise TypeError(
                "converter_options must be a dict of TFLiteConverter attribute names to "
                f"JSON values, got {type(converter_options).__name__}"
            )
        for name, value in converter_options.items():
            if not isinstance(name, str) or not _OPTION_NAME.match(name):
                raise ValueError(
                    f"converter_options key {name!r}: use a TFLiteConverter attribute name, "
                    "with dots for nested attributes (e.g. 'target_spec.supported_ops')"
                )
            if name in _OWNED_OPTIONS:
                raise ValueError(
                    f"converter_options[{name!r}]: pass representative_data to convert() instead"
                )
            options[name] = _json_value(value, f"converter_options[{name!r}]")
    settings: dict[str, Any] = {"options": options, "float_fallback": bool(float_fallback)}
    names = _keep_float(keep_float, mode)
    if names:
        settings["keep_float"] = names
    return settings


def _keep_float(keep_float: Any, mode: str) -> list[str]:
    """``keep_float`` as a sorted list of distinct names (empty for None or [])."""
    if keep_float is None:
        return []
    if isinstance(keep_float, (str, bytes)) or not isinstance(keep_float, Iterable):
        raise TypeError(
            f"keep_float takes a list of tensor names (the outputs of the ops to keep in "
            f"float, as the blame table and suggest_float_layers show them), got "
            f"{type(keep_float).__name__} {keep_float!r}"
        )
    names = list(keep_float)
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise TypeError(f"keep_float names must be non-empty strings, got {bad[0]!r}")
    if names and mode != "int8":
        why = (
            "TF 2.21 quantizes int16x8 with its older quantizer, which has no denylist, and "
            "the MLIR quantizer's int16 model does not load in LiteRT (measured)"
            if mode == "int16x8"
            else "it re-quantizes calibrated int8 ops, which this mode does not make"
        )
        raise ValueError(
            f"keep_float applies to mode='int8' only, not mode={mode!r} (it is TF's "
            f"selective quantization, the MLIR quantizer's denylisted_nodes): {why}"
        )
    return sorted(set(names))


def _json_value(value: Any, name: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name} = {value!r}: use a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v, f"{name}[{i}]") for i, v in enumerate(value)]
    if type(value).__module__.startswith("tensorflow") and isinstance(
        getattr(value, "name", None), str
    ):
        return value.name  # tf.lite.OpsSet.X, tf.float16, tf.lite.Optimize.X: by name
    raise TypeError(
        f"{name} is a {type(value).__name__}: converter_options values are JSON values "
        "(bool, int, float, str, None, lists of them); op sets, dtypes and "
        "optimizations by name"
    )
