"""The scans of a batch: sources and job files read into :class:`ScanJob` values, each named.

A batch's SOURCES are scan folders, manifests (``scan.json``), multi-channel
files, or **job files** listing one scan per row:

- CSV (``.csv``) with a header row: a ``scan`` column (the scan's path,
  relative to the job file's folder), an optional ``name`` column, and any of
  :data:`PER_SCAN_OPTIONS` as further columns (``-`` or ``_`` alike, an empty
  cell keeps the batch's value);
- JSON lines (``.jsonl`` or ``.ndjson``): one object per line with the same
  keys, values typed (``{"scan": "panel7", "threshold": 0.6}``); blank lines
  are skipped.

A row's options apply to its scan over the batch's own options, exactly as
``tilex run``'s would (:meth:`tilex.plan.RunPlan.with_options`); they are
checked for every row before any scan runs, and a mistake is one
:class:`~tilex.errors.PlanError` naming the file and the row.

Names
-----
Each scan is written to ``OUTDIR/<name>/``. The name is, in this order:

1. the job file's ``name`` cell, when given;
2. the name ``OUTDIR/batch.json`` already gives the same scan with the same
   options (so names never change between runs of one campaign);
3. otherwise the scan's own name: its folder's for a folder or a
   ``scan.json``, the file's name without its extensions for another
   manifest or a multi-channel file (``panel7.ome.tif`` -> ``panel7``).
   Characters other than letters, digits, ``.``, ``_`` and ``-`` become
   ``_``. New names that collide (ignoring case, so they are distinct on
   every file system) with each other or with a name already taken get
   ``-2``, ``-3``, ... in the order of their sources' absolute paths, so the
   order of SOURCES never changes a name.

Examples
--------
>>> safe_name("Panel 7 (verso)")
'Panel_7_verso'
>>> base_name(Path("/campaign/panel7/scan.json")), base_name(Path("/data/panel7.ome.tif"))
('panel7', 'panel7')
>>> [j.name for j in name_jobs([JobSpec(Path("/a/panel")), JobSpec(Path("/b/panel"))])]
['panel', 'panel-2']
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tilex.errors import PlanError, UsageError
from tilex.plan import WEIGHT_NAMES

__all__ = [
    "JOB_FILE_SUFFIXES",
    "PER_SCAN_OPTIONS",
    "RESERVED_NAMES",
    "JobFileError",
    "JobSpec",
    "ScanJob",
    "base_name",
    "check_options",
    "name_jobs",
    "read_sources",
    "safe_name",
]

JOB_FILE_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
"""A SOURCE whose name ends so is a job file (``.json`` is a manifest)."""

PER_SCAN_OPTIONS = {
    "weights": "path",
    "threshold": "number",
    "norm": "text",
    "clip": "text",
    "stats_sample": "number",
    "stats_from": "path",
    "tile": "number",
    "precision": "text",
    "keep_dissimilarity": "flag",
    "calibrate": "text",
    "visible_encoding": "text",
    "blend": "text",
    "overlap": "number",
    "input_range": "text",
}
"""Options a job file may set per scan (flat names of ``tilex run``), with how a CSV cell is read.

The device, the output layout and the cluster are the batch's alone.
"""

RESERVED_NAMES = frozenset({"batch.json", "contact-sheet.png"})
"""Files of the batch itself in ``OUTDIR``: never a scan's name."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TRUE, _FALSE = {"1", "true", "yes", "y"}, {"0", "false", "no", "n"}


class JobFileError(UsageError, ValueError):
    """A job file cannot be read, or lists a scan twice (names the file and the row)."""

    def __init__(self, message: str, *, path: object | None = None) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class JobSpec:
    """One scan as listed, before it is named: a source, its own options, where it was listed.

    ``options`` holds flat option names (``input_range`` included), sorted,
    so that two listings of the same scan with the same options are equal.
    """

    source: Path
    options: tuple[tuple[str, Any], ...] = ()
    name: str | None = None  # a job file's ``name`` cell
    origin: str = ""  # "jobs.csv row 3", for messages

    @property
    def key(self) -> str:
        """Identifies the scan and its options across runs (``batch.json`` maps it to a name)."""
        return json.dumps([str(self.source), dict(self.options)], sort_keys=True, default=str)


