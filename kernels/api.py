"""The public kernel API: validate once at the boundary, then dispatch.

Each function looks at its array inputs once: all NumPy -> the Numba backend
(:mod:`tilex.kernels.cpu`), all CuPy -> the CuPy backend
(:mod:`tilex.kernels.gpu`); a mix is refused with a :class:`TypeError`, because
moving data between host and device is the caller's decision. Backends are
imported on first use, and CuPy only for CuPy inputs, so importing
:mod:`tilex.kernels` neither imports CuPy nor touches a GPU.

Results are arrays of the inputs' kind: NumPy in, NumPy out; CuPy in, CuPy out.
"""

from __future__ import annotations

import importlib
import numbers
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

import numpy as np
from tilex.kernels.reference import BandHistogram, Fusion

__all__ = [
    "BACKEND_OPS",
    "MAX_BANDS",
    "NORMS",
    "backend_for",
    "dissimilarity",
    "dissimilarity_histogram",
    "fuse",
    "overlay",
]

MAX_BANDS = 254
"""Most bands a fusion takes: ``winner`` is uint8 and 0 means 'no band'."""

NORMS = ("band", "pixel")
"""Normalisations :func:`fuse` knows (see :mod:`tilex.kernels.reference`)."""

BACKEND_OPS = ("dissimilarity", "dissimilarity_histogram", "fuse", "overlay")
"""Operations every backend module implements under these names."""

_BACKENDS = {"numpy": "tilex.kernels.cpu", "cupy": "tilex.kernels.gpu"}

F = TypeVar("F", bound=Callable[..., Any])


def _dispatched(fn: F) -> F:
    """Mark ``fn`` as a public operation with one implementation per backend."""
    assert fn.__name__ in BACKEND_OPS, fn.__name__
    fn.__tilex_op__ = fn.__name__  # type: ignore[attr-defined]
    return fn


def backend_for(**arrays: Any) -> ModuleType:
    """The backend module for these named inputs (``None`` values are skipped).

    Parameters
    ----------
    **arrays
        The array inputs of one call, by parameter name.

    Returns
    -------
    module
        :mod:`tilex.kernels.cpu` for NumPy arrays, :mod:`tilex.kernels.gpu` for CuPy arrays.

    Raises
    ------
    TypeError
        If an input is neither a NumPy nor a CuPy array, or if they are mixed.
    """
    kinds: dict[str, str] = {}
    for name, a in arrays.items():
        if a is None:
            continue
        kind = type(a).__module__.partition(".")[0]
        if kind not in _BACKENDS or not (hasattr(a, "dtype") and hasattr(a, "shape")):
            raise TypeError(
                f"{name} must be a NumPy or CuPy array, got {type(a).__module__}.{type(a).__qualname__}"
            )
        kinds[name] = kind
    found = set(kinds.values())
    if len(found) > 1:
        listed = ", ".join(f"{n} is {k}" for n, k in kinds.items())
        raise TypeError(
            f"inputs mix NumPy and CuPy arrays ({listed}); move them to one device first "
            "(cupy.asarray(x) or x.get())"
        )
    return importlib.import_module(_BACKENDS[found.pop() if found else "numpy"])


# --------------------------------------------------------------------------- validation


def _features(g: Any, b: Any) -> tuple[int, int, int, int]:
    """Check ``g [C, h, w]`` and ``b [N, C, h, w]`` (float32, matching); return N, C, h, w."""
    _float32("g", g)
    _float32("b", b)
    if g.ndim != 3:
        raise ValueError(f"g must be [C, h, w], got {g.ndim} dimensions {tuple(g.shape)}")
    if b.ndim != 4:
        raise ValueError(f"b must be [N, C, h, w], got {b.ndim} dimensions {tuple(b.shape)}")
    n_bands, channels, h, w = b.shape
    if tuple(b.shape[1:]) != tuple(g.shape):
        raise ValueError(
            f"b is [N, C, h, w] = {tuple(b.shape)} but g is [C, h, w] = {tuple(g.shape)}; "
            "C, h and w must match"
        )
    if not 1 <= n_bands <= MAX_BANDS:
        raise ValueError(f"the number of bands N must lie in 1..{MAX_BANDS}, got {n_bands}")
    if channels < 1:
        raise ValueError(f"the number of channels C must be at least 1, got {channels}")
    return n_bands, channels, h, w


