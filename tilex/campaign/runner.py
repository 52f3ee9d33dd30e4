"""A campaign's scans in one process: warm, nothing redone, one failure stops nothing.

:func:`batch` names every scan (:mod:`tilex.campaign.jobs`), then runs them one
after another with :func:`tilex.run` into ``OUTDIR/<name>/``:

- **Warm.** One process for the whole batch: torch, the Numba kernels (and
  on a GPU the CUDA context and the CuPy kernels, memoised per device) are
  loaded once. The encoder itself is rebuilt per scan from the same weights:
  on the CPU that costs about 10 ms (measured, ``tilex.build_encoder``), so
  passing one encoder between runs would save nothing today.
- **Nothing redone.** A scan whose folder holds an output runs with
  ``resume``: a complete one is checked (inputs, options, weights, as
  ``tilex run --resume`` checks them) and skipped, an interrupted one is
  finished, and one made from other inputs or options fails with the
  message ``--resume`` gives. Checking a complete scan opens it and reads the
  calibration it saved, not its pixels.
- **One failure stops nothing.** Any error of one scan is caught, recorded
  with the one line ``tilex run`` would print for it, and the batch goes on.
  Only an interrupt (Ctrl-C) stops it; the output it was writing stays
  resumable.
- **A record.** ``OUTDIR/batch.json`` (:mod:`tilex.campaign.record`) after
  every change; a second batch on the same OUTDIR meanwhile is refused
  (:func:`tilex.lock.output_lock` on OUTDIR).

One overlap between scans: while a scan runs, the next one is opened and
its calibration fitted on a thread (:mod:`tilex.campaign.ahead`), where its
run would fit one afresh; its run then takes that model (the fit is
deterministic: the same model, the same bytes, tested). The rest of a scan
starts when the previous one has returned.

Where a small scan's time went before the encoder dropped the designed
weights' dead channels (one warm process on the 2-core development machine,
shared with another CPU-bound job; 512x512, 8 bands, the defaults; 14.3 s a
scan): statistics pass 7.9 s, main pass 4.7 s, calibration fit 1.7 s (NumPy
on one core), the encoder 82 % of it all. With the pruned encoder a small
scan takes about 2 s in a warm batch (``benchmarks/bench_batch.py``: 20 of
512x512 in 41.7 s, against 118.0 s as separate processes). The statistics
cannot reuse the main pass's encodes: convolutions of another input shape
round differently, and the statistics are saved in the output. Fitting the
next model ahead uses the cycles the current scan leaves idle (its writes
and single-threaded stages); with the full encoder and both cores busy it
measured no gain (15.15 s a scan with it, 14.95 s without), and it has not
been measured apart since the pruning. The tail of a scan (after its last
tile: the pyramid and the close) is 0.2 s of a 512x512 scan, 1.1 s of 48 s
for 2048x2048; the next scan's statistics pass could overlap it on a GPU,
but that needs :func:`tilex.run` split into its phases (not done).

With ``workers`` or ``scheduler`` the scans go to a dask cluster
(:mod:`tilex.campaign.cluster`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tilex.campaign.ahead import Ahead
from tilex.campaign.jobs import ScanJob, check_options, name_jobs, read_sources
from tilex.campaign.record import BatchRecord, ScanRecord, found_summary, summary_table, totals
from tilex.errors import OutputError, PlanError, TilexError, error_line
from tilex.plan import RunPlan, describe

__all__ = [
    "BatchProgress",
    "BatchReport",
    "BatchStatus",
    "batch",
    "error_line",
    "run_scan",
    "scan_shape",
]

log = logging.getLogger("tilex.batch")


@dataclass(frozen=True)
class BatchStatus:
    """Where a batch stands, sent to its progress callback at every change.

    ``pixels_*`` count scan pixels (``H x W``) of the scans that need work,
    those of the scans done and of the running scan's main pass so far;
    ``stage`` is the running scan's :func:`tilex.run` stage (``"stats"`` or
    ``"tiles"``) with its own pixel counts.
    """

    scans_done: int
    scans_total: int
    pixels_done: int
    pixels_total: int
    scan: str | None = None
    stage: str | None = None
    stage_done: int = 0
    stage_total: int = 0


BatchProgress = Callable[[BatchStatus], None]


@dataclass(frozen=True)
class BatchReport:
    """What a batch did: this run's scans, in order, and the whole record in OUTDIR."""

    outdir: Path
    scans: tuple[ScanRecord, ...]
    record: BatchRecord
    seconds: float

    @property
    def ok(self) -> bool:
        """Whether every scan of this run succeeded (done, resumed or skipped)."""
        return all(s.succeeded for s in self.scans)

    @property
    def failed(self) -> tuple[ScanRecord, ...]:
        return tuple(s for s in self.scans if not s.succeeded)

    def table(self) -> str:
        """The summary table of this run's scans (:func:`tilex.campaign.summary_table`)."""
        return summary_table(self.scans)

    def totals(self) -> str:
        return totals(self.scans)


