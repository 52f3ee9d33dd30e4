"""Where the engine's tiles go: the ``Sink`` contract and an in-memory sink.

The engine hands each finished tile core to a sink as a :class:`TileResult`.
A sink that writes whole units (OME-Zarr shards) declares ``write_unit``; the
engine then delivers the tiles of one unit contiguously, units in Morton
(Z) order, so units complete one after another and the pyramid above them can
be reduced as they do (see :mod:`tilex.grid`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["MemorySink", "RunInfo", "Sink", "TileResult"]

Region = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open), scan pixels


@dataclass(frozen=True)
class TileResult:
    """The fused result of one tile core."""

    region: Region
    winner: np.ndarray  # uint8 [h, w]
    score: np.ndarray  # float32 [h, w]
    collage: np.ndarray  # float32 [C, h, w]
    overlay: np.ndarray  # uint8 [3, h, w]
    normalised: np.ndarray | None = None  # float32 [N, h, w]


@dataclass(frozen=True)
class RunInfo:
    """What a sink needs to lay out its output before the first tile."""

    shape: tuple[int, int]
    band_names: tuple[str, ...]
    wavelengths: tuple[float | None, ...]
    channels: int
    pixel_size_um: float | None = None
    keep_normalised: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)  # provenance for the output

    @property
    def n_bands(self) -> int:
        return len(self.band_names)


@runtime_checkable
class Sink(Protocol):
    """Receives tile results from the engine, in the engine's order."""

    write_unit: int | None

    def open(self, info: RunInfo) -> None: ...

    def write(self, result: TileResult) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class MemorySink:
    """Collects a whole result in memory: for tests and small jobs."""

    write_unit: int | None = None

    def __init__(self) -> None:
        self.info: RunInfo | None = None
        self.closed = False

    def open(self, info: RunInfo) -> None:
        h, w = info.shape
        self.info = info
        self.winner = np.zeros((h, w), np.uint8)
        self.score = np.zeros((h, w), np.float32)
        self.collage = np.zeros((info.channels, h, w), np.float32)
        self.overlay = np.zeros((3, h, w), np.uint8)
        self.normalised = (
            np.zeros((info.n_bands, h, w), np.float32) if info.keep_normalised else None
        )
        self.written = np.zeros((h, w), np.uint16)  # how many times each pixel was written

    def write(self, result: TileResult) -> None:
        y0, y1, x0, x1 = result.region
        self.winner[y0:y1, x0:x1] = result.winner
        self.score[y0:y1, x0:x1] = result.score
        self.collage[:, y0:y1, x0:x1] = result.collage
        self.overlay[:, y0:y1, x0:x1] = result.overlay
        if self.normalised is not None and result.normalised is not None:
            self.normalised[:, y0:y1, x0:x1] = result.normalised
        self.written[y0:y1, x0:x1] += 1

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = False
