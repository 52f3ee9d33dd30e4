"""Kubelka-Munk two-flux optics of paint layers.

A paint is an absorption ``K`` and a scattering ``S`` per wavelength; a
mixture adds the ``K`` and the ``S`` of its pigments weighted by their
concentrations. An opaque layer reflects ``R_inf`` with

    K/S = (1 - R_inf)^2 / (2 R_inf),

so a measured ``R_inf`` gives ``K/S``; ``S`` itself is not measured and is
modelled (:mod:`tilex.synthetic.physical.palette`). A layer of optical
thickness ``tau = S X`` over a background of reflectance ``Rg`` reflects
(the hyperbolic solution, written with ``t = tanh(b tau)``)

    R = (t (1 - a Rg) + b Rg) / (t (a - Rg) + b),   a = 1 + K/S,  b = sqrt(a^2 - 1):

``R = Rg`` for ``tau = 0`` and ``R = R_inf = a - b`` as ``tau`` grows.
Only ``+ - * /``, ``sqrt``, ``floor`` and ``ldexp`` touch pixel arrays
(:func:`exp_neg` replaces ``np.exp``), so results do not depend on how an
array is laid out or on the CPU's vector units.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ab", "exp_neg", "ks_from_reflectance", "layer", "tanh_pos"]

_LN2 = 0.6931471805599453
# Taylor coefficients of exp(-r) for r in [0, ln 2): error below 2e-7
_EXP_COEF = [(-1.0) ** k / float(np.prod(np.arange(1, k + 1))) for k in range(9)]


def ks_from_reflectance(r_inf: np.ndarray) -> np.ndarray:
    """``K/S`` of an opaque layer of reflectance ``r_inf`` (clipped to [1e-3, 0.999]).

    Examples
    --------
    >>> ks_from_reflectance(np.array([0.5, 0.06])).round(3)
    array([0.25 , 7.363])
    """
    r = np.clip(np.asarray(r_inf, dtype=np.float64), 1e-3, 0.999)
    return (1.0 - r) ** 2 / (2.0 * r)


def ab(ks):
    """KM ``a = 1 + K/S`` and ``b = sqrt(a^2 - 1)``, with ``K/S >= 1e-4`` (``b > 0``)."""
    a = 1.0 + np.maximum(ks, 1e-4 if np.ndim(ks) == 0 else np.float32(1e-4))
    return a, np.sqrt(a * a - 1.0)


def exp_neg(y: np.ndarray) -> np.ndarray:
    """``exp(-y)`` for ``y >= 0`` (float32) from exact operations: ``2^-n`` times a polynomial.

    Examples
    --------
    >>> y = np.array([0.0, 0.5, 3.0, 30.0], np.float32)
    >>> bool(np.allclose(exp_neg(y), np.exp(-y), rtol=1e-6, atol=0))
    True
    """
    y = np.minimum(y, np.float32(80.0))
    n = np.floor(y * np.float32(1.0 / _LN2))
    r = y - n * np.float32(_LN2)  # in [0, ln 2)
    p = np.full_like(r, np.float32(_EXP_COEF[-1]))
    for c in _EXP_COEF[-2::-1]:
        p = p * r + np.float32(c)
    return np.ldexp(p, -n.astype(np.int32))


def tanh_pos(x: np.ndarray) -> np.ndarray:
    """``tanh(x)`` for ``x >= 0`` through :func:`exp_neg`."""
    e = exp_neg(x + x)
    return (np.float32(1.0) - e) / (np.float32(1.0) + e)


def layer(a, b, tau, rg):
    """Reflectance of a KM layer (``a``, ``b``, optical thickness ``tau``) over ``rg``.

    Broadcasts; ``a`` and ``b`` may be per-pixel arrays or scalars.

    Examples
    --------
    >>> a, b = ab(ks_from_reflectance(0.3))
    >>> round(float(layer(a, b, np.float32(0.0), np.float32(0.8))), 4)  # no paint: the background
    0.8
    >>> round(float(layer(a, b, np.float32(40.0), np.float32(0.8))), 4)  # thick: R_inf
    0.3
    """
    t = tanh_pos(b * tau)
    return (t * (1.0 - a * rg) + b * rg) / (t * (a - rg) + b)