@dataclass(frozen=True)
class ScanJob:
    """A named scan of a batch: written to ``OUTDIR/<name>``.

    Examples
    --------
    >>> job = ScanJob("panel", Path("/a/panel"), (("threshold", 0.6), ("input_range", "0,1")))
    >>> job.run_options, job.input_range
    ({'threshold': 0.6}, '0,1')
    """

    name: str
    source: Path
    options: tuple[tuple[str, Any], ...] = ()
    origin: str = ""

    @property
    def key(self) -> str:
        return JobSpec(self.source, self.options).key

    @property
    def run_options(self) -> dict[str, Any]:
        """The options for :meth:`tilex.plan.RunPlan.with_options` (all but ``input_range``)."""
        return {k: v for k, v in self.options if k != "input_range"}

    @property
    def input_range(self) -> Any:
        """The ``input_range`` for :func:`tilex.open_scan` (``None``: the batch's)."""
        return dict(self.options).get("input_range")

    def recorded_options(self) -> dict[str, Any]:
        """The options as plain JSON values (paths as text, pairs as lists), for ``batch.json``."""
        return json.loads(json.dumps(dict(self.options), default=str))


# --------------------------------------------------------------------------- reading


def read_sources(sources: Iterable[str | os.PathLike]) -> list[JobSpec]:
    """Every scan that SOURCES list, job files expanded in their order.

    Raises
    ------
    JobFileError
        A job file is unreadable, malformed, or names an unknown option.
    """
    specs: list[JobSpec] = []
    for i, source in enumerate(sources, start=1):
        path = Path(source)
        kind = JOB_FILE_SUFFIXES.get(path.suffix.lower())
        if kind is None:
            specs.append(JobSpec(_absolute(path), origin=f"source {i} ({source})"))
        else:
            specs += _read_job_file(path, kind)
    return specs


def _absolute(path: Path) -> Path:
    """Resolved, and a folder's ``scan.json`` as its folder: every spelling of one scan is one key."""
    from tilex.scan.manifest import MANIFEST_NAME

    path = Path(os.path.realpath(path))
    return path.parent if path.name == MANIFEST_NAME and path.is_file() else path


def _read_job_file(path: Path, kind: str) -> list[JobSpec]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "it is not UTF-8 text"
        raise JobFileError(f"cannot read the job file {path}: {reason}", path=path) from None
    rows = _csv_rows(path, text) if kind == "csv" else _jsonl_rows(path, text)
    specs = [_job_row(path, where, row, typed=kind != "csv") for where, row in rows]
    if not specs:
        raise JobFileError(f"the job file {path} lists no scan", path=path)
    return specs


def _csv_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header:
        raise JobFileError(f"the job file {path} has no header row (scan,name,...)", path=path)
    columns = [c.strip() for c in header]
    rows = []
    for line, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue
        if len(cells) > len(columns):
            raise JobFileError(
                f"{path.name} row {line}: {len(cells)} cells but {len(columns)} columns",
                path=path,
            )
        row = {c: v.strip() for c, v in zip(columns, cells, strict=False) if v.strip()}
        rows.append((f"{path.name} row {line}", row))
    return rows


def _jsonl_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path.name} line {line}"
        try:
            row = json.loads(raw)
        except ValueError as err:
            raise JobFileError(f"{where}: not JSON ({err})", path=path) from None
        if not isinstance(row, dict):
            raise JobFileError(f"{where}: expected an object, got {raw.strip()[:40]}", path=path)
        rows.append((where, {k: v for k, v in row.items() if v is not None}))
    return rows


def _job_row(path: Path, where: str, row: Mapping[str, Any], *, typed: bool) -> JobSpec:
    row = {str(k).strip().replace("-", "_"): v for k, v in row.items()}
    scan = row.pop("scan", None)
    if scan in (None, ""):
        raise JobFileError(f"{where}: no scan (the 'scan' column names the scan)", path=path)
    name = row.pop("name", None)
    if name is not None:
        name = _explicit_name(str(name), where, path)
    options = {}
    for option, value in row.items():
        kind = PER_SCAN_OPTIONS.get(option)
        if kind is None:
            known = ", ".join(["scan", "name", *PER_SCAN_OPTIONS])
            raise JobFileError(f"{where}: unknown column {option!r} (known: {known})", path=path)
        options[option] = _value(path, where, option, kind, value, typed)
    source = _absolute(path.parent / str(scan))
    return JobSpec(source, tuple(sorted(options.items())), name, where)


