"""Plane sources: lazy, thread-safe readers of one image file per format.

A *plane source* is one image file (or Zarr array) seen as ``channels`` planes
of ``shape = (H, W)`` pixels in its native ``dtype``.  Every source has

- ``path``, ``format`` (``"TIFF"``, ``"BigTIFF"``, ``"OME-TIFF"``, ``"Zarr"``,
  ``"OME-Zarr"``, ``"PNG"``, ``"BMP"``, ``"JPEG"``), ``shape``, ``channels``,
  ``dtype``;
- ``channel_names`` / ``channel_wavelengths`` (from OME metadata, else
  ``None`` per channel) and ``pixel_size_um`` (OME physical size, else None);
- ``read(y0, y1, x0, x1) -> ndarray [c, h, w]`` in the native dtype;
- ``describe() -> dict`` (JSON-able: format, dtype, shape, channels, on-disk
  tiling and compression) and ``close()``.

Formats
-------
TIFF and BigTIFF, tiled or striped, any compression imagecodecs decodes: the
first page (level 0 of a pyramid).  OME-TIFF: level 0 of the first series,
channels in OME order (one page per channel, or samples of one page).  TIFF
reads never load the whole file: the segment offsets and byte counts are kept
at open, and a region read fetches only the overlapping tiles or strips with
:func:`os.pread` on a file descriptor (no shared seek position, so reads from
several threads are safe) and decodes each with tifffile's ``TiffPage.decode``.
Zarr v2/v3 arrays and OME-Zarr groups (level 0 of ``multiscales``) read with
basic selections, which fetch only the overlapping chunks (a chunk missing
from the store reads as the array's fill value, as Zarr defines).  PNG, BMP and JPEG
are small by nature and are read whole at open.

Channel layout: 2-D images have one channel; TIFF samples per pixel
(``H x W x S``) are channels; Zarr axes come from OME ``axes``, Zarr v3
``dimension_names`` or xarray's ``_ARRAY_DIMENSIONS``; a 3-D Zarr array
without names is channels-first unless its last axis has at most 4 entries
and its first more than 4 (then it is ``H x W x C``).  Axes other than
channel, y and x must have size 1.

Pixel types: uint8, uint16 and float32 only (:class:`UnsupportedFormatError`
otherwise).  Non-finite floats are refused: a read whose region holds NaN or
infinity raises :class:`NonFiniteError` naming the file and the region, and a
float file of at most 64 Mpx is checked whole when it is opened.

Value range: ``value_range()`` gives each channel's smallest and largest value
of a float source (``None`` for integers), measured when the file is opened:
over every pixel up to 64 Mpx (the same pass as the NaN check), else over a
fixed lattice of :data:`RANGE_LATTICE` x :data:`RANGE_LATTICE` small regions
(``sampled``), so opening a huge file stays fast.  :mod:`tilex.scan` uses it
to refuse floats that cannot be reflectance.

Example
-------
>>> src = open_source("ir1000.tif")  # doctest: +SKIP
>>> src.read(0, 256, 0, 256).shape  # doctest: +SKIP
(1, 256, 256)
"""

from __future__ import annotations

import logging
import math
import os
import struct
import weakref
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tilex.errors import (
    CorruptFileError,
    MissingFileError,
    NonFiniteError,
    ScanError,
    UnsupportedFormatError,
)

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

SUPPORTED_DTYPES = (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))
FINITE_CHECK_AT_OPEN_PX = 64 * 2**20
_CHECK_BLOCK_PX = 16 * 2**20  # elements per block when checking a whole file
RANGE_LATTICE = 8
"""A float file larger than :data:`FINITE_CHECK_AT_OPEN_PX` has its value range
sampled in ``RANGE_LATTICE**2`` regions, one at the centre of each lattice cell."""
_RANGE_REGION = 16  # side of each sampled region, px: one file tile each, or 16 rows of strips

_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
_PIL_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"BM": "BMP", b"\xff\xd8\xff": "JPEG"}
_ZARR_META = (".zarray", ".zgroup", "zarr.json")

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValueRange:
    """The smallest and largest value of each channel of a float source.

    ``sampled`` is true when they come from a lattice of regions rather than
    from every pixel (see :func:`measure_range`).
    """

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    sampled: bool


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


# --------------------------------------------------------------------- TIFF


@dataclass(frozen=True)
class _TiffPlanes:
    """Segments of one TIFF page: ``samples`` channels, tiled or striped."""

    offsets: tuple[int, ...]
    bytecounts: tuple[int, ...]
    samples: int  # channels this page contributes
    separate: bool  # planar configuration 2: one segment set per sample


