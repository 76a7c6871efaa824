"""Bounds of the quant checks and the test they run in. Imports nothing heavy.

The plugin resolves each test's bounds (marker > command line > ini > default) and
publishes them here for the duration of the test call, with a sink for check records;
the assertion helpers read them, so ``assert_quant_close(a, b)`` picks up
``--quant-tolerance`` or ``@pytest.mark.quant(tolerance=...)`` without a fixture.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

#: The default of ``--quant-tolerance``: RMS error <= 2% of the reference's full scale.
DEFAULT_TOLERANCE = 0.02
#: The default of ``--quant-max-lsb``: integer outputs may differ by one step.
DEFAULT_MAX_LSB = 1

TOLERANCE_SOURCE = "--quant-tolerance / ini quant_tolerance / @pytest.mark.quant(tolerance=...)"
MAX_LSB_SOURCE = "--quant-max-lsb / ini quant_max_lsb / @pytest.mark.quant(max_lsb=...)"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_tolerance(text: Any) -> float:
    """A tolerance: a finite number >= 0 (``argparse`` type and ini/marker validator)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def parse_max_lsb(text: Any) -> int:
    """An LSB budget: a whole number >= 0."""
    if isinstance(text, bool):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 0")
    return int(value)


def parse_bool(text: Any) -> bool:
    """A switch in an ini file: true/false, yes/no, on/off or 1/0 (any case)."""
    if isinstance(text, bool):
        return text
    word = str(text).strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a switch: use true or false")


@dataclass(frozen=True)
class QuantSettings:
    """The bounds in force for one test, and where each came from.

    Example::

        def test_settings(quant_settings):
            assert quant_settings.tolerance >= 0
    """

    tolerance: float = DEFAULT_TOLERANCE
    max_lsb: int = DEFAULT_MAX_LSB
    tolerance_from: str = f"the default {DEFAULT_TOLERANCE}"
    max_lsb_from: str = f"the default {DEFAULT_MAX_LSB}"
    test_id: str | None = None
    sink: Callable[[dict[str, Any]], None] | None = field(default=None, compare=False, repr=False)
    #: ``--quant-suggest``: a failing int8 ``assert_tflite_close`` searches for ops to
    #: keep in float (it costs conversions, hence off by default)
    suggest: bool = False


_current: ContextVar[QuantSettings | None] = ContextVar("pytest_quant_settings", default=None)


def current() -> QuantSettings:
    """The settings of the running test, or the defaults outside a pytest run."""
    return _current.get() or QuantSettings()


def activate(settings: QuantSettings) -> Any:
    """Publish ``settings`` for the running test; returns the token for :func:`deactivate`."""
    return _current.set(settings)


def deactivate(token: Any) -> None:
    _current.reset(token)


def record(entry: dict[str, Any]) -> None:
    """Hand one check's figures to the running test's sink (no-op outside pytest)."""
    settings = _current.get()
    if settings is not None and settings.sink is not None:
        settings.sink({"test_id": settings.test_id, **entry})


#: At most this many misused markers are listed in the usage error.
MAX_MARKER_ERRORS = 10


def marker_errors_message(problems: list[str]) -> str:
    """One usage error for every misused marker, in collection order, capped.

    Example::

        marker_errors_message(["t.py::test_x: @pytest.mark.quant(tolerance='x'): ..."])
    """
    if len(problems) == 1:
        return problems[0]
    lines = [
        f"@pytest.mark.quant is misused on {len(problems)} tests "
        "(it takes only tolerance= and max_lsb=):",
        *problems[:MAX_MARKER_ERRORS],
    ]
    if len(problems) > MAX_MARKER_ERRORS:
        lines.append(f"... and {len(problems) - MAX_MARKER_ERRORS} more")
    return "\n".join(lines)