def _value(path: Path, where: str, option: str, kind: str, value: Any, typed: bool) -> Any:
    """A cell as its option's type: paths joined to the job file's folder, CSV text converted."""
    if option == "weights" and str(value) in WEIGHT_NAMES:
        return str(value)  # a shipped network's name, not a file
    if kind == "path":
        return _absolute(path.parent / str(value))
    if option == "input_range":  # checked now: it is an option of opening the scan, not of the plan
        from tilex.scan import parse_input_range

        return parse_input_range(value, f"{where}: input_range", JobFileError)
    if isinstance(value, list):  # JSON: clip as [1, 99]
        return tuple(value)
    if typed or kind == "text":
        return value
    text = str(value).strip().lower()
    if kind == "flag":
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise JobFileError(f"{where}: {option} must be true or false, got {value!r}", path=path)
    try:
        number = float(text)
        return int(number) if number.is_integer() else number
    except ValueError:
        raise JobFileError(
            f"{where}: {option} must be a number, got {value!r}", path=path
        ) from None


def _explicit_name(text: str, where: str, path: Path) -> str:
    name = text.strip()
    if safe_name(name) != name or name.lower() in RESERVED_NAMES:
        raise JobFileError(
            f"{where}: name {text!r} cannot name a folder of OUTDIR: use letters, digits, "
            f"'.', '_' and '-', not starting with '.', and not {' or '.join(sorted(RESERVED_NAMES))}",
            path=path,
        )
    return name


# --------------------------------------------------------------------------- names


def safe_name(text: str) -> str:
    """``text`` as a folder name: runs of other characters as ``_``, no leading dot.

    Examples
    --------
    >>> safe_name(".hidden"), safe_name("???")
    ('hidden', 'scan')
    """
    name = _UNSAFE.sub("_", text).strip("_").lstrip(".")
    return name or "scan"


def base_name(source: Path) -> str:
    """A scan's own name (see the module docstring), before collisions are resolved."""
    from tilex.scan.manifest import MANIFEST_NAME

    if source.name == MANIFEST_NAME:
        source = source.parent
    name = source.name
    for suffix in (".tiff", ".tif", ".zarr", ".json", ".btf", ".tf8"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    if name.lower().endswith(".ome") and len(name) > 4:
        name = name[:-4]
    name = safe_name(name)
    return f"{name}_" if name.lower() in RESERVED_NAMES else name


def name_jobs(specs: Sequence[JobSpec], recorded: Mapping[str, str] | None = None) -> list[ScanJob]:
    """Name every listed scan (see the module docstring); ``recorded`` maps keys to earlier names.

    Raises
    ------
    JobFileError
        A scan listed twice with the same options, or a job file's name given
        to two scans (here or in ``recorded``).
    """
    recorded = dict(recorded or {})
    first: dict[str, JobSpec] = {}
    for spec in specs:
        if spec.key in first:
            raise JobFileError(
                f"{spec.source} is listed twice with the same options "
                f"({first[spec.key].origin} and {spec.origin})"
            )
        first[spec.key] = spec
    names: dict[str, str] = {}  # key -> name
    owner: dict[str, str] = {  # casefolded name -> key, for every name OUTDIR already holds
        name.casefold(): key for key, name in recorded.items()
    }
    for spec in specs:  # 1. explicit names
        if spec.name is None:
            continue
        holder = owner.get(spec.name.casefold())
        if holder is not None and holder != spec.key:
            other = first[holder].origin if holder in first else "OUTDIR/batch.json"
            raise JobFileError(f"{spec.origin}: name {spec.name!r} is already given by {other}")
        owner[spec.name.casefold()] = spec.key
        names[spec.key] = spec.name
    for spec in specs:  # 2. names recorded for the same scan and options
        if spec.key not in names and spec.key in recorded:
            names[spec.key] = recorded[spec.key]
    for spec in sorted(specs, key=lambda s: s.key):  # 3. new names, in the order of the paths
        if spec.key in names:
            continue
        base = base_name(spec.source)
        name, n = base, 1
        while name.casefold() in owner:
            n += 1
            name = f"{base}-{n}"
        owner[name.casefold()] = spec.key
        names[spec.key] = name
    return [ScanJob(names[spec.key], spec.source, spec.options, spec.origin) for spec in specs]


def check_options(jobs: Sequence[ScanJob], plan: Any) -> dict[str, Any]:
    """Each job's :class:`~tilex.plan.RunPlan` (``plan`` with its options), by name.

    Raises
    ------
    PlanError
        An option of a job is invalid, naming where the job was listed.
    """
    plans = {}
    for job in jobs:
        try:
            plans[job.name] = plan.with_options(**job.run_options)
        except PlanError as err:
            raise PlanError(f"{job.origin}: {err}") from None
    return plans
