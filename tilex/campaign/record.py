"""What a batch did, scan by scan: ``OUTDIR/batch.json`` and its summary table.

``batch.json`` is rewritten atomically (:func:`tilex.omezarr.journal.write_atomic`)
when the batch starts (every scan ``"pending"``, but one that an earlier
batch completed with the same options, which keeps that record until it is
checked again), when a scan starts (``"running"``) and when it ends, so a
batch killed at any moment leaves a record of what was done, what was
running and what was left. It holds::

    {"tilex_batch": 1, "tilex_version": ..., "updated": ..., "options": {...},
     "scans": [{"name", "source", "key", "options", "state", "seconds",
                "pixels", "flagged", "top_band", "top_band_share", "error"}, ...]}

``state`` is one of :data:`STATES`; ``seconds`` is this batch's wall time for
the scan (for ``"skipped"`` the one recorded when it was made, if known);
``flagged`` the share of the scan's pixels flagged, ``top_band`` the band
that wins most of them and ``top_band_share`` its share of the flagged
pixels, both read from the output's ``tilex.json`` (``"found"``); ``error``
the one line ``tilex run`` would print for the scan. ``key`` identifies the
scan and its options (:attr:`tilex.campaign.jobs.ScanJob.key`), so a later run
gives it the same name. Scans recorded by an earlier run into the same OUTDIR
and not listed again are kept, so the record covers the whole campaign.

Examples
--------
>>> rec = ScanRecord("panel", "/a/panel", "k", state="done", seconds=2.0, pixels=1_000_000,
...                  flagged=0.1, top_band="ir1000", top_band_share=0.9)
>>> print(summary_table([rec]))  # doctest: +NORMALIZE_WHITESPACE
scan   state  time   Mpx/s  flagged  top band       error
panel  done   2.0 s  0.50   10.0%    ir1000 (90%)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tilex._version import __version__
from tilex.errors import OutputError

__all__ = [
    "RECORD_FILE",
    "STATES",
    "BatchRecord",
    "ScanRecord",
    "duration",
    "found_summary",
    "summary_table",
    "totals",
]

RECORD_FILE = "batch.json"
FORMAT = 1

STATES = ("pending", "running", "done", "resumed", "skipped", "failed")
"""``pending``: not reached yet; ``running``: started, not finished (the batch was stopped
there); ``done``: computed by this run; ``resumed``: an interrupted output finished;
``skipped``: already complete (its inputs and options checked as ``--resume`` does);
``failed``: see ``error``."""

SUCCEEDED = frozenset({"done", "resumed", "skipped"})


@dataclass(frozen=True)
class ScanRecord:
    """One scan's line of the batch record (see the module docstring)."""

    name: str
    source: str
    key: str
    options: Mapping[str, Any] = field(default_factory=dict)
    state: str = "pending"
    seconds: float | None = None
    pixels: int | None = None
    flagged: float | None = None
    top_band: str | None = None
    top_band_share: float | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"scan state must be one of {', '.join(STATES)}, got {self.state!r}")

    @property
    def succeeded(self) -> bool:
        return self.state in SUCCEEDED

    @property
    def megapixels_per_second(self) -> float | None:
        """Scan pixels (``H x W``) per second of this scan's wall time, in millions."""
        if not self.pixels or not self.seconds:
            return None
        return self.pixels / 1e6 / self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "options": dict(self.options)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScanRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class BatchRecord:
    """Every scan's :class:`ScanRecord`, in order, and the batch's own options."""

    scans: tuple[ScanRecord, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    def names(self) -> dict[str, str]:
        """``key -> name`` of every recorded scan (names never change once given)."""
        return {s.key: s.name for s in self.scans}

    def get(self, name: str) -> ScanRecord | None:
        return next((s for s in self.scans if s.name == name), None)

    def with_scan(self, record: ScanRecord) -> BatchRecord:
        """This record with ``record`` replacing the scan of its name (or appended)."""
        if self.get(record.name) is None:
            return replace(self, scans=(*self.scans, record))
        return replace(
            self, scans=tuple(record if s.name == record.name else s for s in self.scans)
        )

    def write(self, outdir: str | os.PathLike) -> Path:
        """Replace ``OUTDIR/batch.json`` atomically; returns its path."""
        from tilex.omezarr.journal import write_atomic

        path = Path(outdir) / RECORD_FILE
        data = {
            "tilex_batch": FORMAT,
            "tilex_version": __version__,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "options": dict(self.options),
            "scans": [s.to_dict() for s in self.scans],
        }
        write_atomic(path, (json.dumps(data, indent=1, default=str) + "\n").encode())
        return path

    @classmethod
    def read(cls, outdir: str | os.PathLike) -> BatchRecord | None:
        """The record in ``OUTDIR`` (``None`` when there is none).

        Raises
        ------
        OutputError
            ``batch.json`` exists but is not a tilex batch record.
        """
        path = Path(outdir) / RECORD_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as err:
            raise OutputError(f"cannot read {path}: {err.strerror or err}") from None
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("tilex_batch") != FORMAT:
                raise ValueError(f'no "tilex_batch": {FORMAT}')
            scans = tuple(ScanRecord.from_dict(s) for s in data["scans"])
        except (ValueError, TypeError, KeyError) as err:
            raise OutputError(
                f"{path} is not a tilex batch record ({err}); move it away to start a new one"
            ) from None
        return cls(scans, data.get("options") or {})


def found_summary(out: str | os.PathLike) -> dict[str, Any]:
    """``flagged``, ``top_band`` and ``top_band_share`` from a complete output's ``tilex.json``.

    Empty when the output records nothing found (an older tilex).
    """
    from tilex.omezarr import read_manifest

    found = read_manifest(out).get("found") or {}
    if "flagged_fraction" not in found:
        return {}
    summary: dict[str, Any] = {"flagged": float(found["flagged_fraction"])}
    bands = [b for b in found.get("bands", []) if b.get("pixels")]
    if bands:
        top = max(bands, key=lambda b: b["pixels"])  # the first of equals, as the kernels' ties
        flagged = sum(b["pixels"] for b in bands)
        summary.update(top_band=str(top["band"]), top_band_share=top["pixels"] / flagged)
    return summary


# --------------------------------------------------------------------------- the table

_COLUMNS = ("scan", "state", "time", "Mpx/s", "flagged", "top band", "error")


def summary_table(scans: Iterable[ScanRecord]) -> str:
    """The record as a fixed-width text table, one scan a line (see the module's example)."""
    rows = [_COLUMNS] + [_cells(s) for s in scans]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _cells(s: ScanRecord) -> tuple[str, ...]:
    rate = s.megapixels_per_second
    top = "-"
    if s.top_band is not None:
        top = s.top_band + (f" ({s.top_band_share:.0%})" if s.top_band_share is not None else "")
    return (
        s.name,
        s.state,
        duration(s.seconds),
        "-" if rate is None else f"{rate:.2f}",
        "-" if s.flagged is None else f"{100 * s.flagged:.1f}%",
        top,
        s.error or "",
    )


def duration(seconds: float | None) -> str:
    """Seconds for people.

    Examples
    --------
    >>> duration(4.26), duration(125), duration(7384), duration(None)
    ('4.3 s', '2 min 05 s', '2 h 03 min', '-')
    """
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def totals(scans: Iterable[ScanRecord]) -> str:
    """One line counting the scans by state, e.g. ``4 scans: 2 done, 1 skipped, 1 failed``.

    Examples
    --------
    >>> totals([ScanRecord("a", "a", "a", state="done"), ScanRecord("b", "b", "b", state="failed")])
    '2 scans: 1 done, 1 failed'
    """
    scans = list(scans)
    counts = {state: sum(s.state == state for s in scans) for state in STATES}
    parts = [f"{n} {state}" for state, n in counts.items() if n]
    return f"{len(scans)} scan{'s' if len(scans) != 1 else ''}: " + ", ".join(parts)