def _float32(name: str, a: Any) -> None:
    if a.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {a.dtype}")


def _contiguous(*arrays: Any) -> list[Any]:
    """C-contiguous views (copies on the same device only where needed)."""
    return [None if a is None else a if a.flags.c_contiguous else a.copy() for a in arrays]


# --------------------------------------------------------------------------- operations


@_dispatched
def fuse(
    g: Any,
    b: Any,
    lo: Any | None = None,
    hi: Any | None = None,
    *,
    norm: str = "band",
    threshold: float = 0.5,
    keep_normalised: bool = False,
) -> Fusion:
    """Fuse one tile: per pixel, the band that differs most from the visible image.

    The contract (float32; the oracle's bits on CPU, its winners and maps
    within 1e-6 on GPU) is in :mod:`tilex.kernels.reference`: ``d_i = sum_c |g_c - b_ic|``, normalised
    per band (``(d - lo) / ((hi - lo) + 1e-8)``) or per pixel (by the min and
    max over bands), clamped to ``[0.1, 1]``, zeroed at or below
    ``threshold``, and the first band with the largest value wins.

    Parameters
    ----------
    g : float32 array [C, h, w]
        Visible features.
    b : float32 array [N, C, h, w]
        Band features, ``1 <= N <= 254``.
    lo, hi : float32 array [N], optional
        Per-band normalisation range; required for ``norm="band"``, refused
        for ``norm="pixel"``. Their values are not checked: ``hi < lo`` or NaN
        follow IEEE arithmetic exactly as the oracle does.
    norm : {"band", "pixel"}
        Normalisation.
    threshold : float
        In ``[0, 1]``; normalised values at or below it never win.
    keep_normalised : bool
        Also return the clamped normalised values ``[N, h, w]`` (NaN kept).

    Returns
    -------
    Fusion
        ``winner`` uint8 [h, w] (0 = none, else 1-based band), ``score`` float32
        [h, w], ``collage`` float32 [C, h, w], ``normalised`` or ``None``; NumPy
        arrays for NumPy inputs, CuPy arrays for CuPy inputs.

    Raises
    ------
    TypeError
        Inputs not float32 arrays, or mixing NumPy and CuPy.
    ValueError
        Shapes that do not match, a bad ``norm`` or ``threshold``, or ``lo``/``hi``
        missing for ``norm="band"``.

    Examples
    --------
    >>> g = np.zeros((1, 1, 3), np.float32)
    >>> b = np.array([[[[0.0, 1.0, 2.0]]], [[[2.0, 1.0, 0.0]]]], np.float32)
    >>> lo, hi = np.zeros(2, np.float32), np.full(2, 2.0, np.float32)
    >>> fuse(g, b, lo, hi, threshold=0.4).winner
    array([[2, 1, 1]], dtype=uint8)
    """
    backend = backend_for(g=g, b=b, lo=lo, hi=hi)
    n_bands, _, _, _ = _features(g, b)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not 0.0 <= float(threshold) <= 1.0
    ):
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if norm == "band":
        for name, a in (("lo", lo), ("hi", hi)):
            if a is None:
                raise ValueError(f"norm='band' needs {name} (float32 [N]); got None")
            _float32(name, a)
            if tuple(a.shape) != (n_bands,):
                raise ValueError(
                    f"{name} must have shape ({n_bands},) for N={n_bands}, got {tuple(a.shape)}"
                )
    elif lo is not None or hi is not None:
        raise ValueError("lo and hi are only used with norm='band'; pass None for norm='pixel'")
    g, b, lo, hi = _contiguous(g, b, lo, hi)
    return backend.fuse(
        g, b, lo, hi, norm=norm, threshold=float(threshold), keep_normalised=bool(keep_normalised)
    )