class TiffSource(_SourceBase):
    """A TIFF, BigTIFF or OME-TIFF read segment by segment with ``os.pread``.

    Parameters
    ----------
    path
        The file.

    Examples
    --------
    >>> src = TiffSource("band.tif")  # doctest: +SKIP
    >>> src.describe()["tiling"]  # doctest: +SKIP
    {'tile': [512, 512]}
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import tifffile

        self.path = Path(path)
        self._ome_channels: list[tuple[str | None, float | None, int]] = []
        self._ome_pixel_um: float | None = None
        with _TiffLogCapture() as log:
            try:
                with tifffile.TiffFile(self.path) as tif:
                    pages = self._level0_pages(tif)
                    self._init_layout(tif, pages)
            except ScanError:
                raise
            except (
                tifffile.TiffFileError,
                ValueError,
                KeyError,
                IndexError,
                EOFError,
                OverflowError,
                struct.error,  # tifffile unpacks headers with struct; short files fail there
            ) as err:
                reason = log.messages[-1] if log.messages else _reason(err)
                raise CorruptFileError(
                    f"{self.path} is not a readable TIFF ({reason})", path=self.path
                ) from err
            except OSError as err:
                raise MissingFileError(
                    f"{self.path} cannot be opened ({_reason(err)})", path=self.path
                ) from err
        self._finish_init()
        self._check_segments_fit()
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._closer = weakref.finalize(self, os.close, self._fd)
        try:
            self._probe()
        except BaseException:
            self.close()
            raise

    # -- opening

    def _level0_pages(self, tif: Any) -> list[Any]:
        """Level 0 pages: every channel page of an OME series, else page 0."""
        if tif.is_ome and tif.series:
            series = tif.series[0].levels[0]
            extra = {ax: n for ax, n in zip(series.axes, series.shape, strict=True)}
            for axis in "YXSC":
                extra.pop(axis, None)
            if any(n > 1 for n in extra.values()):
                raise UnsupportedFormatError(
                    f"{self.path} has OME axes {series.axes} {series.shape}; tilex reads "
                    "channel, y and x axes only (other axes must have size 1)",
                    path=self.path,
                )
            self._read_ome(tif.ome_metadata)
            return list(series.pages)
        return [tif.pages.first]

    def _read_ome(self, xml: str | None) -> None:
        """Channel names, wavelengths and pixel size from the OME-XML."""
        if not xml:
            return
        try:
            root = ET.fromstring(xml)
        except ET.ParseError:
            return  # unreadable metadata only loses names, not pixels
        pixels = root.find("{*}Image/{*}Pixels")
        if pixels is None:
            return
        for channel in pixels.findall("{*}Channel"):
            self._ome_channels.append(
                (
                    channel.get("Name"),
                    _positive_float(channel.get("EmissionWavelength")),
                    int(channel.get("SamplesPerPixel") or 1),
                )
            )
        if pixels.get("PhysicalSizeXUnit", "µm") in ("µm", "um"):
            self._ome_pixel_um = _positive_float(pixels.get("PhysicalSizeX"))

    def _init_layout(self, tif: Any, pages: list[Any]) -> None:
        key = pages[0].keyframe if hasattr(pages[0], "keyframe") else pages[0]
        if key.imagedepth > 1 or (key.is_tiled and key.tiledepth > 1):
            raise UnsupportedFormatError(
                f"{self.path} is a volume (depth {key.imagedepth}); tilex reads 2-D images",
                path=self.path,
            )
        photometric = int(key.photometric)
        if photometric in (0, 3, 32803):  # MINISWHITE, PALETTE, CFA
            raise UnsupportedFormatError(
                f"{self.path} has photometric interpretation {key.photometric.name}; "
                "expected grayscale or RGB samples",
                path=self.path,
            )
        if any(page is None for page in pages):
            raise CorruptFileError(f"{self.path} has missing channel pages", path=self.path)
        self._decode = key.decode  # built once here; the closure is stateless
        self._jpegtables = key.jpegtables
        self._nodata = key.nodata
        self.dtype = np.dtype(key.dtype).newbyteorder("=")
        self.shape = (int(key.imagelength), int(key.imagewidth))
        self._tiled = bool(key.is_tiled)
        if self._tiled:
            self._seg_h, self._seg_w = int(key.tilelength), int(key.tilewidth)
        else:  # RowsPerStrip is often 2**32 - 1 for "one strip"
            self._seg_h = max(1, min(int(key.rowsperstrip), self.shape[0]))
            self._seg_w = self.shape[1]
        spp = int(key.samplesperpixel)
        separate = spp > 1 and int(key.planarconfig) == 2
        self._planes = [
            _TiffPlanes(
                offsets=tuple(int(o) for o in page.dataoffsets),
                bytecounts=tuple(int(b) for b in page.databytecounts),
                samples=spp,
                separate=separate,
            )
            for page in pages
        ]
        self.channels = spp * len(pages)
        if tif.is_ome:
            self.format = "OME-TIFF"
        else:
            self.format = "BigTIFF" if tif.is_bigtiff else "TIFF"
        self._bigtiff = bool(tif.is_bigtiff)
        compression = key.compression
        self._compression = "none" if int(compression) == 1 else compression.name.lower()
        self._set_ome_names()

    def _set_ome_names(self) -> None:
        names: list[str | None] = []
        wavelengths: list[float | None] = []
        for name, wavelength, samples in self._ome_channels:
            for i in range(samples):
                names.append(name if samples == 1 or name is None else f"{name}.{i}")
                wavelengths.append(wavelength)
        if len(names) == self.channels:
            self.channel_names = tuple(names)
            self.channel_wavelengths = tuple(wavelengths)
        self.pixel_size_um = self._ome_pixel_um

    @property
    def _grid(self) -> tuple[int, int]:
        height, width = self.shape
        return math.ceil(height / self._seg_h), math.ceil(width / self._seg_w)

    def _check_segments_fit(self) -> None:
        size = self.path.stat().st_size
        rows, cols = self._grid
        for planes in self._planes:
            expected = rows * cols * (planes.samples if planes.separate else 1)
            if len(planes.offsets) < expected or len(planes.bytecounts) < expected:
                raise CorruptFileError(
                    f"{self.path} lists {len(planes.offsets)} tiles/strips but its "
                    f"{self.shape[0]}x{self.shape[1]} image needs {expected}",
                    path=self.path,
                )
            for offset, count in zip(planes.offsets, planes.bytecounts, strict=True):
                if count and offset + count > size:
                    raise CorruptFileError(
                        f"{self.path} is truncated: a tile/strip ends at byte "
                        f"{offset + count} but the file has {size} bytes",
                        path=self.path,
                    )

    def _probe(self) -> None:
        """Decode one segment so an unknown codec or garbage fails at open."""
        self._segment(self._planes[0], 0, str(self.path))

    # -- reading

    def _segment(
        self, planes: _TiffPlanes, index: int, where: str
    ) -> tuple[np.ndarray | None, int, int]:
        """The decoded segment ``[1, h, w, s]`` (None when empty), its y and x.

        ``where`` starts the message of a damaged segment (the file, or the read).
        """
        offset, count = planes.offsets[index], planes.bytecounts[index]
        data = None
        if offset and count:
            data = os.pread(self._fd, count, offset)
            if len(data) != count:
                raise CorruptFileError(
                    f"{where}: the file is truncated: {self._segment_name(index)} at byte "
                    f"{offset} needs {count} bytes, {len(data)} are left",
                    path=self.path,
                )
        try:
            array, position, _ = self._decode(data, index, jpegtables=self._jpegtables)
        except (ValueError, RuntimeError, NotImplementedError) as err:
            # imagecodecs raises RuntimeError subclasses; tifffile TiffFileError (ValueError)
            raise CorruptFileError(
                f"{where}: {self._segment_name(index)} (byte {offset}) cannot be decoded "
                f"({_reason(err)}); the file is damaged",
                path=self.path,
            ) from err
        return array, position[2], position[3]

    def _segment_name(self, index: int) -> str:
        """A segment in the user's words: ``the file's tile at rows 64:128, columns 0:64``."""
        rows, cols = self._grid
        row, col = (index // cols) % rows, index % cols
        height, width = self.shape
        y0, x0 = row * self._seg_h, col * self._seg_w
        y1, x1 = min(height, y0 + self._seg_h), min(width, x0 + self._seg_w)
        if self._tiled:
            return f"the file's tile at rows {y0}:{y1}, columns {x0}:{x1}"
        return f"the file's strip of rows {y0}:{y1}"

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[channels, y1 - y0, x1 - x0]`` in the native dtype.

        Examples
        --------
        >>> TiffSource("band.tif").read(0, 10, 0, 20).shape  # doctest: +SKIP
        (1, 10, 20)
        """
        self._check_region(y0, y1, x0, x1)
        where = f"reading rows {y0}:{y1}, columns {x0}:{x1} of {self.path} failed"
        out = np.empty((self.channels, y1 - y0, x1 - x0), self.dtype)
        rows, cols = self._grid
        r0, r1 = y0 // self._seg_h, (y1 - 1) // self._seg_h + 1
        c0, c1 = x0 // self._seg_w, (x1 - 1) // self._seg_w + 1
        channel = 0
        for planes in self._planes:
            for sample in range(planes.samples if planes.separate else 1):
                width = 1 if planes.separate else planes.samples
                target = out[channel : channel + width]
                for row in range(r0, r1):
                    for col in range(c0, c1):
                        index = (sample * rows + row) * cols + col
                        self._place(planes, index, target, y0, y1, x0, x1, where)
                channel += width
        return self._check_finite(out, y0, y1, x0, x1)

    def _place(
        self,
        planes: _TiffPlanes,
        index: int,
        target: np.ndarray,
        y0: int,
        y1: int,
        x0: int,
        x1: int,
        where: str,
    ) -> None:
        array, sy, sx = self._segment(planes, index, where)
        h = self._seg_h if array is None else array.shape[1]
        w = self._seg_w if array is None else array.shape[2]
        ya, yb = max(y0, sy), min(y1, sy + h)
        xa, xb = max(x0, sx), min(x1, sx + w)
        if ya >= yb or xa >= xb:
            return
        dest = target[:, ya - y0 : yb - y0, xa - x0 : xb - x0]
        if array is None:
            dest[...] = self._nodata
        else:
            dest[...] = np.moveaxis(array[0, ya - sy : yb - sy, xa - sx : xb - sx, :], -1, 0)

    def describe(self) -> dict[str, Any]:
        """Format, dtype, shape, channels, tiling and compression (JSON-able).

        Examples
        --------
        >>> TiffSource("band.tif").describe()["compression"]  # doctest: +SKIP
        'adobe_deflate'
        """
        info = self._base_description()
        if self._tiled:
            info["tiling"] = {"tile": [self._seg_h, self._seg_w]}
        else:
            info["tiling"] = {"rows_per_strip": self._seg_h}
        info["compression"] = self._compression
        info["bigtiff"] = self._bigtiff
        return info

    def close(self) -> None:
        """Close the file descriptor (idempotent)."""
        self._closer()


