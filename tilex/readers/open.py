"""Opening a file as a plane source: the format from its first bytes."""

from __future__ import annotations

import os
from pathlib import Path

from tilex.errors import MissingFileError, UnsupportedFormatError
from tilex.readers.base import PlaneSource, _reason
from tilex.readers.image import ImageSource
from tilex.readers.tiff import TiffSource
from tilex.readers.zarr import ZarrSource

__all__ = ["open_source"]

_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
_PIL_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"BM": "BMP", b"\xff\xd8\xff": "JPEG"}
_ZARR_META = (".zarray", ".zgroup", "zarr.json")


def open_source(path: str | os.PathLike[str]) -> PlaneSource:
    """Open one image file or Zarr store as a lazy plane source.

    The format is found from the file's first bytes (a folder from its Zarr
    metadata), not from its name.  A float file's value range is measured
    here (:func:`~tilex.readers.measure_range`): files of at most
    :data:`~tilex.readers.FINITE_CHECK_AT_OPEN_PX` pixels are read whole, which also checks
    them for NaN/infinity; larger ones are sampled.

    Parameters
    ----------
    path
        A TIFF/BigTIFF/OME-TIFF, PNG, BMP or JPEG file, or a Zarr v2/v3 array
        or OME-Zarr group folder.

    Returns
    -------
    PlaneSource
        Call ``close()`` when done (the handles are also released on garbage
        collection).

    Raises
    ------
    MissingFileError
        The path does not exist or cannot be opened.
    UnsupportedFormatError, CorruptFileError, NonFiniteError
        The file is not something tilex reads, is damaged, or holds NaN/inf.

    Examples
    --------
    >>> src = open_source("ir1000.tif")  # doctest: +SKIP
    >>> src.format, src.shape, src.channels, src.dtype  # doctest: +SKIP
    ('TIFF', (6000, 8000), 1, dtype('uint16'))
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path} does not exist", path=path)
    if path.is_dir():
        if not any((path / name).exists() for name in _ZARR_META):
            raise UnsupportedFormatError(
                f"{path} is a folder without Zarr metadata (.zarray, .zgroup or zarr.json)",
                path=path,
            )
        source: PlaneSource = ZarrSource(path)
    else:
        try:
            with open(path, "rb") as file:
                head = file.read(8)
        except OSError as err:
            raise MissingFileError(f"{path} cannot be opened ({_reason(err)})", path=path) from err
        if head[:4] in _TIFF_MAGIC:
            source = TiffSource(path)
        else:
            kind = next((k for magic, k in _PIL_MAGIC.items() if head.startswith(magic)), None)
            if kind is None:
                raise UnsupportedFormatError(
                    f"{path} is not a TIFF, PNG, BMP, JPEG or Zarr image "
                    f"(first bytes {head[:4]!r})",
                    path=path,
                )
            source = ImageSource(path, kind)
    try:
        source.value_range()
    except BaseException:
        source.close()
        raise
    return source