def batch(
    sources: Iterable[str | os.PathLike],
    outdir: str | os.PathLike,
    plan: RunPlan | None = None,
    *,
    input_range: Any = None,
    progress: BatchProgress | None = None,
    **overrides: Any,
) -> BatchReport:
    """Run :func:`tilex.run` on every scan of ``sources`` into ``outdir/<name>/``.

    Parameters
    ----------
    sources
        Scan folders, manifests, multi-channel files and job files (CSV or
        JSON lines, one scan per row with its own options): see
        :mod:`tilex.campaign.jobs`, which also gives the naming rule.
    outdir
        The campaign's output folder: one output per scan, ``batch.json``.
    plan, **overrides
        The options of every scan, as for :func:`tilex.run` (a job file's
        row overrides them for its scan). ``workers`` or ``scheduler``
        spread the scans over a dask cluster. ``resume`` and ``overwrite``
        are not options of a batch: it always continues what is there.
    input_range
        For every float input, the values that mean 0 and 1 (``"LO,HI"``;
        a job file's ``input_range`` overrides it).
    progress
        Called with a :class:`BatchStatus` at every change.

    Returns
    -------
    BatchReport
        ``ok`` is false when a scan failed; its record says why.

    Raises
    ------
    tilex.errors.PlanError, tilex.campaign.JobFileError
        A bad option or job file (before any scan runs).
    tilex.errors.OutputBusyError
        Another batch is writing ``outdir``.

    Examples
    --------
    >>> import tilex
    >>> scans = [tilex.synth(tmp_path / n, size=(96, 96), bands=2, seed=i)  # doctest: +SKIP
    ...          for i, n in enumerate(["front", "back"])]
    >>> report = tilex.batch(scans, tmp_path / "campaign", device="cpu")    # doctest: +SKIP
    >>> [(s.name, s.state) for s in report.scans]                           # doctest: +SKIP
    [('front', 'done'), ('back', 'done')]
    """
    from tilex.lock import output_lock
    from tilex.scan import parse_input_range

    started = time.perf_counter()
    plan = (plan or RunPlan()).with_options(**overrides)
    if plan.output.resume or plan.output.overwrite:
        raise PlanError(
            "a batch continues every output it finds by itself: no --resume or --overwrite "
            "(delete OUTDIR/NAME to compute a scan again)"
        )
    parse_input_range(input_range, "--input-range")
    specs = read_sources(sources)
    if not specs:
        raise PlanError(
            "a batch needs at least one scan: give scan folders, manifests or job files"
        )
    outdir = Path(outdir)
    with output_lock(outdir):
        previous = BatchRecord.read(outdir)
        jobs = name_jobs(specs, previous.names() if previous else None)
        plans = check_options(jobs, plan)
        if outdir.exists() and not outdir.is_dir():
            raise OutputError(f"{outdir} exists and is not a folder")
        outdir.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(outdir, jobs, previous, describe(plan), progress)
        if plan.cluster is not None:
            from tilex.campaign.cluster import run_on_cluster

            run_on_cluster(jobs, outdir, plans, plan, input_range, ledger)
        else:
            ahead: Ahead | None = None
            try:
                for job, following in zip(jobs, [*jobs[1:], None], strict=True):
                    ledger.start(job)
                    current, ahead = ahead, None
                    if following is not None and not _started(outdir / following.name):
                        ahead = Ahead.start(  # its model fitted while this scan runs
                            following, plans[following.name], _input_range(following, input_range)
                        )
                    ledger.finish(
                        run_scan(
                            job,
                            outdir / job.name,
                            plans[job.name],
                            input_range=input_range,
                            progress=ledger.stage_callback(job),
                            previous=ledger.previous(job.name),
                            ahead=current,
                        )
                    )
            finally:
                if ahead is not None:
                    ahead.drop()
        scans = tuple(ledger.current(job) for job in jobs)
        return BatchReport(outdir, scans, ledger.record, time.perf_counter() - started)


