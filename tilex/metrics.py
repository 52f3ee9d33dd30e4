"""Detection metrics: how well a score map finds a known hidden mask.

Used by the benchmarks and tests that judge tilex against a ground truth
(the hidden mask :func:`tilex.synth` writes beside a synthetic scan).
"""

from __future__ import annotations

import numpy as np

__all__ = ["average_precision", "roc_auc", "score_map"]


def score_map(
    g: np.ndarray,
    b: np.ndarray,
    *,
    q: tuple[float, float] = (1.0, 99.0),
    threshold: float = 0.5,
) -> np.ndarray:
    """The fused score of a whole (small) scan, band-normalised by percentiles.

    ``lo``/``hi`` of band ``i`` are the ``q`` percentiles of its dissimilarity
    ``d_i = sum_c |g_c - b_ic|`` over the whole scan; the score is the oracle's
    (:func:`tilex.kernels.fuse_reference`).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> score_map(rng.random((1, 8, 8)), rng.random((2, 1, 8, 8))).shape
    (8, 8)
    """
    from tilex.kernels.reference import dissimilarity_reference, fuse_reference

    d = dissimilarity_reference(g, b)
    flat = d.reshape(d.shape[0], -1)
    lo = np.percentile(flat, q[0], axis=1).astype(np.float32)
    hi = np.percentile(flat, q[1], axis=1).astype(np.float32)
    return fuse_reference(g, b, lo, hi, norm="band", threshold=threshold).score


def roc_auc(score: np.ndarray, mask: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` against a binary ``mask`` (ties count half).

    The Mann-Whitney rank formula: the probability that a random masked pixel
    scores higher than a random unmasked one.

    Examples
    --------
    >>> roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    s = np.asarray(score, dtype=np.float64).ravel()
    m = np.asarray(mask).ravel().astype(bool)
    n_pos, n_neg = int(m.sum()), int((~m).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the mask must hold both classes")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # average ranks over ties (1-based)
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    mean_rank = first + (counts + 1) / 2.0
    ranks = np.empty_like(s)
    ranks[order] = np.repeat(mean_rank, counts)
    return float((ranks[m].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(score: np.ndarray, mask: np.ndarray) -> float:
    """Step-wise average precision of ``score`` against a binary ``mask``.

    One threshold per distinct score, highest first: the precision at each
    threshold weighted by the recall it adds (tied pixels enter together).

    Examples
    --------
    >>> average_precision(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0]))
    0.8333333333333333
    """
    s = np.asarray(score, dtype=np.float64).ravel()
    m = np.asarray(mask).ravel().astype(bool)
    if not m.any():
        raise ValueError("the mask must hold hidden pixels")
    order = np.argsort(-s, kind="mergesort")
    s, m = s[order], m[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last pixel of each group of equal scores
    tp, fp = np.cumsum(m)[last], np.cumsum(~m)[last]
    gained = np.diff(np.r_[0, tp])
    return float(np.sum(gained / m.sum() * tp / (tp + fp)))
