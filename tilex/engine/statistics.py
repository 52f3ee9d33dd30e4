"""The statistics pass: whole-scan summaries measured through the pipeline loop.

``norm="band"`` normalises each band's dissimilarity by percentiles measured
over the whole scan (:mod:`tilex.stats` says which squares are sampled and
why). This pass reads the sampled squares, each with its halo, encodes them and
adds each square's ``d_i`` to an exact mergeable histogram
(:func:`tilex.kernels.dissimilarity_histogram`). Histograms of disjoint groups
of squares (on other threads, processes or cluster workers) merge into the same
summary as one pass over all of them, so the result does not depend on the
tile size, the order or the number of workers.

Small squares encode several times slower per pixel than a tile; laid side by
side in a fixed-shape *mosaic* they encode as one image. Exact only when each
square carries its whole halo (each core then sees only its own square);
convolutions of one shape give a square the same bits wherever it sits, so
the statistics stay bit-identical whatever the tiling or the task grouping.

Further whole-scan summaries (more passes, more sums) belong here, each as a
merger of the pipeline loop.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilex import kernels
from tilex.engine.fuse import compared
from tilex.errors import TileError
from tilex.grid import Region, Tile, region_with_halo
from tilex.hooks import checkpoint
from tilex.sink import TileResult
from tilex.stats import BandStats, StatsSpec, sample_regions

__all__ = ["MOSAIC_SIDE", "HistogramMerger", "histogram", "measure", "mosaics"]

MOSAIC_SIDE = {"cpu": 480, "cuda": 2048}
"""About how wide a mosaic of statistics squares is on each device."""


@dataclass(frozen=True)
class Mosaic:
    """Statistics squares, each with its whole halo, laid side by side as one image.

    A core pixel depends only on input within the encoder's radius, all inside
    its own square's read region, so each core's features equal those of its
    square encoded alone; what the neighbours' pixels change lies in the
    halos, which are cut away.
    """

    members: tuple[Tile, ...]
    per_row: int
    side: int  # read side of every member: square + 2 * halo
    halo: int
    crop: tuple[slice, slice] = (slice(None), slice(None))

    @property
    def pixels(self) -> int:
        return sum(t.pixels for t in self.members)

    def describe(self) -> str:
        y0, y1, x0, x1 = self.members[0].read
        more = len(self.members) - 1
        return f"the statistics blocks at rows {y0}:{y1}, columns {x0}:{x1}" + (
            f" and {more} more" if more else ""
        )

    def _origin(self, i: int) -> tuple[int, int]:
        return (i // self.per_row) * self.side, (i % self.per_row) * self.side

    def read_from(self, scan: Any) -> tuple[np.ndarray, np.ndarray]:
        shape = (self.per_row * self.side, self.per_row * self.side)  # fixed, even when not full
        visible = bands = None
        for i, tile in enumerate(self.members):
            v, b = scan.read_region(*tile.read)
            if visible is None:
                visible = np.zeros((v.shape[0], *shape), np.float32)
                bands = np.zeros((b.shape[0], *shape), np.float32)
            oy, ox = self._origin(i)
            visible[:, oy : oy + self.side, ox : ox + self.side] = v
            bands[:, oy : oy + self.side, ox : ox + self.side] = b  # type: ignore[index]
        return visible, bands  # type: ignore[return-value]

    def places(self) -> tuple[np.ndarray, np.ndarray]:
        """Each mosaic pixel's scan row and column (``[side * per_row]^2`` int64; 0 in padding)."""
        shape = (self.per_row * self.side, self.per_row * self.side)
        rows, cols = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        for i, tile in enumerate(self.members):
            y0, y1, x0, x1 = tile.read
            oy, ox = self._origin(i)
            rows[oy : oy + y1 - y0, ox : ox + x1 - x0] = np.arange(y0, y1)[:, None]
            cols[oy : oy + y1 - y0, ox : ox + x1 - x0] = np.arange(x0, x1)[None, :]
        return rows, cols

    def cores(self) -> list[tuple[slice, slice]]:
        core = self.side - 2 * self.halo
        return [
            (
                slice(oy + self.halo, oy + self.halo + core),
                slice(ox + self.halo, ox + self.halo + core),
            )
            for oy, ox in map(self._origin, range(len(self.members)))
        ]


