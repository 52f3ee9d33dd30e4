"""``tilex batch``: a campaign's scans in one process, with its summary and contact sheet.

The options of every scan are ``tilex run``'s own click options (the same
objects, so the same names, types and help), converted here and checked by
:class:`tilex.plan.RunPlan`; the work is :func:`tilex.batch`. The exit status
is 0 when every scan succeeded, 1 when one failed (the table says which and
why), 2 for a bad option or job file (nothing runs).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from tilex.cli import run as run_command
from tilex.cli.main import verbosity
from tilex.cli.progress import _LABELS as STAGE_LABELS

from tilex.errors import UsageError

RUN_OPTIONS = (
    "tile",
    "norm",
    "threshold",
    "clip",
    "stats_sample",
    "stats_from",
    "device",
    "precision",
    "weights",
    "keep_dissimilarity",
    "ome_zarr_version",
    "blend",
    "overlap",
    "calibrate",
    "visible_encoding",
    "input_range",
    "unit",
    "chunk",
    "scheduler",
    "workers",
)
"""``tilex run``'s options that a batch takes, for every scan (a job file's row overrides them)."""

_BATCH_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} scan px [{elapsed}<{remaining}, {rate_fmt}]"
_STAGE_FORMAT = "  {desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} scan px"


@click.command("batch")
@click.argument("sources", nargs=-1, type=click.Path())
@click.option(
    "-o",
    "--out",
    "outdir",
    type=click.Path(file_okay=False),
    default=None,
    help="The campaign's output folder: OUTDIR/<name>/ per scan (named after its folder, "
    "see README 'A whole campaign'), and OUTDIR/batch.json, the record of every scan.",
)
@click.option(
    "--report",
    "report",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    metavar="OUTDIR",
    help="Run nothing: print the summary of the batch in OUTDIR again and write its contact "
    "sheet, every scan's preview in one PNG.",
)
@click.option(
    "--sheet",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --report: where to write the contact sheet (default OUTDIR/contact-sheet.png).",
)
@click.pass_context
def command(ctx, sources, outdir, report, sheet, **options) -> None:
    """Run every scan of SOURCES into OUTDIR, in one process; skip what is done, resume what is not.

    SOURCES are scan folders, scan.json manifests, multi-channel OME-TIFF/OME-Zarr files,
    and job files: CSV (a header row, then one scan a row: scan,name,threshold,weights,...)
    or JSON lines (one object a line, the same keys), a row's options overriding the
    batch's for its scan. A scan that fails is recorded with its error and the batch goes
    on. -v also shows each run's own log lines (and its work estimate, one trial tile per
    scan).
    """
    if report is not None:
        if sources or outdir:
            raise UsageError("give --report OUTDIR alone (no SOURCES, no -o)")
        _report(ctx, report, sheet)
        return
    if sheet is not None:
        raise UsageError("--sheet goes with --report OUTDIR")
    if not sources or outdir is None:
        raise UsageError(
            "give SOURCES (scan folders, manifests, job files) and -o OUTDIR, or --report OUTDIR"
        )
    import tilex
    from tilex.campaign.record import RECORD_FILE, duration
    from tilex.device import tune_host_allocator
    from tilex.plan import RunPlan

    input_range = options.pop("input_range")
    plan = RunPlan.from_options(**{k: v for k, v in options.items() if v is not None})
    tune_host_allocator()  # the command owns its process, as tilex run
    with _own_lines_only(), batch_bars() as progress:
        done = tilex.batch(sources, outdir, plan, input_range=input_range, progress=progress)
    click.echo(done.table())
    click.echo(
        f"{done.totals()} in {duration(done.seconds)}; record: {done.outdir / RECORD_FILE}; "
        f"contact sheet: tilex batch --report {done.outdir}"
    )
    if not done.ok:
        ctx.exit(1)


for _param in run_command.command.params:  # the same option objects as tilex run's
    if _param.name in RUN_OPTIONS:
        command.params.append(_param)


def _report(ctx: click.Context, outdir: str, sheet: str | None) -> None:
    from tilex.campaign import BatchRecord, summary_table, write_contact_sheet
    from tilex.campaign.record import totals
    from tilex.errors import OutputError

    record = BatchRecord.read(outdir)
    if record is None or not record.scans:
        raise OutputError(f"{outdir} holds no batch record (batch.json): run `tilex batch` first")
    click.echo(summary_table(record.scans))
    click.echo(totals(record.scans))
    click.echo(f"contact sheet: {write_contact_sheet(outdir, sheet)}")
    if not all(s.succeeded for s in record.scans):
        ctx.exit(1)


@contextmanager
def _own_lines_only() -> Iterator[None]:
    """At the default verbosity, the batch's own lines only: each run's INFO waits for ``-v``.

    A run logs its calibration and, after a timed trial tile, its work ahead:
    a batch says one line per scan instead and saves that tile. Warnings pass.
    """
    if verbosity() > 0:
        yield
        return
    runs, own = logging.getLogger("tilex"), logging.getLogger("tilex.batch")
    saved = runs.level, own.level
    own.setLevel(runs.getEffectiveLevel())
    runs.setLevel(max(logging.WARNING, runs.getEffectiveLevel()))
    try:
        yield
    finally:
        runs.setLevel(saved[0])
        own.setLevel(saved[1])


@contextmanager
def batch_bars(enabled: bool | None = None) -> Iterator:
    """Yield a :class:`tilex.campaign.BatchStatus` callback drawing two bars.

    Above, the batch: scan pixels of the scans that need work, done and
    ahead, the rate and the ETA, and scans done / total; below, the running
    scan's stage (statistics, fusing tiles). Off with ``-q`` or when stderr is
    not a terminal (then the batch logs one line per scan).
    """
    if enabled is None:
        enabled = verbosity() >= 0 and sys.stderr.isatty()
    if not enabled:
        yield lambda status: None
        return
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    def bar_of(total: int, desc: str, bar_format: str, **placing: Any) -> tqdm:
        """A pixel bar on stderr, as the batch and its current stage draw them."""
        return tqdm(
            total=total,
            desc=desc,
            unit="px",
            unit_scale=True,
            bar_format=bar_format,
            dynamic_ncols=True,
            file=sys.stderr,
            **placing,
        )

    bars: dict[str, tqdm] = {}
    current: list[tuple[str, str] | None] = [None]

    def progress(status) -> None:
        top = bars.get("batch")
        if top is None:
            top = bars["batch"] = bar_of(
                status.pixels_total,
                f"batch, {status.scans_done}/{status.scans_total} scans",
                _BATCH_FORMAT,
                position=0,
            )
        top.total = status.pixels_total
        top.set_description_str(f"batch, {status.scans_done}/{status.scans_total} scans", False)
        top.update(status.pixels_done - top.n)
        stage = (status.scan, status.stage) if status.stage else None
        if stage != current[0] and "stage" in bars:
            bars.pop("stage").close()
        current[0] = stage
        if stage is not None:
            bar = bars.get("stage")
            if bar is None:
                bar = bars["stage"] = bar_of(
                    status.stage_total,
                    f"{status.scan}: {STAGE_LABELS.get(status.stage, status.stage)}",
                    _STAGE_FORMAT,
                    position=1,
                    leave=False,
                )
            bar.update(status.stage_done - bar.n)

    with logging_redirect_tqdm():
        try:
            yield progress
        finally:
            for bar in bars.values():
                bar.close()
