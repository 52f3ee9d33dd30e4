"""Batch runs: a digitisation campaign's scans in one command (``tilex batch``, :func:`tilex.batch`).

The package is ``campaign``, not ``batch``: a submodule named ``tilex.batch``
would, once imported, shadow the function ``tilex.batch`` on the package.
One module per concept:

- :mod:`tilex.campaign.jobs`: SOURCES and job files read into named
  :class:`ScanJob` values (the naming rule);
- :mod:`tilex.campaign.runner`: :func:`batch`, the scans one after another in
  one warm process, resumed or skipped, failures recorded;
- :mod:`tilex.campaign.ahead`: the next scan's calibration, fitted while one runs;
- :mod:`tilex.campaign.cluster`: the same on a dask cluster;
- :mod:`tilex.campaign.record`: ``OUTDIR/batch.json`` and the summary table;
- :mod:`tilex.campaign.sheet`: the contact sheet of every scan's preview.
"""

from tilex.campaign.jobs import PER_SCAN_OPTIONS, JobFileError, ScanJob, read_sources
from tilex.campaign.record import RECORD_FILE, BatchRecord, ScanRecord, summary_table
from tilex.campaign.runner import BatchReport, BatchStatus, batch, error_line
from tilex.campaign.sheet import SHEET_FILE, write_contact_sheet

__all__ = [
    "PER_SCAN_OPTIONS",
    "RECORD_FILE",
    "SHEET_FILE",
    "BatchRecord",
    "BatchReport",
    "BatchStatus",
    "JobFileError",
    "ScanJob",
    "ScanRecord",
    "batch",
    "error_line",
    "read_sources",
    "summary_table",
    "write_contact_sheet",
]