@_dispatched
def dissimilarity(g: Any, b: Any) -> Any:
    """``d [N, h, w] = sum_c |g_c - b_ic|`` in float32, channels summed in order.

    Parameters
    ----------
    g : float32 array [C, h, w]
    b : float32 array [N, C, h, w]

    Returns
    -------
    float32 array [N, h, w]
        Of the inputs' kind (NumPy or CuPy).

    Examples
    --------
    >>> g = np.ones((2, 1, 2), np.float32)
    >>> dissimilarity(g, np.zeros((1, 2, 1, 2), np.float32))
    array([[[2., 2.]]], dtype=float32)
    """
    backend = backend_for(g=g, b=b)
    _features(g, b)
    return backend.dissimilarity(*_contiguous(g, b))


@_dispatched
def dissimilarity_histogram(g: Any, b: Any) -> BandHistogram:
    """Exact per-band histogram of ``d_i = sum_c |g_c - b_ic|`` over a tile.

    The bin of ``d`` is ``bits(d) >> SHIFT`` (see :mod:`tilex.kernels.reference`):
    2**18 bins of relative width 2**-10 covering ``[0, +inf]``, NaN counted
    apart. Histograms of the tiles of a scan merge exactly with
    :func:`~tilex.kernels.merge_histograms` into the histogram of the whole scan.

    Parameters
    ----------
    g : float32 array [C, h, w]
    b : float32 array [N, C, h, w]

    Returns
    -------
    BandHistogram
        ``counts`` int64 [N, NBINS], ``dmin``/``dmax`` float32 [N] (``+inf``/``-inf``
        for a band without a non-NaN value), ``nan`` int64 [N].

    Examples
    --------
    >>> g = np.zeros((1, 2, 2), np.float32)
    >>> b = np.array([[[[1.0, 2.0], [3.0, np.nan]]]], np.float32)
    >>> h = dissimilarity_histogram(g, b)
    >>> int(h.counts.sum()), float(h.dmin[0]), float(h.dmax[0]), int(h.nan[0])
    (3, 1.0, 3.0, 1)
    """
    backend = backend_for(g=g, b=b)
    _features(g, b)
    return backend.dissimilarity_histogram(*_contiguous(g, b))


@_dispatched
def overlay(gray: Any, score: Any) -> Any:
    """ArtExtract's picture: ``gray`` in grey, blended to blue where ``score`` is high.

    In float32: ``alpha = 0.65 * score``, ``rgb = (1 - alpha) * gray + alpha *
    (0, 0, 1)``, then ``floor(clip(rgb, 0, 1) * 255 + 0.5)`` (NaN -> 0).

    Parameters
    ----------
    gray : float32 array [h, w]
        The visible image in grey, in ``[0, 1]``.
    score : float32 array [h, w]
        :attr:`Fusion.score`: 0 where no band wins, else in ``(threshold, 1]``.

    Returns
    -------
    uint8 array [3, h, w]

    Examples
    --------
    >>> overlay(np.full((1, 2), 0.5, np.float32), np.array([[0.0, 1.0]], np.float32))[:, 0]
    array([[128,  45],
           [128,  45],
           [128, 210]], dtype=uint8)
    """
    backend = backend_for(gray=gray, score=score)
    _float32("gray", gray)
    _float32("score", score)
    if gray.ndim != 2 or tuple(score.shape) != tuple(gray.shape):
        raise ValueError(
            f"gray and score must both be [h, w]; got {tuple(gray.shape)} and {tuple(score.shape)}"
        )
    return backend.overlay(*_contiguous(gray, score))
