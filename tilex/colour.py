"""The grey of a visible image: ITU-R BT.601 luminance, written once.

The encoder's visible adapter, the default network's ``conv`` and the
overlay's grey background all weigh the visible image's channels by
:data:`LUMA`; they take it from here so that they cannot drift apart.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LUMA", "luminance"]

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
