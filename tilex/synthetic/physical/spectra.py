"""Spectral data: measured pigment reflectance, CIE tables, the wavelength grid.

Everything here is a small table shipped in ``tilex/synthetic/data`` (see its
``PROVENANCE.md`` files) or a documented model of one:

* :func:`pigment_library`: diffuse reflectance ``R_inf`` of 324 historical
  pigments (HypPigments, CC BY 4.0), 405-995 nm every 5 nm.
* :func:`cie_tables`: CIE 1931 2-degree colour-matching functions and the
  CIE D65 illuminant, 360-780 nm every 5 nm.
* :func:`white`: chalk and lead white grounds, which the library lacks:
  modelled, not measured (flat ~0.86-0.90 with a fall into the violet).

Outside the measured 405-995 nm a spectrum is *held* at its mean over the
nearest 15 nm (no extrapolated slope: beyond 1000 nm a pigment is assumed to
reflect as it does at 980-995 nm; below 405 nm as at 405-420 nm).
"""

from __future__ import annotations

import csv
import functools
import hashlib
from dataclasses import dataclass
from importlib import resources

import numpy as np

__all__ = [
    "DATA_FILES",
    "Library",
    "check_data_files",
    "cie_tables",
    "pigment_library",
    "resample",
    "spectral_grid",
    "white",
]

DATA_FILES = {
    "pigments/hyppigments_r_5nm.npz": (
        "799b309c17db4554a54d077f3823b6419ab1bdb60cef5cce4a61a3698585a173"
    ),
    "cie/cie1931_2deg_d65_5nm.csv": (
        "be1765a5be44eb8911c73c49051fed6d42f3c120ab01db4e5774b1a807a7ab34"
    ),
}
"""Shipped data files (relative to ``tilex/synthetic/data``) and their sha256."""

_HOLD_NM = 15.0  # a spectrum is held at its mean over this much of each measured end


def _data(name: str):
    return resources.files("tilex.synthetic").joinpath("data", *name.split("/"))


def check_data_files() -> dict[str, str]:
    """sha256 of every shipped data file; ValueError when one differs from :data:`DATA_FILES`.

    Examples
    --------
    >>> sorted(check_data_files())
    ['cie/cie1931_2deg_d65_5nm.csv', 'pigments/hyppigments_r_5nm.npz']
    """
    found = {}
    for name, expected in DATA_FILES.items():
        digest = hashlib.sha256(_data(name).read_bytes()).hexdigest()
        if digest != expected:
            raise ValueError(f"data file {name}: sha256 {digest}, expected {expected}")
        found[name] = digest
    return found


@dataclass(frozen=True)
class Library:
    """Measured reflectance spectra: ``reflectance[i]`` of pigment ``names[i]`` at ``wavelength_nm``."""

    names: tuple[str, ...]
    kremer: tuple[int, ...]
    wavelength_nm: np.ndarray  # float64 [L]
    reflectance: np.ndarray  # float64 [P, L]

    def index(self, name: str) -> int:
        """Row of a pigment by its exact name (KeyError names the closest ones)."""
        try:
            return self.names.index(name)
        except ValueError:
            near = [n for n in self.names if name.split("--")[0] in n][:5]
            raise KeyError(f"pigment {name!r} is not in the library; similar: {near}") from None

    def spectrum(self, name: str) -> np.ndarray:
        return self.reflectance[self.index(name)]


@functools.cache
def pigment_library() -> Library:
    """The shipped HypPigments library (cached).

    Examples
    --------
    >>> lib = pigment_library()
    >>> len(lib.names), float(lib.wavelength_nm[0]), float(lib.wavelength_nm[-1])
    (324, 405.0, 995.0)
    >>> float(lib.spectrum("vermilion")[-1]) > 0.5 > float(lib.spectrum("ivory black--genuine")[-1])
    True
    """
    with _data("pigments/hyppigments_r_5nm.npz").open("rb") as fh:
        z = np.load(fh, allow_pickle=False)
        return Library(
            names=tuple(str(n) for n in z["names"]),
            kremer=tuple(int(k) for k in z["kremer"]),
            wavelength_nm=z["wavelength_nm"].astype(np.float64),
            reflectance=z["reflectance"].astype(np.float64),
        )


