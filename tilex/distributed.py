"""Scale-out on dask.distributed: one task per write unit, the same bytes as one process.

The client lays out the output and hands the workers small tasks; each worker
loads the encoder and opens the scan once (cached per worker process), and
writes whole units straight into the shared output store::

    client                          workers (one task at a time each)
    ------                          ---------------------------------
    tilex.json "statistics"
    stats: groups of sample    -->  statistics.histogram(regions)   -> histogram
    blocks; merge histograms   <--  (exact, order-free: integer counts, min, max)
    tilex.json "running" + arrays
    level 0: one task per unit -->  the pipeline loop over the unit's tiles -> UnitSink
    level k: one task per unit -->  read the 2x2 children of level k-1, reduce, commit_unit
    group metadata, "complete"

Every unit is written with :meth:`tilex.omezarr.OutputLayout.commit_unit`,
the method the streaming :class:`~tilex.omezarr.OmeZarrSink` uses, and upper
levels are reduced child by child with the same reductions, so the arrays
equal a single-process run's byte for byte.  Units are journaled as they are
written (:mod:`tilex.omezarr.journal`): a task whose unit is already marked returns
at once, so a task retried after its worker died, or a resumed run, only
computes what is missing.  If a worker dies, dask reschedules its task
elsewhere (``distributed.scheduler.allowed-failures`` times at most).

Requirements (see ``docs/cluster.md``): the scan and the weights must be
readable by every worker at the same path, and the output folder must be on
storage every worker and the client share (a network file system).  The
client holds the output's lock (:mod:`tilex.lock`) for the whole run; workers
write under it and never take it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tilex.engine import Engine, FuseMerger, Progress, histogram
from tilex.errors import OutputError, ScanError, UsageError, WeightsError
from tilex.grid import morton_order
from tilex.omezarr import LayoutSpec, OmeZarrSink, OutputLayout, UnitSink
from tilex.plan import WEIGHT_NAMES, ClusterSpec, FusionSpec, TilingSpec
from tilex.sink import RunInfo, RunResults
from tilex.stats import BandStats, StatsSpec, sample_regions

__all__ = ["ALLOWED_FAILURES", "WorkSpec", "run_on_cluster"]

log = logging.getLogger("tilex")

ALLOWED_FAILURES = 3
"""How many workers may die while running one task before the run fails (local clusters)."""

STATS_TASK_PIXELS = 4 * 2**20
"""About how many pixels one statistics task measures."""


@dataclass(frozen=True)
class WorkSpec:
    """Everything a worker needs to compute and write units: small and picklable."""

    scan: dict[str, Any]  # how to open the scan: {"source": PATH} or visible/bands paths
    weights: str | None
    weights_sha256: str
    device: str  # what the worker resolves: "cpu", or "cuda" for its own visible GPU
    precision: str
    channels_last: bool
    fusion: FusionSpec
    tiling: TilingSpec
    out: str
    layout: LayoutSpec
    info: RunInfo  # without the provenance
    torch_threads: int | None = None
    calibration: Any = None  # the client's fitted tilex.calibration.Calibration, or None

    @classmethod
    def for_run(
        cls,
        scan: Any,
        encoder: Any,
        weights: Any,
        fusion: FusionSpec,
        tiling: TilingSpec,
        sink: Any,
        info: RunInfo,
        calibration: Any = None,
    ) -> WorkSpec:
        """The work of a :func:`tilex.run` whose output is the OME-Zarr ``sink``."""
        if not isinstance(sink, OmeZarrSink):
            raise OutputError("running on a cluster needs an OME-Zarr output folder (-o OUT)")
        backend = encoder.backend
        return cls(
            scan=scan_recipe(scan),
            weights=_weights_path(weights),
            weights_sha256=encoder.weights_sha256,
            device=backend.worker_device,
            precision=backend.precision,
            channels_last=backend.channels_last,
            fusion=fusion,
            tiling=tiling,
            out=str(sink.path.absolute()),
            layout=sink.spec,
            info=replace(info, provenance={}, stats=None),
            calibration=calibration,
        )

    @property
    def key(self) -> str:
        """Identifies the encoder and scan a worker may reuse between tasks."""
        return repr(
            (
                sorted(self.scan.items()),
                self.weights_sha256,
                self.device,
                self.precision,
                self.channels_last,
            )
        )


def _weights_path(weights: Any) -> str | None:
    """Weights as a worker finds them: a file's absolute path, or a shipped name as it is."""
    if not weights:
        return None
    return str(weights) if str(weights) in WEIGHT_NAMES else str(Path(weights).absolute())


