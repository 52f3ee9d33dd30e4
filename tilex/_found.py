"""The compiled counts behind :meth:`tilex.stats.Found.of` (imported on first use, with Numba)."""

from __future__ import annotations

import numpy as np

from tilex.kernels._numba import njit

__all__ = ["found_counts"]


def found_counts(
    score: np.ndarray,
    winner: np.ndarray,
    n_bands: int,
    evidence: np.ndarray | None,
    score_edges: np.ndarray,
    evidence_edges: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(winners, histogram, spread)`` of one region in one pass over its pixels.

    The same integers as ``np.bincount(winner)``, ``np.histogram`` of the
    flagged pixels' scores over ``score_edges`` (values outside [first, last]
    edge and NaN left out, the last bin closed) and the evidence binned by
    ``searchsorted(evidence_edges, v, "left") - 1``, clipped to the bins.
    """
    winner = np.ascontiguousarray(winner).reshape(-1)
    if winner.dtype == np.bool_:
        winner = winner.view(np.uint8)
    if winner.dtype.kind != "u":
        raise TypeError(f"winner must hold unsigned labels, got {winner.dtype}")
    score = np.ascontiguousarray(score, np.float32).reshape(-1)
    if score.size != winner.size:
        raise ValueError(f"score has {score.size} pixels, winner {winner.size}")
    top = int(winner.max()) if winner.size else 0
    winners = np.zeros(max(n_bands, top) + 1, np.int64)  # as np.bincount's minlength
    histogram = np.zeros(len(score_edges) - 1, np.int64)
    spread = np.zeros(len(evidence_edges) - 1, np.int64)
    if evidence is None:
        values = np.zeros(0, np.float32)
    else:
        values = np.ascontiguousarray(evidence, np.float32).reshape(-1)
        if values.size != winner.size:
            raise ValueError(f"evidence has {values.size} pixels, winner {winner.size}")
    _counts(
        score,
        winner,
        values,
        np.asarray(score_edges, np.float32),
        np.asarray(evidence_edges, np.float32),
        winners,
        histogram,
        spread,
    )
    return winners, histogram, (spread if evidence is not None else None)


@njit
def _counts(
    score, winner, evidence, score_edges, evidence_edges, winners, histogram, spread
):  # pragma: no cover (compiled; tested through Found.of against NumPy)
    """Each bin guessed from the value, then moved until the edges' comparisons agree."""
    n_score = histogram.size
    n_spread = spread.size
    first, last = score_edges[0], score_edges[n_score]
    with_evidence = evidence.size > 0
    for p in range(winner.size):
        w = winner[p]
        winners[w] += 1
        if w > 0:
            s = score[p]
            if s >= first and s <= last:  # NaN fails both
                # the bin i with edges[i] <= s < edges[i + 1], the last bin closed
                i = min(max(int((s - first) / (last - first) * n_score), 0), n_score - 1)
                while i > 0 and score_edges[i] > s:
                    i -= 1
                while i < n_score - 1 and score_edges[i + 1] <= s:
                    i += 1
                histogram[i] += 1
        if with_evidence:
            v = evidence[p]
            # searchsorted(edges, v, "left"): the number of edges below v (NaN sorts last)
            if np.isnan(v) or v > evidence_edges[n_spread]:
                below = n_spread + 1
            elif v <= evidence_edges[0]:
                below = 0
            else:  # edges[j] < v <= edges[j + 1]: j + 1 edges below
                j = min(max(int(v * n_spread), 0), n_spread - 1)
                while j > 0 and evidence_edges[j] >= v:
                    j -= 1
                while evidence_edges[j + 1] < v:
                    j += 1
                below = j + 1
            spread[min(max(below - 1, 0), n_spread - 1)] += 1
