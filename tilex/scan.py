"""A registered multispectral scan: one visible image plus N bands.

A scan is a visible image (RGB; RGBA with the alpha dropped; grayscale
replicated to three channels) and ``1 <= N <= 254`` registered grayscale
bands, each with a unique name and an optional wavelength in nm, all of the
same height and width, plus an optional pixel size in micrometres.

It is given in one of three ways (see :func:`open_scan`):

- a manifest ``scan.json`` (or a folder holding one)::

      {"visible": "visible.tif",
       "bands": [{"name": "ir1000", "file": "ir1000.tif", "wavelength_nm": 1000}],
       "pixel_size_um": 40}

  ``wavelength_nm`` and ``pixel_size_um`` are optional; any other key is an
  error.  A float32 image whose values are not reflectance in [0, 1] says
  which range they span with ``"input_range": [LO, HI]`` on its band entry,
  or on the visible entry, which then is an object:
  ``"visible": {"file": "visible.tif", "input_range": [0, 65535]}``.
  Relative paths are relative to the manifest's folder; absolute paths and
  paths leaving the folder (``../other/ir.tif``) are allowed: a manifest
  describes where the files are, it is not a sandbox.
- ``visible=PATH`` and ``bands=[(name, wavelength_nm_or_None, PATH), ...]``
  (the command line's ``--visible FILE --band NAME[@NM]=FILE``, parsed by
  :func:`parse_band_option`);
- one multi-channel OME-TIFF or (OME-)Zarr whose first three channels are the
  visible RGB and whose other channels are the bands.  Band names are the OME
  channel names (OME-XML ``Channel/@Name``, OME-Zarr ``omero.channels[].label``),
  else ``channel<i>``; a wavelength is the OME emission wavelength when given,
  else a trailing number of 100 to 20000 in the name (``ir1000``,
  ``b_850nm``), else none.

Pixel values: uint8 / 255, uint16 / 65535; float32 is reflectance in [0, 1]
unless an input range ``[LO, HI]`` is given for it (manifest ``input_range``,
``open_scan(input_range=...)``, the command line's ``--input-range LO,HI``),
which maps LO to 0 and HI to 1.  A float input whose values (measured at open,
sampled on large files: :func:`tilex.readers.measure_range`) reach more than
:data:`REFLECTANCE_SLACK` beyond [0, 1] once mapped is refused with
:class:`InputRangeError` naming the file and the values, rather than run with
nearly every pixel saturated.  NaN or infinity in a float input is refused
with :class:`NonFiniteError` (see :mod:`tilex.readers`).  Every check that
can be made without reading pixels is made at open, each with its own
:mod:`tilex.errors` class and a message naming the file, the value and the
expectation.

Example
-------
>>> with open_scan("scan.json") as scan:  # doctest: +SKIP
...     visible, bands = scan.read_region(0, 512, 0, 512)
>>> visible.shape, bands.shape  # doctest: +SKIP
((3, 512, 512), (8, 512, 512))
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tilex.errors import (
    InputRangeError,
    ManifestError,
    MissingFileError,
    RegistrationError,
    ScanError,
    UnsupportedFormatError,
)
from tilex.readers import ArraySource, PlaneSource, open_source

__all__ = [
    "MANIFEST_NAME",
    "MAX_BANDS",
    "REFLECTANCE_SLACK",
    "Band",
    "Scan",
    "open_scan",
    "parse_band_option",
    "parse_input_range",
]

MAX_BANDS = 254
MANIFEST_NAME = "scan.json"
REFLECTANCE_SLACK = 0.5
"""How far beyond [0, 1] a float input's mapped values may reach (noise, dark
subtraction, a gain of 1.02 are fine; 0..255 or 0..65535 data is not)."""

_MANIFEST_KEYS = {"visible": True, "bands": True, "pixel_size_um": False}
_VISIBLE_KEYS = {"file": True, "input_range": False}
_BAND_KEYS = {"name": True, "file": True, "wavelength_nm": False, "input_range": False}
_DTYPE_RANGE = {np.dtype("uint8"): (0.0, 255.0), np.dtype("uint16"): (0.0, 65535.0)}
_COMMON_TOPS = (1.0, 255.0, 4095.0, 65535.0)  # offered in the refusal when the values fit one
_TRAILING_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*(?:nm)?$", re.IGNORECASE)

BandSpec = tuple[str, float | None, "str | os.PathLike[str] | np.ndarray"]  # path or array


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

    Build one with :func:`open_scan`.  Close it (or use ``with``) to release
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
        self._visible_range = _input_range(
            visible, self._visible_channels, visible_input_range, "the visible image"
        )
        self._band_ranges = [
            _input_range(b.source, (b.channel,), b.input_range, f"band {b.name!r}")
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
                "values": _values(self.visible, self._visible_channels),
            },
            "bands": [
                {
                    "name": band.name,
                    "wavelength_nm": band.wavelength_nm,
                    "path": str(band.source.path.absolute()),
                    "channel": band.channel,
                    "input_range": list(band_range),
                    "values": _values(band.source, (band.channel,)),
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
    _check_count(len(bands), visible.path)
    _check_unique([band.name for band in bands], visible.path)
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


def _input_range(
    source: PlaneSource,
    channels: Sequence[int],
    given: tuple[float, float] | None,
    what: str,
) -> tuple[float, float]:
    """The values of a plane mapped to 0 and 1, refusing floats that cannot be reflectance."""
    if source.dtype.kind != "f":
        if given is not None:
            lo, hi = _DTYPE_RANGE[source.dtype]
            raise ScanError(
                f"{what} ({source.path}) is {source.dtype}, scaled by its type's range "
                f"{lo:g}..{hi:g}; an input range is for float32 images only",
                path=source.path,
            )
        return _DTYPE_RANGE[source.dtype]
    lo, hi = given or (0.0, 1.0)
    values = source.value_range()
    if values is None:
        return lo, hi
    vmin = min(values.lo[c] for c in channels)
    vmax = max(values.hi[c] for c in channels)
    low, high = (vmin - lo) / (hi - lo), (vmax - lo) / (hi - lo)  # where the values land
    if -REFLECTANCE_SLACK <= low and high <= 1 + REFLECTANCE_SLACK:
        return lo, hi
    found = f"{vmin:g} to {vmax:g}" + (" (sampled)" if values.sampled else "")
    top = next((t for t in _COMMON_TOPS if vmin >= 0 and vmax <= t * 1.02), None)
    wanted = f"0,{top:g}" if top is not None else "LO,HI"
    expected = (
        "not reflectance in [0, 1]"
        if given is None
        else f"far outside its input range [{lo:g}, {hi:g}]"
    )
    raise InputRangeError(
        f"{what} ({source.path}) holds float values from {found}, {expected}; give the "
        f'range they span: "input_range": [{wanted.replace(",", ", ")}] in the manifest, '
        f"or --input-range {wanted}",
        path=source.path,
    )


def _values(source: PlaneSource, channels: Sequence[int]) -> dict[str, Any] | None:
    values = source.value_range()
    if values is None:
        return None
    return {
        "min": min(values.lo[c] for c in channels),
        "max": max(values.hi[c] for c in channels),
        "sampled": values.sampled,
    }


def _check_count(n: int, where: object, cls: type[ScanError] = ScanError) -> None:
    if not 1 <= n <= MAX_BANDS:
        raise cls(f"{where} gives {n} bands, expected 1 to {MAX_BANDS}", path=where)


def _check_unique(names: Sequence[str], where: object, cls: type[ScanError] = ScanError) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise cls(f"{where} names band {name!r} twice; band names must be unique", path=where)
        seen.add(name)


# ------------------------------------------------------------------ opening


def open_scan(
    source: str | os.PathLike[str] | None = None,
    *,
    visible: str | os.PathLike[str] | np.ndarray | None = None,
    bands: Sequence[BandSpec] | None = None,
    pixel_size_um: float | None = None,
    input_range: tuple[float, float] | str | None = None,
) -> Scan:
    """Open a scan from a manifest, a folder, one multi-channel file, or parts.

    Parameters
    ----------
    source
        A manifest (``scan.json``), a folder holding ``scan.json``, or one
        multi-channel OME-TIFF / OME-Zarr / Zarr whose first three channels
        are the visible RGB.  Leave ``None`` to give ``visible`` and ``bands``.
    visible
        The visible image (with ``bands``, instead of ``source``): a path,
        or a NumPy array ``[H, W]``, ``[3, H, W]`` or ``[H, W, 3]`` in memory.
    bands
        ``[(name, wavelength_nm_or_None, path_or_array), ...]``.
    pixel_size_um
        Pixel size in micrometres; overrides the manifest's or OME's.
    input_range
        ``(LO, HI)`` or ``"LO,HI"``: the values of every float32 input mapped
        to 0 and 1 (default: they are reflectance, ``(0, 1)``); overrides the
        manifest's ``input_range``.  Integer inputs keep their type's range.

    Returns
    -------
    Scan

    Raises
    ------
    ScanError
        Or a subclass (ManifestError, MissingFileError, CorruptFileError,
        UnsupportedFormatError, RegistrationError, NonFiniteError,
        InputRangeError): one line naming the file, the value and the
        expectation.

    Examples
    --------
    >>> scan = open_scan("scan.json")  # doctest: +SKIP
    >>> scan = open_scan(visible="rgb.tif", bands=[("ir1000", 1000, "ir.tif")])  # doctest: +SKIP
    >>> import numpy as np  # arrays in memory work too (notebooks, small images)
    >>> mem = open_scan(visible=np.zeros((3, 64, 64), np.float32),
    ...                 bands=[("ir", 1000, np.ones((64, 64), np.float32))])
    >>> mem.shape, mem.band_names
    ((64, 64), ('ir',))
    >>> scan.n_bands  # doctest: +SKIP
    1
    """
    pixel_size_um = _pixel_size(pixel_size_um, "pixel_size_um", ScanError)
    input_range = parse_input_range(input_range)
    if source is not None:
        if visible is not None or bands:
            raise ScanError("give either a scan source or visible= and bands=, not both")
        return _open_source_path(Path(source), pixel_size_um, input_range)
    if visible is None:
        raise ScanError(
            "no scan given: give a manifest, a folder or a multi-channel file, "
            "or a visible image and bands"
        )
    if not bands:
        raise ScanError(f"the visible image {visible} comes without bands; give at least one")
    specs = []
    for item in bands:
        if len(item) != 3:
            raise ScanError(f"band {item!r} is not (name, wavelength_nm or None, path)")
        name, wavelength, path = item
        specs.append((_band_name(name, ScanError), _wavelength(wavelength, name, ScanError), path))
    _check_count(len(specs), "the scan")
    _check_unique([name for name, _, _ in specs], "the scan")
    ranged = [(name, wl, path, None) for name, wl, path in specs]
    return _open_parts((visible, None), ranged, pixel_size_um, origin=None, default=input_range)


def parse_input_range(
    value: Any, where: str = "input_range", cls: type[ScanError] = ScanError
) -> tuple[float, float] | None:
    """An input range ``[LO, HI]`` or ``"LO,HI"`` as two finite floats, LO < HI.

    Raises
    ------
    ScanError
        (or ``cls``) naming ``where`` when the value is not such a pair.

    Examples
    --------
    >>> parse_input_range("0,65535")
    (0.0, 65535.0)
    >>> parse_input_range([0, 255])
    (0.0, 255.0)
    >>> parse_input_range(None) is None
    True
    """
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    try:
        if isinstance(parts, dict) or len(parts) != 2 or any(isinstance(v, bool) for v in parts):
            raise ValueError
        lo, hi = (float(v) for v in parts)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise cls(f"{where} is {value!r}, expected two finite numbers LO,HI with LO < HI")
    return lo, hi


def parse_band_option(text: str) -> tuple[str, float | None, str]:
    """Parse a command-line band ``NAME[@NM]=FILE`` into ``(name, nm, file)``.

    ``NM`` may end with ``nm``.  The first ``=`` ends the name part, so the
    file may hold ``=``; the last ``@`` before it starts the wavelength.

    Raises
    ------
    ScanError
        The text does not follow ``NAME[@NM]=FILE``.

    Examples
    --------
    >>> parse_band_option("ir1000@1000=ir.tif")
    ('ir1000', 1000.0, 'ir.tif')
    >>> parse_band_option("uv=scans/uv.png")
    ('uv', None, 'scans/uv.png')
    """
    head, sep, path = text.partition("=")
    if not sep or not head.strip() or not path.strip():
        raise ScanError(f"band {text!r} is not NAME[@NM]=FILE (e.g. ir1000@1000=ir.tif)")
    name, at, nm = head.rpartition("@") if "@" in head else (head, "", "")
    name = name.strip()
    if not name:
        raise ScanError(f"band {text!r} has no name before '@' (expected NAME[@NM]=FILE)")
    wavelength = None
    if at:
        number = nm.strip().removesuffix("nm").strip()
        try:
            wavelength = float(number)
        except ValueError:
            wavelength = None
        if wavelength is None or not math.isfinite(wavelength) or wavelength <= 0:
            raise ScanError(
                f"band {text!r} has wavelength {nm!r}, expected a positive number of nm"
            )
    return name, wavelength, path.strip()


def _open_source_path(
    path: Path, pixel_size_um: float | None, input_range: tuple[float, float] | None
) -> Scan:
    if not path.exists():
        raise MissingFileError(f"{path} does not exist", path=path)
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        return _open_manifest(path / MANIFEST_NAME, pixel_size_um, input_range)
    if path.is_file() and (path.suffix.lower() == ".json" or _looks_like_json(path)):
        return _open_manifest(path, pixel_size_um, input_range)
    if path.is_dir() and not any((path / m).exists() for m in (".zarray", ".zgroup", "zarr.json")):
        raise MissingFileError(
            f"{path} is a folder without {MANIFEST_NAME} and is not a Zarr store", path=path
        )
    return _open_multichannel(path, pixel_size_um, input_range)


def _looks_like_json(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(64).lstrip().startswith(b"{")
    except OSError:
        return False


def _open_manifest(
    path: Path, pixel_size_um: float | None, input_range: tuple[float, float] | None
) -> Scan:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise MissingFileError(
            f"manifest {path} cannot be read ({err.strerror})", path=path
        ) from err
    except UnicodeDecodeError as err:
        raise ManifestError(f"manifest {path} is not UTF-8 text", path=path) from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ManifestError(
            f"manifest {path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}",
            path=path,
        ) from err
    _check_keys(data, _MANIFEST_KEYS, f"manifest {path}", path)
    visible, visible_range = data["visible"], None
    if isinstance(visible, dict):
        where = f"manifest {path}: visible"
        _check_keys(visible, _VISIBLE_KEYS, where, path)
        visible_range = _manifest_range(visible.get("input_range"), f"{where}: input_range")
        visible = visible["file"]
    if not isinstance(visible, str) or not visible:
        raise ManifestError(
            f"manifest {path}: 'visible' is {visible!r}, expected a file path or "
            "{file, input_range}",
            path=path,
        )
    entries = data["bands"]
    if not isinstance(entries, list):
        raise ManifestError(
            f"manifest {path}: 'bands' is {type(entries).__name__}, expected "
            "a list of {name, file, wavelength_nm}",
            path=path,
        )
    _check_count(len(entries), f"manifest {path}", ManifestError)
    folder = path.parent
    specs = []
    for i, entry in enumerate(entries):
        where = f"manifest {path}: bands[{i}]"
        _check_keys(entry, _BAND_KEYS, where, path)
        name = _band_name(entry["name"], ManifestError, where)
        wavelength = _wavelength(entry.get("wavelength_nm"), name, ManifestError, where)
        file = entry["file"]
        if not isinstance(file, str) or not file:
            raise ManifestError(f"{where}: 'file' is {file!r}, expected a file path", path=path)
        band_range = _manifest_range(entry.get("input_range"), f"{where}: input_range")
        specs.append((name, wavelength, folder / file, band_range))
    _check_unique([name for name, *_ in specs], f"manifest {path}", ManifestError)
    if pixel_size_um is None:
        pixel_size_um = _pixel_size(
            data.get("pixel_size_um"), f"manifest {path}: pixel_size_um", ManifestError
        )
    return _open_parts(
        (folder / visible, visible_range),
        specs,
        pixel_size_um,
        origin=str(path.absolute()),
        default=input_range,
    )


def _manifest_range(value: Any, where: str) -> tuple[float, float] | None:
    if value is not None and not isinstance(value, list):
        raise ManifestError(f"{where} is {value!r}, expected a list [LO, HI]")
    return parse_input_range(value, where, ManifestError)


def _check_keys(data: Any, keys: dict[str, bool], where: str, path: Path) -> None:
    if not isinstance(data, dict):
        raise ManifestError(f"{where} is {type(data).__name__}, expected a JSON object", path=path)
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise ManifestError(
            f"{where} has unknown key {unknown[0]!r}; allowed keys are {', '.join(keys)}",
            path=path,
        )
    missing = [key for key, required in keys.items() if required and key not in data]
    if missing:
        raise ManifestError(f"{where} lacks required key {missing[0]!r}", path=path)


def _open_parts(
    visible: tuple[Path | np.ndarray, tuple[float, float] | None],
    specs: Sequence[tuple[str, float | None, Any, tuple[float, float] | None]],
    pixel_size_um: float | None,
    origin: str | None,
    default: tuple[float, float] | None,
) -> Scan:
    """The scan of a visible image and bands, each ``(..., path, input_range)``.

    ``default``: the input range of every float input (overrides their own).
    """
    visible, visible_range = visible
    opened: dict[Any, PlaneSource] = {}

    def ranged(source: PlaneSource, own: tuple[float, float] | None) -> tuple[float, float] | None:
        return default if default is not None and source.dtype.kind == "f" else own

    def get(path: Any, name: str) -> PlaneSource:
        if isinstance(path, np.ndarray):  # in memory: notebooks and tests
            key: Any = id(path)
            if key not in opened:
                opened[key] = ArraySource(path, name)
            return opened[key]
        key = Path(os.path.abspath(path))
        if key not in opened:
            opened[key] = open_source(path)
        return opened[key]

    try:
        visible_source = get(visible, "visible")
        bands = []
        for name, wl, p, own in specs:
            source = get(p, name)
            bands.append(Band(name, wl, source, 0, ranged(source, own)))
        if any(band.source is visible_source and visible_source.channels != 1 for band in bands):
            raise ScanError(
                f"a band names the visible image {visible}, which has "
                f"{visible_source.channels} channels; a band needs a grayscale file"
            )
        _check_default_used(default, [visible_source, *opened.values()])
        return Scan(
            visible_source,
            bands,
            visible_input_range=ranged(visible_source, visible_range),
            pixel_size_um=pixel_size_um,
            origin=origin,
        )
    except BaseException:
        for source in opened.values():
            source.close()
        raise


def _open_multichannel(
    path: Path, pixel_size_um: float | None, input_range: tuple[float, float] | None
) -> Scan:
    source = open_source(path)
    try:
        _check_default_used(input_range, [source])
        if source.channels <= 3:
            raise ScanError(
                f"{path} has {source.channels} channels; as a whole scan it needs the visible "
                "RGB in channels 0-2 and at least one band after them",
                path=path,
            )
        bands = []
        for channel in range(3, source.channels):
            name = source.channel_names[channel] or f"channel{channel}"
            wavelength = source.channel_wavelengths[channel] or _wavelength_from_name(name)
            bands.append(Band(name, wavelength, source, channel, input_range))
        if pixel_size_um is None:
            pixel_size_um = source.pixel_size_um
        return Scan(
            source,
            bands,
            visible_channels=(0, 1, 2),
            visible_input_range=input_range,
            pixel_size_um=pixel_size_um,
            origin=str(path.absolute()),
        )
    except BaseException:
        source.close()
        raise


def _check_default_used(
    input_range: tuple[float, float] | None, sources: Sequence[PlaneSource]
) -> None:
    """Refuse an input range for a scan without float inputs: it would do nothing."""
    if input_range is not None and not any(s.dtype.kind == "f" for s in sources):
        raise ScanError(
            f"input range {input_range[0]:g},{input_range[1]:g} given, but no input is float32: "
            "integer images are scaled by their type's range (uint8 / 255, uint16 / 65535)"
        )


def _wavelength_from_name(name: str) -> float | None:
    """A trailing number of 100..20000 (optionally + ``nm``) in a band name."""
    match = _TRAILING_NUMBER.search(name)
    if not match:
        return None
    value = float(match.group(1))
    return value if 100 <= value <= 20000 else None


def _band_name(name: Any, cls: type[ScanError], where: str = "band") -> str:
    if not isinstance(name, str) or not name.strip():
        raise cls(f"{where}: name {name!r} is not a non-empty string")
    return name.strip()


def _wavelength(value: Any, name: str, cls: type[ScanError], where: str = "band") -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise cls(
            f"{where} {name!r}: wavelength_nm is {value!r}, expected a positive number "
            "of nm or null"
        )
    return float(value)


def _pixel_size(value: Any, where: str, cls: type[ScanError]) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise cls(f"{where} is {value!r}, expected a positive number of micrometres or null")
    return float(value)
