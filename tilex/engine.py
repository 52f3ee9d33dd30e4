"""The tiled engine: scan -> encoder -> fusion kernels -> sink, tile by tile.

Stages overlap through bounded queues::

    reader threads --(depth)--> device stage --(depth)--> writer thread --> sink
    decode tiles ahead          encoder + fused kernels    compress, store

The reader threads call :meth:`tilex.scan.Scan.read_region` for the tiles
ahead of the device stage (decoders release the GIL); the device stage (the
calling thread) runs the encoder and the fused kernels; one writer thread hands
results to the sink, which may compress and store in parallel itself. At most
``depth`` tiles wait in each queue, so memory is bounded by the tile size and
the queue depth, never by the scan size. The CPU and GPU backends share this
structure; only the :class:`tilex.device.Backend` value differs.

Exactness: each tile is encoded over its core grown by the encoder's
receptive-field radius (clipped at the scan border) and only its core is kept,
so the result equals the whole-image computation (see :mod:`tilex.grid`).
Normalisation ranges come from the whole scan (:mod:`tilex.stats`).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilex import kernels
from tilex.device import Backend
from tilex.errors import ScanError, TileError, TilexError
from tilex.grid import Tile, TileGrid
from tilex.journal import failpoint
from tilex.sink import RunInfo, Sink, TileResult
from tilex.stats import BandStats, StatsSpec, sample_regions

__all__ = [
    "Engine", "FusionSpec", "PipelineSpec", "Progress", "band_stats", "fit_tile", "luminance", "trial_encode",
]

log = logging.getLogger("tilex")

Progress = Callable[[str, int, int], None]
"""``progress(stage, done_pixels, total_pixels)``; stages: ``"stats"``, ``"tiles"``."""

_STAGE_LABELS = {"stats": "statistics pass", "tiles": "fusing tiles"}
"""How messages name the stages of :meth:`Engine._stream` (as the progress bars do)."""

MOSAIC_SIDE_CPU = 480
MOSAIC_SIDE_CUDA = 2048
"""About how wide a mosaic of statistics blocks is on each device (see ``Engine._mosaics``)."""

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 weights: the grey of the visible image in the overlay."""


def luminance(visible: np.ndarray) -> np.ndarray:
    """Grey ``[h, w]`` of a visible ``[3, h, w]`` float32 image."""
    return np.tensordot(LUMA, visible, axes=1).astype(np.float32, copy=False)


@dataclass(frozen=True)
class FusionSpec:
    """How band dissimilarities are fused into winners (see :mod:`tilex.kernels`)."""

    norm: str = "band"
    threshold: float = 0.5
    keep_normalised: bool = False

    def __post_init__(self) -> None:
        if self.norm not in ("band", "pixel"):
            raise ValueError(f"norm must be 'band' or 'pixel', got {self.norm!r}")
        if not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise ValueError(f"threshold must be a finite number in [0, 1], got {self.threshold!r}")


@dataclass(frozen=True)
class PipelineSpec:
    """Tile size and queue shape of the engine."""

    tile: int = 512
    readers: int = 2
    depth: int = 4

    def __post_init__(self) -> None:
        if self.tile < 16:
            raise ValueError(f"tile size must be >= 16 px, got {self.tile}")
        if self.readers < 1 or self.depth < 1:
            raise ValueError("readers and depth must be >= 1")

    @staticmethod
    def default_tile(backend: Backend) -> int:
        """512 px on CPU (cache friendly), 2048 px on GPU (keeps the device busy)."""
        return 2048 if backend.is_cuda else 512


def band_stats(merged: Any, band_names: tuple[str, ...], spec: StatsSpec, fraction: float,
               pixels: int) -> BandStats:
    """:class:`BandStats` from a merged dissimilarity histogram (see :meth:`Engine.histogram`)."""
    lo = kernels.histogram_percentiles(merged, spec.clip[0])
    hi = kernels.histogram_percentiles(merged, spec.clip[1])
    return BandStats(
        band_names=tuple(band_names),
        lo=tuple(float(v) for v in lo),
        hi=tuple(float(v) for v in hi),
        clip=spec.clip,
        sample=fraction,
        pixels=int(pixels),
        dmin=tuple(float(v) for v in merged.dmin),
        dmax=tuple(float(v) for v in merged.dmax),
    )


