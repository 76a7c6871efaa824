"""What a conversion takes and gives: its modes, and the check that bytes are a TFLite model."""

from __future__ import annotations

MODES = ("int8", "dynamic", "float16", "int16x8")
#: No optimization at all: the float model that per-tensor blame compares against.
REFERENCE_MODE = "float"
#: The modes that calibrate with representative data; the others never see it.
CALIBRATED_MODES = ("int8", "int16x8")
TFLITE_IDENTIFIER = b"TFL3"


def check_tflite(content: bytes, origin: str) -> bytes:
    """Return ``content`` if it is a TFLite flatbuffer, else raise ``ValueError`` naming it."""
    if len(content) < 8 or content[4:8] != TFLITE_IDENTIFIER:
        raise ValueError(
            f"{origin} is not a TFLite model (no 'TFL3' identifier at bytes 4-8; "
            f"{len(content)} bytes): pass a .tflite file or the converter's output"
        )
    return content
