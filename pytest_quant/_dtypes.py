"""Integer storage types of TFLite quantization and their ranges."""

from __future__ import annotations

from typing import Any

#: Storage types TFLite quantizes to, with their representable ranges.
INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
    "int32": (-(2**31), 2**31 - 1),
}


def dtype_name(dtype: Any) -> str:
    """Normalize ``dtype`` (a name, numpy dtype or scalar type) to a key of INT_RANGES."""
    name = getattr(dtype, "__name__", None) if isinstance(dtype, type) else None
    if name is None:
        name = str(getattr(dtype, "name", dtype))
    if name not in INT_RANGES:
        raise ValueError(
            f"dtype={dtype!r} is not a quantized storage type; use one of {', '.join(INT_RANGES)}"
        )
    return name


def int_range(dtype: Any, *, narrow_range: bool = False) -> tuple[int, int]:
    """Return ``(qmin, qmax)``; narrow range drops the lowest code (int8: -127)."""
    qmin, qmax = INT_RANGES[dtype_name(dtype)]
    return (qmin + 1, qmax) if narrow_range else (qmin, qmax)
