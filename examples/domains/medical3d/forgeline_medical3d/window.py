"""Hounsfield-unit intensity windowing, shared by the augmenter and the model."""

from __future__ import annotations

import numpy as np

AIR_HU = -1000.0


def hu_window(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """HU values clipped to ``[low, high]`` and scaled to ``[0, 1]`` (a CT viewer's window)."""
    return (np.clip(values, low, high) - low) / (high - low)