class _TiffLogCapture(logging.Filter):
    """Hold back tifffile's log warnings while a file is parsed.

    tifffile logs what it finds odd in a damaged file; on the command line
    that would add lines to the one-line error.  Held-back messages give the
    reason of a failure, and are logged at debug level otherwise.
    """

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.messages.append(record.getMessage())
        return False

    def __enter__(self) -> _TiffLogCapture:
        logging.getLogger("tifffile").addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("tifffile").removeFilter(self)
        for message in self.messages:
            _log.debug("tifffile: %s", message)


# --------------------------------------------------------------------- Zarr


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
        picks = {"c": slice(None), "y": slice(y0, y1), "x": slice(x0, x1)}
        index = tuple(picks.get(axis, 0) for axis in self._axes)
        try:
            data = np.asarray(self._array[index])
        except (ValueError, RuntimeError, TypeError, OSError) as err:
            raise CorruptFileError(
                f"reading rows {y0}:{y1}, columns {x0}:{x1} of {self.path} failed: its chunks "
                f"cannot be read ({_reason(err)}); the store is damaged",
                path=self.path,
            ) from err
        order = list(self._order)
        if "c" not in order:
            data, order = data[np.newaxis], ["c", *order]
        data = np.transpose(data, [order.index(a) for a in "cyx"])
        return self._check_finite(np.ascontiguousarray(data, self.dtype), y0, y1, x0, x1)

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


