"""Fusion kernels (installed as ``tilex.kernels``): oracle, Numba CPU, CuPy GPU.

The public functions dispatch on their inputs: NumPy arrays run the Numba
kernels, CuPy arrays the CUDA kernels. The Numba kernels reproduce the NumPy
oracle in :mod:`tilex.kernels.reference` bit for bit (tested for every
operation); the CUDA kernels keep the oracle's float operations (no FMA
contraction) and are tested, where CuPy and a GPU are present, for the
oracle's winners, histograms and overlays exactly and its float maps within
1e-6. Importing this package imports neither Numba's compiled kernels nor CuPy.
"""

from tilex.kernels.api import dissimilarity, dissimilarity_histogram, fuse, overlay
from tilex.kernels.reference import (
    NBINS,
    SHIFT,
    BandHistogram,
    Fusion,
    bin_lower_edge,
    bin_of,
    bin_upper_edge,
    dissimilarity_reference,
    fuse_reference,
    histogram_percentiles,
    histogram_reference,
    merge_histograms,
    overlay_reference,
)

__all__ = [
    "NBINS",
    "SHIFT",
    "BandHistogram",
    "Fusion",
    "bin_lower_edge",
    "bin_of",
    "bin_upper_edge",
    "dissimilarity",
    "dissimilarity_histogram",
    "dissimilarity_reference",
    "fuse",
    "fuse_reference",
    "histogram_percentiles",
    "histogram_reference",
    "merge_histograms",
    "overlay",
    "overlay_reference",
]
