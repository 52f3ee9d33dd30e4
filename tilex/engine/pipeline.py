"""The pipeline loop: split -> infer -> merge -> sink, tile by tile, stages overlapped.

Every pass over a scan is this one loop, with a different *merger*:

============================= ================================ ==================
pass                          tiles (split)                    merger (merge)
============================= ================================ ==================
main pass, exact              the grid's cores + halo          :class:`~tilex.engine.fuse.FuseMerger`
main pass, feathered          overlapping extents              :class:`~tilex.engine.feather.FeatherMerger`
statistics pass               sampled blocks in mosaics        :class:`~tilex.engine.statistics.HistogramMerger`
one unit on a cluster worker  one write unit's tiles           :class:`~tilex.engine.fuse.FuseMerger`
============================= ================================ ==================

Stages overlap through bounded queues::

    pool threads --(depth)--> calling thread --(depth)--> writer thread --> sink
    decode tiles ahead        (GPU: encoder) + merger     compress, store
    (CPU: and encode them)

The pool threads call :meth:`tilex.scan.Scan.read_region` for the tiles
ahead of the calling thread (decoders release the GIL). On a GPU the calling
thread is the device stage: it runs the encoder and hands each tile's
features to the merger. On the CPU each pool thread encodes the tile it read,
with one torch thread, as many tiles at once as torch had threads
(:func:`tilex.device.tile_workers`), and the calling thread only merges, in
the tiles' order. One writer thread hands the merger's results to the sink.
At most ``depth`` tiles (on the CPU at least one per encoding thread) wait in
each queue, so memory is bounded by the tile size and the queue depth, never
by the scan size. CPU and GPU share this code; only the
:class:`tilex.device.Backend` value differs.

With a :class:`~tilex.calibration.Calibration` the device stage encodes, for
each band, its prediction from the visible image and the band itself, both
through the band path ``E`` (``2N`` band encodes instead of one visible and
``N`` band encodes); the merger then gets ``g [N, C, h, w]``, one predicted
feature map per band, instead of the visible ``g [C, h, w]``. The prediction
is pointwise, so the halo is unchanged.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple, Protocol

import numpy as np

from tilex.device import Backend, tile_workers
from tilex.errors import ScanError, TileError, TilexError
from tilex.grid import Tile, TileGrid
from tilex.plan import FusionSpec, TilingSpec
from tilex.sink import RunInfo, RunResults, Sink, TileResult
from tilex.stats import BandStats

__all__ = ["Engine", "Merger", "Progress", "Writer", "out_of_memory"]

log = logging.getLogger("tilex")

Progress = Callable[[str, int, int], None]
"""``progress(stage, done_pixels, total_pixels)``; stages: ``"stats"``, ``"tiles"``."""

STAGE_LABELS = {"stats": "statistics pass", "tiles": "fusing tiles"}
"""How messages name the stages (as the progress bars do)."""


class Merger(Protocol):
    """Turns encoded tiles into results (or into a summary it keeps).

    ``add`` receives a tile, its features on the kernels' device (``g [C, h,
    w]``, or ``[N, C, h, w]`` when calibrated, ``b [N, C, h, w]``, cut to
    ``tile.crop``) and the visible pixels
    under the same crop on the host (``[3, h, w]``); it returns the results
    that are finished now, in the sink's order. ``finish`` returns what is
    left. ``done`` counts the scan pixels finished so far, for progress.
    """

    done: int

    def add(self, tile: Any, g: Any, b: Any, visible: np.ndarray) -> Iterable[TileResult]: ...

    def finish(self) -> Iterable[TileResult]: ...


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is a device running out of memory."""
    return "out of memory" in str(err).lower()