# ------------------------------------------------------- PNG, BMP and JPEG


class ImageSource(_SourceBase):
    """A PNG, BMP or JPEG file, read whole at open (such files are small).

    16-bit grayscale PNG stays uint16; palette and CMYK images become RGB.

    Examples
    --------
    >>> ImageSource("visible.png").read(0, 8, 0, 8).shape  # doctest: +SKIP
    (3, 8, 8)
    """

    def __init__(self, path: str | os.PathLike[str], format: str) -> None:
        from PIL import Image, UnidentifiedImageError

        self.path = Path(path)
        self.format = format
        try:
            with Image.open(self.path) as image:
                if image.mode in ("P", "PA", "CMYK", "YCbCr", "HSV", "LAB"):
                    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
                elif image.mode == "1":
                    image = image.convert("L")
                data = np.asarray(image)
        except (UnidentifiedImageError, Image.DecompressionBombError) as err:
            raise UnsupportedFormatError(
                f"{self.path} cannot be read as {format} ({_reason(err)}); convert large "
                "images to tiled TIFF",
                path=self.path,
            ) from err
        except (OSError, ValueError, SyntaxError) as err:
            raise CorruptFileError(
                f"{self.path} is a truncated or corrupt {format} ({_reason(err)})", path=self.path
            ) from err
        if data.dtype == np.int32 and data.size and 0 <= data.min() and data.max() <= 65535:
            data = data.astype(np.uint16)  # Pillow's mode "I" for 16-bit PNG
        data = data if data.ndim == 3 else data[..., np.newaxis]
        self._data = np.ascontiguousarray(np.moveaxis(data, -1, 0))
        self.channels = int(self._data.shape[0])
        self.shape = (int(self._data.shape[1]), int(self._data.shape[2]))
        self.dtype = self._data.dtype.newbyteorder("=")
        self._finish_init()

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``[channels, y1 - y0, x1 - x0]`` (a copy) in the native dtype.

        Examples
        --------
        >>> ImageSource("v.png", "PNG").read(0, 1, 0, 1).dtype  # doctest: +SKIP
        dtype('uint8')
        """
        self._check_region(y0, y1, x0, x1)
        return self._data[:, y0:y1, x0:x1].copy()

    def describe(self) -> dict[str, Any]:
        """Format, dtype, shape and channels; tiling is the whole image.

        Examples
        --------
        >>> ImageSource("v.png", "PNG").describe()["tiling"]  # doctest: +SKIP
        {'whole_image': True}
        """
        info = self._base_description()
        info["tiling"] = {"whole_image": True}
        info["compression"] = {"PNG": "deflate", "BMP": "none", "JPEG": "jpeg"}[self.format]
        return info


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


# ------------------------------------------------------------------ opening


def open_source(path: str | os.PathLike[str]) -> PlaneSource:
    """Open one image file or Zarr store as a lazy plane source.

    The format is found from the file's first bytes (a folder from its Zarr
    metadata), not from its name.  A float file's value range is measured
    here (:func:`measure_range`): files of at most
    :data:`FINITE_CHECK_AT_OPEN_PX` pixels are read whole, which also checks
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


