"""The work ahead of a run, told before its first pass, from one timed tile.

A run encodes a sampled fraction of the scan in the statistics pass (squares
of ``StatsSpec.block`` px, each read with the encoder's halo) and then every
pixel in the main pass (tiles read with the same halo).  The encoder's time
grows with the pixels it reads, so one timed encode of a full tile (core and
halo, every band) at the run's tile size on the run's device extrapolates to
both passes.  Reading, fusing and writing overlap with the encoder (see
:mod:`tilex.engine`) and are not counted: the estimate is the encoder's time.
The first encode of a process pays one-off setup (allocations, kernel
choice; up to twice the time on a CPU), so the trial encodes at least twice,
more while quick, and the fastest counts.

:func:`tile_advice` says when a tile is so small that its halo is most of
the work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tilex.device import Backend
from tilex.grid import Tile, TileGrid

__all__ = [
    "GPU_HINT_S",
    "WorkEstimate",
    "estimate_work",
    "log_work_ahead",
    "tile_advice",
    "time_trial",
]

log = logging.getLogger("tilex")

GPU_HINT_S = 3600.0
"""Above this estimate on a CPU, the estimate points to the GPU path."""

WASTE_RATIO = 2.0
"""Read pixels per kept pixel above which :func:`tile_advice` warns."""


@dataclass(frozen=True)
class WorkEstimate:
    """The pixels a run will encode, and how long its encoder will take for them.

    Examples
    --------
    >>> grid = TileGrid((20000, 20000), tile=512, halo=6)
    >>> work = estimate_work(grid, stats_fraction=0.05, stats_block=64, trial=(2.0, (524, 524)), device="cpu")
    >>> round(work.main_s / 3600, 2), round(work.stats_s / 3600, 2)
    (0.85, 0.06)
    """

    shape: tuple[int, int]
    tile: int
    halo: int
    tiles: int  # main-pass tiles left to encode
    main_read: int  # pixels the main pass reads: its cores and their halos
    stats_fraction: float | None  # None: no statistics pass
    stats_read: int  # pixels the statistics pass reads
    trial_s: float  # seconds one encode of a trial tile took
    trial_shape: tuple[int, int]  # the trial tile: core and halo, clipped to the scan
    device: str

    @property
    def pixels(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def seconds_per_read_pixel(self) -> float:
        return self.trial_s / (self.trial_shape[0] * self.trial_shape[1])

    @property
    def stats_s(self) -> float:
        return self.stats_read * self.seconds_per_read_pixel

    @property
    def main_s(self) -> float:
        return self.main_read * self.seconds_per_read_pixel

    @property
    def total_s(self) -> float:
        return self.stats_s + self.main_s

    @property
    def gpu_hint(self) -> bool:
        """Whether to point to ``--device cuda``: over :data:`GPU_HINT_S` on a CPU."""
        return not self.device.startswith("cuda") and self.total_s > GPU_HINT_S

    def lines(self) -> list[str]:
        """What ``tilex run`` logs before its first pass."""
        h, w = self.shape
        passes = []
        if self.stats_fraction is not None:
            passes.append(
                f"a statistics pass over {100 * self.stats_fraction:.3g}% of it "
                f"({self.stats_fraction * self.pixels / 1e6:.1f} Mpx)"
            )
        halo = self.main_read / max(1, self.pixels) - 1
        passes.append(
            f"the main pass over {self.tiles:,} tile{'s' * (self.tiles != 1)} of {self.tile} px "
            f"(read with a {self.halo} px halo: {halo:+.1%} pixels)"
        )
        th, tw = self.trial_shape
        times = (
            [f"statistics about {_duration(self.stats_s)}"]
            if self.stats_fraction is not None
            else []
        )
        times.append(f"main pass about {_duration(self.main_s)}")
        lines = [
            f"work ahead: {h}x{w} scan ({self.pixels / 1e6:.1f} Mpx): {', then '.join(passes)}",
            f"estimate from one {th}x{tw} trial tile encoded in {self.trial_s:.2f} s on {self.device}: "
            f"{', '.join(times)}; {_duration(self.total_s)} of encoding in all",
        ]
        if self.gpu_hint:
            lines.append(
                "that is long for a CPU: on an NVIDIA GPU, --device cuda is far faster "
                "(install the GPU extra: README, Install)"
            )
        return lines


def estimate_work(
    grid: TileGrid,
    *,
    stats_fraction: float | None,
    stats_block: int,
    trial: tuple[float, tuple[int, int]],
    device: str,
    skip: Callable[[Tile], bool] | None = None,
) -> WorkEstimate:
    """The :class:`WorkEstimate` of a run on ``grid`` from a timed trial tile.

    Parameters
    ----------
    grid
        The main pass's tiles (its ``halo`` also reads around each statistics square).
    stats_fraction, stats_block
        The sampled fraction of the statistics pass (``None``: no pass) and
        the side of its squares.
    trial
        Seconds one encode of a trial tile took, and the tile's shape
        (:func:`time_trial`).
    device
        Where the encoder runs (``"cpu"``, ``"cuda:0"``).
    skip
        Tiles a resumed run has already written.
    """
    if skip is None:
        tiles, main_read = len(grid), grid.read_pixels
    else:
        left = [t for t in grid.tiles() if not skip(t)]
        tiles = len(left)
        main_read = sum((t.read[1] - t.read[0]) * (t.read[3] - t.read[2]) for t in left)
    stats_read = 0
    if stats_fraction is not None:
        grown = (stats_block + 2 * grid.halo) ** 2 / stats_block**2
        stats_read = round(stats_fraction * grid.shape[0] * grid.shape[1] * grown)
    seconds, shape = trial
    return WorkEstimate(
        tuple(grid.shape),
        grid.tile,
        grid.halo,
        tiles,
        main_read,
        stats_fraction,
        stats_read,
        float(seconds),
        tuple(shape),
        device,
    )


def time_trial(
    encoder: Any,
    backend: Backend,
    tile: int,
    n_bands: int,
    shape: tuple[int, int] | None = None,
    *,
    calibrated: bool = False,
    halo: int | None = None,
    budget_s: float = 1.0,
    tries: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, tuple[int, int]]:
    """Seconds one encode of a full tile (core, halo, every band) takes on ``backend``, and its shape.

    The tile is clipped to a scan of ``shape``.  It is encoded twice, and
    again up to ``tries`` times while the encodes took less than ``budget_s``
    in all; the fastest counts. ``calibrated``: encoded as a calibrated run
    encodes (see :func:`tilex.engine.trial_encode`).
    """
    from tilex.engine import trial_encode

    times: list[float] = []
    while len(times) < 2 or (len(times) < tries and sum(times) < budget_s):
        start = clock()
        trial = trial_encode(
            encoder, backend, tile, n_bands, shape, calibrated=calibrated, halo=halo
        )
        times.append(clock() - start)
    return min(times), trial


def log_work_ahead(
    engine: Any, stats_fraction: float | None, *, skip: Callable[[Tile], bool] | None = None
) -> WorkEstimate | None:
    """Log the work ahead of ``engine`` at INFO, after a timed trial tile.

    Nothing is timed nor logged when INFO is not shown (``tilex -q``, or
    logging not configured): the trial costs about one tile.
    """
    if not log.isEnabledFor(logging.INFO):
        return None
    from tilex.stats import BLOCK

    trial = time_trial(
        engine.encoder,
        engine.backend,
        engine.tiling.tile,
        engine.scan.n_bands,
        tuple(engine.scan.shape),
        calibrated=engine.calibration is not None,
        halo=engine.grid.halo,
    )
    work = estimate_work(
        engine.grid,
        stats_fraction=stats_fraction,
        stats_block=BLOCK,
        trial=trial,
        device=engine.backend.name,
        skip=skip,
    )
    for line in work.lines():
        log.info("%s", line)
    return work


def tile_advice(grid: TileGrid, suggested: int) -> str | None:
    """A warning when ``grid``'s tiles read over :data:`WASTE_RATIO` times the pixels they keep.

    Examples
    --------
    >>> tile_advice(TileGrid((2048, 2048), tile=16, halo=6), 512)  # doctest: +ELLIPSIS
    'tile 16 px reads 3.0x the pixels it keeps ... use --tile 512 ...'
    >>> tile_advice(TileGrid((2048, 2048), tile=512, halo=6), 512) is None
    True
    """
    h, w = grid.shape
    ratio = grid.read_pixels / (h * w)
    if ratio <= WASTE_RATIO:
        return None
    better = TileGrid(grid.shape, suggested, grid.halo).read_pixels / (h * w)
    return (
        f"tile {grid.tile} px reads {ratio:.1f}x the pixels it keeps (a {grid.halo} px halo on "
        f"every side): {1 - 1 / ratio:.0%} of the encoding is wasted; use --tile {suggested} "
        f"(reads {better:.2f}x) or larger"
    )


def _duration(seconds: float) -> str:
    """``"40 s"``, ``"12 min"``, ``"2.5 h"`` or ``"3.1 days"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
