"""The grey of a visible image: ITU-R BT.601 luminance, written once; its bytes for people.

The encoder's visible adapter, the default network's ``conv`` and the
overlay's grey background all weigh the visible image's channels by
:data:`LUMA`; they take it from here so that they cannot drift apart.
:func:`display_bytes` is the visible image an output keeps for viewers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LUMA", "display_bytes", "luminance"]

LUMA: tuple[float, float, float] = (0.299, 0.587, 0.114)
"""ITU-R BT.601 weights of red, green and blue: ``Y = 0.299 R + 0.587 G + 0.114 B``."""


def luminance(visible: np.ndarray) -> np.ndarray:
    """Grey ``[h, w]`` float32 of a visible ``[3, h, w]`` image.

    Examples
    --------
    >>> rgb = np.ones((3, 2, 2), np.float32) * np.float32([1, 0, 0])[:, None, None]
    >>> luminance(rgb)
    array([[0.299, 0.299],
           [0.299, 0.299]], dtype=float32)
    """
    # float32 weights: float64 ones would make a float64 grey, twice a tile's memory
    weights = np.asarray(LUMA, np.float32)
    return np.tensordot(weights, visible, axes=1).astype(np.float32, copy=False)


def display_bytes(visible: np.ndarray) -> np.ndarray:
    """``uint8 [3, h, w]`` of a visible ``[3, h, w]`` image in [0, 1], as the scan encodes it.

    Examples
    --------
    >>> display_bytes(np.array([[[0.0, 0.5, 1.2]]] * 3, np.float32))[0].tolist()
    [[0, 128, 255]]
    """
    scaled = np.clip(np.nan_to_num(visible, nan=0.0), 0.0, 1.0) * np.float32(255.0)
    return np.floor(scaled + np.float32(0.5)).astype(np.uint8)