def measure_range(source: PlaneSource) -> ValueRange:
    """Each channel's smallest and largest value, NaN/infinity refused on the way.

    A source of at most :data:`FINITE_CHECK_AT_OPEN_PX` pixels is read whole;
    a larger one in :data:`RANGE_LATTICE` x :data:`RANGE_LATTICE` regions of
    16 x 16 px, one at the centre of each lattice cell (``sampled``), which
    decodes at most that many file tiles.

    Examples
    --------
    >>> import numpy as np
    >>> measure_range(ArraySource(np.float32([[0.25, 0.5], [0.75, 1.0]])))
    ValueRange(lo=(0.25,), hi=(1.0,), sampled=False)
    """
    height, width = source.shape
    sampled = math.prod(source.shape) > FINITE_CHECK_AT_OPEN_PX
    if sampled:
        regions = []
        for i in range(RANGE_LATTICE):
            for j in range(RANGE_LATTICE):
                cy = (2 * i + 1) * height // (2 * RANGE_LATTICE)
                cx = (2 * j + 1) * width // (2 * RANGE_LATTICE)
                y0, x0 = max(0, cy - _RANGE_REGION // 2), max(0, cx - _RANGE_REGION // 2)
                y1, x1 = min(height, y0 + _RANGE_REGION), min(width, x0 + _RANGE_REGION)
                regions.append((y0, y1, x0, x1))
    else:
        rows = max(1, _CHECK_BLOCK_PX // max(1, width * source.channels))
        regions = [(y, min(height, y + rows), 0, width) for y in range(0, height, rows)]
    lo = np.full(source.channels, np.inf)
    hi = np.full(source.channels, -np.inf)
    for region in regions:
        data = source.read(*region)  # refuses NaN and infinity
        np.minimum(lo, data.min(axis=(1, 2)), out=lo)
        np.maximum(hi, data.max(axis=(1, 2)), out=hi)
    return ValueRange(tuple(map(float, lo)), tuple(map(float, hi)), sampled)


def check_finite(source: PlaneSource) -> None:
    """Read the whole source in row blocks; raise NonFiniteError at NaN/inf.

    Examples
    --------
    >>> check_finite(open_source("float_band.tif"))  # doctest: +SKIP
    """
    height, width = source.shape
    rows = max(1, _CHECK_BLOCK_PX // max(1, width * source.channels))
    for y in range(0, height, rows):
        source.read(y, min(height, y + rows), 0, width)


def _positive_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _reason(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
