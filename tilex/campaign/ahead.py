"""The next scan's calibration, fitted on a thread of its own while the current scan runs.

A run starts with its calibration fit (:func:`tilex.job.fit_calibration`):
NumPy on one core, over the statistics' sampled squares. What follows, the
statistics pass and the main pass, is the encoder's work on every core. In a
batch, :class:`Ahead` opens the next scan and fits its model while the
current scan encodes, and :func:`~tilex.campaign.runner.run_scan` hands the
model to :func:`tilex.run` (``fitted``) instead of fitting it there.

- **The same model, the same bytes.** The fit is deterministic and reads only
  the scan, so the run gets the model it would fit itself (:func:`tilex.run`
  checks its mode, bands and shape). Only where the run would fit afresh: a
  scan whose output folder holds anything (complete, interrupted, another
  run's) or that reuses ``--stats-from`` is left to its run.
- **Bounded.** One scan ahead: one more open scan, and one fit's memory (its
  features, at most :data:`tilex.calibration.CACHE_BYTES`, and one square
  being read).
- **Failures are the run's.** Whatever goes wrong ahead is dropped; the run
  then opens the scan and fits the model itself, and fails as a separate
  ``tilex run`` would, with the same message at the same point (a damaged
  band must not be reported before, say, a bad weights file that the run
  checks first).
- **An interrupt waits for nothing.** The thread is a daemon: Ctrl-C stops
  the batch at once, and a fit still running is lost with the process.

Measured on the 2-core CPU development machine: see the module docstring of
:mod:`tilex.campaign.runner`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from tilex.campaign.jobs import ScanJob
from tilex.plan import RunPlan

__all__ = ["Ahead"]

log = logging.getLogger("tilex.batch")


class Ahead:
    """One scan opened and its calibration fitted on a thread; :meth:`take` hands them over.

    Start it with :meth:`start`, which says ``None`` where the run would not
    fit a model afresh.
    """

    def __init__(self, job: ScanJob, plan: RunPlan, input_range: Any) -> None:
        self.job = job
        self._lock = threading.Lock()
        self._result: tuple[Any, Any] | None = None  # (open scan, calibration)
        self._dropped = False
        self._thread = threading.Thread(
            target=self._fit, args=(plan, input_range), name="tilex-ahead", daemon=True
        )
        self._thread.start()

    @classmethod
    def start(cls, job: ScanJob, plan: RunPlan, input_range: Any) -> Ahead | None:
        """Fit ``job``'s model ahead where a fresh run of ``plan`` would fit one, else ``None``.

        The caller starts it only for an output that holds nothing yet (a run
        resuming or checking an output reads the model it saved); a plan that
        does not calibrate, or takes ``--stats-from``, fits nothing.
        """
        if plan.calibration.enabled and plan.stats_from is None:
            return cls(job, plan, input_range)
        return None

    def _fit(self, plan: RunPlan, input_range: Any) -> None:
        from tilex.job import fit_calibration
        from tilex.scan import open_scan

        scan = None
        try:
            scan = open_scan(self.job.source, input_range=input_range)
            result = (scan, fit_calibration(scan, plan))
        except Exception:  # any failure: dropped, the run meets it again in its own order
            log.debug("scan %s: nothing fitted ahead", self.job.name, exc_info=True)
            if scan is not None:
                scan.close()
            return
        with self._lock:
            if not self._dropped:
                self._result, result = result, None
        if result is not None:  # dropped meanwhile: nobody will take it
            result[0].close()

    def take(self) -> tuple[Any, Any] | None:
        """Wait for the fit; the open scan (the caller closes it) and its model, or ``None``."""
        self._thread.join()
        return self._release()

    def drop(self) -> None:
        """Give up on it, now or once its fit ends (the scan it opened is closed)."""
        result = self._release()
        if result is not None:
            result[0].close()

    def _release(self) -> tuple[Any, Any] | None:
        with self._lock:
            self._dropped = True
            result, self._result = self._result, None
        return result
