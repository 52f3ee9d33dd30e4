"""Export one image of a tilex output as a pyramidal OME-TIFF (for QuPath, Fiji, ...).

Level 0 is the main image; every other level of the OME-Zarr pyramid becomes
a SubIFD (``subfiletype=1``) of it, so the TIFF has the same levels as the
Zarr.  Tiles are ``512 x 512`` and are streamed from the zarr level one row of
tiles at a time: memory holds one row of tiles of one channel, whatever the
image size.  The overlay (uint8 RGB) is written as one RGB page (planar
configuration "separate"); float images as one grey page per channel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tilex.errors import OutputError, OutputExistsError
from tilex.omezarr import OutputImage, open_output

__all__ = ["EXPORT_IMAGES", "export_ome_tiff"]

EXPORT_IMAGES = ("overlay", "collage", "score", "dissimilarity")
"""Images of an output that can be exported (``dissimilarity`` only when kept)."""

TILE = 512


def _tiles(array: Any, tile: int) -> Iterator[np.ndarray]:
    """Every ``tile x tile`` tile of a ``[c, h, w]`` zarr array: channel, row, column order."""
    c, h, w = array.shape
    for ch in range(c):
        for y0 in range(0, h, tile):
            band = np.asarray(array[ch, y0 : y0 + tile, :])  # one read per row of tiles
            for x0 in range(0, w, tile):
                yield np.ascontiguousarray(band[:, x0 : x0 + tile])


def export_ome_tiff(
    out: str | os.PathLike,
    dest: str | os.PathLike | None = None,
    *,
    image: str = "overlay",
    compression: str = "zlib",
    overwrite: bool = False,
) -> Path:
    """Write one image of the output ``out`` as a pyramidal, tiled OME-TIFF.

    Parameters
    ----------
    out : path-like
        A complete tilex output folder.
    dest : path-like, optional
        The ``.ome.tif`` to write; default ``OUT/<image>.ome.tif``.
    image : {"overlay", "collage", "score", "dissimilarity"}
        Which image to export.
    compression : str
        A tifffile compression (``"zlib"``, ``"zstd"``, ``"none"``, ...).
    overwrite : bool
        Replace ``dest`` when it exists.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    OutputError
        ``out`` is not a complete output or has no such image.
    OutputExistsError
        ``dest`` exists and ``overwrite`` is false.

    Examples
    --------
    >>> export_ome_tiff("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tilex.errors.OutputError: /nonexistent is not a tilex output: ...
    """
    import tifffile

    output = open_output(out)
    if image not in EXPORT_IMAGES:
        raise OutputError(
            f"cannot export image {image!r}: choose one of {', '.join(EXPORT_IMAGES)}"
        )
    img = output[image]
    dest = Path(dest) if dest is not None else output.path / f"{image}.ome.tif"
    if dest.exists() and not overwrite:
        raise OutputExistsError(f"{dest} already exists: pass --overwrite or choose another -o")
    pixel = output.manifest["output"].get("pixel_size_um")
    levels = img.levels
    c, h, w = levels[0].shape
    rgb = image == "overlay"
    options: dict[str, Any] = {
        "tile": (TILE, TILE),
        "compression": None if compression == "none" else compression,
        "photometric": "rgb" if rgb else "minisblack",
        "dtype": levels[0].dtype,
    }
    if rgb:
        options["planarconfig"] = "separate"
    if pixel:
        options["resolution"] = (1e4 / pixel, 1e4 / pixel)  # pixels per centimetre
        options["resolutionunit"] = "CENTIMETER"
    metadata = _ome_metadata(img, pixel)
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
            tif.write(
                _tiles(levels[0], TILE),
                shape=(c, h, w),
                subifds=len(levels) - 1,
                metadata=metadata,
                **options,
            )
            for level in levels[1:]:
                tif.write(_tiles(level, TILE), shape=tuple(level.shape), subfiletype=1, **options)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _ome_metadata(img: OutputImage, pixel_um: float | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"axes": "CYX", "Name": img.name}
    labels = img.channel_labels
    if labels:
        meta["Channel"] = {"Name": labels}
    if pixel_um:
        meta.update(
            PhysicalSizeX=pixel_um,
            PhysicalSizeXUnit="µm",
            PhysicalSizeY=pixel_um,
            PhysicalSizeYUnit="µm",
        )
    return meta