def mosaics(tiles: list[Tile], halo: int, radius: int, side: int) -> list[Tile | Mosaic]:
    """Group same-size squares that have their whole halo into mosaics about ``side`` px wide.

    Mosaics are exact only when ``halo`` covers the encoder's ``radius``; with
    a shorter halo (feathered statistics) every square is encoded alone. Every
    mosaic has the same fixed shape (padded), whatever the tile size or how the
    squares are grouped into tasks.
    """
    if halo < radius:
        return list(tiles)
    inner, alone = [], []
    for t in tiles:
        y0, y1, x0, x1 = t.core
        whole = t.read == (y0 - halo, y1 + halo, x0 - halo, x1 + halo)
        square = y1 - y0 == x1 - x0 == tiles[0].core[1] - tiles[0].core[0]
        (inner if whole and square else alone).append(t)
    if not inner:
        return alone
    read_side = inner[0].read[1] - inner[0].read[0]
    per_row = max(1, side // read_side)
    per = per_row * per_row
    groups = [
        Mosaic(tuple(inner[i : i + per]), per_row, read_side, halo)
        for i in range(0, len(inner), per)
    ]
    return [*groups, *alone]


class HistogramMerger:
    """Merges the dissimilarity histograms of encoded squares, on the device; yields nothing."""

    def __init__(self) -> None:
        self.merged: Any = None
        self.done = 0

    def add(self, item: Tile | Mosaic, g: Any, b: Any, visible: np.ndarray) -> Iterator[TileResult]:
        try:
            if isinstance(item, Mosaic):  # the cores side by side: one histogram per mosaic
                cores = item.cores()  # np.concatenate dispatches to CuPy for device arrays
                g = np.concatenate([g[..., sy, sx] for sy, sx in cores], axis=-1)
                b = np.concatenate([b[:, :, sy, sx] for sy, sx in cores], axis=-1)
            hist = kernels.dissimilarity_histogram(*compared(g, b))  # calibrated: g [N, C, h, w]
        except Exception as err:
            raise TileError(f"{item.describe()}: statistics failed: {err}", tile=item) from err
        self.merged = hist if self.merged is None else kernels.merge_histograms(self.merged, hist)
        self.done += item.pixels
        checkpoint("stats")
        return iter(())

    def finish(self) -> Iterator[TileResult]:
        return iter(())


LOCALITY = 512
"""Squares are read block by block of this side (the usual file tile), so the few squares
that fall in one file tile follow each other and share its decoded pixels
(:data:`tilex.readers.tiff.SEGMENT_CACHE`); row by row across a wide scan, each
square decoded its tiles again. The histogram is a sum of integer counts and every
square's features are its own, so the order changes nothing in the result."""


def _nearby_first(region: Region) -> tuple[int, int, int, int]:
    y0, _, x0, _ = region
    return y0 // LOCALITY, x0 // LOCALITY, y0, x0


def histogram(
    engine: Any, regions: Iterable[Region], *, halo: int | None = None
) -> tuple[Any, int]:
    """The merged dissimilarity histogram of some regions (on the host), and their pixel count.

    Each region is read with ``halo`` px of context (default: the encoder's
    radius, which makes its ``d`` exact).
    """
    radius = engine.radius
    halo = radius if halo is None else halo
    tiles = [
        Tile(-1, -1, region, region_with_halo(region, halo, engine.scan.shape))
        for region in sorted(regions, key=_nearby_first)
    ]
    total = sum(t.pixels for t in tiles)
    merger = HistogramMerger()
    side = MOSAIC_SIDE["cuda" if engine.backend.is_cuda else "cpu"]
    engine.process(mosaics(tiles, halo, radius, side), merger, stage="stats", total=total)
    merged = merger.merged
    if merged is not None:
        merged = type(merged)(*(engine.backend.download(part) for part in merged))
    return merged, int(total)


def measure(engine: Any, spec: StatsSpec, *, halo: int | None = None) -> BandStats:
    """Per-band ``[lo_i, hi_i]`` percentiles of ``d_i`` over the (sampled) scan.

    Each sampled square is read with ``halo`` px of context (default: the
    encoder's radius: exact; feathered runs pass their overlap).
    """
    fraction = spec.fraction_for(engine.scan.shape)
    start = time.perf_counter()
    merged, total = histogram(
        engine, sample_regions(engine.scan.shape, fraction, spec.block), halo=halo
    )
    stats = BandStats.from_histogram(merged, tuple(engine.scan.band_names), spec, fraction, total)
    engine.timings["stats_s"] = time.perf_counter() - start
    return stats
