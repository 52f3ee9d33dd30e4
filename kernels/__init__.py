"""Fusion kernels (installed as ``tilex.kernels``): oracle, Numba CPU, CuPy GPU."""

from tilex.kernels.reference import Fusion, dissimilarity_reference, fuse_reference

__all__ = ["Fusion", "dissimilarity_reference", "fuse_reference"]
