"""The NumPy oracle: the fusion contract written as plainly as possible.

Every other implementation (Numba on CPU, CuPy on GPU) is tested against this
module. It is slow on purpose: it favours obviousness over speed and keeps
float32 arithmetic in the same order as the fast kernels, so that winners can be
compared exactly.

The contract, for visible features ``g [C, h, w]`` and band features
``b [N, C, h, w]``:

1. ``d_i = sum_c |g_c - b_ic|`` (summed over c in order, float32).
2. Normalise. ``norm="band"``: ``n_i = (d_i - lo_i) / ((hi_i - lo_i) + 1e-8)``
   with per-band ``lo``/``hi`` from the caller. ``norm="pixel"``:
   ``n_i = (d_i - m) / ((M - m) + 1e-8)`` with ``m``/``M`` the min/max over
   the bands at that pixel (NaN ignored).
3. Clamp ``n`` to ``[0.1, 1.0]``; set ``n_i = 0`` where ``n_i <= threshold``.
   A NaN ``d_i`` gives ``n_i = 0``: it never wins.
4. ``winner = 1 + argmax_i n_i`` (lowest band on ties), ``0`` where every
   ``n_i`` is 0.
5. ``score = n_winner`` (0 where none); ``collage = b_winner`` (0 where none).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["EPS", "FLOOR", "Fusion", "dissimilarity_reference", "fuse_reference"]

EPS = np.float32(1e-8)
"""Added to the normalisation range so a flat band divides safely."""

FLOOR = np.float32(0.1)
"""Lower clamp of a normalised dissimilarity (ArtExtract's ``clip(0.1, 1)``)."""


class Fusion(NamedTuple):
    """Per-pixel result of the fusion of one tile."""

    winner: np.ndarray  # uint8 [h, w]: 0 = no band, i = band i (1-based)
    score: np.ndarray  # float32 [h, w]: normalised dissimilarity of the winner
    collage: np.ndarray  # float32 [C, h, w]: the winning band's features
    normalised: np.ndarray | None  # float32 [N, h, w] clamped n (NaN kept), or None


def dissimilarity_reference(g: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``d [N, h, w] = sum_c |g_c - b_ic|`` in float32, channels summed in order."""
    g = np.asarray(g, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    d = np.zeros((b.shape[0],) + b.shape[2:], dtype=np.float32)
    for c in range(b.shape[1]):
        d += np.abs(g[c][None] - b[:, c])
    return d


def fuse_reference(
    g: np.ndarray,
    b: np.ndarray,
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
    *,
    norm: str = "band",
    threshold: float = 0.5,
    keep_normalised: bool = False,
) -> Fusion:
    """Fuse one tile following the contract in this module's docstring."""
    b = np.asarray(b, dtype=np.float32)
    n_bands, channels = b.shape[:2]
    d = dissimilarity_reference(g, b)
    if norm == "band":
        lo = np.asarray(lo, dtype=np.float32).reshape(n_bands, 1, 1)
        hi = np.asarray(hi, dtype=np.float32).reshape(n_bands, 1, 1)
        n = (d - lo) / ((hi - lo) + EPS)
    elif norm == "pixel":
        with np.errstate(all="ignore"), _quiet_nan_warnings():
            m = np.nanmin(d, axis=0, keepdims=True)
            big = np.nanmax(d, axis=0, keepdims=True)
        n = (d - m) / ((big - m) + EPS)
    else:
        raise ValueError(f"norm must be 'band' or 'pixel', got {norm!r}")
    n = n.astype(np.float32)
    clamped = np.clip(n, FLOOR, np.float32(1.0))  # NaN stays NaN
    kept = np.where(clamped > np.float32(threshold), clamped, np.float32(0.0))
    kept = np.nan_to_num(kept, nan=0.0).astype(np.float32)

    h, w = d.shape[1:]
    winner = np.zeros((h, w), dtype=np.uint8)
    score = np.zeros((h, w), dtype=np.float32)
    for i in range(n_bands):  # strict '>' keeps the lowest band on ties
        better = kept[i] > score
        winner[better] = i + 1
        score[better] = kept[i][better]
    collage = np.zeros((channels, h, w), dtype=np.float32)
    for i in range(n_bands):
        collage[:, winner == i + 1] = b[i][:, winner == i + 1]
    return Fusion(winner, score, collage, clamped if keep_normalised else None)


class _quiet_nan_warnings:
    """Silence NumPy's 'All-NaN slice' warning: an all-NaN pixel has no winner."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
