"""Import TensorFlow / LiteRT on first use, with an install hint when they are missing.

The hint names the extra that matches what is installed: a team that has
``tensorflow-cpu`` is told ``[tf-cpu]``, never an extra that would install a second
TensorFlow beside it.
"""

from __future__ import annotations

from importlib import import_module, metadata
from importlib.util import find_spec
from types import ModuleType

#: TensorFlow distributions, and the extra of pytest-quant that matches each
_TF_EXTRAS = {"tensorflow-cpu": "tf-cpu", "tensorflow": "tf", "tf-nightly": "litert"}
#: what each part of the TFLite layer needs, in the order a hint lists them
NEEDS = {
    "interpreter": ("ai_edge_litert", "flatbuffers", "filelock"),
    "converter": ("tensorflow", "ai_edge_litert", "flatbuffers", "filelock"),
}


HINT = 'pip install "pytest-quant[tf]" (or [tf-cpu], or [litert] if you bring your own TF)'


def installed_tensorflow() -> str | None:
    """The installed TensorFlow distribution's name, without importing it."""
    for dist in _TF_EXTRAS:
        try:
            metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        return dist
    return None


def hint(part: str = "interpreter") -> str:
    """What to install for ``part`` (``"interpreter"`` or ``"converter"``), naming every
    missing module at once and the extra that matches the installed TensorFlow."""
    missing = [m for m in NEEDS[part] if find_spec(m) is None]
    have = installed_tensorflow()
    if have is not None:
        extra = _TF_EXTRAS[have]
        why = f"you have {have}, so"
    elif part == "converter":
        extra, why = "tf-cpu", "converting needs TensorFlow:"
    else:
        extra, why = "litert", "for the interpreter alone,"
    text = f'{why} pip install "pytest-quant[{extra}]"'
    if part == "converter" and have is None:
        text += " (or [tf], or [keras2] for tf-keras/TFMOT); with [litert] alone, pass an "
        text += "already-converted .tflite"
    if missing:
        return f"missing: {', '.join(missing)}. {text}"
    return text


def require(module: str, part: str = "interpreter") -> ModuleType:
    """``import_module(module)``, or ``ModuleNotFoundError`` saying what to install."""
    try:
        return import_module(module)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"{exc.name} is not installed: pytest-quant's TFLite layer needs it; {hint(part)}"
        ) from None
