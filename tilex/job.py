"""The whole job as one function: scan in, fused pyramidal output out.

:func:`run` takes a :class:`~tilex.plan.RunPlan` (or the same options as
keywords), holds the output for the whole run (:mod:`tilex.lock`), opens the
scan, resolves the device once into a :class:`~tilex.device.Backend`, builds
the encoder on it, lays out the output, measures the whole-scan statistics
(``norm="band"``), runs the engine's main pass into the sink (or hands the
work to a dask cluster) and reports what it did. Everything the run learns
(statistics, timings) travels as values: in the report, and to the sink
through its own methods.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tilex._version import __version__
from tilex.device import Backend, release_free_memory, resolve_device
from tilex.engine import Engine, Progress, fit_tile, measure_statistics
from tilex.errors import PlanError, ScanError
from tilex.estimate import log_work_ahead, tile_advice
from tilex.grid import clamp_tile
from tilex.lock import output_lock
from tilex.plan import DEFAULT_TILE, RunPlan, describe
from tilex.sink import MemorySink, Prepared, ResumableSink, RunInfo, Sink
from tilex.stats import BandStats, Found

__all__ = ["RunReport", "fit_calibration", "run"]

log = logging.getLogger("tilex")


@dataclass(frozen=True)
class RunReport:
    """What a run made, with which plan, and how long it took."""

    out: Path | None
    shape: tuple[int, int]
    stats: BandStats | None
    timings: dict[str, float]
    sink: Sink
    already_complete: bool = False  # resume found nothing left to do
    plan: RunPlan | None = None  # as resolved for the device (tile, reader threads)

    def found(self) -> Found | None:
        """What the run flagged (:class:`tilex.stats.Found`): from the output's ``tilex.json``,
        or from the result in memory; ``None`` for another sink."""
        if isinstance(self.sink, MemorySink) and self.sink.info is not None:
            sink = self.sink
            return Found.of(sink.score, sink.winner, sink.info.n_bands, sink.evidence)
        if self.out is None:
            return None
        from tilex.omezarr import read_manifest

        record = read_manifest(self.out).get("found")
        if not record:
            return None
        winners = [0, *(b["pixels"] for b in record["bands"])]
        winners[0] = record["pixels"] - sum(winners)
        evidence = record.get("evidence_histogram", {}).get("counts", ())
        return Found(tuple(winners), tuple(record["score_histogram"]["counts"]), tuple(evidence))

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
    plan: RunPlan | None = None,
    *,
    progress: Progress | None = None,
    fitted: Any = None,
    **overrides: Any,
) -> RunReport:
    """Find what differs between the visible image and the bands of ``scan``.

    Parameters
    ----------
    scan
        A :class:`tilex.scan.Scan`, or anything :func:`tilex.open_scan` takes
        (a ``scan.json``, its folder, a multi-channel OME-TIFF or OME-Zarr).
    out
        Output folder for the OME-Zarr result, a :class:`tilex.sink.Sink`, or
        ``None`` to collect the result in memory (small scans only). An
        output folder is held for the whole run (:mod:`tilex.lock`): another
        run on it meanwhile raises :class:`~tilex.errors.OutputBusyError`.
    plan
        Every option of the run (:class:`tilex.plan.RunPlan`); the defaults
        when ``None``.
    progress
        Callback ``progress(stage, done_pixels, total_pixels)``; stages
        ``"stats"`` and ``"tiles"``.
    fitted
        The :class:`~tilex.calibration.Calibration` that
        :func:`fit_calibration` returned for this scan and plan, fitted
        ahead (``tilex batch`` fits the next scan's while one runs); used
        where the run would fit one, ignored where it reads a saved model
        (``stats_from``, or resuming an output that saved one). ``None``: the
        run fits it.
    **overrides
        Options by their flat names, applied over ``plan``
        (:meth:`RunPlan.with_options <tilex.plan.RunPlan.with_options>`):
        ``weights``, ``tile``, ``norm``, ``threshold``, ``clip``,
        ``stats_sample``, ``stats_from``, ``device``, ``precision``,
        ``keep_normalised``, ``ome_zarr_version``, ``overwrite``,
        ``readers``, ``blend``, ``overlap``, ``resume``, ``scheduler``,
        ``workers``, ``unit``, ``chunk``, ``calibrate``, ``visible_encoding``.
        See ``tilex run --help`` for each.

    Returns
    -------
    RunReport

    Raises
    ------
    tilex.errors.PlanError
        An option is invalid, alone or with another (before any work).
    tilex.errors.ResumeMismatchError
        ``resume`` with other inputs, parameters or weights than the output's.

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
    plan = (plan or RunPlan()).with_options(**overrides)
    out_path = None if out is None or isinstance(out, Sink) else Path(out)
    if out_path is None and (plan.output.resume or plan.distributed):
        raise PlanError("--resume and running on a cluster need an output folder (-o OUT)")
    # held for the whole run, from before OUT is looked at: one run at a time writes OUT
    with output_lock(out_path) if out_path is not None else nullcontext():
        # made first: it refuses an existing output (or checks the one to resume) before any work
        sink = _make_sink(out, out_path, plan)
        scan = scan if isinstance(scan, Scan) else open_scan(scan)
        reused = _reused_statistics(plan, tuple(scan.band_names))
        backend = resolve_device(plan.device.device, precision=plan.device.precision)
        encoder = build_encoder(plan.weights, backend)
        plan = _resolve(plan, backend, encoder, tuple(scan.shape), scan.n_bands, sink.write_unit)
        calibration = _calibrate(scan, plan, out_path, fitted)
        release_free_memory()  # what the fit's threads freed, before the passes fill theirs
        engine = Engine(
            scan,
            encoder,
            backend,
            fusion=plan.fusion,
            tiling=plan.tiling,
            progress=progress,
            calibration=calibration,
        )
        log.debug(
            "scan %dx%d, %d bands, tile %d, halo %d, device %s; options other than the defaults: %s",
            *scan.shape,
            scan.n_bands,
            plan.tiling.tile,
            encoder.radius,
            backend.name,
            describe(plan),
        )
        fraction = reused.sample if reused else plan.statistics.fraction_for(tuple(scan.shape))
        info = RunInfo(
            shape=tuple(scan.shape),
            band_names=tuple(scan.band_names),
            wavelengths=tuple(scan.wavelengths),
            channels=encoder.channels,
            pixel_size_um=scan.pixel_size_um,
            keep_normalised=plan.fusion.keep_normalised,
            keep_evidence=True,
            keep_visible=True,
            provenance=_provenance(
                scan,
                encoder,
                backend,
                plan,
                reused,
                fraction if plan.needs_statistics else None,
                calibration,
            ),
        )

        def report(stats: BandStats | None, timings: dict[str, float], **flags: bool) -> RunReport:
            return RunReport(out_path, tuple(scan.shape), stats, timings, sink, plan=plan, **flags)

        resumable = isinstance(sink, ResumableSink)
        prepared = sink.prepare(info) if resumable else Prepared()
        saved = (
            BandStats.from_dict(prepared.stats)
            if prepared.stats and plan.needs_statistics
            else None
        )
        if prepared.complete:
            log.info("%s is already complete: nothing to resume", out_path)
            return report(saved, {"total_s": 0.0}, already_complete=True)
        if plan.cluster is not None:
            from tilex.distributed import WorkSpec, run_on_cluster

            work = WorkSpec.for_run(
                scan, encoder, plan.weights, plan.fusion, plan.tiling, sink, info, calibration
            )
            stats, timings = run_on_cluster(
                plan.cluster, work, sink, info, plan.statistics, saved or reused, progress=progress
            )
            return report(stats, dict(timings, total_s=time.perf_counter() - started))

        skip = sink.skip if resumable and plan.output.resume else None
        fresh = plan.needs_statistics and not (saved or reused)
        log_work_ahead(engine, fraction if fresh else None, skip=skip)
        stats = None
        if plan.needs_statistics:
            stats = saved or reused or _measure(engine, plan, sink)
            info = replace(info, stats=stats.to_dict())  # saved in OUT as the main pass opens it
            release_free_memory()  # the statistics pass's, before the first unit fills
        engine.run(sink, info, stats, skip=skip)
        return report(stats, dict(engine.timings, total_s=time.perf_counter() - started))


def _reused_statistics(plan: RunPlan, band_names: tuple[str, ...]) -> BandStats | None:
    """The statistics ``--stats-from`` names, checked against the scan's bands."""
    if plan.stats_from is None:
        return None
    reused = BandStats.from_output(plan.stats_from)
    reused.check_bands(band_names, plan.stats_from)
    return reused


def _resolve(
    plan: RunPlan,
    backend: Backend,
    encoder: Any,
    shape: tuple[int, int],
    n_bands: int,
    unit: int | None,
) -> RunPlan:
    """``plan`` with the tile settled: the device's default, no longer than the scan, fitting the GPU."""
    asked = plan.tiling.tile
    plan = plan.resolve(backend.is_cuda)
    tile = clamp_tile(plan.tiling.tile, shape, unit)
    if tile != plan.tiling.tile:  # said only when the tile was asked for
        log.log(
            logging.INFO if asked else logging.DEBUG,
            "tile %d px is larger than the %dx%d scan: using %d px (one tile covers it)",
            plan.tiling.tile,
            *shape,
            tile,
        )
    if backend.is_cuda:  # lower the tile, with a message, rather than fail on out-of-memory
        # calibrated: 2N band-path encodes per tile (each band and its prediction)
        planes = 2 * n_bands if plan.calibration.enabled else n_bands
        tile = fit_tile(encoder, backend, tile, planes)
    radius = encoder.radius + plan.calibration.context  # the exact halo
    plan.tiling.check_halo(tile, radius)
    plan = replace(plan, tiling=replace(plan.tiling, tile=tile))
    suggested = clamp_tile(DEFAULT_TILE["cuda" if backend.is_cuda else "cpu"], shape, unit)
    from tilex.grid import TileGrid

    advice = tile_advice(TileGrid(shape, tile, radius), suggested)
    if advice:
        log.warning("%s", advice)
    return plan


def fit_calibration(scan: Any, plan: RunPlan) -> Any:
    """The :class:`~tilex.calibration.Calibration` a fresh run of ``plan`` fits for ``scan``.

    Fitted over the statistics' sampled squares, read straight from the scan
    (NumPy, deterministic: the same scan and plan give the same model, on any
    thread). :func:`run` calls it where it fits a model; ``tilex batch`` calls
    it for the next scan while the current one runs and hands the model to
    :func:`run` as ``fitted``.

    Raises
    ------
    tilex.errors.ScanError
        Reading a square failed (the message says ``calibration:`` and names the file).
    """
    from tilex.calibration import fit_scan
    from tilex.stats import sample_regions

    start = time.perf_counter()
    shape = tuple(scan.shape)
    regions = sample_regions(shape, plan.statistics.fraction_for(shape), plan.statistics.block)
    try:
        calibration = fit_scan(scan, plan.calibration, regions)
    except ScanError as err:  # the reader names the file, rows and columns; say which stage
        err.args = (f"calibration: {err}",) + err.args[1:]
        raise
    log.info(
        "calibration (%s) fitted over %d squares in %.1f s",
        plan.calibration.mode,
        len(regions),
        time.perf_counter() - start,
    )
    return calibration


def _calibrate(scan: Any, plan: RunPlan, out: Path | None = None, fitted: Any = None) -> Any:
    """The fitted :class:`~tilex.calibration.Calibration` (``None`` with ``--calibrate none``).

    Fitted over the statistics' sampled squares (:func:`fit_calibration`), or
    ``fitted`` ahead by the caller; with ``--stats-from``, the model saved
    beside those statistics (they were measured on its comparisons, so the
    two travel together); resuming ``out``, the model its first run saved (the
    fit is deterministic, so it is the model a refit would give; a changed
    input is refused by the resume guard all the same).
    """
    if plan.stats_from is not None:
        return _reused_calibration(plan, scan.n_bands, tuple(scan.shape))
    if not plan.calibration.enabled:
        return None
    saved = _resumed_calibration(plan, out, scan.n_bands, tuple(scan.shape))
    if saved is not None:
        log.info("calibration (%s) read from %s", plan.calibration.mode, out)
        return saved
    if fitted is not None:
        _check_fitted(fitted, plan, scan)
        log.info("calibration (%s) fitted ahead of the run", plan.calibration.mode)
        return fitted
    return fit_calibration(scan, plan)


def _check_fitted(fitted: Any, plan: RunPlan, scan: Any) -> None:
    """Refuse a model fitted ahead that :func:`fit_calibration` could not give for this scan and plan."""
    spec, shape = plan.calibration, tuple(scan.shape)
    if fitted.mode != spec.mode:
        problem = f"it is --calibrate {fitted.mode}; this run has --calibrate {spec.mode}"
    elif fitted.spatial and tuple(fitted.shape) != shape:
        problem = f"it is for a {fitted.shape} scan; this scan is {shape}"
    else:
        problem = _mismatch(fitted, spec, scan.n_bands)
    if problem:
        raise ValueError(f"the calibration fitted ahead does not fit this run: {problem}")


def _resumed_calibration(
    plan: RunPlan, out: Path | None, n_bands: int, shape: tuple[int, int]
) -> Any:
    """The model ``out``'s interrupted run saved, when resuming it with the same calibration."""
    from tilex.errors import OutputError
    from tilex.omezarr.format import read_manifest

    if out is None or not plan.output.resume:
        return None
    try:
        record = read_manifest(out).get("calibration")
    except OutputError:  # nothing to resume yet: the run starts afresh
        return None
    if not record or record.get("mode") != plan.calibration.mode:
        return None  # the resume guard says what changed
    saved, problem = _saved_calibration(record, plan.calibration, n_bands, shape)
    return None if problem else saved


def _reused_calibration(plan: RunPlan, n_bands: int, shape: tuple[int, int]) -> Any:
    """The calibration saved in ``--stats-from``'s output, checked against the plan."""
    from tilex.omezarr.format import read_manifest

    source, spec = plan.stats_from, plan.calibration
    record = read_manifest(source).get("calibration")
    saved = "none" if not record else str(record["mode"])
    if saved != spec.mode:
        raise PlanError(
            f"--stats-from {source} was measured with --calibrate {saved}, this run asks for "
            f"--calibrate {spec.mode}: give the same --calibrate, or measure afresh"
        )
    if not record:
        return None
    calibration, problem = _saved_calibration(record, spec, n_bands, shape)
    if problem:
        raise PlanError(f"--stats-from {source}: {problem}")
    return calibration


def _saved_calibration(
    record: dict[str, Any], spec: Any, n_bands: int, shape: tuple[int, int]
) -> tuple[Any, str | None]:
    """A saved model for this scan, or what keeps it from fitting the scan and ``spec``.

    A lighting surface is over relative places (``[-1, 1]`` across the scan), so
    it is laid over this scan's ``shape``.
    """
    import dataclasses

    from tilex.calibration import Calibration

    calibration = Calibration.from_dict(record)
    problem = _mismatch(calibration, spec, n_bands)
    if problem:
        return calibration, f"its calibration {problem}"
    if calibration.spatial:
        calibration = dataclasses.replace(calibration, shape=shape)
    return calibration, None


def _mismatch(calibration: Any, spec: Any, n_bands: int) -> str | None:
    """What keeps a model from predicting this run's bands from its visible image, if anything."""
    if calibration.linearised != (spec.visible == "srgb") or calibration.n_bands != n_bands:
        return (
            f"is for {calibration.n_bands} bands with visible encoding "
            f"{'srgb' if calibration.linearised else 'linear'}; this run has {n_bands} bands "
            f"and --visible-encoding {spec.visible}"
        )
    return None


def _measure(engine: Engine, plan: RunPlan, sink: Sink) -> BandStats:
    """The statistics pass; a failure marks the output (already laid out) failed."""
    try:
        halo = (
            plan.tiling.overlap if plan.tiling.feathered else None
        )  # feathered: the tiles' context
        return measure_statistics(engine, plan.statistics, halo=halo)
    except BaseException:
        sink.abort()
        raise


def _make_sink(out: Any, out_path: Path | None, plan: RunPlan) -> Sink:
    if out is None:
        return MemorySink()
    if out_path is None:
        return out
    from tilex.omezarr import OmeZarrSink

    spec = plan.output
    return OmeZarrSink(out_path, plan.layout(), overwrite=spec.overwrite, resume=spec.resume)


def _provenance(
    scan: Any,
    encoder: Any,
    backend: Backend,
    plan: RunPlan,
    reused: BandStats | None,
    stats_sample: float | None,
    calibration: Any = None,
) -> dict[str, Any]:
    """The run's record in ``tilex.json``; its scan, bands, parameters and weights fix the pixels.

    A calibrated run also records its fitted model (``calibration``).
    """
    record = {
        "tilex_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "scan": scan.describe(),
        "bands": [
            {"index": i + 1, "name": name, "wavelength_nm": wl}
            for i, (name, wl) in enumerate(zip(scan.band_names, scan.wavelengths, strict=True))
        ],
        "parameters": plan.parameters(
            halo=encoder.radius + plan.calibration.context,
            device=backend.name,
            stats_sample=stats_sample,
        ),
        "weights": {
            "path": str(plan.weights) if plan.weights else "trained",
            "sha256": encoder.weights_sha256,
        },
        "stats": reused.to_dict() if reused else None,
        "plan": plan.to_dict(),
    }
    if calibration is not None:
        record["calibration"] = calibration.to_dict()
    return record
