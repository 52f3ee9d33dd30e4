"""The plane source contract and the checks every format shares.

A *plane source* is one image file (or Zarr array, or in-memory array) seen
as ``channels`` planes (one for a 2-D image) of ``shape = (H, W)`` pixels in
its native ``dtype``.  Every source has

- ``path``, ``format`` (``"TIFF"``, ``"BigTIFF"``, ``"OME-TIFF"``, ``"Zarr"``,
  ``"OME-Zarr"``, ``"PNG"``, ``"BMP"``, ``"JPEG"``, ``"array"``), ``shape``,
  ``channels``, ``dtype``;
- ``channel_names`` / ``channel_wavelengths`` (from OME metadata, else
  ``None`` per channel) and ``pixel_size_um`` (OME physical size, else None);
- ``read(y0, y1, x0, x1) -> ndarray [c, h, w]`` in the native dtype;
- ``describe() -> dict`` (JSON-able: format, dtype, shape, channels, on-disk
  tiling and compression), ``value_range()`` and ``close()``.

Pixel types: uint8, uint16 and float32 only (:class:`UnsupportedFormatError`
otherwise).  Non-finite floats are refused: a read whose region holds NaN or
infinity raises :class:`NonFiniteError` naming the file and the region.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tilex.errors import NonFiniteError, UnsupportedFormatError
from tilex.readers.value_range import ValueRange, measure_range

__all__ = ["SUPPORTED_DTYPES", "PlaneSource"]

SUPPORTED_DTYPES = (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))


class _SegmentCache:
    """Decoded pieces of a file by key, least recently used out first (thread-safe).

    At most ``count`` entries (``None``: no count limit) and ``nbytes`` bytes;
    a piece larger than a quarter of ``nbytes`` is not kept. A kept array is
    made read-only: readers copy out of it.
    """

    def __init__(self, count: int | None, nbytes: int) -> None:
        self.count, self.limit = count, nbytes
        self._entries: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self.nbytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Any) -> Any | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            self._entries.move_to_end(key)
            return hit[0]

    def keeps(self, nbytes: int) -> bool:
        """Whether a piece of ``nbytes`` would be kept (at most a quarter of the limit)."""
        return nbytes * 4 <= self.limit

    def put(self, key: Any, value: Any, array: np.ndarray) -> None:
        """Keep ``value``, whose memory is ``array`` (made read-only here)."""
        size = array.nbytes
        if not self.keeps(size):
            return
        array.flags.writeable = False
        with self._lock:
            if key in self._entries:  # another reader decoded it meanwhile
                return
            self._entries[key] = (value, size)
            self.nbytes += size
            while self.nbytes > self.limit or (
                self.count is not None and len(self._entries) > self.count
            ):
                _, (_, old) = self._entries.popitem(last=False)
                self.nbytes -= old

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0


@runtime_checkable
class PlaneSource(Protocol):
    """What :mod:`tilex.scan` needs from one input file."""

    path: Path
    format: str
    shape: tuple[int, int]
    channels: int
    dtype: np.dtype
    channel_names: tuple[str | None, ...]
    channel_wavelengths: tuple[float | None, ...]
    pixel_size_um: float | None

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...

    def value_range(self) -> ValueRange | None: ...

    def close(self) -> None: ...


class _SourceBase:
    """Shared checks and metadata defaults of the plane sources."""

    path: Path
    format: str
    shape: tuple[int, int]
    channels: int
    dtype: np.dtype
    channel_names: tuple[str | None, ...] = ()
    channel_wavelengths: tuple[float | None, ...] = ()
    pixel_size_um: float | None = None
    _range: ValueRange | None = None

    def _finish_init(self) -> None:
        if self.dtype not in SUPPORTED_DTYPES:
            raise UnsupportedFormatError(
                f"{self.path} has pixel type {self.dtype}, expected uint8, uint16 or float32",
                path=self.path,
            )
        if not self.channel_names:
            self.channel_names = (None,) * self.channels
        if not self.channel_wavelengths:
            self.channel_wavelengths = (None,) * self.channels

    def _check_region(self, y0: int, y1: int, x0: int, x1: int) -> None:
        height, width = self.shape
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            raise ValueError(
                f"region y {y0}:{y1}, x {x0}:{x1} is empty or outside {self.path} "
                f"({height}x{width})"
            )

    def _check_finite(self, data: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            raise NonFiniteError(
                f"{self.path} holds NaN or infinity in rows {y0}:{y1}, columns {x0}:{x1}; "
                "tilex refuses non-finite pixels (replace them, e.g. with 0, and retry)",
                path=self.path,
            )
        return data

    def value_range(self) -> ValueRange | None:
        """Each channel's value range of a float source (measured once); None for integers."""
        if self.dtype.kind != "f":
            return None
        if self._range is None:
            self._range = measure_range(self)
        return self._range

    def _base_description(self) -> dict[str, Any]:
        return {
            "path": str(self.path.absolute()),
            "format": self.format,
            "dtype": str(self.dtype),
            "shape": list(self.shape),
            "channels": self.channels,
        }

    def close(self) -> None:
        """Release the file handles (idempotent)."""

    def __repr__(self) -> str:
        height, width = self.shape
        return (
            f"<{type(self).__name__} {self.format} {self.path.name} "
            f"{height}x{width}x{self.channels} {self.dtype}>"
        )


def _positive_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _reason(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
