"""Detection metrics against a known mask."""

from __future__ import annotations

import numpy as np
import pytest

from tilex.metrics import average_precision, roc_auc, score_map


def test_roc_auc_matches_the_definition():
    rng = np.random.default_rng(0)
    score = rng.integers(0, 5, 300).astype(float)  # many ties
    mask = rng.random(300) < 0.3
    pos, neg = score[mask], score[~mask]
    brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (
        len(pos) * len(neg)
    )
    assert roc_auc(score, mask) == pytest.approx(brute, abs=1e-12)
    assert roc_auc([0, 0, 1, 1], [0, 0, 1, 1]) == 1.0
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 2], [1, 1])


def test_score_map_flags_the_band_that_differs():
    g = np.zeros((1, 32, 32), np.float32)
    b = np.zeros((2, 1, 32, 32), np.float32)
    b[1, 0, 8:16, 8:16] = 1.0  # band 2 differs from the visible features in one square
    score = score_map(g, b, q=(0, 100), threshold=0.5)
    assert score[8:16, 8:16].min() > 0.5 and score[:8].max() == 0.0


def test_average_precision_matches_the_definition():
    rng = np.random.default_rng(1)
    score = rng.integers(0, 6, 200).astype(float)  # ties enter together
    mask = rng.random(200) < 0.3
    brute = 0.0
    for t in sorted(set(score), reverse=True):  # one threshold per distinct score
        take = score >= t
        newly = (score == t) & mask
        brute += newly.sum() / mask.sum() * (take & mask).sum() / take.sum()
    assert average_precision(score, mask) == pytest.approx(brute, abs=1e-12)
    assert average_precision([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    with pytest.raises(ValueError, match="hidden pixels"):
        average_precision([1, 2], [0, 0])