@functools.cache
def cie_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(nm, cmf, d65)``: CIE 1931 2-degree ``[L, 3]`` (x, y, z bar) and D65 ``[L]``, 360-780 nm.

    Examples
    --------
    >>> nm, cmf, d65 = cie_tables()
    >>> float(nm[0]), float(nm[-1]), float(cmf[nm == 555, 1][0]), float(d65[nm == 560][0])
    (360.0, 780.0, 1.0, 100.0)
    """
    with _data("cie/cie1931_2deg_d65_5nm.csv").open("r") as fh:
        rows = [[float(v) for v in r] for r in list(csv.reader(fh))[1:]]
    table = np.asarray(rows, dtype=np.float64)
    return table[:, 0], table[:, 1:4], table[:, 4]


def resample(nm_in: np.ndarray, values: np.ndarray, nm_out: np.ndarray) -> np.ndarray:
    """Linear interpolation along the last axis, held beyond the ends (see the module notes).

    Examples
    --------
    >>> nm = np.arange(400.0, 501.0, 5.0)  # a ramp from 0.40 to 0.50
    >>> resample(nm, nm / 1000.0, np.array([350.0, 452.5, 1000.0]))  # held: 400-415, 485-500 nm
    array([0.4075, 0.4525, 0.4925])
    """
    values = np.asarray(values, dtype=np.float64)
    lo = values[..., nm_in <= nm_in[0] + _HOLD_NM].mean(axis=-1, keepdims=True)
    hi = values[..., nm_in >= nm_in[-1] - _HOLD_NM].mean(axis=-1, keepdims=True)
    out = np.empty(values.shape[:-1] + (len(nm_out),), dtype=np.float64)
    flat_in = values.reshape(-1, values.shape[-1])
    for i, row in enumerate(flat_in):
        out.reshape(-1, len(nm_out))[i] = np.interp(nm_out, nm_in, row)
    below, above = nm_out < nm_in[0], nm_out > nm_in[-1]
    out[..., below] = lo
    out[..., above] = hi
    return out


def white(kind: str, nm: np.ndarray) -> np.ndarray:
    """Modelled reflectance of a white: ``"chalk"`` (gesso) or ``"lead white"``.

    Not measured (the library holds no white): chalk is ~0.88 and flat with a
    slight fall below 460 nm; lead white is ~0.91 with the strong fall of its
    absorption edge below 430 nm. Smoothsteps, so no transcendental functions.

    Examples
    --------
    >>> white("chalk", np.array([380.0, 550.0, 1000.0])).round(3)
    array([0.8 , 0.88, 0.88])
    """
    nm = np.asarray(nm, dtype=np.float64)

    def rise(a: float, b: float) -> np.ndarray:
        t = np.clip((nm - a) / (b - a), 0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)

    if kind == "chalk":
        return 0.80 + 0.08 * rise(380.0, 460.0)
    if kind == "lead white":
        return 0.45 + 0.46 * rise(370.0, 430.0)
    raise ValueError(f"white {kind!r} is not 'chalk' or 'lead white'")


def spectral_grid(bands: list[tuple[float, float]]) -> np.ndarray:
    """Wavelengths (nm) at which a scene is rendered for the visible image and ``bands``.

    10 nm from 380 to 780 nm (the colour-matching functions), then 20 nm up
    to the last band's centre plus 1.5 FWHM (reflectance is smooth there);
    bands below 380 nm extend the grid down in 10 nm steps.

    Examples
    --------
    >>> g = spectral_grid([(450.0, 40.0), (1000.0, 40.0)])
    >>> float(g[0]), float(g[40]), float(g[41]), float(g[-1])
    (380.0, 780.0, 800.0, 1060.0)
    """
    lo = min([380.0, *(c - 1.5 * f for c, f in bands)])
    hi = max([780.0, *(c + 1.5 * f for c, f in bands)])
    start = 380.0 - 10.0 * np.ceil((380.0 - lo) / 10.0)
    vis = np.arange(start, 780.0 + 1e-9, 10.0)
    ir = np.arange(800.0, 780.0 + 20.0 * np.ceil((hi - 780.0) / 20.0) + 1e-9, 20.0)
    return np.concatenate([vis, ir])
