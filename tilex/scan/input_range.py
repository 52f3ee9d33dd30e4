"""Input ranges: which values of an input plane map to 0 and 1.

Pixel values: uint8 / 255, uint16 / 65535; float32 is reflectance in [0, 1]
unless an input range ``[LO, HI]`` is given for it (manifest ``input_range``,
``open_scan(input_range=...)``, the command line's ``--input-range LO,HI``),
which maps LO to 0 and HI to 1.  A float input whose values (measured at open,
sampled on large files: :func:`tilex.readers.measure_range`) reach more than
:data:`REFLECTANCE_SLACK` beyond [0, 1] once mapped is refused with
:class:`InputRangeError` naming the file and the values, rather than run with
nearly every pixel saturated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tilex.errors import InputRangeError, ScanError

if TYPE_CHECKING:
    from tilex.readers import PlaneSource

__all__ = [
    "REFLECTANCE_SLACK",
    "check_range_used",
    "parse_input_range",
    "plane_values",
    "resolve_input_range",
]

REFLECTANCE_SLACK = 0.5
"""How far beyond [0, 1] a float input's mapped values may reach (noise, dark
subtraction, a gain of 1.02 are fine; 0..255 or 0..65535 data is not)."""

_DTYPE_RANGE = {np.dtype("uint8"): (0.0, 255.0), np.dtype("uint16"): (0.0, 65535.0)}
_COMMON_TOPS = (1.0, 255.0, 4095.0, 65535.0)  # offered in the refusal when the values fit one


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


def resolve_input_range(
    source: PlaneSource,
    channels: Sequence[int],
    given: tuple[float, float] | None,
    what: str,
) -> tuple[float, float]:
    """The values of a plane mapped to 0 and 1, refusing floats that cannot be reflectance.

    Parameters
    ----------
    source, channels
        The input and the channels of it that make the plane.
    given
        The input range given for it, if any (only float32 inputs take one).
    what
        The plane in the user's words, for messages: ``"band 'ir'"``.

    Raises
    ------
    ScanError
        An input range is given for an integer input.
    InputRangeError
        The float values reach more than :data:`REFLECTANCE_SLACK` beyond
        [0, 1] once mapped.
    """
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


def plane_values(source: PlaneSource, channels: Sequence[int]) -> dict[str, Any] | None:
    """The smallest and largest value of a float plane found at open; None for integers."""
    values = source.value_range()
    if values is None:
        return None
    return {
        "min": min(values.lo[c] for c in channels),
        "max": max(values.hi[c] for c in channels),
        "sampled": values.sampled,
    }


def check_range_used(
    input_range: tuple[float, float] | None, sources: Sequence[PlaneSource]
) -> None:
    """Refuse an input range for a scan without float inputs: it would do nothing."""
    if input_range is not None and not any(s.dtype.kind == "f" for s in sources):
        raise ScanError(
            f"input range {input_range[0]:g},{input_range[1]:g} given, but no input is float32: "
            "integer images are scaled by their type's range (uint8 / 255, uint16 / 65535)"
        )
