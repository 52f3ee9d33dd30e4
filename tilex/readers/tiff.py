"""TIFF, BigTIFF and OME-TIFF plane sources, read segment by segment.

TIFF and BigTIFF, tiled or striped, any compression imagecodecs decodes: the
first page (level 0 of a pyramid).  OME-TIFF: level 0 of the first series,
channels in OME order (one page per channel, or samples of one page); TIFF
samples per pixel (``H x W x S``) are channels.  Reads never load the whole
file: the segment offsets and byte counts are kept at open, and a region read
fetches only the overlapping tiles or strips with :func:`os.pread` on a file
descriptor (no shared seek position, so reads from several threads are safe)
and decodes each with tifffile's ``TiffPage.decode``.

A tile's read reaches into its neighbours by the halo, so each file tile
would be decoded by up to nine engine tiles; a source keeps its most recently
decoded segments (:data:`SEGMENT_CACHE`) and decodes each about once when
regions arrive row by row.
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
from typing import Any

import numpy as np

from tilex.errors import CorruptFileError, MissingFileError, ScanError, UnsupportedFormatError
from tilex.readers.base import _positive_float, _reason, _SegmentCache, _SourceBase

__all__ = ["SEGMENT_CACHE", "SEGMENT_CACHE_BYTES", "TiffSource"]

_log = logging.getLogger(__name__)

SEGMENT_CACHE = 32
"""Decoded segments each source keeps, least recently used out first: three rows of
ten file tiles, what a write unit's rows of engine tiles read with their halo."""

SEGMENT_CACHE_BYTES = 64 << 20
"""At most this many bytes of them per source (a striped file's long strips are not kept)."""


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
        self._cache = _SegmentCache(SEGMENT_CACHE, SEGMENT_CACHE_BYTES)  # by file offset
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
        The result is read-only: it may be the cached array other reads share.
        """
        offset, count = planes.offsets[index], planes.bytecounts[index]
        if offset and count:
            hit = self._cache.get(offset)
            if hit is not None:
                return hit  # type: ignore[no-any-return]
        segment = self._decode_segment(planes, index, where)
        if offset and count and segment[0] is not None:
            self._cache.put(offset, segment, segment[0])
        return segment

    def _decode_segment(
        self, planes: _TiffPlanes, index: int, where: str
    ) -> tuple[np.ndarray | None, int, int]:
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
        """Close the file descriptor and drop the decoded segments (idempotent)."""
        self._closer()
        self._cache.clear()


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
