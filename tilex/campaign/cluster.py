"""A batch on a dask cluster: small scans whole on one worker each, large ones across all.

With ``workers=N`` (a local cluster started for the whole batch) or
``scheduler=ADDRESS``:

- **Small scans**, those that fit in one write unit (``--unit``, 4096 px by
  default: the per-run cluster path would give them one task anyway), are
  tasks of their own (:func:`scan_task`): a worker runs :func:`tilex.run`
  on the whole scan with the same plan, resuming or skipping as the local
  batch does (:func:`tilex.campaign.runner.run_scan`), and returns its record.
  Each worker process stays warm across its scans. They go first, all
  submitted at once; the client records each as it completes.
- **Large scans** then run one after another through :func:`tilex.run`'s
  own cluster path (:mod:`tilex.distributed`: statistics, units and pyramid
  levels as tasks over all workers) on the same cluster.
- A scan given an input range (``input_range``) runs whole on one worker,
  large or not: the per-run cluster path reopens a scan on its workers
  without the caller's input range. So does a feathered one
  (``--blend feather`` runs in one process).

Either way each scan is computed by the same code as in one process, so its
arrays are the same bytes (``tests/test_batch.py``). The outputs and the
scans must be on storage every worker sees at the same paths
(``docs/cluster.md``). If a worker dies during a small scan, dask runs the
task again elsewhere, and it resumes the output; a task that still fails is
recorded as that scan's failure.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tilex.campaign.jobs import ScanJob
from tilex.campaign.record import ScanRecord
from tilex.campaign.runner import Ledger, error_line, run_scan, scan_shape
from tilex.plan import RunPlan

__all__ = ["run_on_cluster", "scan_task"]

log = logging.getLogger("tilex.batch")


def scan_task(
    job: ScanJob, out: str, plan: RunPlan, input_range: Any, previous: ScanRecord | None
) -> ScanRecord:
    """Task: one whole scan on this worker (:func:`~tilex.campaign.runner.run_scan`)."""
    return run_scan(job, Path(out), plan, input_range=input_range, previous=previous)


def _torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def run_on_cluster(
    jobs: Sequence[ScanJob],
    outdir: Path,
    plans: Mapping[str, RunPlan],
    plan: RunPlan,
    input_range: Any,
    ledger: Ledger,
) -> None:
    """Run ``jobs`` on the cluster ``plan.cluster``, recording each in ``ledger``."""
    from distributed import as_completed

    # one client for the batch; tilex.distributed starts and checks it as for one run
    from tilex.distributed import _client

    assert plan.cluster is not None
    unit = plan.output.unit
    whole, spread = [], []
    for job in jobs:
        shape = scan_shape(job.source)  # None: it fails in its task, with the run's message
        given = job.input_range is not None or input_range is not None
        alone = given or plans[job.name].tiling.feathered  # feathering runs in one process
        (whole if shape is None or max(shape) <= unit or alone else spread).append(job)
    with _client(plan.cluster, plan.device.device) as (client, local_workers):
        if local_workers:  # as for one run: the cores shared between the local workers
            client.run(_torch_threads, max(1, (os.cpu_count() or 1) // local_workers))
        address = client.scheduler.address
        futures = {}
        for job in whole:
            local = plans[job.name].with_options(scheduler=None, workers=None)
            previous = ledger.previous(job.name)
            future = client.submit(
                scan_task, job, str(outdir / job.name), local, input_range, previous, pure=False
            )
            futures[future] = job
        for future in as_completed(list(futures)):
            job = futures[future]
            try:
                record = future.result()
            except Exception as err:  # the task itself failed (its worker died too often)
                record = ScanRecord(
                    job.name,
                    str(job.source),
                    job.key,
                    job.recorded_options(),
                    state="failed",
                    error=error_line(err),
                )
            ledger.finish(record)
        for job in spread:
            ledger.start(job)
            on_cluster = plans[job.name].with_options(scheduler=address, workers=None)
            ledger.finish(
                run_scan(
                    job,
                    outdir / job.name,
                    on_cluster,
                    input_range=input_range,
                    progress=ledger.stage_callback(job),
                    previous=ledger.previous(job.name),
                )
            )
