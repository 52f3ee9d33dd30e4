"""The generator's parameters: size, band count and wavelengths, seed."""

from __future__ import annotations

import re

import numpy as np

from tilex.synthetic.noise import U32

__all__ = [
    "MAX_BANDS",
    "band_names",
    "check_bands",
    "check_seed",
    "check_size",
    "parse_size",
    "wavelengths",
]

MAX_BANDS = 254
"""Most bands a scan may have (the fused winner map is uint8, 0 = none)."""

_UV_NM, _IR_NM = 365.0, 1700.0


def parse_size(text: str | int | tuple[int, int]) -> tuple[int, int]:
    """Parse a scan size: ``"HxW"``, ``"N"`` (square), an int or a pair.

    Raises :class:`ValueError` with the expected form when the text is not a
    size or a side is not a positive integer.

    Examples
    --------
    >>> parse_size("768x1024")
    (768, 1024)
    >>> parse_size("512")
    (512, 512)
    """
    if isinstance(text, tuple | list):
        parts = [str(v) for v in text]
    else:
        parts = re.split(r"\s*[xX×,]\s*", str(text).strip())
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"size {text!r} is not HxW or N (e.g. 4096x6144 or 4096)")
    h, w = (int(p) for p in parts)
    if h < 1 or w < 1:
        raise ValueError(f"size {text!r}: height and width must be at least 1")
    return h, w


def wavelengths(n_bands: int) -> list[int]:
    """Band centre wavelengths in nm, spread geometrically over 365..1700 nm.

    A single band sits at 1000 nm (infrared sees the most under the paint).
    Rounded wavelengths are distinct for every count up to :data:`MAX_BANDS`.

    Examples
    --------
    >>> wavelengths(4)
    [365, 610, 1018, 1700]
    """
    check_bands(n_bands)
    if n_bands == 1:
        return [1000]
    ratio = (_IR_NM / _UV_NM) ** (1.0 / (n_bands - 1))
    return [round(_UV_NM * ratio**i) for i in range(n_bands)]


def band_names(n_bands: int) -> list[str]:
    """Band names ``uv365``, ``vis550``, ``ir1000``... from :func:`wavelengths`.

    Examples
    --------
    >>> band_names(3)
    ['uv365', 'vis788', 'ir1700']
    """
    return [_band_name(nm) for nm in wavelengths(n_bands)]


def _band_name(nm: int) -> str:
    prefix = "uv" if nm < 400 else "vis" if nm < 800 else "ir"
    return f"{prefix}{nm}"


def check_bands(n_bands: int) -> None:
    """Refuse a band count that is not an integer from 1 to :data:`MAX_BANDS` (ValueError)."""
    if not isinstance(n_bands, int | np.integer) or not 1 <= n_bands <= MAX_BANDS:
        raise ValueError(f"bands must be an integer from 1 to {MAX_BANDS}, got {n_bands!r}")


def check_size(h: int, w: int) -> None:
    """Refuse a side longer than 2**24 px (ValueError)."""
    # pixel indices are float32 in the renderer: exact below 2**24
    if max(h, w) > 2**24:
        raise ValueError(f"size {h}x{w}: sides up to {2**24} px are supported")


def check_seed(seed: int) -> None:
    """Refuse a seed that is not an integer from 0 to 2**32 - 1 (ValueError)."""
    if not isinstance(seed, int | np.integer) or not 0 <= seed <= U32:
        raise ValueError(f"seed must be an integer from 0 to {U32}, got {seed!r}")
