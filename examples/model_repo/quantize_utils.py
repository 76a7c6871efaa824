"""The team's own quantization helper (what the article's example code tried to be)."""

from __future__ import annotations

import numpy as np


def quantize_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 weights, as TFLite stores Dense kernels.

    ``w`` is a Keras Dense kernel (in, out): channels are on axis 1. Returns
    ``(q, scale, zero_point)`` with one scale per channel and narrow range [-127, 127].
    """
    max_abs = np.max(np.abs(w), axis=0)
    scale = np.where(max_abs > 0, max_abs / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)  # clip, then cast
    return q, scale, np.zeros_like(scale, dtype=np.int64)