def scan_recipe(scan: Any) -> dict[str, Any]:
    """How a worker reopens ``scan``: its manifest/multi-channel path, or its parts' paths."""
    if getattr(scan, "origin", None):
        return {"source": str(scan.origin), "pixel_size_um": scan.pixel_size_um}
    described = scan.describe()
    bands = described.get("bands", [])
    if not bands or any(b.get("channel", 0) != 0 for b in bands):
        raise ScanError(
            "running on a cluster needs a scan the workers can reopen by path: give a scan.json "
            "or a multi-channel file (this scan takes bands from channels of one file)"
        )
    return {
        "visible": described["visible"]["path"],
        "bands": [[b["name"], b["wavelength_nm"], b["path"]] for b in bands],
        "pixel_size_um": scan.pixel_size_um,
    }


def _open_scan(recipe: dict[str, Any]) -> Any:
    from tilex.scan import open_scan

    if "source" in recipe:
        return open_scan(recipe["source"], pixel_size_um=recipe.get("pixel_size_um"))
    bands = [tuple(b) for b in recipe["bands"]]
    return open_scan(
        visible=recipe["visible"], bands=bands, pixel_size_um=recipe.get("pixel_size_um")
    )


# --------------------------------------------------------------------------- worker side

_CACHE: dict[str, Any] = {}
_CACHE_LOCK = threading.Lock()


def _resources(work: WorkSpec) -> tuple[Any, Any, Any]:
    """The scan, encoder and backend of this worker process, built on first use."""
    with _CACHE_LOCK:
        found = _CACHE.get(work.key)
        if found is None:
            from tilex.device import resolve_device
            from tilex.encoder import build_encoder

            if work.torch_threads:
                import torch

                torch.set_num_threads(work.torch_threads)
            backend = resolve_device(
                work.device, precision=work.precision, channels_last=work.channels_last
            )
            encoder = build_encoder(work.weights, backend)
            if encoder.weights_sha256 != work.weights_sha256:
                raise WeightsError(
                    f"weights {work.weights or 'default'} on this worker have SHA-256 "
                    f"{encoder.weights_sha256[:12]}..., the client's {work.weights_sha256[:12]}...: "
                    "every worker must read the same weights file"
                )
            found = _CACHE[work.key] = (_open_scan(work.scan), encoder, backend)
        return found


def _layout(work: WorkSpec) -> OutputLayout:
    key = f"layout:{work.out}:{work.key}"
    with _CACHE_LOCK:
        layout = _CACHE.get(key)
        if layout is None:
            layout = _CACHE[key] = OutputLayout(work.out, work.info, work.layout)
            layout.open_arrays()
        return layout


def _engine(work: WorkSpec) -> Engine:
    scan, encoder, backend = _resources(work)
    return Engine(
        scan,
        encoder,
        backend,
        fusion=work.fusion,
        tiling=work.tiling,
        calibration=work.calibration,
    )


def stats_task(regions: list[tuple[int, int, int, int]], *, work: WorkSpec) -> tuple[Any, int]:
    """Task: the merged dissimilarity histogram of some sample squares, and their pixels."""
    return histogram(_engine(work), regions)


def unit_task(index: tuple[int, int], *, work: WorkSpec, stats: BandStats | None) -> int:
    """Task: compute, write and journal one level-0 unit; its pixel count.

    The same pipeline loop and merger as one process, on this unit's tiles.
    """
    layout = _layout(work)
    index = tuple(index)  # type: ignore[assignment]
    y0, y1, x0, x1 = layout.region(0, index)
    if not layout.journal.has(0, index):  # else written before this worker's predecessor died
        engine = _engine(work)
        sink = UnitSink(layout, index)
        engine.process(
            engine.grid.unit_tiles(layout.spec.unit, index),
            FuseMerger(engine.backend, work.fusion, stats),
            sink,
        )
        sink.close()
    return (y1 - y0) * (x1 - x0)


def level_task(index: tuple[int, int], *, work: WorkSpec, level: int) -> None:
    """Task: reduce the written children of one unit of ``level``, write and journal it."""
    layout = _layout(work)
    index = tuple(index)  # type: ignore[assignment]
    if not layout.journal.has(level, index):
        layout.commit_unit(level, index, layout.assemble_parent(level, index).data)


# --------------------------------------------------------------------------- client side


