"""Zarr v2/v3 arrays and OME-Zarr groups as plane sources.

An OME-Zarr group is read at level 0 of its ``multiscales``.  Reads are basic
selections, which fetch only the overlapping chunks (a chunk missing from the
store reads as the array's fill value, as Zarr defines).  A read reaches into
its neighbours' chunks by the halo, so a source reads whole blocks of chunks
(about 512 px a side) and keeps the most recently read ones
(:data:`CHUNK_CACHE_PIXELS`): each chunk is decoded about once when regions
arrive row by row, instead of by every read whose halo touches it.

Channel layout: axes come from OME ``axes``, Zarr v3 ``dimension_names`` or
xarray's ``_ARRAY_DIMENSIONS``; a 3-D array without names is channels-first
unless its last axis has at most 4 entries and its first more than 4 (then
it is ``H x W x C``).  Axes other than channel, y and x must have size 1.
"""

# this module is tilex.readers.zarr; ``import zarr`` below still finds the
# zarr package because imports are absolute
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tilex.errors import CorruptFileError, UnsupportedFormatError
from tilex.readers.base import _positive_float, _reason, _SegmentCache, _SourceBase

__all__ = ["CHUNK_CACHE_PIXELS", "ZarrSource"]

CHUNK_CACHE_PIXELS = 32 * 512 * 512
"""Pixels (times the channels) of decoded blocks a source keeps: three rows of ten
512 px blocks, what a write unit's rows of engine tiles read with their halo. A block
larger than a quarter of that (chunks over about 1400 px) is not kept; reads then
fetch only what they overlap, as before."""

_BLOCK = 512  # a block is the smallest whole number of chunks at least this wide


