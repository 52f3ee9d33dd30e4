"""The scan value: a visible image and its bands, read region by region.

A :class:`Scan` holds the opened plane sources, checks at construction that
the bands fit the visible image (count, unique names, one channel, same
height and width) and resolves each plane's input range, so that
:meth:`Scan.read_region` only reads and scales.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilex.errors import RegistrationError, UnsupportedFormatError
from tilex.readers import PlaneSource
from tilex.scan.input_range import plane_values, resolve_input_range
from tilex.scan.manifest import check_band_count, check_unique_names

__all__ = ["Band", "Scan"]


@dataclass(frozen=True)
class Band:
    """One band: its name, wavelength (nm or None), source and channel in it.

    ``input_range``: for a float32 source, the values mapped to 0 and 1
    (``None``: reflectance already, ``(0, 1)``).
    """

    name: str
    wavelength_nm: float | None
    source: PlaneSource
    channel: int
    input_range: tuple[float, float] | None = None


class Scan:
    """An opened scan: lazy, thread-safe region reads of visible and bands.

    Build one with :func:`~tilex.scan.open_scan`.  Close it (or use ``with``) to release
    file handles.

    Parameters
    ----------
    visible
        The visible image's source.
    bands
        The bands, each naming its source and channel; a band's source other
        than ``visible`` must have one channel.
    visible_channels
        The channels of ``visible`` read as R, G, B; by default derived from
        its channel count (gray replicated, alpha dropped).
    visible_input_range
        For a float32 visible image, the values mapped to 0 and 1.
    pixel_size_um, origin
        Pixel size in micrometres and where the scan came from (provenance).

    Attributes
    ----------
    shape : tuple[int, int]
        ``(H, W)`` of every input.
    bands : tuple[Band, ...]
    band_names : tuple[str, ...]
    wavelengths : tuple[float | None, ...]
        In nm, ``None`` where unknown.
    n_bands : int
    pixel_size_um : float | None

    Examples
    --------
    >>> scan = open_scan(visible="v.png", bands=[("ir", 1000, "ir.png")])  # doctest: +SKIP
    >>> scan.shape, scan.band_names  # doctest: +SKIP
    ((512, 512), ('ir',))
    """

    def __init__(
        self,
        visible: PlaneSource,
        bands: Sequence[Band],
        *,
        visible_channels: tuple[int, int, int] | None = None,
        visible_input_range: tuple[float, float] | None = None,
        pixel_size_um: float | None = None,
        origin: str | None = None,
    ) -> None:
        self.visible = visible
        self.bands = tuple(bands)
        self.pixel_size_um = pixel_size_um
        self.origin = origin
        self.shape = visible.shape
        self._visible_channels = visible_channels or _visible_channels(visible)
        _check_bands(self.bands, visible)
        self._visible_range = resolve_input_range(
            visible, self._visible_channels, visible_input_range, "the visible image"
        )
        self._band_ranges = [
            resolve_input_range(b.source, (b.channel,), b.input_range, f"band {b.name!r}")
            for b in self.bands
        ]
        # per source: (to_visible, index, channel, lo, span), read as (value - lo) / span
        plan: dict[int, tuple[PlaneSource, list[tuple[bool, int, int, float, float]]]] = {}
        lo, hi = self._visible_range
        for i, channel in enumerate(self._visible_channels):
            plan.setdefault(id(visible), (visible, []))[1].append((True, i, channel, lo, hi - lo))
        for i, (band, (lo, hi)) in enumerate(zip(self.bands, self._band_ranges, strict=True)):
            pick = (False, i, band.channel, lo, hi - lo)
            plan.setdefault(id(band.source), (band.source, []))[1].append(pick)
        self._plan = list(plan.values())

    @property
    def n_bands(self) -> int:
        return len(self.bands)

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(band.name for band in self.bands)

    @property
    def wavelengths(self) -> tuple[float | None, ...]:
        return tuple(band.wavelength_nm for band in self.bands)

    @property
    def sources(self) -> tuple[PlaneSource, ...]:
        """Every distinct input, visible first."""
        return tuple(source for source, _ in self._plan)

    def read_region(self, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
        """Visible ``float32 [3, h, w]`` and bands ``float32 [N, h, w]`` of a region.

        Only the file tiles/strips or chunks overlapping ``[y0:y1, x0:x1]``
        are read.  Safe to call from several threads at once.

        Raises
        ------
        ValueError
            The region is empty or leaves the scan.
        NonFiniteError, CorruptFileError
            A float input holds NaN/inf there, or a segment cannot be decoded.

        Examples
        --------
        >>> visible, bands = scan.read_region(0, 256, 512, 768)  # doctest: +SKIP
        >>> visible.dtype, bands.shape  # doctest: +SKIP
        (dtype('float32'), (8, 256, 256))
        """
        height, width = self.shape
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            raise ValueError(
                f"region y {y0}:{y1}, x {x0}:{x1} is empty or outside the {height}x{width} scan"
            )
        visible = np.empty((3, y1 - y0, x1 - x0), np.float32)
        bands = np.empty((self.n_bands, y1 - y0, x1 - x0), np.float32)
        for source, picks in self._plan:
            data = source.read(y0, y1, x0, x1)
            for to_visible, index, channel, lo, span in picks:
                out = visible[index] if to_visible else bands[index]
                if lo == 0.0 and span == 1.0:
                    out[...] = data[channel]
                elif lo == 0.0:
                    np.divide(data[channel], span, out=out, dtype=np.float32)
                else:
                    np.subtract(data[channel], lo, out=out, dtype=np.float32)
                    out /= np.float32(span)
        return visible, bands

    def describe(self) -> dict[str, Any]:
        """A JSON-able description of the scan and every input file.

        Each plane (the visible image, each band) has its ``input_range``
        (the values mapped to 0 and 1) and, for float32 inputs, ``values``:
        the smallest and largest value found at open, ``sampled`` on files
        over 64 Mpx.

        Examples
        --------
        >>> import json
        >>> print(json.dumps(scan.describe(), indent=1))  # doctest: +SKIP
        """
        return {
            "origin": self.origin,
            "shape": list(self.shape),
            "pixel_size_um": self.pixel_size_um,
            "visible": {
                "path": str(self.visible.path.absolute()),
                "channels": list(self._visible_channels),
                "input_range": list(self._visible_range),
                "values": plane_values(self.visible, self._visible_channels),
            },
            "bands": [
                {
                    "name": band.name,
                    "wavelength_nm": band.wavelength_nm,
                    "path": str(band.source.path.absolute()),
                    "channel": band.channel,
                    "input_range": list(band_range),
                    "values": plane_values(band.source, (band.channel,)),
                }
                for band, band_range in zip(self.bands, self._band_ranges, strict=True)
            ],
            "inputs": [source.describe() for source in self.sources],
        }

    def close(self) -> None:
        """Release every input's file handles (idempotent)."""
        for source in self.sources:
            source.close()

    def __enter__(self) -> Scan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        height, width = self.shape
        return f"<Scan {height}x{width}, {self.n_bands} bands: {', '.join(self.band_names)}>"


def _visible_channels(visible: PlaneSource) -> tuple[int, int, int]:
    if visible.channels == 1:
        return (0, 0, 0)
    if visible.channels in (3, 4):
        return (0, 1, 2)
    raise UnsupportedFormatError(
        f"the visible image ({visible.path}) has {visible.channels} channels, "
        "expected 1 (gray), 3 (RGB) or 4 (RGBA)",
        path=visible.path,
    )


def _check_bands(bands: Sequence[Band], visible: PlaneSource) -> None:
    check_band_count(len(bands), visible.path)
    check_unique_names([band.name for band in bands], visible.path)
    height, width = visible.shape
    for band in bands:
        source = band.source
        if source is not visible and source.channels != 1:
            raise UnsupportedFormatError(
                f"band {band.name!r} ({source.path}) has {source.channels} channels, "
                "expected 1 (a grayscale image)",
                path=source.path,
            )
        if source.shape != visible.shape:
            h, w = source.shape
            raise RegistrationError(
                f"band {band.name!r} ({source.path}) is {h}x{w} (HxW) but the visible image "
                f"({visible.path}) is {height}x{width}",
                path=source.path,
            )
