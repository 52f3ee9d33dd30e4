"""Scan descriptions: the manifest ``scan.json`` and the command line's bands.

A manifest names a scan's files before any is opened::

    {"visible": "visible.tif",
     "bands": [{"name": "ir1000", "file": "ir1000.tif", "wavelength_nm": 1000}],
     "pixel_size_um": 40}

``wavelength_nm`` and ``pixel_size_um`` are optional; any other key is an
error.  A float32 image whose values are not reflectance in [0, 1] says which
range they span with ``"input_range": [LO, HI]`` on its band entry, or on the
visible entry, which then is an object:
``"visible": {"file": "visible.tif", "input_range": [0, 65535]}``.  Relative
paths are relative to the manifest's folder; absolute paths and paths leaving
the folder (``../other/ir.tif``) are allowed: a manifest describes where the
files are, it is not a sandbox.

The command line gives the same as ``--visible FILE --band NAME[@NM]=FILE``
(:func:`parse_band_option`).  Band names, wavelengths, pixel sizes and band
counts are checked by the same helpers however a scan is given; a failure is
a :class:`ManifestError` for a manifest, else a :class:`ScanError`, naming
the value and the expectation.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tilex.errors import ManifestError, MissingFileError, ScanError
from tilex.scan.input_range import parse_input_range

__all__ = [
    "MANIFEST_NAME",
    "MAX_BANDS",
    "Manifest",
    "check_band_count",
    "check_unique_names",
    "find_manifest",
    "parse_band_name",
    "parse_band_option",
    "parse_pixel_size",
    "parse_wavelength",
    "read_manifest",
    "wavelength_from_name",
]

MAX_BANDS = 254
MANIFEST_NAME = "scan.json"

_MANIFEST_KEYS = {"visible": True, "bands": True, "pixel_size_um": False}
_VISIBLE_KEYS = {"file": True, "input_range": False}
_BAND_KEYS = {"name": True, "file": True, "wavelength_nm": False, "input_range": False}
_TRAILING_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*(?:nm)?$", re.IGNORECASE)

BandEntry = tuple[str, "float | None", Path, "tuple[float, float] | None"]
"""A band as a manifest gives it: name, wavelength (nm), file and input range."""


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: where a scan's files are and what it says of them.

    Built by :func:`read_manifest`; no image file is opened.
    """

    path: Path
    visible: Path
    visible_range: tuple[float, float] | None
    bands: tuple[BandEntry, ...]
    pixel_size_um: float | None


def find_manifest(path: Path) -> Path | None:
    """The manifest that ``path`` names: a folder's ``scan.json``, a JSON file, or None.

    A file is a manifest when its name ends in ``.json`` or its text starts
    with ``{``.

    Examples
    --------
    >>> find_manifest(Path("scan"))  # doctest: +SKIP
    PosixPath('scan/scan.json')
    """
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        return path / MANIFEST_NAME
    if path.is_file() and (path.suffix.lower() == ".json" or _looks_like_json(path)):
        return path
    return None


def _looks_like_json(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(64).lstrip().startswith(b"{")
    except OSError:
        return False


def read_manifest(path: Path, pixel_size_um: float | None = None) -> Manifest:
    """Read and check a manifest; its file paths are joined to its folder.

    Parameters
    ----------
    path
        The ``scan.json`` file.
    pixel_size_um
        A pixel size given by the caller: it replaces the manifest's, which
        is then not read.

    Raises
    ------
    MissingFileError
        The file cannot be read.
    ManifestError
        It is not UTF-8 JSON, has an unknown or a missing key, or a value of
        the wrong kind; the message names the manifest and the entry.

    Examples
    --------
    >>> manifest = read_manifest(Path("scan/scan.json"))  # doctest: +SKIP
    >>> [name for name, *_ in manifest.bands]  # doctest: +SKIP
    ['uv365', 'ir1000']
    """
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
    check_band_count(len(entries), f"manifest {path}", ManifestError)
    folder = path.parent
    specs = []
    for i, entry in enumerate(entries):
        where = f"manifest {path}: bands[{i}]"
        _check_keys(entry, _BAND_KEYS, where, path)
        name = parse_band_name(entry["name"], ManifestError, where)
        wavelength = parse_wavelength(entry.get("wavelength_nm"), name, ManifestError, where)
        file = entry["file"]
        if not isinstance(file, str) or not file:
            raise ManifestError(f"{where}: 'file' is {file!r}, expected a file path", path=path)
        band_range = _manifest_range(entry.get("input_range"), f"{where}: input_range")
        specs.append((name, wavelength, folder / file, band_range))
    check_unique_names([name for name, *_ in specs], f"manifest {path}", ManifestError)
    if pixel_size_um is None:
        pixel_size_um = parse_pixel_size(
            data.get("pixel_size_um"), f"manifest {path}: pixel_size_um", ManifestError
        )
    return Manifest(path, folder / visible, visible_range, tuple(specs), pixel_size_um)


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


def wavelength_from_name(name: str) -> float | None:
    """A trailing number of 100..20000 (optionally + ``nm``) in a band name.

    Examples
    --------
    >>> wavelength_from_name("b_850nm"), wavelength_from_name("ir1000")
    (850.0, 1000.0)
    >>> wavelength_from_name("layer2") is None
    True
    """
    match = _TRAILING_NUMBER.search(name)
    if not match:
        return None
    value = float(match.group(1))
    return value if 100 <= value <= 20000 else None


def parse_band_name(name: Any, cls: type[ScanError], where: str = "band") -> str:
    """A band name, stripped; ``cls`` naming ``where`` when it is not a non-empty string."""
    if not isinstance(name, str) or not name.strip():
        raise cls(f"{where}: name {name!r} is not a non-empty string")
    return name.strip()


def parse_wavelength(
    value: Any, name: str, cls: type[ScanError], where: str = "band"
) -> float | None:
    """A wavelength in nm (a positive number) or None; ``cls`` naming the band otherwise."""
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


def parse_pixel_size(value: Any, where: str, cls: type[ScanError]) -> float | None:
    """A pixel size in micrometres (a positive number) or None; ``cls`` naming ``where`` otherwise."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise cls(f"{where} is {value!r}, expected a positive number of micrometres or null")
    return float(value)


def check_band_count(n: int, where: object, cls: type[ScanError] = ScanError) -> None:
    """Refuse a band count outside 1..:data:`MAX_BANDS` with ``cls`` naming ``where``."""
    if not 1 <= n <= MAX_BANDS:
        raise cls(f"{where} gives {n} bands, expected 1 to {MAX_BANDS}", path=where)


def check_unique_names(
    names: Sequence[str], where: object, cls: type[ScanError] = ScanError
) -> None:
    """Refuse a band name given twice with ``cls`` naming ``where``."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise cls(f"{where} names band {name!r} twice; band names must be unique", path=where)
        seen.add(name)
