"""Opening a scan: from a manifest, a folder, one multi-channel file or parts.

:func:`open_scan` finds which of these it is given, opens every input once
(a file named twice is one source) and closes what it opened when a check
fails.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tilex.errors import MissingFileError, ScanError
from tilex.readers import ArraySource, PlaneSource, open_source
from tilex.scan.input_range import check_range_used, parse_input_range
from tilex.scan.manifest import (
    MANIFEST_NAME,
    check_band_count,
    check_unique_names,
    find_manifest,
    parse_band_name,
    parse_pixel_size,
    parse_wavelength,
    read_manifest,
    wavelength_from_name,
)
from tilex.scan.scan import Band, Scan

__all__ = ["BandSpec", "open_scan"]

BandSpec = tuple[str, float | None, "str | os.PathLike[str] | np.ndarray"]  # path or array


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
    pixel_size_um = parse_pixel_size(pixel_size_um, "pixel_size_um", ScanError)
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
        specs.append(
            (parse_band_name(name, ScanError), parse_wavelength(wavelength, name, ScanError), path)
        )
    check_band_count(len(specs), "the scan")
    check_unique_names([name for name, _, _ in specs], "the scan")
    ranged = [(name, wl, path, None) for name, wl, path in specs]
    return _open_parts((visible, None), ranged, pixel_size_um, origin=None, default=input_range)


def _open_source_path(
    path: Path, pixel_size_um: float | None, input_range: tuple[float, float] | None
) -> Scan:
    if not path.exists():
        raise MissingFileError(f"{path} does not exist", path=path)
    manifest = find_manifest(path)
    if manifest is not None:
        return _open_manifest(manifest, pixel_size_um, input_range)
    if path.is_dir() and not any((path / m).exists() for m in (".zarray", ".zgroup", "zarr.json")):
        raise MissingFileError(
            f"{path} is a folder without {MANIFEST_NAME} and is not a Zarr store", path=path
        )
    return _open_multichannel(path, pixel_size_um, input_range)


def _open_manifest(
    path: Path, pixel_size_um: float | None, input_range: tuple[float, float] | None
) -> Scan:
    manifest = read_manifest(path, pixel_size_um)
    return _open_parts(
        (manifest.visible, manifest.visible_range),
        manifest.bands,
        manifest.pixel_size_um,
        origin=str(path.absolute()),
        default=input_range,
    )


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
        check_range_used(default, [visible_source, *opened.values()])
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
        check_range_used(input_range, [source])
        if source.channels <= 3:
            raise ScanError(
                f"{path} has {source.channels} channels; as a whole scan it needs the visible "
                "RGB in channels 0-2 and at least one band after them",
                path=path,
            )
        bands = []
        for channel in range(3, source.channels):
            name = source.channel_names[channel] or f"channel{channel}"
            wavelength = source.channel_wavelengths[channel] or wavelength_from_name(name)
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
