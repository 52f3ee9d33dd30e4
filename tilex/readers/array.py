"""In-memory arrays as plane sources (notebooks and tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tilex.errors import UnsupportedFormatError
from tilex.readers.base import _SourceBase

__all__ = ["ArraySource"]


class ArraySource(_SourceBase):
    """An image already in memory: a NumPy array ``[H, W]``, ``[C, H, W]`` or ``[H, W, C]``.

    For notebooks and tests; the same rules as files apply (dtypes, NaN
    refused on read). A 3-D array is channels-last when its last axis has 3
    or 4 entries and its first does not.

    Examples
    --------
    >>> import numpy as np
    >>> src = ArraySource(np.zeros((40, 60, 3), np.uint8), name="rgb")
    >>> src.shape, src.channels, src.format
    ((40, 60), 3, 'array')
    """

    format = "array"

    def __init__(self, array: np.ndarray, name: str = "array") -> None:
        data = np.asarray(array)
        if data.ndim == 3 and data.shape[-1] in (3, 4) and data.shape[0] not in (1, 3, 4):
            data = np.moveaxis(data, -1, 0)
        if data.ndim == 2:
            data = data[np.newaxis]
        self.path = Path(f"<{name}>")
        if data.ndim != 3:
            raise UnsupportedFormatError(f"{self.path} has shape {data.shape}; expected 2-D or 3-D")
        self._data = data
        self.channels = int(data.shape[0])
        self.shape = (int(data.shape[1]), int(data.shape[2]))
        self.dtype = data.dtype
        self._finish_init()

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[channels, y1 - y0, x1 - x0]`` (a copy); NaN/inf refused."""
        self._check_region(y0, y1, x0, x1)
        return self._check_finite(self._data[:, y0:y1, x0:x1].copy(), y0, y1, x0, x1)

    def describe(self) -> dict[str, Any]:
        info = self._base_description()
        info.update(path=str(self.path), tiling={"in_memory": True}, compression="none")
        return info

    def close(self) -> None:
        """Nothing to release."""