def run_scan(
    job: ScanJob,
    out: Path,
    plan: RunPlan,
    *,
    input_range: Any = None,
    progress: Callable[[str, int, int], None] | None = None,
    previous: ScanRecord | None = None,
    ahead: Ahead | None = None,
) -> ScanRecord:
    """Run one scan of a batch into ``out``; its record, whatever happens (but an interrupt).

    ``previous`` is its record from an earlier batch: a skipped scan keeps
    that record's time. ``ahead``: the scan opened and its calibration fitted
    while the previous scan ran (:mod:`tilex.campaign.ahead`); its time
    counts only where this scan waits for it.
    """
    from tilex.job import run
    from tilex.scan import open_scan

    base = _pending(job)
    resume = _started(out)
    start = time.perf_counter()
    taken = ahead.take() if ahead is not None else None
    try:
        scan, fitted = taken or (
            open_scan(job.source, input_range=_input_range(job, input_range)),
            None,
        )
        with scan:
            report = run(
                scan, out, plan.with_options(resume=resume), progress=progress, fitted=fitted
            )
        found = found_summary(out)
    except Exception as err:  # one scan's failure, whatever it is, must not stop the batch
        log.debug("scan %s (%s) failed", job.name, job.source, exc_info=True)
        return replace(
            base, state="failed", seconds=time.perf_counter() - start, error=error_line(err)
        )
    seconds: float | None = time.perf_counter() - start
    h, w = report.shape
    if report.already_complete:
        state = "skipped"
        kept = previous is not None and previous.key == job.key and previous.succeeded
        seconds = previous.seconds if previous is not None and kept else None
    else:
        state = "resumed" if resume else "done"
    return replace(base, state=state, seconds=seconds, pixels=h * w, **found)


def _input_range(job: ScanJob, input_range: Any) -> Any:
    """The scan's input range: its job file's, else the batch's."""
    return job.input_range if job.input_range is not None else input_range


def _started(out: Path) -> bool:
    """Whether ``out`` holds something: then the scan is resumed (or found complete)."""
    return out.is_dir() and any(out.iterdir())


def scan_shape(source: Path) -> tuple[int, int] | None:
    """A scan's ``(H, W)`` from its visible image's header (``None`` if it cannot be read).

    For the batch's progress and its split on a cluster only: the run opens
    and checks the scan itself.
    """
    from tilex.readers import open_source
    from tilex.scan.manifest import find_manifest, read_manifest

    try:
        manifest = find_manifest(source)
        plane = open_source(read_manifest(manifest).visible if manifest is not None else source)
        try:
            h, w = plane.shape
        finally:
            plane.close()
    except (TilexError, OSError, ValueError):
        return None
    return h, w


def _complete(out: Path) -> bool:
    try:
        from tilex.omezarr import read_manifest

        return read_manifest(out).get("state") == "complete"
    except (TilexError, OSError):
        return False


