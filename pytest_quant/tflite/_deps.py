"""Import TensorFlow / LiteRT on first use, with an install hint when they are missing."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

HINT = (
    "pytest-quant's TFLite layer needs TensorFlow and the LiteRT interpreter: "
    'pip install "pytest-quant[tf]" (or [tf-cpu], or [litert] if you bring your own TF)'
)


def require(module: str) -> ModuleType:
    """``import_module(module)``, or ``ModuleNotFoundError`` saying what to install."""
    try:
        return import_module(module)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"{exc.name} is not installed. {HINT}") from None
