"""What a conversion takes and gives: its modes, and the TFLite identifier."""

from __future__ import annotations

MODES = ("int8", "dynamic", "float16", "int16x8")
#: No optimization at all: the float model that per-tensor blame compares against.
REFERENCE_MODE = "float"
#: The modes that calibrate with representative data; the others never see it.
CALIBRATED_MODES = ("int8", "int16x8")
TFLITE_IDENTIFIER = b"TFL3"
