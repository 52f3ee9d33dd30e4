"""Plane sources: lazy, thread-safe readers of one image file per format.

A *plane source* is one image file (or Zarr array) seen as ``channels`` planes
of ``shape = (H, W)`` pixels in its native ``dtype`` (the contract:
:class:`PlaneSource`, in :mod:`tilex.readers.base`).  One module per format:

- :mod:`~tilex.readers.tiff`: TIFF, BigTIFF and OME-TIFF, tiled or striped,
  read tile by tile with :func:`os.pread`;
- :mod:`~tilex.readers.zarr`: Zarr v2/v3 arrays and OME-Zarr groups (level 0
  of ``multiscales``), read chunk by chunk;
- :mod:`~tilex.readers.image`: PNG, BMP and JPEG, small by nature and read
  whole at open;
- :mod:`~tilex.readers.array`: NumPy arrays in memory.

:func:`open_source` finds the format from a file's first bytes.  Pixel types
are uint8, uint16 and float32; NaN and infinity are refused.  A float
source's ``value_range()`` is measured at open (:mod:`~tilex.readers.value_range`):
over every pixel up to 64 Mpx, else over a lattice of small regions.

Example
-------
>>> src = open_source("ir1000.tif")  # doctest: +SKIP
>>> src.read(0, 256, 0, 256).shape  # doctest: +SKIP
(1, 256, 256)
"""

from tilex.readers.array import ArraySource
from tilex.readers.base import SUPPORTED_DTYPES, PlaneSource
from tilex.readers.image import ImageSource
from tilex.readers.open import open_source
from tilex.readers.tiff import TiffSource
from tilex.readers.value_range import (
    FINITE_CHECK_AT_OPEN_PX,
    RANGE_LATTICE,
    ValueRange,
    check_finite,
    measure_range,
)
from tilex.readers.zarr import ZarrSource

__all__ = [
    "FINITE_CHECK_AT_OPEN_PX",
    "RANGE_LATTICE",
    "SUPPORTED_DTYPES",
    "ArraySource",
    "ImageSource",
    "PlaneSource",
    "TiffSource",
    "ValueRange",
    "ZarrSource",
    "check_finite",
    "measure_range",
    "open_source",
]
