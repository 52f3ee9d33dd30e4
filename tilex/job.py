"""The whole job as one function: scan in, fused pyramidal output out.

:func:`run` opens the scan, builds the encoder on the chosen device, measures
the whole-scan statistics (``norm="band"``), runs the tiled engine into an
OME-Zarr output (or into memory) and records the provenance.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tilex._version import __version__
from tilex.device import resolve_device, tune_host_allocator
from tilex.engine import Engine, FusionSpec, PipelineSpec, Progress, fit_tile
from tilex.errors import OutputError
from tilex.estimate import log_work_ahead, tile_advice
from tilex.feather import BlendSpec, run_feathered
from tilex.feather import measure_stats as measure_feathered_stats
from tilex.grid import clamp_tile
from tilex.lock import output_lock
from tilex.sink import MemorySink, RunInfo, Sink
from tilex.stats import BandStats, StatsSpec

__all__ = ["RunReport", "run"]

log = logging.getLogger("tilex")


@dataclass(frozen=True)
class RunReport:
    """What a run made and how long it took."""

    out: Path | None
    shape: tuple[int, int]
    stats: BandStats | None
    timings: dict[str, float]
    sink: Sink
    already_complete: bool = False  # resume found nothing left to do

    @property
    def megapixels_per_second(self) -> float:
        """Million scan pixels (``H x W``, each with the visible RGB and every band) per second.

        Over the whole run (``timings["total_s"]``: the encoder's loading and
        the statistics pass included); the unit of the progress bars and of
        the benchmarks' tables.
        """
        seconds = self.timings.get("total_s") or float("nan")
        return self.shape[0] * self.shape[1] / 1e6 / seconds


def run(
    scan: Any,
    out: str | os.PathLike | Sink | None = None,
    *,
    weights: str | os.PathLike | None = None,
    tile: int | None = None,
    norm: str = "band",
    threshold: float = 0.5,
    clip: tuple[float, float] | str = (1.0, 99.0),
    stats_sample: float | None = None,
    stats_from: str | os.PathLike | None = None,
    device: str = "auto",
    precision: str = "fp32",
    keep_normalised: bool = False,
    ome_zarr_version: str = "0.5",
    overwrite: bool = False,
    readers: int | None = None,
    progress: Progress | None = None,
    blend: str = "exact",
    overlap: int | None = None,
    resume: bool = False,
    scheduler: str | None = None,
    workers: int | str | None = None,
    unit: int = 4096,
    chunk: int = 512,
) -> RunReport:
    """Find what differs between the visible image and the bands of ``scan``.

    Parameters
    ----------
    scan
        A :class:`tilex.scan.Scan`, or anything :func:`tilex.open_scan` takes
        (a ``scan.json``, its folder, a multi-channel OME-TIFF or OME-Zarr).
    out
        Output folder for the OME-Zarr result, a :class:`tilex.sink.Sink`, or
        ``None`` to collect the result in memory (small scans only).  An
        output folder is held for the whole run (:mod:`tilex.lock`): another
        run on it meanwhile raises :class:`~tilex.errors.OutputBusyError`.
    weights
        Encoder weights (``.safetensors`` or ArtExtract ``.pt``); default
        weights when ``None``.
    tile
        Tile core size in pixels (default 512 on CPU, 2048 on GPU).
    norm, threshold
        Fusion: ``"band"`` (whole-scan per-band ranges) or ``"pixel"``, and
        the threshold on normalised dissimilarity.
    clip, stats_sample, stats_from
        Statistics for ``norm="band"``: percentiles ``(LO, HI)``, the sampled
        fraction of the scan (``None``: automatic), or the output of an
        earlier run to reuse its statistics.
    device, precision
        ``auto``/``cpu``/``cuda[:i]``; ``fp32``/``tf32``/``bf16``/``fp16``.
    keep_normalised
        Also write the per-band normalised maps.
    ome_zarr_version
        ``"0.5"`` (Zarr v3, sharded) or ``"0.4"`` (Zarr v2).
    overwrite
        Replace an existing output.
    progress
        Callback ``progress(stage, done_pixels, total_pixels)``.
    blend, overlap
        ``"exact"`` (halo = encoder radius, identical to the whole image) or
        ``"feather"``: tiles overlap by ``overlap`` px (at most half the tile)
        and are cross-faded, for encoders too wide for a halo; approximate
        (see :mod:`tilex.feather`).
    resume
        Continue the interrupted run that wrote ``out``: only unfinished write
        units are computed, and the statistics only if they were not saved.
        Refused (:class:`~tilex.errors.ResumeMismatchError`) when the inputs,
        parameters or weights differ; an output already complete is left as it
        is (``RunReport.already_complete``).  See :mod:`tilex.journal`.
    scheduler, workers
        Run on a dask.distributed cluster: the address of its scheduler, or
        ``workers`` local worker processes (``"gpus"``: one per GPU with
        dask-cuda).  See :mod:`tilex.distributed` and ``docs/cluster.md``.
    unit, chunk
        Write unit (shard side) and chunk side of the OME-Zarr output, px.

    Examples
    --------
    >>> import tilex
    >>> manifest = tilex.synth(tmp_path / "scan", size=(256, 256), bands=4)  # doctest: +SKIP
    >>> report = tilex.run(manifest, tmp_path / "out", device="cpu")         # doctest: +SKIP
    >>> report.out.name                                                      # doctest: +SKIP
    'out'
    """
    from tilex.encoder import build_encoder
    from tilex.scan import Scan, open_scan

    started = time.perf_counter()
    fusion = FusionSpec(norm=norm, threshold=float(threshold), keep_normalised=keep_normalised)
    stats_spec = StatsSpec(clip=clip, sample=stats_sample)
    blending = BlendSpec(blend, overlap)
    out_path = None if out is None or isinstance(out, Sink) else Path(out)
    _check_modes(out_path, resume, overwrite, blending, scheduler, workers)
    # held for the whole run, from before OUT is looked at: one run at a time writes OUT
    with output_lock(out_path) if out_path is not None else nullcontext():
        # made first: it refuses an existing output (or checks the one to resume) before any work
        sink = _make_sink(out, out_path, ome_zarr_version, overwrite, resume=resume, unit=unit, chunk=chunk)
        scan = scan if isinstance(scan, Scan) else open_scan(scan)
        reused = None
        if fusion.norm == "band" and stats_from is not None:
            reused = BandStats.from_output(stats_from)
            reused.check_bands(tuple(scan.band_names), stats_from)

        backend = resolve_device(device)
        if not backend.is_cuda:
            tune_host_allocator()  # CPU encoder: no page faults on every tile's activations
        # channels_last is faster for these convolutions on CPU and on GPU alike
        encoder = build_encoder(weights=weights, device=backend.name, precision=precision, channels_last=True)
        chosen = _clamped_tile(tile, backend, tuple(scan.shape), getattr(sink, "write_unit", None))
        if backend.is_cuda:  # lower the tile, with a message, rather than fail on out-of-memory
            chosen = fit_tile(encoder, backend, chosen, scan.n_bands)
        pipeline = PipelineSpec(tile=chosen, readers=readers or max(2, min(8, os.cpu_count() or 2)))
        blending.check_tile(pipeline.tile)
        engine = Engine(scan, encoder, backend, fusion=fusion, pipeline=pipeline, progress=progress)
        log.debug("scan %dx%d, %d bands, tile %d, halo %d, device %s",
                  *scan.shape, scan.n_bands, pipeline.tile, encoder.radius, backend.name)

        write_unit = getattr(sink, "write_unit", None)
        if blending.mode == "exact" and write_unit and write_unit % pipeline.tile:
            # found now, not after the statistics pass
            raise OutputError(f"the write unit ({write_unit} px) must be a multiple of the tile "
                              f"({pipeline.tile} px): choose --unit or --tile accordingly")
        advice = tile_advice(engine.grid, clamp_tile(PipelineSpec.default_tile(backend), scan.shape, write_unit))
        if advice:
            log.warning("%s", advice)
        info = RunInfo(
            shape=tuple(scan.shape),
            band_names=tuple(scan.band_names),
            wavelengths=tuple(scan.wavelengths),
            channels=encoder.channels,
            pixel_size_um=scan.pixel_size_um,
            keep_normalised=keep_normalised,
            metadata=_provenance(scan, encoder, backend, fusion, pipeline, stats_spec, reused, stats_from,
                                 weights, precision, ome_zarr_version),
        )
        saved = _prepare(sink, info, fusion, stats_spec)
        if getattr(sink, "already_complete", False):
            log.info("%s is already complete: nothing to resume", out_path)
            return RunReport(out=out_path, shape=tuple(scan.shape), stats=saved, timings={"total_s": 0.0},
                             sink=sink, already_complete=True)
        if scheduler is not None or workers is not None:
            from tilex.distributed import ClusterSpec, WorkSpec, run_on_cluster

            work = WorkSpec.for_run(scan, encoder, weights, fusion, pipeline, sink, info)
            stats, timings = run_on_cluster(ClusterSpec(scheduler, workers), work, sink, stats_spec,
                                            saved or reused, progress=progress)
            timings["total_s"] = time.perf_counter() - started
            return RunReport(out=out_path, shape=tuple(scan.shape), stats=stats, timings=timings, sink=sink)

        fresh_stats = fusion.norm == "band" and not (saved or reused)
        log_work_ahead(engine, stats_spec.fraction_for(scan.shape) if fresh_stats else None,
                       skip=getattr(sink, "skip", None) if resume else None)
        stats = None
        if fusion.norm == "band":
            stats = saved or reused or _measure_stats(engine, stats_spec, blending, sink)
            info.metadata["stats"] = stats.to_dict()  # saved in OUT as the main pass opens it
        _run_engine(engine, sink, info, stats, blending)
        timings = dict(engine.timings, total_s=time.perf_counter() - started)
        return RunReport(out=out_path, shape=tuple(scan.shape), stats=stats, timings=timings, sink=sink)


def _clamped_tile(tile: int | None, backend: Any, shape: tuple[int, int], unit: int | None) -> int:
    """``tile`` (or the device's default) lowered to one tile covering a smaller scan."""
    chosen = tile or PipelineSpec.default_tile(backend)
    clamped = clamp_tile(chosen, shape, unit)
    if clamped != chosen:  # said only when the tile was asked for
        why = "one tile covering it" + (f" that divides the {unit} px write unit" if unit else "")
        log.log(logging.INFO if tile else logging.DEBUG, "tile %d px is larger than the %dx%d scan: using %d px, %s",
                chosen, *shape, clamped, why if clamped >= max(shape) else "the write unit")
    return clamped


def _measure_stats(engine: Engine, spec: StatsSpec, blending: BlendSpec, sink: Sink) -> BandStats:
    """The statistics pass; a failure marks the output (already laid out) failed."""
    try:
        if blending.mode == "feather":
            return measure_feathered_stats(engine, spec, blending.overlap)
        return engine.measure_stats(spec)
    except BaseException:
        sink.abort()
        raise


def _run_engine(engine: Engine, sink: Sink, info: RunInfo, stats: BandStats | None,
                blending: BlendSpec) -> None:
    try:
        if blending.mode == "feather":
            # recorded only when feathered, so exact outputs keep their provenance and hash
            info.metadata["parameters"].update(blend="feather", overlap=blending.overlap)
            run_feathered(engine, sink, info, stats, blending.overlap)
        else:
            engine.run(sink, info, stats, skip=getattr(sink, "skip", None))
    except BaseException:
        sink.abort()  # also when the sink failed to open; a second abort does nothing
        raise


def _check_modes(out_path: Path | None, resume: bool, overwrite: bool, blending: BlendSpec,
                 scheduler: str | None, workers: int | str | None) -> None:
    """Refuse the combinations of --resume, a cluster and feathering that tilex cannot run."""
    if (resume or scheduler is not None or workers is not None) and out_path is None:
        raise OutputError("--resume and running on a cluster need an output folder (-o OUT)")
    if scheduler is not None and workers is not None:
        raise OutputError("give --scheduler ADDRESS or --workers N, not both")
    if resume and overwrite:
        raise OutputError("give --resume (continue OUT) or --overwrite (start OUT again), not both")
    if blending.mode == "feather" and (resume or scheduler is not None or workers is not None):
        raise OutputError("--blend feather runs in one process only, without --resume")


def _prepare(sink: Sink, info: RunInfo, fusion: FusionSpec, stats_spec: StatsSpec) -> BandStats | None:
    """Lay out OUT (or check the output to resume) before the statistics pass.

    Returns the statistics an interrupted run saved in OUT, if any.
    """
    if fusion.norm == "band" and info.metadata["parameters"]["stats_sample"] is None:
        # known before the pass, so the run's fingerprint is the same before and after it
        info.metadata["parameters"]["stats_sample"] = stats_spec.fraction_for(info.shape)
    prepare = getattr(sink, "prepare", None)
    saved = prepare(info) if prepare is not None else None
    if saved is None or fusion.norm != "band":
        return None
    return BandStats.from_dict(saved)


def _make_sink(out: Any, out_path: Path | None, version: str, overwrite: bool, *, resume: bool = False,
               unit: int = 4096, chunk: int = 512) -> Sink:
    if out is None:
        return MemorySink()
    if out_path is None:
        return out
    from tilex.omezarr import OmeZarrSink

    return OmeZarrSink(out_path, version=version, overwrite=overwrite, resume=resume, unit=unit,
                       chunk=chunk)


def _provenance(scan, encoder, backend, fusion, pipeline, stats_spec, stats, stats_from,
                weights, precision, version) -> dict:
    inputs = scan.describe()
    return {
        "tilex_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "scan": inputs,
        "bands": [
            {"index": i + 1, "name": name, "wavelength_nm": wl}
            for i, (name, wl) in enumerate(zip(scan.band_names, scan.wavelengths, strict=True))
        ],
        "parameters": {
            "norm": fusion.norm,
            "threshold": fusion.threshold,
            "clip": list(stats_spec.clip),
            "stats_sample": stats.sample if stats else None,
            "stats_from": str(stats_from) if stats_from else None,
            "tile": pipeline.tile,
            "halo": encoder.radius,
            "precision": precision,
            "device": backend.name,
            "keep_dissimilarity": fusion.keep_normalised,
            "ome_zarr_version": version,
        },
        "weights": {"path": str(weights) if weights else "default", "sha256": encoder.weights_sha256},
        "stats": stats.to_dict() if stats else None,
    }