class Ledger:
    """The batch's record while it runs: ``batch.json`` rewritten and progress sent at each change.

    Owned by the loop that runs the scans (one thread).
    """

    def __init__(
        self,
        outdir: Path,
        jobs: Sequence[ScanJob],
        previous: BatchRecord | None,
        options: Any,
        progress: BatchProgress | None,
    ) -> None:
        self.outdir = outdir
        self._previous = previous or BatchRecord()
        names = {job.name for job in jobs}
        # until a scan is reached, an earlier success stays on record (a killed batch keeps it)
        ahead = [self._kept(job) or _pending(job) for job in jobs]
        earlier = [s for s in self._previous.scans if s.name not in names]
        self.record = BatchRecord((*ahead, *earlier), dict(options))
        self.record.write(outdir)
        self._progress = progress
        # the work ahead, for the progress: scans already complete need none
        self._work = {job.name: self._pixels_ahead(job) for job in jobs} if progress else {}
        self._total = len(jobs)
        self._done = 0
        self._pixels = 0
        self._emit(None)

    def _pixels_ahead(self, job: ScanJob) -> int:
        shape = None if _complete(self.outdir / job.name) else scan_shape(job.source)
        return shape[0] * shape[1] if shape else 0

    def previous(self, name: str) -> ScanRecord | None:
        """The scan's record from an earlier batch into this OUTDIR, if any."""
        return self._previous.get(name)

    def _kept(self, job: ScanJob) -> ScanRecord | None:
        """An earlier batch's record of this scan with these options, if it succeeded."""
        earlier = self._previous.get(job.name)
        return earlier if earlier and earlier.key == job.key and earlier.succeeded else None

    def current(self, job: ScanJob) -> ScanRecord:
        """The scan's record now."""
        return self.record.get(job.name) or _pending(job)

    def start(self, job: ScanJob) -> None:
        self._update(replace(_pending(job), state="running"))
        self._emit(job.name)

    def stage_callback(self, job: ScanJob) -> Callable[[str, int, int], None]:
        """The ``progress`` for :func:`tilex.run` on ``job``: counted into the batch's pixels."""

        def stage(name: str, done: int, total: int) -> None:
            current = min(done, self._work.get(job.name, 0)) if name == "tiles" else 0
            self._emit(job.name, name, done, total, current)

        return stage

    def finish(self, record: ScanRecord) -> None:
        self._update(record)
        self._done += 1
        if record.state in ("done", "resumed"):
            self._pixels += self._work.get(record.name, 0)
        else:  # skipped or failed: their pixels were never work
            self._work[record.name] = 0
        index = f"[{self._done}/{self._total}] {record.name}"
        if record.succeeded:
            log.info("%s: %s", index, _outcome(record))
        else:
            log.warning("%s: failed: %s", index, record.error)
        self._emit(None)

    def _update(self, record: ScanRecord) -> None:
        self.record = self.record.with_scan(record)
        self.record.write(self.outdir)

    def _emit(
        self,
        scan: str | None,
        stage: str | None = None,
        done: int = 0,
        total: int = 0,
        current: int = 0,
    ) -> None:
        if self._progress is None:
            return
        self._progress(
            BatchStatus(
                self._done,
                self._total,
                self._pixels + current,
                sum(self._work.values()),
                scan,
                stage,
                done,
                total,
            )
        )


def _pending(job: ScanJob) -> ScanRecord:
    return ScanRecord(job.name, str(job.source), job.key, job.recorded_options())


def _outcome(record: ScanRecord) -> str:
    """A finished scan for the log: ``done in 12.3 s (0.51 Mpx/s), flagged 9.8%``."""
    text = record.state
    rate = record.megapixels_per_second
    if record.state != "skipped" and record.seconds is not None:
        text += f" in {record.seconds:.1f} s" + (f" ({rate:.2f} Mpx/s)" if rate else "")
    if record.flagged is not None:
        text += f", flagged {100 * record.flagged:.1f}%"
    return text
