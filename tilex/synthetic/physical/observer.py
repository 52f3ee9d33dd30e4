"""What the cameras integrate: CIE XYZ under D65 to sRGB, and Gaussian pass-bands.

Both are weights on the rendering grid (:func:`~.spectra.spectral_grid`):
a capture's linear value is ``sum_l w[l] * R(l)``, normalised so that a
perfect white reflector gives 1 (sRGB: ``(1, 1, 1)``, up to the rounding of
the tabulated matrix). Weights use trapezoid quadrature on the grid, which is
uneven (10 nm in the visible, 20 nm in the infrared).
"""

from __future__ import annotations

import numpy as np

from tilex.synthetic.physical.spectra import cie_tables

__all__ = [
    "SRGB_FROM_XYZ",
    "band_name",
    "band_weights",
    "check_bands",
    "srgb_encode_u8",
    "srgb_weights",
]

SRGB_FROM_XYZ = np.array(
    [
        [3.2406, -1.5372, -0.4986],
        [-0.9689, 1.8758, 0.0415],
        [0.0557, -0.2040, 1.0570],
    ]
)
"""IEC 61966-2-1 matrix from CIE XYZ (D65 white, ``Y = 1``) to linear sRGB."""


def _quadrature(nm: np.ndarray) -> np.ndarray:
    widths = np.zeros_like(nm)
    gaps = np.diff(nm)
    widths[:-1] += gaps / 2.0
    widths[1:] += gaps / 2.0
    return widths


def srgb_weights(nm: np.ndarray) -> np.ndarray:
    """``[3, L]`` weights from reflectance on ``nm`` to linear sRGB under D65.

    Examples
    --------
    >>> from tilex.synthetic.physical.spectra import spectral_grid
    >>> grid = spectral_grid([])
    >>> srgb_weights(grid).sum(axis=1).round(2)  # a perfect white
    array([1., 1., 1.])
    """
    cie_nm, cmf, d65 = cie_tables()
    inside = (nm >= cie_nm[0]) & (nm <= cie_nm[-1])
    w = np.zeros((3, len(nm)))
    q = _quadrature(nm)
    for c in range(3):
        w[c, inside] = np.interp(nm[inside], cie_nm, cmf[:, c] * d65) * q[inside]
    w /= w[1].sum()  # Y of a perfect white = 1
    return SRGB_FROM_XYZ @ w


def band_weights(nm: np.ndarray, centre: float, fwhm: float) -> np.ndarray:
    """``[L]`` weights of a Gaussian pass-band (``centre``, ``fwhm`` in nm) summing to 1.

    A sensor's response and the lamp's spectrum are folded into the camera's
    unknown gain (they vary little across one band).

    Examples
    --------
    >>> nm = np.arange(380.0, 781.0, 10.0)
    >>> w = band_weights(nm, 550.0, 40.0)
    >>> round(float(w.sum()), 6), float(nm[w.argmax()])
    (1.0, 550.0)
    """
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    w = np.exp(-0.5 * ((nm - centre) / sigma) ** 2) * _quadrature(nm)
    w[w < 1e-4 * w.max()] = 0.0
    return w / w.sum()


def band_name(centre: float) -> str:
    """``uv365``, ``vis550``, ``ir1000``: the prefix by wavelength, as in :mod:`tilex.synthetic`.

    Examples
    --------
    >>> [band_name(c) for c in (365.0, 550.4, 1000.0)]
    ['uv365', 'vis550', 'ir1000']
    """
    nm = round(centre)
    prefix = "uv" if nm < 400 else "vis" if nm < 800 else "ir"
    return f"{prefix}{nm}"


def check_bands(bands) -> list[tuple[float, float]]:
    """Validate ``[(centre_nm, fwhm_nm), ...]``: 300-2500 nm, FWHM 1-300 nm, distinct names."""
    out = []
    for item in bands:
        try:
            centre, fwhm = (float(v) for v in item)
        except (TypeError, ValueError):
            raise ValueError(f"band {item!r} is not a (centre_nm, fwhm_nm) pair") from None
        if not (300.0 <= centre <= 2500.0 and 1.0 <= fwhm <= 300.0):
            raise ValueError(
                f"band {item!r}: expected a centre of 300-2500 nm and a FWHM of 1-300 nm"
            )
        out.append((centre, fwhm))
    if not 1 <= len(out) <= 254:
        raise ValueError(f"expected 1 to 254 bands, got {len(out)}")
    names = [band_name(c) for c, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"band centres must differ by at least 1 nm, got {names}")
    return out


def srgb_encode_u8(linear: np.ndarray) -> np.ndarray:
    """Linear light -> 8-bit sRGB codes, by comparison with the codes' decision levels.

    No ``pow`` on pixels: the 255 levels between codes are decoded once and
    ``searchsorted`` places every value, so the result is exact and the same
    on every machine.

    Examples
    --------
    >>> srgb_encode_u8(np.array([0.0, 0.0031308, 0.2159, 1.0], np.float32))
    array([  0,  10, 128, 255], dtype=uint8)
    """
    levels = (np.arange(255, dtype=np.float64) + 0.5) / 255.0
    decoded = np.where(levels <= 0.04045, levels / 12.92, ((levels + 0.055) / 1.055) ** 2.4)
    return np.searchsorted(decoded.astype(np.float32), linear, side="right").astype(np.uint8)