class ZarrSource(_SourceBase):
    """A Zarr v2/v3 array or the level 0 array of an OME-Zarr group.

    Reads are basic selections, so only the overlapping chunks are fetched.

    Examples
    --------
    >>> src = ZarrSource("scan.ome.zarr")  # doctest: +SKIP
    >>> src.channels, src.channel_names[:3]  # doctest: +SKIP
    (11, ('R', 'G', 'B'))
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import zarr

        self.path = Path(path)
        try:
            node = zarr.open(store=str(self.path), mode="r")
        except (ValueError, KeyError, TypeError, FileNotFoundError) as err:
            raise CorruptFileError(
                f"{self.path} is not a readable Zarr store ({_reason(err)})", path=self.path
            ) from err
        self.format = "Zarr"
        axes: list[str] | None = None
        if isinstance(node, zarr.Group):
            array, axes = self._open_ome(node)
        else:
            array = node
            axes = _zarr_dimension_names(array)
        self._array = array
        self._axes = self._resolve_axes(array.shape, axes)
        c = self._axes.index("c") if "c" in self._axes else None
        self.channels = int(array.shape[c]) if c is not None else 1
        self.shape = (
            int(array.shape[self._axes.index("y")]),
            int(array.shape[self._axes.index("x")]),
        )
        self.dtype = np.dtype(array.dtype).newbyteorder("=")
        self._order = [axis for axis in self._axes if axis in "cyx"]
        self._finish_init()
        chunk_y, chunk_x = (int(array.chunks[self._axes.index(a)]) for a in "yx")
        by, bx = chunk_y * -(-_BLOCK // chunk_y), chunk_x * -(-_BLOCK // chunk_x)
        per_pixel = self.channels * self.dtype.itemsize
        self._cache = _SegmentCache(None, CHUNK_CACHE_PIXELS * per_pixel)
        # None: blocks too large to keep, so reads fetch only what they overlap
        self._block = (by, bx) if self._cache.keeps(by * bx * per_pixel) else None

    def _open_ome(self, group: Any) -> tuple[Any, list[str] | None]:
        attrs = dict(group.attrs)
        ome = attrs.get("ome", attrs)  # OME-Zarr 0.5 nests under "ome"
        multiscales = ome.get("multiscales")
        if not multiscales:
            raise UnsupportedFormatError(
                f"{self.path} is a Zarr group without OME multiscales; give the path of "
                "an array inside it",
                path=self.path,
            )
        self.format = "OME-Zarr"
        scale = multiscales[0]
        level0 = scale["datasets"][0]
        try:
            array = group[level0["path"]]
        except KeyError as err:
            raise CorruptFileError(
                f"{self.path}: OME multiscales names level {level0['path']!r}, which is missing",
                path=self.path,
            ) from err
        axes_meta = scale.get("axes")
        axes = None
        if axes_meta:
            axes = [a["name"] if isinstance(a, dict) else str(a) for a in axes_meta]
        elif array.ndim == 5:
            axes = list("tczyx")  # OME-Zarr 0.1/0.2 fixed order
        labels = [c.get("label") for c in ome.get("omero", {}).get("channels", [])]
        waves = [
            _positive_float(c.get("emissionWavelength") or c.get("emission_wavelength"))
            for c in ome.get("omero", {}).get("channels", [])
        ]
        if axes is not None and "c" in [a.lower() for a in axes]:
            n = array.shape[[a.lower() for a in axes].index("c")]
            if len(labels) == n:
                self.channel_names = tuple(labels)
                self.channel_wavelengths = tuple(waves)
        self.pixel_size_um = _ome_zarr_pixel_size(axes_meta, level0)
        return array, axes

    def _resolve_axes(self, shape: tuple[int, ...], axes: list[str] | None) -> list[str]:
        if axes is not None and len(axes) == len(shape):
            axes = [str(a).lower() for a in axes]
        elif len(shape) == 2:
            axes = ["y", "x"]
        elif len(shape) == 3:
            channels_last = shape[-1] <= 4 < shape[0]
            axes = ["y", "x", "c"] if channels_last else ["c", "y", "x"]
        else:
            raise UnsupportedFormatError(
                f"{self.path} has shape {tuple(shape)} without axis names; expected 2-D, 3-D "
                "or OME axes",
                path=self.path,
            )
        if "y" not in axes or "x" not in axes or len(set(axes)) != len(axes):
            raise UnsupportedFormatError(
                f"{self.path} has axes {axes}; expected y, x and optionally c", path=self.path
            )
        for axis, n in zip(axes, shape, strict=True):
            if axis not in "cyx" and n != 1:
                raise UnsupportedFormatError(
                    f"{self.path} has axis {axis!r} of size {n}; tilex reads channel, y and x "
                    "axes only (others must have size 1)",
                    path=self.path,
                )
        return axes

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[channels, y1 - y0, x1 - x0]`` in the native dtype.

        Examples
        --------
        >>> ZarrSource("band.zarr").read(0, 10, 0, 20).shape  # doctest: +SKIP
        (1, 10, 20)
        """
        self._check_region(y0, y1, x0, x1)
        where = (y0, y1, x0, x1)
        if self._block is None:
            return self._check_finite(self._fetch(*where, where), *where)
        by, bx = self._block
        height, width = self.shape
        out = np.empty((self.channels, y1 - y0, x1 - x0), self.dtype)
        for row in range(y0 // by, (y1 - 1) // by + 1):
            for col in range(x0 // bx, (x1 - 1) // bx + 1):
                sy, sx = row * by, col * bx
                block = self._cache.get((row, col))
                if block is None:
                    block = self._fetch(sy, min(height, sy + by), sx, min(width, sx + bx), where)
                    self._cache.put((row, col), block, block)
                ya, yb, xa, xb = max(y0, sy), min(y1, sy + by), max(x0, sx), min(x1, sx + bx)
                out[:, ya - y0 : yb - y0, xa - x0 : xb - x0] = block[
                    :, ya - sy : yb - sy, xa - sx : xb - sx
                ]
        return self._check_finite(out, *where)

    def _fetch(
        self, y0: int, y1: int, x0: int, x1: int, where: tuple[int, int, int, int]
    ) -> np.ndarray:
        """Pixels ``[channels, h, w]`` of a region, read from the store (``where``: the read asked)."""
        picks = {"c": slice(None), "y": slice(y0, y1), "x": slice(x0, x1)}
        index = tuple(picks.get(axis, 0) for axis in self._axes)
        try:
            data = np.asarray(self._array[index])
        except (ValueError, RuntimeError, TypeError, OSError) as err:
            wy0, wy1, wx0, wx1 = where
            raise CorruptFileError(
                f"reading rows {wy0}:{wy1}, columns {wx0}:{wx1} of {self.path} failed: its "
                f"chunks cannot be read ({_reason(err)}); the store is damaged",
                path=self.path,
            ) from err
        order = list(self._order)
        if "c" not in order:
            data, order = data[np.newaxis], ["c", *order]
        data = np.transpose(data, [order.index(a) for a in "cyx"])
        return np.ascontiguousarray(data, self.dtype)

    def close(self) -> None:
        """Drop the decoded blocks (idempotent; the store needs no closing)."""
        self._cache.clear()

    def describe(self) -> dict[str, Any]:
        """Format, dtype, shape, channels, chunking and compression (JSON-able).

        Examples
        --------
        >>> ZarrSource("band.zarr").describe()["tiling"]  # doctest: +SKIP
        {'chunks': [1, 512, 512], 'axes': ['c', 'y', 'x']}
        """
        array = self._array
        info = self._base_description()
        info["tiling"] = {"chunks": list(array.chunks), "axes": self._axes}
        if getattr(array, "shards", None):
            info["tiling"]["shards"] = list(array.shards)
        names = [_codec_name(c) for c in array.compressors]
        info["compression"] = "+".join(names) if names else "none"
        info["zarr_format"] = int(array.metadata.zarr_format)
        return info


def _zarr_dimension_names(array: Any) -> list[str] | None:
    names = getattr(array.metadata, "dimension_names", None)
    if names and all(names):
        return list(names)
    names = array.attrs.get("_ARRAY_DIMENSIONS")
    return list(names) if names else None


def _ome_zarr_pixel_size(axes_meta: Any, level0: dict[str, Any]) -> float | None:
    if not axes_meta or not isinstance(axes_meta[-1], dict):
        return None
    x_axis = axes_meta[-1]
    if x_axis.get("unit") != "micrometer":
        return None
    for transform in level0.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            return _positive_float(transform["scale"][-1])
    return None


def _codec_name(codec: Any) -> str:
    name = getattr(codec, "codec_id", None)
    if name is None and hasattr(codec, "to_dict"):
        name = codec.to_dict().get("name")
    return str(name or type(codec).__name__)
