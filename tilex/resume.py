"""The resume guard: continue an output only with the run that started it.

:func:`fingerprint` summarises what determines an output's pixels: the
inputs (paths, shapes, tiling, plus size and modification time of each input
file), the bands, the parameters and the weights' SHA-256, never timestamps or
timings. It is stored in ``tilex.json`` when the output is laid out
(:mod:`tilex.omezarr`) and compared by :func:`check_resumable`, which names
what differs; :func:`check_layout_matches` does the same for the arrays'
layout (version, unit, chunk, shape). Both raise
:class:`~tilex.errors.ResumeMismatchError` with a message that says how to
go on.

The fingerprint is computed from the ``scan``, ``bands``, ``parameters`` and
``weights`` sections of the run's provenance
(:attr:`tilex.sink.RunInfo.provenance`) exactly as tilex always has, so an
output interrupted by an older tilex of the same format still resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tilex.errors import ResumeMismatchError

if TYPE_CHECKING:
    from tilex.omezarr.format import LayoutSpec
    from tilex.sink import RunInfo

__all__ = ["check_layout_matches", "check_resumable", "fingerprint", "parameters_hash"]

_SECTIONS = ("scan", "bands", "parameters", "weights")
_HOW = "(rerun with the original options, or start again with --overwrite)"


def parameters_hash(provenance: Mapping[str, Any]) -> str:
    """A hash of what determines an output's pixels (inputs, parameters, weights).

    Examples
    --------
    >>> parameters_hash({"parameters": {"tile": 512}}) == parameters_hash(
    ...     {"parameters": {"tile": 512}, "created": "today"})
    True
    """
    keep = {k: provenance.get(k) for k in _SECTIONS}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()


def _input_files(scan: Mapping[str, Any] | None) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` of every regular input file named by a scan description."""
    if not scan:
        return []
    paths = {scan.get("visible", {}).get("path")}
    paths.update(b.get("path") for b in scan.get("bands", []))
    out = []
    for p in sorted(p for p in paths if p):
        try:
            st = os.stat(p)
        except OSError:
            out.append([p, None, None])
            continue
        if os.path.isfile(p):  # a Zarr folder's own stat says nothing about its chunks
            out.append([p, st.st_size, st.st_mtime_ns])
    return out


def fingerprint(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """What a resumed run must match: the hash of the sections that set the pixels
    (:func:`parameters_hash`) and the size and modification time of each input file."""
    return {
        "parameters_hash": parameters_hash(provenance),
        "input_files": _input_files(provenance.get("scan")),
    }


def _differences(old: Any, new: Any, where: str) -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))
        return out
    if _canonical(old) == _canonical(new):
        return []
    return [f"{where} (output: {_short(old)}, now: {_short(new)})"]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def check_resumable(path: Path, manifest: Mapping[str, Any], provenance: Mapping[str, Any]) -> None:
    """Refuse to resume the output at ``path`` (its ``tilex.json`` is ``manifest``) for a
    run whose provenance is ``provenance`` when their fingerprints differ.

    Raises
    ------
    ResumeMismatchError
        Naming every differing input, parameter, weight or input file.
    """
    stored = manifest.get("resume")
    if not isinstance(stored, Mapping) or "parameters_hash" not in stored:
        raise ResumeMismatchError(
            f"cannot resume {path}: its tilex.json records no run fingerprint "
            "(written by an older tilex?); start again with --overwrite"
        )
    now = fingerprint(provenance)
    if stored == now:
        return
    diffs = []
    for section in _SECTIONS:
        diffs += _differences(manifest.get(section), provenance.get(section), section)
    old_files = {f[0]: f[1:] for f in stored.get("input_files") or []}
    new_files = {f[0]: f[1:] for f in now["input_files"]}
    for p in sorted(set(old_files) | set(new_files)):
        if old_files.get(p) != new_files.get(p):
            diffs.append(
                f"input file {p} changed (size, mtime_ns: {old_files.get(p)} -> {new_files.get(p)})"
            )
    raise ResumeMismatchError(
        f"cannot resume {path}: it was made with different inputs, parameters or weights: "
        + "; ".join(diffs or ["the run fingerprint"])
        + f" {_HOW}"
    )


def check_layout_matches(
    path: Path, manifest: Mapping[str, Any], info: RunInfo, spec: LayoutSpec
) -> None:
    """Refuse to resume into an output laid out otherwise (version, unit, chunk, shape).

    Raises
    ------
    ResumeMismatchError
        Naming each differing setting, the output's value and the run's.
    """
    stored = manifest["output"]
    want = {
        "ome_zarr_version": spec.version,
        "unit": spec.unit,
        "chunk": spec.chunk,
        "shape": list(info.shape),
    }
    diffs = [
        f"{k} (output: {stored.get(k)}, now: {v})" for k, v in want.items() if stored.get(k) != v
    ]
    if diffs:
        raise ResumeMismatchError(
            f"cannot resume {path}: its layout differs: {'; '.join(diffs)} {_HOW}"
        )