def fit_tile(encoder: Any, backend: Backend, tile: int, n_bands: int, *, minimum: int = 128) -> int:
    """The largest tile, from ``tile`` down by halves, whose encoding fits the device.

    One trial encode of a full tile (core and halo, every band) runs before
    the scan starts; on out-of-memory the tile is halved, with a warning, down
    to ``minimum``. Halving keeps the tile a divisor of the write unit.
    """
    while True:
        try:
            trial_encode(encoder, backend, tile, n_bands)
            return tile
        except Exception as err:
            if not _out_of_memory(err) or tile // 2 < minimum:
                raise
            log.warning("tile %d px does not fit in device memory; trying %d px", tile, tile // 2)
            _release_device_memory(backend)
            tile //= 2


def trial_encode(encoder: Any, backend: Backend, tile: int, n_bands: int,
                 shape: tuple[int, int] | None = None) -> tuple[int, int]:
    """Encode one full tile of zeros (core and halo, every band), wait for it, return its shape.

    The tile is clipped to ``shape`` (a scan smaller than one tile) when
    given.  The trial of :func:`fit_tile`, and the timed trial of
    :mod:`tilex.estimate`.
    """
    side = tile + 2 * encoder.radius
    h, w = (side, side) if shape is None else (min(side, shape[0]), min(side, shape[1]))
    visible = bands = g = None
    try:
        visible = backend.upload(np.zeros((3, h, w), np.float32))
        bands = backend.upload(np.zeros((n_bands, h, w), np.float32))
        g, _ = encoder.encode(visible, bands)
        backend.download(backend.to_kernel(g[:1, :1, :1]))  # a device encode is over once read
        return h, w
    finally:  # an out-of-memory traceback keeps this frame: let the device free the trial's arrays
        visible = bands = g = None


def _out_of_memory(err: BaseException) -> bool:
    return "out of memory" in str(err).lower()


def _release_device_memory(backend: Backend) -> None:
    if backend.is_cuda:
        import torch

        torch.cuda.empty_cache()


class Engine:
    """Runs a scan through an encoder and the fusion kernels, tile by tile.

    Parameters
    ----------
    scan
        An open :class:`tilex.scan.Scan`.
    encoder
        A :class:`tilex.encoder.Encoder`; its ``radius`` is the halo.
    backend
        Where the encoder and kernels run.
    fusion, pipeline
        Fusion semantics and tiling/queue shape.
    progress
        Optional callback ``progress(stage, done_pixels, total_pixels)``.
    """

    def __init__(
        self,
        scan: Any,
        encoder: Any,
        backend: Backend,
        *,
        fusion: FusionSpec = FusionSpec(),
        pipeline: PipelineSpec = PipelineSpec(),
        progress: Progress | None = None,
    ) -> None:
        self.scan = scan
        self.encoder = encoder
        self.backend = backend
        self.fusion = fusion
        self.pipeline = pipeline
        self.progress = progress or (lambda stage, done, total: None)
        self.grid = TileGrid(tuple(scan.shape), pipeline.tile, encoder.radius)
        self.timings: dict[str, float] = {}

    # -- statistics pass ---------------------------------------------------

    def measure_stats(self, spec: StatsSpec, *, halo: int | None = None) -> BandStats:
        """Per-band ``[lo, hi]`` percentiles of ``d_i`` over the (sampled) scan.

        Each sampled block is read with ``halo`` px of context (default: the
        encoder's radius, which makes its ``d`` exact).
        """
        fraction = spec.fraction_for(self.scan.shape)
        start = time.perf_counter()
        regions = sample_regions(self.scan.shape, fraction, spec.block)
        merged, total = self.histogram(regions, halo=halo)
        self.timings["stats_s"] = time.perf_counter() - start
        return band_stats(merged, tuple(self.scan.band_names), spec, fraction, total)

    def histogram(self, regions: Iterable[tuple[int, int, int, int]], *, halo: int | None = None) -> tuple[Any, int]:
        """The merged dissimilarity histogram of some regions, and their pixel count.

        Histograms merge exactly, so those of disjoint region groups (computed
        anywhere, e.g. on the workers of :mod:`tilex.distributed`) merge into
        the same summary as one pass over all of them.
        """
        tiles = [self._tile_for(region, halo) for region in regions]
        total = sum(t.pixels for t in tiles)
        merged = None
        done = 0
        for item, (g, b) in self._stream(self._mosaics(tiles, halo), "stats"):
            if isinstance(item, _Mosaic):  # the cores side by side: one histogram per mosaic
                cores = item.cores()  # np.concatenate dispatches to CuPy for device arrays
                g = np.concatenate([g[:, sy, sx] for sy, sx in cores], axis=-1)
                b = np.concatenate([b[:, :, sy, sx] for sy, sx in cores], axis=-1)
            hist = kernels.dissimilarity_histogram(g, b)
            merged = hist if merged is None else kernels.merge_histograms(merged, hist)  # on the device
            done += item.pixels
            self.progress("stats", done, total)
            failpoint("stats")
        if merged is not None:
            merged = type(merged)(*(self.backend.download(part) for part in merged))
        return merged, int(total)

    def _mosaics(self, tiles: list[Tile], halo: int | None) -> list[Tile | _Mosaic]:
        """Group same-size blocks that have their whole halo into mosaics of about one tile.

        Small blocks encode several times slower per pixel than a tile; laid
        side by side they encode as one image. Exact only when the halo covers
        the encoder's radius (each core then sees only its own block), so other
        halos (feathered statistics) keep one block per encode. Every mosaic
        has the same fixed shape (padded), whatever the tile size or how the
        blocks are grouped into tasks: convolutions of one shape give a block
        the same bits wherever it sits, so the statistics stay independent of
        the tiling and of the workers.
        """
        r = self.encoder.radius if halo is None else halo
        if r < self.encoder.radius:
            return list(tiles)
        h, w = self.scan.shape
        inner, alone = [], []
        for t in tiles:
            y0, y1, x0, x1 = t.core
            whole = t.read == (y0 - r, y1 + r, x0 - r, x1 + r)
            (inner if whole and y1 - y0 == x1 - x0 == tiles[0].core[1] - tiles[0].core[0] else alone).append(t)
        if not inner:
            return alone
        side = inner[0].read[1] - inner[0].read[0]
        per_row = max(1, (MOSAIC_SIDE_CUDA if self.backend.is_cuda else MOSAIC_SIDE_CPU) // side)
        per = per_row * per_row
        groups = [_Mosaic(tuple(inner[i : i + per]), per_row, side, r) for i in range(0, len(inner), per)]
        return [*groups, *alone]

    def _tile_for(self, region: tuple[int, int, int, int], halo: int | None = None) -> Tile:
        """A tile whose core is ``region``, read with ``halo`` (default: the encoder's radius)."""
        h, w = self.scan.shape
        r = self.encoder.radius if halo is None else halo
        y0, y1, x0, x1 = region
        read = (max(y0 - r, 0), min(y1 + r, h), max(x0 - r, 0), min(x1 + r, w))
        return Tile(-1, -1, region, read)

    # -- main pass -----------------------------------------------------------

    def run(self, sink: Sink, info: RunInfo, stats: BandStats | None, *, skip: Callable[[Tile], bool] | None = None) -> None:
        """Fuse every tile into ``sink``; ``sink.abort()`` and re-raise on failure."""
        if self.fusion.norm == "band" and stats is None:
            raise ValueError("norm='band' needs whole-scan statistics (Engine.measure_stats)")
        lo_hi = None
        if stats is not None and self.fusion.norm == "band":
            lo, hi = stats.arrays()
            lo_hi = (self._to_backend_array(lo), self._to_backend_array(hi))
        tiles = [t for t in self.grid.tiles(sink.write_unit) if not (skip and skip(t))]
        total = sum(t.pixels for t in self.grid.tiles())
        done = total - sum(t.pixels for t in tiles)
        writer = None
        start = time.perf_counter()
        try:
            sink.open(info)  # in here: an output that fails to lay out is marked failed too
            writer = _Writer(sink, self.pipeline.depth)
            for tile, (g, b, gray) in self._stream(tiles, "tiles", keep_visible=True):
                writer.put(self._fuse(tile, g, b, gray, lo_hi))
                done += tile.pixels
                self.progress("tiles", done, total)
            writer.finish()
        except BaseException:
            if writer is not None:
                writer.cancel()
            sink.abort()
            raise
        self.timings["tiles_s"] = time.perf_counter() - start
        # the sink writes provenance at close: hand it the finished timings
        info.metadata.setdefault("timings", {}).update({k: round(v, 3) for k, v in self.timings.items()})
        sink.close()

    def _fuse(self, tile: Tile, g: Any, b: Any, gray: Any, lo_hi: tuple | None) -> TileResult:
        lo, hi = lo_hi if lo_hi else (None, None)
        try:
            fused = kernels.fuse(
                g, b, lo, hi,
                norm=self.fusion.norm,
                threshold=self.fusion.threshold,
                keep_normalised=self.fusion.keep_normalised,
            )
            over = kernels.overlay(gray, fused.score)
        except Exception as err:
            raise TileError(f"{tile.describe()}: fusion failed: {err}", tile=tile) from err
        get = self.backend.download
        return TileResult(
            region=tile.core,
            winner=get(fused.winner),
            score=get(fused.score),
            collage=get(fused.collage),
            overlay=get(over),
            normalised=get(fused.normalised),
        )

    def _to_backend_array(self, array: np.ndarray) -> Any:
        return self.backend.to_kernel(self.backend.upload(array))

    # -- the overlapped stages --------------------------------------------

    def _stream(self, tiles: Iterable[Tile], stage: str, *, keep_visible: bool = False) -> Iterator[tuple]:
        """Yield ``(tile, (g, b[, gray]))`` with reads running ``depth`` tiles ahead."""
        read_s = encode_s = 0.0
        tiles = iter(tiles)
        with ThreadPoolExecutor(self.pipeline.readers, thread_name_prefix="tilex-read") as pool:
            pending: deque[tuple[Tile, Future]] = deque()

            def submit() -> None:
                tile = next(tiles, None)
                if tile is not None:
                    pending.append((tile, pool.submit(self._read, tile, stage)))

            for _ in range(self.pipeline.depth):
                submit()
            try:
                while pending:
                    tile, future = pending.popleft()
                    submit()
                    t0 = time.perf_counter()
                    visible, bands = future.result()
                    t1 = time.perf_counter()
                    g, b = self._encode(tile, visible, bands)
                    encode_s += time.perf_counter() - t1
                    read_s += t1 - t0
                    if keep_visible:
                        sy, sx = tile.crop
                        gray = self._to_backend_array(luminance(visible[:, sy, sx]))
                        yield tile, (g, b, gray)
                    else:
                        yield tile, (g, b)
            finally:
                for _, future in pending:
                    future.cancel()
        self.timings[f"{stage}_read_wait_s"] = read_s
        self.timings[f"{stage}_encode_s"] = encode_s

    def _read(self, tile: Tile | _Mosaic, stage: str) -> tuple[np.ndarray, np.ndarray]:
        label = _STAGE_LABELS.get(stage, stage)
        try:
            if isinstance(tile, _Mosaic):
                return tile.read_from(self.scan)
            return self.scan.read_region(*tile.read)
        except ScanError as err:  # the reader names the file and the rows and columns read
            err.args = (f"{label}: {err}",) + err.args[1:]
            raise
        except TilexError:
            raise
        except Exception as err:
            if isinstance(tile, _Mosaic):
                where = tile.describe()
            else:
                y0, y1, x0, x1 = tile.read
                where = f"rows {y0}:{y1}, columns {x0}:{x1} of the scan"
            raise TileError(f"{label}: reading {where} failed: {err}", tile=tile) from err

    def _encode(self, tile: Tile, visible: np.ndarray, bands: np.ndarray) -> tuple[Any, Any]:
        try:
            g, b = self.encoder.encode(self.backend.upload(visible), self.backend.upload(bands))
            sy, sx = tile.crop
            return self.backend.to_kernel(g[:, sy, sx]), self.backend.to_kernel(b[:, :, sy, sx])
        except Exception as err:
            if _out_of_memory(err):
                raise TileError(
                    f"{tile.describe()}: the device ran out of memory; try a smaller --tile", tile=tile
                ) from err
            raise TileError(f"{tile.describe()}: encoding failed: {err}", tile=tile) from err


@dataclass(frozen=True)
class _Mosaic:
    """Statistics blocks, each with its whole halo, laid side by side as one image.

    A core pixel depends only on input within the encoder's radius, all inside
    its own block's read region, so each core's features equal those of its
    block encoded alone; what the neighbours' pixels change lies in the halos,
    which are cut away.
    """

    members: tuple[Tile, ...]
    per_row: int
    side: int  # read side of every member: block + 2 * halo
    halo: int
    crop: tuple[slice, slice] = (slice(None), slice(None))

    @property
    def pixels(self) -> int:
        return sum(t.pixels for t in self.members)

    def describe(self) -> str:
        y0, y1, x0, x1 = self.members[0].read
        more = len(self.members) - 1
        return f"the statistics blocks at rows {y0}:{y1}, columns {x0}:{x1}" + (f" and {more} more" if more else "")

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
            bands[:, oy : oy + self.side, ox : ox + self.side] = b
        return visible, bands

    def cores(self) -> list[tuple[slice, slice]]:
        core = self.side - 2 * self.halo
        return [
            (slice(oy + self.halo, oy + self.halo + core), slice(ox + self.halo, ox + self.halo + core))
            for oy, ox in map(self._origin, range(len(self.members)))
        ]


class _Writer:
    """One thread handing results to the sink through a bounded queue."""

    _DONE = object()

    def __init__(self, sink: Sink, depth: int) -> None:
        self.sink = sink
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="tilex-write", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is self._DONE:
                return
            if self.error is None:
                try:
                    self.sink.write(item)
                except BaseException as err:  # handed to the main thread
                    self.error = err

    def put(self, result: TileResult) -> None:
        self._raise()
        self.queue.put(result)

    def finish(self) -> None:
        self.queue.put(self._DONE)
        self.thread.join()
        self._raise()

    def cancel(self) -> None:
        self.error = self.error or RuntimeError("cancelled")
        try:
            while True:
                self.queue.get_nowait()
        except queue.Empty:
            pass
        self.queue.put(self._DONE)
        self.thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            err = self.error
            if isinstance(err, TilexError | OSError):  # the sink's OSError names the file: keep it
                raise err
            raise TileError(f"writing failed: {err}") from err