@contextmanager
def _client(cluster: ClusterSpec, device: str) -> Iterator[tuple[Any, int | None]]:
    """A connected client, and the number of local workers when tilex started them."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as err:
        raise UsageError(
            f"running on a cluster needs dask.distributed ({err.name} is missing): "
            "pip install 'tilex[distributed]'"
        ) from None
    if cluster.scheduler is not None:
        try:
            client = Client(cluster.scheduler, timeout="30s")
        except OSError as err:  # includes timeouts
            raise UsageError(
                f"cannot reach the dask scheduler at {cluster.scheduler}: {err}"
            ) from None
        with client:
            yield client, None
        return
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
        local = _local_cluster(cluster.workers, device, LocalCluster)
    with local, Client(local) as client:
        yield client, len(local.workers)


def _local_cluster(workers: int | str | None, device: str, local_cluster: Callable) -> Any:
    wants_gpus = workers == "gpus" or device.startswith("cuda")
    if wants_gpus:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            if workers == "gpus":
                raise UsageError(
                    "--workers gpus needs dask-cuda: pip install dask-cuda (one worker per GPU)"
                ) from None
        else:  # one worker per GPU, each seeing only its own (CUDA_VISIBLE_DEVICES)
            n = None if workers == "gpus" else int(workers or 1)
            return LocalCUDACluster(n_workers=n, threads_per_worker=1, dashboard_address=None)
    return local_cluster(
        n_workers=int(workers or 1), threads_per_worker=1, processes=True, dashboard_address=None
    )


def run_on_cluster(
    cluster: ClusterSpec,
    work: WorkSpec,
    sink: OmeZarrSink,
    info: RunInfo,
    stats_spec: StatsSpec,
    stats: BandStats | None,
    *,
    progress: Progress | None = None,
) -> tuple[BandStats | None, dict[str, float]]:
    """Run a prepared job (:meth:`OmeZarrSink.prepare` done) on a dask cluster.

    The client measures nothing itself: statistics, level-0 units and the
    pyramid are tasks; the sink is opened for writers outside this process
    and closed (or aborted: the output is marked ``"failed"`` and can be
    resumed) here. Returns the statistics and the timings.
    """
    progress = progress or (lambda stage, done, total: None)
    timings: dict[str, float] = {}
    with _client(cluster, work.device) as (client, local_workers):
        if local_workers and not work.device.startswith("cuda"):
            work = replace(work, torch_threads=max(1, (os.cpu_count() or 1) // local_workers))
        try:
            if work.fusion.needs_statistics and stats is None:
                t0 = time.perf_counter()
                stats = _statistics(client, work, stats_spec, progress)
                timings["stats_s"] = time.perf_counter() - t0
            if stats is not None:
                info = replace(info, stats=stats.to_dict())
            sink.open(info, external=True)
            layout = sink.layout
            t0 = time.perf_counter()
            _level_zero(client, work, stats, layout, progress)
            timings["tiles_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            for level in range(1, len(layout.shapes)):
                todo = [i for i in layout.units(level) if not layout.journal.has(level, i)]
                client.gather(client.map(level_task, todo, work=work, level=level, pure=False))
            timings["pyramid_s"] = time.perf_counter() - t0
            workers = len(client.scheduler_info()["workers"])
        except BaseException:
            sink.abort()
            raise
    sink.close(
        RunResults(timings=timings, cluster={"scheduler": cluster.scheduler, "workers": workers})
    )
    return stats, timings


def _statistics(client: Any, work: WorkSpec, spec: StatsSpec, progress: Progress) -> BandStats:
    from tilex import kernels

    shape = work.info.shape
    fraction = spec.fraction_for(shape)
    regions = sample_regions(shape, fraction, spec.block)
    per_task = max(1, STATS_TASK_PIXELS // (spec.block * spec.block))
    groups = [regions[i : i + per_task] for i in range(0, len(regions), per_task)]
    futures = client.map(stats_task, groups, work=work, pure=False)
    total = sum((r[1] - r[0]) * (r[3] - r[2]) for r in regions)
    merged, pixels = None, 0
    for future in _as_completed(futures):  # merging is exact and commutative
        hist, n = future.result()
        merged = hist if merged is None else kernels.merge_histograms(merged, hist)
        pixels += n
        progress("stats", pixels, total)
    return BandStats.from_histogram(merged, work.info.band_names, spec, fraction, pixels)


def _level_zero(
    client: Any, work: WorkSpec, stats: BandStats | None, layout: OutputLayout, progress: Progress
) -> None:
    h, w = layout.shapes[0]
    todo = [i for i in morton_order(*layout.grid(0)) if not layout.journal.has(0, i)]
    done = h * w - sum(_area(layout.region(0, i)) for i in todo)
    futures = client.map(unit_task, todo, work=work, stats=stats, pure=False)
    for future in _as_completed(futures):
        done += future.result()
        progress("tiles", done, h * w)


def _area(region: tuple[int, int, int, int]) -> int:
    return (region[1] - region[0]) * (region[3] - region[2])


def _as_completed(futures: list) -> Iterator[Any]:
    from distributed import as_completed

    try:
        yield from as_completed(futures)
    except BaseException:
        for f in futures:
            f.cancel()
        raise
