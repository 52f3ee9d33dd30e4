"""Export one image of a tilex output as a pyramidal OME-TIFF (for QuPath, Fiji, IIPImage, libvips).

Level 0 is the main image; every other level of the OME-Zarr pyramid becomes
a SubIFD (``subfiletype=1``) of it, so the TIFF has the same levels as the
Zarr. Tiles are ``512 x 512`` and are read from the zarr levels one tile at
a time (whole chunks): memory holds one tile, whatever the image size.

- uint8 RGB (the overlay, the visible image) is written as *interleaved*
  RGB tiles (planar configuration "contig"), compressed with deflate
  (``zlib``), ``zstd``, ``lzw`` or ``jpeg`` as the user picks: what image
  servers of the IIPImage kind and libvips read.
- float images (collage, score, evidence, dissimilarity) keep their channels
  as separate planes, one grey page per channel (libvips cannot decode a
  tiled float image with separate planes; tifffile, Bio-Formats and QuPath do).

With ``threshold``, the overlay, score and collage are drawn as they are at
that threshold (:class:`tilex.render.Pictures`) without re-encoding the scan.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tilex.errors import OutputError, OutputExistsError
from tilex.omezarr import OutputImage, open_output
from tilex.render import Pictures

__all__ = ["COMPRESSIONS", "EXPORT_IMAGES", "export_ome_tiff"]

EXPORT_IMAGES = ("overlay", "visible", "collage", "score", "evidence", "dissimilarity")
"""Images of an output that can be exported (``visible``, ``evidence`` and ``dissimilarity``
only when stored)."""

COMPRESSIONS = ("zlib", "zstd", "lzw", "jpeg", "none")
"""TIFF tile compressions (``jpeg``: uint8 RGB only)."""

TILE = 512

Read = Callable[[int, tuple[int, int, int, int]], np.ndarray]


def _reader(pictures: Pictures, image: str) -> Read:
    """``read(level, region) -> [c, h, w]`` for ``image`` at the pictures' threshold."""
    if image == "overlay":
        return pictures.overlay
    if image == "score":
        return lambda level, region: pictures.score(level, region)[None]
    if image == "collage":
        pictures.require_winner("the collage")
        return pictures.collage_features
    return lambda level, region: pictures.read(image, level, region)


def _tiles(read: Read, level: int, shape: tuple[int, ...], contig: bool) -> Iterator[np.ndarray]:
    """The level's tiles in the order tifffile writes them (per channel unless ``contig``)."""
    c, h, w = shape
    for ch in [None] if contig else range(c):
        for y0 in range(0, h, TILE):
            for x0 in range(0, w, TILE):
                block = read(level, (y0, min(y0 + TILE, h), x0, min(x0 + TILE, w)))
                if contig:
                    yield np.ascontiguousarray(np.moveaxis(block, 0, -1))
                else:
                    yield np.ascontiguousarray(block[ch])


def export_ome_tiff(
    out: str | os.PathLike,
    dest: str | os.PathLike | None = None,
    *,
    image: str = "overlay",
    compression: str = "zlib",
    quality: int = 90,
    threshold: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Write one image of the output ``out`` as a pyramidal, tiled OME-TIFF.

    Parameters
    ----------
    out : path-like
        A complete tilex output folder.
    dest : path-like, optional
        The ``.ome.tif`` to write; default ``OUT/<image>.ome.tif``.
    image : {"overlay", "visible", "collage", "score", "evidence", "dissimilarity"}
        Which image to export (``visible``: the scan's visible image in colour,
        as the output keeps it).
    compression : {"zlib", "zstd", "lzw", "jpeg", "none"}
        Tile compression; ``jpeg`` (lossy, ``quality``) for the uint8 RGB
        images only (the overlay, the visible image).
    quality : int
        JPEG quality, 1 to 100.
    threshold : float, optional
        Export the overlay, score or collage as they are at this threshold
        instead of the run's (see :class:`tilex.render.Pictures` for which
        thresholds an output can be drawn at).
    overwrite : bool
        Replace ``dest`` when it exists.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    OutputError
        ``out`` is not a complete output, has no such image, or the options
        do not fit the image.
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
    if compression not in COMPRESSIONS:
        raise OutputError(
            f"unknown compression {compression!r}: choose one of {', '.join(COMPRESSIONS)}"
        )
    if image == "visible" and "visible" not in output.images:
        raise OutputError(
            f"output {output.path} has no colour visible image (written before tilex kept it):"
            " export the overlay, or run the scan again"
        )
    img = output[image]
    pictures = Pictures(output, threshold)
    read = _reader(pictures, image)
    dest = Path(dest) if dest is not None else output.path / f"{image}.ome.tif"
    if dest.exists() and not overwrite:
        raise OutputExistsError(f"{dest} already exists: pass --overwrite or choose another -o")
    levels = img.levels
    c, h, w = levels[0].shape
    rgb = c == 3 and levels[0].dtype == np.uint8
    if compression == "jpeg" and not rgb:
        raise OutputError(
            f"JPEG compression needs a uint8 RGB image; {image} is {levels[0].dtype} with"
            f" {c} channel(s): use zlib or zstd"
        )
    if not 1 <= quality <= 100:
        raise OutputError(f"JPEG quality must be 1 to 100, got {quality}")
    pixel = output.manifest["output"].get("pixel_size_um")
    options: dict[str, Any] = {
        "tile": (TILE, TILE),
        "compression": None if compression == "none" else compression,
        "photometric": "rgb" if rgb else "minisblack",
        "dtype": levels[0].dtype,
    }
    if rgb:
        options["planarconfig"] = "contig"
    if compression == "jpeg":
        options["compressionargs"] = {"level": quality}
    if pixel:
        options["resolution"] = (1e4 / pixel, 1e4 / pixel)  # pixels per centimetre
        options["resolutionunit"] = "CENTIMETER"

    def shape_of(level: Any) -> tuple[int, ...]:
        lc, lh, lw = level.shape
        return (lh, lw, lc) if rgb else (lc, lh, lw)

    metadata = _ome_metadata(img, pixel, rgb)
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
            tif.write(
                _tiles(read, 0, levels[0].shape, rgb),
                shape=shape_of(levels[0]),
                subifds=len(levels) - 1,
                metadata=metadata,
                **options,
            )
            for k, level in enumerate(levels[1:], start=1):
                tif.write(
                    _tiles(read, k, level.shape, rgb),
                    shape=shape_of(level),
                    subfiletype=1,
                    **options,
                )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _ome_metadata(img: OutputImage, pixel_um: float | None, rgb: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"axes": "YXS" if rgb else "CYX", "Name": img.name}
    labels = img.channel_labels
    if labels and not rgb:
        meta["Channel"] = {"Name": labels}
    if pixel_um:
        meta.update(
            PhysicalSizeX=pixel_um,
            PhysicalSizeXUnit="µm",
            PhysicalSizeY=pixel_um,
            PhysicalSizeYUnit="µm",
        )
    return meta
