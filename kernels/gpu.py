"""The CuPy GPU backend: one fused CUDA pass per operation.

Every public function here has the same name and signature as its twin in
:mod:`tilex.kernels.cpu` and takes CuPy arrays that :mod:`tilex.kernels.api`
has validated (dtype, shape, C-contiguity). Results stay on the device.

The CUDA C lives in ``cuda/fusion.cu`` (package data). Kernels are named
``tilex_fusion_<op>``; the templated ones are instantiated for the channel
count ``C`` of the call. A module is compiled lazily by NVRTC on first use and
memoised per (device, C), with ``--fmad=false`` (and explicit ``__f*_rn``
intrinsics in the source) so that no multiply-add is fused and every float
operation rounds as the NumPy oracle's does. What is tested (``pytest -m gpu``,
``tests/parity_cases.py``): winners, histograms and overlays equal the
oracle's, float maps within 1e-6; bit-for-bit equality is the aim, not a test.

Importing this module does not import CuPy or touch a GPU; CuPy is imported
inside the functions, which only run for CuPy inputs.

.. note:: Written against CuPy 13/14 and checked by compiling ``fusion.cu``
   with nvcc; run ``pytest -m gpu`` on a CUDA machine for the parity tests.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import numpy as np
from tilex.kernels.reference import NBINS, BandHistogram, Fusion

__all__ = ["dissimilarity", "dissimilarity_histogram", "fuse", "overlay"]

BLOCK = 256
"""Threads per block (a multiple of 32: the histogram kernel uses full-warp intrinsics)."""

NVRTC_OPTIONS = ("--std=c++14", "--fmad=false")
"""No fast math, no FMA contraction: each float operation rounds as the oracle's does."""

SOURCE = "fusion.cu"
_TEMPLATED = ("fuse", "dissimilarity", "histogram")


def cuda_source(name: str = SOURCE) -> str:
    """The CUDA C source ``cuda/<name>`` shipped with :mod:`tilex.kernels`."""
    return resources.files("tilex.kernels").joinpath("cuda", name).read_text(encoding="ascii")


@functools.cache
def _module(device_id: int, channels: int) -> Any:
    """The compiled ``fusion.cu`` for one device and channel count (memoised).

    ``device_id`` is only a cache key: the caller makes that device current, and
    NVRTC compiles for it when the first function is fetched.
    """
    import cupy

    names = tuple(f"tilex_fusion_{op}<{channels}>" for op in _TEMPLATED)
    return cupy.RawModule(code=cuda_source(), options=NVRTC_OPTIONS, name_expressions=names)


def _kernel(op: str, channels: int) -> Any:
    """``tilex_fusion_<op>`` (instantiated for ``channels`` when templated) on the current device."""
    import cupy

    module = _module(cupy.cuda.Device().id, channels)
    name = f"tilex_fusion_{op}<{channels}>" if op in _TEMPLATED else f"tilex_fusion_{op}"
    return module.get_function(name)


def _launch(kernel: Any, n_pixels: int, args: tuple) -> None:
    if n_pixels > 0:
        kernel(((n_pixels + BLOCK - 1) // BLOCK,), (BLOCK,), args)


def _device_of(*arrays: Any) -> Any:
    devices = {a.device.id for a in arrays}
    if len(devices) != 1:
        raise ValueError(f"inputs are on several GPUs {sorted(devices)}; move them to one")
    return arrays[0].device


# --------------------------------------------------------------------------- fusion


def fuse(
    g: Any,
    b: Any,
    lo: Any | None,
    hi: Any | None,
    *,
    norm: str,
    threshold: float,
    keep_normalised: bool,
) -> Fusion:
    """Fuse one tile on the GPU (see :func:`tilex.kernels.fuse`)."""
    import cupy

    n_bands, channels, h, w = b.shape
    pixel = norm == "pixel"
    with _device_of(g, b, *(() if pixel else (lo, hi))):
        if pixel:  # unused by the kernel, but it wants valid pointers
            lo = hi = cupy.zeros(1, dtype=cupy.float32)
        winner = cupy.empty((h, w), dtype=cupy.uint8)
        score = cupy.empty((h, w), dtype=cupy.float32)
        collage = cupy.empty((channels, h, w), dtype=cupy.float32)
        normalised = cupy.empty((n_bands, h, w) if keep_normalised else (1,), dtype=cupy.float32)
        _launch(
            _kernel("fuse", channels),
            h * w,
            (
                g, b, lo, hi, np.int32(n_bands), np.int64(h * w), np.int32(pixel),
                np.float32(threshold), np.int32(keep_normalised),
                winner, score, collage, normalised,
            ),
        )  # fmt: skip
    return Fusion(winner, score, collage, normalised if keep_normalised else None)


def dissimilarity(g: Any, b: Any) -> Any:
    """``d [N, h, w] = sum_c |g_c - b_ic|`` on the GPU (see :func:`tilex.kernels.dissimilarity`)."""
    import cupy

    n_bands, channels, h, w = b.shape
    with _device_of(g, b):
        out = cupy.empty((n_bands, h, w), dtype=cupy.float32)
        args = (g, b, np.int32(n_bands), np.int64(h * w), out)
        _launch(_kernel("dissimilarity", channels), h * w, args)
    return out


# --------------------------------------------------------------------------- histogram


def dissimilarity_histogram(g: Any, b: Any) -> BandHistogram:
    """Exact histogram of ``d_i`` per band on the GPU (see :func:`tilex.kernels.dissimilarity_histogram`).

    Counts are global 64-bit atomics (warp-aggregated); min and max are
    integer atomics on the float32 bit patterns, which order like the values
    for ``d >= 0``.
    """
    import cupy

    n_bands, channels, h, w = b.shape
    with _device_of(g, b):
        counts = cupy.zeros((n_bands, NBINS), dtype=cupy.uint64)
        nan = cupy.zeros(n_bands, dtype=cupy.uint64)
        dmin_bits = cupy.full(n_bands, 0x7F800000, dtype=cupy.uint32)  # +inf
        dmax_bits = cupy.zeros(n_bands, dtype=cupy.uint32)  # 0.0
        args = (g, b, np.int32(n_bands), np.int64(h * w), counts, nan, dmin_bits, dmax_bits)
        _launch(_kernel("histogram", channels), h * w, args)
        counts = counts.view(cupy.int64)
        empty = counts.sum(axis=1) == 0
        dmax = cupy.where(empty, cupy.float32(-np.inf), dmax_bits.view(cupy.float32))
        return BandHistogram(counts, dmin_bits.view(cupy.float32), dmax, nan.view(cupy.int64))


# --------------------------------------------------------------------------- overlay


def overlay(gray: Any, score: Any) -> Any:
    """``uint8 [3, h, w]`` grey-and-blue picture on the GPU (see :func:`tilex.kernels.overlay`)."""
    import cupy

    h, w = gray.shape
    with _device_of(gray, score):
        out = cupy.empty((3, h, w), dtype=cupy.uint8)
        _launch(_kernel("overlay", 1), h * w, (gray, score, np.int64(h * w), out))
    return out
