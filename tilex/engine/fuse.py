"""The exact merger: each tile's core fused on its own, as soon as it is encoded.

Exactness: each tile is encoded over its core grown by the encoder's
receptive-field radius (clipped at the scan border; see :mod:`tilex.grid`) and
only its core is kept, so every core pixel sees exactly the input of the
whole-image computation; the convolutions of another input shape round
differently in float32, so the result equals the whole image's up to that
rounding (identical winners and maps within 2e-6 in ``tests/test_engine.py``).
Normalisation ranges come from the whole scan (:mod:`tilex.stats`), never from
one tile, so neighbouring tiles agree and no seam appears.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from tilex import kernels
from tilex.colour import display_bytes, luminance
from tilex.device import Backend
from tilex.errors import TileError
from tilex.grid import Tile
from tilex.plan import FusionSpec
from tilex.sink import TileResult
from tilex.stats import BandStats

__all__ = [
    "FuseMerger",
    "compared",
    "fuse_with_evidence",
    "normalisation_ranges",
    "winner_features",
]


def compared(g: Any, b: Any) -> tuple[Any, Any]:
    """The kernels' ``(g, b)`` for visible features ``g [C, h, w]`` or, calibrated, ``[N, C, h, w]``.

    Calibrated, band ``i`` is compared with its own prediction ``g_i``: the
    kernels get ``zeros`` and ``b - g``, so ``|0 - (b_ic - g_ic)|`` is
    ``|g_ic - b_ic|`` bit for bit (float32 subtraction is antisymmetric).
    """
    if g.ndim == 3:
        return g, b
    diff = b - g  # NumPy or CuPy, as the inputs
    return np.zeros_like(g[0]), diff


def fuse_with_evidence(
    g: Any, b: Any, lo: Any, hi: Any, spec: FusionSpec
) -> tuple[kernels.Fusion, Any]:
    """The fusion at ``spec.threshold`` and its evidence, from one kernel call.

    The evidence of a pixel is its largest clamped normalised value before the
    threshold (0 where every band is NaN): the kernels fused at threshold 0
    return it as their score, with the first arg-max band as winner. By the
    kernels' contract the fusion at any threshold ``t`` is that one with every
    pixel whose evidence is ``<= t`` cleared (winner 0, score 0, collage 0),
    bit for bit (``tests/test_engine.py``). So a stored evidence map re-draws
    the run at any other threshold without encoding anything again
    (``flagged = evidence > t``).
    """
    full = kernels.fuse(
        g, b, lo, hi, norm=spec.kernel_norm, threshold=0.0, keep_normalised=spec.keep_normalised
    )
    evidence = full.score
    cleared = evidence <= np.float32(spec.threshold)  # NumPy or CuPy, as the inputs
    winner, score, collage = full.winner.copy(), evidence.copy(), full.collage
    winner[cleared] = 0
    score[cleared] = 0.0
    collage[:, cleared] = 0.0
    return full._replace(winner=winner, score=score, collage=collage), evidence


def winner_features(b: Any, winner: Any) -> Any:
    """``b [N, C, h, w]`` of each pixel's winning band (0 where none): the collage."""
    pick = np.maximum(winner.astype(np.intp) - 1, 0)[None, None]
    collage = np.take_along_axis(b, np.broadcast_to(pick, (1, *b.shape[1:])), axis=0)[0]
    collage[:, winner == 0] = 0.0
    return collage


def normalisation_ranges(
    backend: Backend, fusion: FusionSpec, stats: BandStats | None
) -> tuple[Any, Any]:
    """``(lo, hi)`` on the kernels' device for ``norm="band"``, ``(None, None)`` for ``"pixel"``."""
    if not fusion.needs_statistics:
        return None, None
    if stats is None:
        raise ValueError(
            "norm='band' needs whole-scan statistics (tilex.engine.measure_statistics)"
        )
    return tuple(backend.to_kernel(backend.upload(a)) for a in stats.arrays(fusion.norm))  # type: ignore[return-value]


class FuseMerger:
    """Fuses every tile core into a :class:`~tilex.sink.TileResult` (see :mod:`tilex.kernels`)."""

    def __init__(self, backend: Backend, fusion: FusionSpec, stats: BandStats | None) -> None:
        self.backend = backend
        self.fusion = fusion
        self.lo, self.hi = normalisation_ranges(backend, fusion, stats)
        self.done = 0

    def add(self, tile: Tile, g: Any, b: Any, visible: np.ndarray) -> Iterator[TileResult]:
        backend = self.backend
        gray = backend.to_kernel(backend.upload(luminance(visible)))
        try:
            g, diff = compared(g, b)
            fused, evidence = fuse_with_evidence(g, diff, self.lo, self.hi, self.fusion)
            over = kernels.overlay(gray, fused.score)
        except Exception as err:
            raise TileError(f"{tile.describe()}: fusion failed: {err}", tile=tile) from err
        collage = fused.collage if diff is b else winner_features(b, fused.winner)
        get = backend.download
        self.done += tile.pixels
        yield TileResult(
            region=tile.core,
            winner=get(fused.winner),
            score=get(fused.score),
            evidence=get(evidence),
            visible=display_bytes(visible),
            collage=get(collage),
            overlay=get(over),
            normalised=get(fused.normalised),
        )

    def finish(self) -> Iterator[TileResult]:
        return iter(())
