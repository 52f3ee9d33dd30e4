"""The parity-case registry: one case per public kernel operation.

Each case draws host (NumPy) inputs with Hypothesis, names the oracle from
:mod:`tilex.kernels.reference` and says how a backend's result must compare.
``tests/test_kernels.py`` runs every case against every backend with one test
body; the meta-test in ``tests/test_kernels.py`` fails when an operation with a backend
implementation has no case here.

Loaded by path (``importlib.util.spec_from_file_location``), since the tests
run with ``--import-mode=importlib``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st
from tilex.kernels import (
    BandHistogram,
    Fusion,
    dissimilarity_reference,
    fuse_reference,
    histogram_reference,
    overlay_reference,
)

__all__ = ["PARITY_CASES", "ParityCase"]

ATOL = 1e-6
"""Float tolerance of the shared parity body: what the CuPy backend is held to. The Numba
backend is held to the oracle's bytes (``test_numba_is_bit_identical_to_the_oracle``)."""


@dataclass(frozen=True)
class ParityCase:
    """How to check one operation: inputs, oracle, comparison."""

    inputs: st.SearchStrategy[dict[str, Any]]  # keyword arguments, host arrays
    oracle: Callable[..., Any]
    compare: Callable[[Any, Any], None]  # (expected, got), both on the host
    max_examples: int = 40


# --------------------------------------------------------------------------- inputs


def _quantised(rng: np.random.Generator, shape: tuple[int, ...], levels: int) -> np.ndarray:
    """Values k / (levels - 1) * 2: few distinct values, so sums and ties repeat."""
    return (rng.integers(0, levels, size=shape) * (2.0 / (levels - 1))).astype(np.float32)


def _with_nan(rng: np.random.Generator, a: np.ndarray, fraction: float) -> np.ndarray:
    a = a.copy()
    a[rng.random(a.shape) < fraction] = np.nan
    return a


@st.composite
def features(draw: st.DrawFn) -> dict[str, Any]:
    """``g [C, h, w]`` and ``b [N, C, h, w]``: N 1..16, C 1..4, odd shapes, ties, NaN."""
    n = draw(st.integers(1, 16))
    c = draw(st.integers(1, 4))
    h = draw(st.integers(1, 37))
    w = draw(st.integers(1, 37))
    levels = draw(st.sampled_from([2, 3, 5, 1 << 20]))
    nan_fraction = draw(st.sampled_from([0.0, 0.0, 0.05, 0.6]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    g = _with_nan(rng, _quantised(rng, (c, h, w), levels), nan_fraction / 4)
    b = _with_nan(rng, _quantised(rng, (n, c, h, w), levels), nan_fraction)
    return {"g": g, "b": b}


@st.composite
def fuse_inputs(draw: st.DrawFn) -> dict[str, Any]:
    inputs = draw(features())
    n, c = inputs["b"].shape[:2]
    norm = draw(st.sampled_from(["band", "pixel"]))
    if norm == "band":
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        # lo on the grid of d; hi - lo in {0, 0.5, ..., 2c} (0: a flat band)
        lo = (rng.integers(0, 2 * c + 1, size=n) * 0.5).astype(np.float32)
        hi = (lo + rng.integers(0, 4 * c + 1, size=n) * 0.5).astype(np.float32)
        inputs.update(lo=lo, hi=hi)
    inputs.update(
        norm=norm,
        threshold=draw(st.one_of(st.sampled_from([0.0, 0.1, 0.5, 1.0]), st.floats(0.0, 1.0))),
        keep_normalised=draw(st.booleans()),
    )
    return inputs


@st.composite
def overlay_inputs(draw: st.DrawFn) -> dict[str, Any]:
    h = draw(st.integers(1, 37))
    w = draw(st.integers(1, 37))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # k / 510 puts grey values on the rounding boundaries of * 255 + 0.5
    gray = (rng.integers(0, 511, size=(h, w)) / 510).astype(np.float32)
    gray = np.where(rng.random((h, w)) < 0.3, rng.random((h, w), dtype=np.float32), gray)
    gray = _with_nan(rng, gray, draw(st.sampled_from([0.0, 0.05])))
    threshold = np.float32(draw(st.floats(0.0, 1.0)))
    score = rng.random((h, w), dtype=np.float32)
    score = np.where(score > threshold, score, np.float32(0.0)).astype(np.float32)
    score[rng.random((h, w)) < 0.1] = 1.0
    return {"gray": gray.astype(np.float32), "score": score}


# --------------------------------------------------------------------------- comparisons


def _close(expected: np.ndarray, got: np.ndarray) -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL, equal_nan=True)


def _equal(expected: np.ndarray, got: np.ndarray) -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def compare_fusion(expected: Fusion, got: Fusion) -> None:
    assert isinstance(got, Fusion)
    _equal(expected.winner, got.winner)
    _close(expected.score, got.score)
    _close(expected.collage, got.collage)
    if expected.normalised is None:
        assert got.normalised is None
    else:  # equal_nan also requires the NaN positions to be the same
        _close(expected.normalised, got.normalised)


def compare_histogram(expected: BandHistogram, got: BandHistogram) -> None:
    assert isinstance(got, BandHistogram)
    for e, o in zip(expected, got, strict=True):
        _equal(e, o)


PARITY_CASES: dict[str, ParityCase] = {
    "dissimilarity": ParityCase(features(), dissimilarity_reference, _close),
    "dissimilarity_histogram": ParityCase(
        features(), histogram_reference, compare_histogram, max_examples=20
    ),
    "fuse": ParityCase(fuse_inputs(), fuse_reference, compare_fusion, max_examples=120),
    "overlay": ParityCase(overlay_inputs(), overlay_reference, _equal),
}