class Engine:
    """Runs tiles of a scan through an encoder and a merger into a sink.

    Parameters
    ----------
    scan
        An open :class:`tilex.scan.Scan`.
    encoder
        A :class:`tilex.encoder.Encoder`; its ``radius`` is the exact mode's halo.
    backend
        Where the encoder and kernels run.
    fusion
        How bands are fused (:class:`tilex.plan.FusionSpec`).
    tiling
        Tile size, reader threads and queue depth (:class:`tilex.plan.TilingSpec`,
        resolved: a tile size is required).
    progress
        Optional callback ``progress(stage, done_pixels, total_pixels)``.
    calibration
        A fitted :class:`tilex.calibration.Calibration`: compare each band with
        its prediction from the visible image (``None``: with the visible image).
    """

    def __init__(
        self,
        scan: Any,
        encoder: Any,
        backend: Backend,
        *,
        fusion: FusionSpec = FusionSpec(),  # noqa: B008 (frozen)
        tiling: TilingSpec = TilingSpec(tile=512, readers=2),  # noqa: B008 (frozen)
        progress: Progress | None = None,
        calibration: Any = None,
    ) -> None:
        if tiling.tile is None or tiling.readers is None:
            raise ValueError("the engine needs a resolved tiling (TilingSpec.resolve)")
        self.scan = scan
        self.encoder = encoder
        self.backend = backend
        self.fusion = fusion
        self.tiling = tiling
        self.calibration = calibration
        self.progress = progress or (lambda stage, done, total: None)
        # the encoder's receptive field, plus the pixels a prediction reads around a pixel
        self.radius = encoder.radius + (calibration.context if calibration is not None else 0)
        self.grid = TileGrid(tuple(scan.shape), tiling.tile, self.radius)
        self.timings: dict[str, float] = {}

    # -- the passes -----------------------------------------------------------

    def run(
        self,
        sink: Sink,
        info: RunInfo,
        stats: BandStats | None,
        *,
        skip: Callable[[Tile], bool] | None = None,
    ) -> None:
        """The main pass into ``sink``: open it, fuse every tile, close it with the timings.

        Exact tiles (:class:`~tilex.engine.fuse.FuseMerger`) or feathered ones
        (:class:`~tilex.engine.feather.FeatherMerger`) as the tiling says;
        ``skip`` leaves out the tiles a resumed output already holds. On
        failure ``sink.abort()`` and the error is re-raised.
        """
        from tilex.engine.feather import FeatherMerger, feather_order
        from tilex.engine.fuse import FuseMerger

        unit = sink.write_unit
        h, w = self.scan.shape
        try:
            sink.open(info)
            if self.tiling.feathered:
                if skip is not None:
                    raise ValueError("a feathered run cannot be resumed")
                overlap = int(self.tiling.overlap or 0)
                groups, extents = feather_order(self.grid, overlap, unit)
                merger = FeatherMerger(
                    self.grid, overlap, groups, self.fusion, stats, self.backend.download
                )
                self.process(extents, merger, sink, total=h * w)
            else:
                tiles = [t for t in self.grid.tiles(unit) if not (skip and skip(t))]
                done = h * w - sum(t.pixels for t in tiles)
                self.process(
                    tiles,
                    FuseMerger(self.backend, self.fusion, stats),
                    sink,
                    total=h * w,
                    done=done,
                )
        except BaseException:
            sink.abort()
            raise
        sink.close(RunResults(timings=self.timings))

    # -- the loop -------------------------------------------------------------

    def process(
        self,
        tiles: Iterable[Any],
        merger: Merger,
        sink: Sink | None = None,
        *,
        stage: str = "tiles",
        total: int | None = None,
        done: int = 0,
    ) -> None:
        """Run ``tiles`` through the encoder and ``merger``, handing its results to ``sink``.

        The sink must be open; it is neither opened, closed nor aborted here
        (its owner does that). On failure the writer is stopped and the
        error re-raised, naming the tile.
        """
        total = total if total is not None else self.scan.shape[0] * self.scan.shape[1]
        writer = Writer(sink, self.tiling.depth) if sink is not None else None
        start = time.perf_counter()
        try:
            for tile, g, b, visible in self._stream(tiles, stage):
                for result in merger.add(tile, g, b, visible):
                    writer.put(result)  # type: ignore[union-attr]
                self.progress(stage, done + merger.done, total)
            for result in merger.finish():
                writer.put(result)  # type: ignore[union-attr]
            if writer is not None:
                writer.finish()
        except BaseException:
            if writer is not None:
                writer.cancel()
            raise
        self.timings[f"{stage}_s"] = time.perf_counter() - start

    # -- split and infer, overlapped -------------------------------------------

    def _stream(
        self, tiles: Iterable[Any], stage: str
    ) -> Iterator[tuple[Any, Any, Any, np.ndarray]]:
        """Yield ``(tile, g, b, visible)`` in order, with tiles prepared ``depth`` ahead.

        On a GPU the pool threads read and this thread encodes, one device
        stage. On the CPU each pool thread reads *and* encodes its own tile with
        one torch thread, as many at once as torch had threads
        (:func:`tilex.device.tile_workers`); this thread then only merges.
        """
        wait_s = read_s = encode_s = 0.0
        tiles = iter(tiles)
        with tile_workers(self.backend) as encoders:
            on_pool = encoders > 1
            threads = max(self.tiling.readers, encoders if on_pool else 0)
            ahead = max(self.tiling.depth, threads if on_pool else 0)
            with ThreadPoolExecutor(threads, thread_name_prefix="tilex-read") as pool:
                pending: deque[tuple[Any, Future]] = deque()

                def submit() -> None:
                    tile = next(tiles, None)
                    if tile is not None:
                        pending.append((tile, pool.submit(self._prepare, tile, stage, on_pool)))

                for _ in range(ahead):
                    submit()
                try:
                    while pending:
                        tile, future = pending.popleft()
                        submit()
                        t0 = time.perf_counter()
                        ready: _Prepared = future.result()
                        wait_s += time.perf_counter() - t0
                        read_s += ready.read_s
                        encoded = ready.encoded
                        if encoded is None:  # the device stage: this thread encodes
                            t1 = time.perf_counter()
                            encoded = self._encode(tile, ready.visible, ready.bands)
                            encode_s += time.perf_counter() - t1
                        else:
                            encode_s += ready.encode_s
                        visible = ready.visible
                        sy, sx = tile.crop
                        yield tile, *encoded, visible[:, sy, sx]
                finally:
                    for _, future in pending:
                        future.cancel()
        self.timings[f"{stage}_read_wait_s"] = wait_s
        self.timings[f"{stage}_read_s"] = read_s
        self.timings[f"{stage}_encode_s"] = encode_s

    def _prepare(self, tile: Any, stage: str, encode: bool) -> _Prepared:
        """A pool thread's part of a tile: read it, and encode it too when ``encode``."""
        t0 = time.perf_counter()
        visible, bands = self._read(tile, stage)
        t1 = time.perf_counter()
        if not encode:
            return _Prepared(visible, bands, None, t1 - t0, 0.0)
        encoded = self._encode(tile, visible, bands)
        return _Prepared(visible, None, encoded, t1 - t0, time.perf_counter() - t1)

    def _read(self, tile: Any, stage: str) -> tuple[np.ndarray, np.ndarray]:
        """Read a tile (or a mosaic of statistics squares: it knows how to read itself)."""
        label = STAGE_LABELS.get(stage, stage)
        try:
            if isinstance(tile, Tile):
                return self.scan.read_region(*tile.read)
            return tile.read_from(self.scan)
        except ScanError as err:  # the reader names the file and the rows and columns read
            err.args = (f"{label}: {err}",) + err.args[1:]
            raise
        except TilexError:
            raise
        except Exception as err:
            if isinstance(tile, Tile):
                y0, y1, x0, x1 = tile.read
                where = f"rows {y0}:{y1}, columns {x0}:{x1} of the scan"
            else:
                where = tile.describe()
            raise TileError(f"{label}: reading {where} failed: {err}", tile=tile) from err

    def _encode(self, tile: Tile, visible: np.ndarray, bands: np.ndarray) -> tuple[Any, Any]:
        backend = self.backend
        try:
            if self.calibration is None:
                g, b = self.encoder.encode(backend.upload(visible), backend.upload(bands))
            else:  # each band and its prediction through the same band path E
                places = _places(tile) if self.calibration.spatial else None
                planes = np.concatenate([self.calibration.predict(visible, places), bands])
                features = self.encoder.encode_bands(backend.upload(planes))
                g, b = features[: len(bands)], features[len(bands) :]
            sy, sx = tile.crop
            return backend.to_kernel(g[..., sy, sx]), backend.to_kernel(b[:, :, sy, sx])
        except Exception as err:
            if out_of_memory(err):
                raise TileError(
                    f"{tile.describe()}: the device ran out of memory; try a smaller --tile",
                    tile=tile,
                ) from err
            raise TileError(f"{tile.describe()}: encoding failed: {err}", tile=tile) from err


class _Prepared(NamedTuple):
    """A tile as a pool thread hands it over: read, and encoded unless ``encoded`` is None."""

    visible: np.ndarray
    bands: np.ndarray | None  # dropped once encoded
    encoded: tuple[Any, Any] | None  # (g, b), cut to the tile's crop
    read_s: float
    encode_s: float


def _places(tile: Any) -> tuple[np.ndarray, np.ndarray]:
    """The scan row and column of every pixel a tile (or a mosaic of squares) reads."""
    if isinstance(tile, Tile):
        y0, y1, x0, x1 = tile.read
        rows, cols = np.mgrid[y0:y1, x0:x1]
        return rows, cols
    return tile.places()


class Writer:
    """One thread handing results to a sink through a bounded queue."""

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
