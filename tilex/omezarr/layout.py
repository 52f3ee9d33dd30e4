"""The arrays and metadata of one output folder, shared by every writer.

:class:`OutputLayout` creates or opens the arrays of every level, writes one
whole unit of one level (one aligned assignment per image, its files synced,
then journaled: :meth:`~OutputLayout.commit_unit`), reads one back, and
writes ``tilex.json`` and the group metadata. The streaming
:class:`~tilex.omezarr.OmeZarrSink` and the workers of
:mod:`tilex.distributed` both write through it, so their outputs are the
same bytes.

Order of writes, and why: the arrays and ``"running"`` first; then units,
each durable before its journal marker (:mod:`tilex.omezarr.journal`), so a
marker always names a whole unit; the group metadata (``multiscales``,
``omero``, ``image-label``) and ``"complete"`` last (:meth:`~OutputLayout.finish`),
so an interrupted run never looks complete, to tilex or to a viewer; the
journal is dropped after that. A kill between ``"complete"`` and dropping the
journal leaves a complete output with a stale journal, which a resume clears.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from tilex._version import __version__
from tilex.errors import OutputError
from tilex.grid import Region
from tilex.hooks import checkpoint
from tilex.omezarr import ngff
from tilex.omezarr.format import (
    MANIFEST,
    SCRATCH,
    ImageSpec,
    LayoutSpec,
    band_colours,
    hex_colour,
    output_images,
)
from tilex.omezarr.journal import Journal, fsync_files, os_errors_name, write_json_atomic
from tilex.omezarr.units import Index, UnitBuffer, UnitGrid, place_reduced, reduce
from tilex.resume import fingerprint
from tilex.sink import RunInfo, RunResults
from tilex.stats import EVIDENCE_BINS, SCORE_BINS, Found

__all__ = ["OutputLayout"]

UnitData = dict[str, np.ndarray]


class OutputLayout:
    """The arrays and metadata of one output folder (see the module's description).

    Parameters
    ----------
    path : path-like
        The output folder ``OUT``.
    info : RunInfo
        What the run produces (shape, bands, channels, provenance).
    spec : LayoutSpec
    store : callable, optional
        ``store(path)`` returning the zarr store of one image root (default:
        :class:`zarr.storage.LocalStore`).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        info: RunInfo,
        spec: LayoutSpec,
        *,
        store: Callable[[Path], Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.info = info
        self.spec = spec
        self.images = output_images(info)
        self.geometry = UnitGrid.for_shape(info.shape, spec.unit, spec.chunk)
        self.shapes = list(self.geometry.shapes)
        self.arrays: dict[str, list[Any]] = {}
        self.journal = Journal(self.path)
        self.stride = ngff.window_stride(info.shape)
        self._store_factory = store or zarr.storage.LocalStore
        self._stores: dict[str, Any] = {}

    def use(self, info: RunInfo) -> None:
        """Record a newer description of the same run (e.g. with its statistics measured)."""
        if info.shape != self.info.shape or output_images(info) != self.images:
            raise OutputError(
                f"output {self.path} was laid out for {self.info.shape[0]}x{self.info.shape[1]} px "
                f"and images {[s.name for s in self.images]}: another run cannot write into it"
            )
        self.info = info

    # -- geometry (see tilex.omezarr.units) ----------------------------------

    @property
    def windowed(self) -> list[ImageSpec]:
        """The images whose display windows are measured (float images)."""
        return [s for s in self.images if not s.is_label and s.dtype != np.uint8]

    def grid(self, level: int) -> tuple[int, int]:
        """Rows and columns of write units on ``level``."""
        return self.geometry.grid(level)

    def units(self, level: int) -> list[Index]:
        return self.geometry.units(level)

    def region(self, level: int, index: Index) -> Region:
        return self.geometry.region(level, index)

    def children(self, level: int, index: Index) -> list[Index]:
        return self.geometry.children(level, index)

    def new_unit(self, level: int, index: Index) -> UnitBuffer:
        """An empty buffer for one unit of one level."""
        return UnitBuffer.empty(self.images, level, index, self.region(level, index))

    def reduce(self, data: UnitData) -> UnitData:
        """A finished unit's images reduced 2x (what its parent receives)."""
        return reduce(self.images, data)

    def missing(self) -> list[tuple[int, Index]]:
        """The units of every level the journal does not hold, level 0 first."""
        missing = []
        for k in range(len(self.shapes)):
            done = self.journal.completed(k)
            missing += [(k, i) for i in self.units(k) if i not in done]
        return missing

    # -- arrays ---------------------------------------------------------------

    def _store(self, root: str) -> Any:
        store = self._stores.get(root)
        if store is None:
            store = self._stores[root] = self._store_factory(self.path / root)
        return store

    def create_arrays(self) -> None:
        """Create the (empty) groups and the arrays of every level, then journal that."""
        fmt = self.spec.zarr_format
        codec = [self.spec.compressor.codec(fmt)] if self.spec.compressor else None
        for spec in self.images:
            root, sub = spec.root, spec.group
            fresh = root not in self._stores
            store = self._store(root)
            if fresh:
                zarr.open_group(store, mode="w", zarr_format=fmt)
            if sub:  # labels/winner: create the intermediate groups, metadata comes at finish
                zarr.open_group(store, path="labels", mode="a", zarr_format=fmt)
                zarr.open_group(store, path=sub, mode="a", zarr_format=fmt)
            lead = () if spec.is_label else (1,)
            kwargs: dict[str, Any] = {
                "dtype": spec.dtype,
                "chunks": (*lead, self.spec.chunk, self.spec.chunk),
                "compressors": codec,
                "fill_value": 0,
                "zarr_format": fmt,
            }
            if fmt == 3:
                kwargs["shards"] = (*lead, self.spec.unit, self.spec.unit)
                kwargs["dimension_names"] = ["y", "x"] if spec.is_label else ["c", "y", "x"]
            else:
                kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
            self.arrays[spec.name] = [
                zarr.create_array(
                    store,
                    name=f"{sub}/{k}" if sub else str(k),
                    shape=spec.buffer_shape(h, w),
                    **kwargs,
                )
                for k, (h, w) in enumerate(self.shapes)
            ]
        self.journal.mark_arrays()

    def open_arrays(self) -> None:
        """Open the arrays :meth:`create_arrays` made (on resume, and on workers)."""
        for spec in self.images:
            store, sub = self._store(spec.root), spec.group
            self.arrays[spec.name] = [
                zarr.open_array(
                    store,
                    path=f"{sub}/{k}" if sub else str(k),
                    mode="r+",
                    zarr_format=self.spec.zarr_format,
                )  # type: ignore[arg-type]
                for k in range(len(self.shapes))
            ]

    def remove_partial_files(self) -> None:
        """Delete zarr's temporary ``*.partial`` files left by a killed writer."""
        for root in {spec.root for spec in self.images}:
            for folder, _, files in os.walk(self.path / root):
                for name in files:
                    if name.endswith(".partial"):
                        os.unlink(os.path.join(folder, name))

    def _files(self, array: Any, level: int, index: Index, root: str) -> list[Path]:
        """The local files holding one unit of one array (for fsync)."""
        store = self._store(root)
        if not isinstance(store, zarr.storage.LocalStore):
            return []  # remote stores: durability is the store's (e.g. an object store's PUT)
        base = Path(store.root) / array.path
        lead = [(c,) for c in range(array.shape[0])] if array.ndim == 3 else [()]
        if self.spec.zarr_format == 3:  # one shard per unit (and channel)
            keys = [array.metadata.encode_chunk_key((*c, *index)) for c in lead]
        else:
            y0, y1, x0, x1 = self.region(level, index)
            ch = self.spec.chunk
            keys = [
                array.metadata.encode_chunk_key((*c, cy, cx))
                for c in lead
                for cy in range(y0 // ch, -(-y1 // ch))
                for cx in range(x0 // ch, -(-x1 // ch))
            ]
        return [base / key for key in keys]

    def write_unit(self, level: int, index: Index, data: UnitData) -> None:
        """One aligned assignment per image (whole shards / chunks), then fsync their files."""
        y0, y1, x0, x1 = self.region(level, index)
        files: list[Path] = []
        for spec in self.images:
            array = self.arrays[spec.name][level]
            with os_errors_name(self.path / spec.path / str(level)):
                array[..., y0:y1, x0:x1] = data[spec.name]
            files += self._files(array, level, index, spec.root)
        with os_errors_name(self.path):
            fsync_files(files)

    def commit_unit(self, level: int, index: Index, data: UnitData) -> None:
        """Write a finished unit durably, then journal it (with its window sample at level 0)."""
        self.write_unit(level, index, data)
        payload = None
        if level == 0:
            region = self.region(0, index)
            payload = {}
            for spec in self.windowed:
                part = ngff.window_sample(data[spec.name], region, self.stride)
                payload.update({f"{spec.name}.{k}": v for k, v in part.items()})
            found = Found.of(data["score"], data["winner"], self.info.n_bands, data.get("evidence"))
            payload["found.winners"] = np.asarray(found.winners, np.int64)
            payload["found.histogram"] = np.asarray(found.histogram, np.int64)
            if found.evidence:
                payload["found.evidence"] = np.asarray(found.evidence, np.int64)
        checkpoint(
            "unit" if level == 0 else f"level{level}"
        )  # a crash here: written, not journaled
        with os_errors_name(self.journal.folder):
            self.journal.mark(level, index, payload)

    def read_unit(self, level: int, index: Index) -> UnitData:
        """Read one written unit of one level back (resume and the distributed pyramid)."""
        y0, y1, x0, x1 = self.region(level, index)
        return {
            spec.name: np.asarray(self.arrays[spec.name][level][..., y0:y1, x0:x1])
            for spec in self.images
        }

    def assemble_parent(
        self, level: int, index: Index, reduced: Callable[[Index], UnitData | None] | None = None
    ) -> UnitBuffer:
        """Unit ``index`` of ``level`` from its children on ``level - 1``.

        Each child's reduction is ``reduced(child)`` when that is not
        ``None`` (the streaming sink's spilled reductions); otherwise the
        child is read back from the arrays and reduced (resume, and the
        cluster's pyramid).
        """
        parent = self.new_unit(level, index)
        for child in self.children(level, index):
            part = reduced(child) if reduced is not None else None
            if part is None:
                part = self.reduce(self.read_unit(level - 1, child))
            place_reduced(parent, self.region(level - 1, child), part)
        return parent

    # -- metadata -------------------------------------------------------------

    def summaries(self) -> tuple[dict[str, list[dict[str, float]]], Found]:
        """The display windows of the float images and what the run flagged.

        Both merged from the level-0 journal payloads, read once (resumed or
        cluster runs alike: every unit journaled its own share).
        """
        parts: dict[str, list[dict]] = {s.name: [] for s in self.windowed}
        found = Found(
            (0,) * (self.info.n_bands + 1),
            (0,) * SCORE_BINS,
            (0,) * EVIDENCE_BINS if self.info.keep_evidence else (),
        )
        for index in self.units(0):
            payload = self.journal.payload(0, index)
            for name, samples in parts.items():
                samples.append({k: payload[f"{name}.{k}"] for k in ("sample", "lo", "hi")})
            winners, histogram = payload["found.winners"], payload["found.histogram"]
            evidence = payload.get("found.evidence")
            found = found.merge(
                Found(
                    tuple(winners.tolist()),
                    tuple(histogram.tolist()),
                    () if evidence is None else tuple(evidence.tolist()),
                )
            )
        windows = {s.name: ngff.windows(int(s.channels or 1), parts[s.name]) for s in self.windowed}
        return windows, found

    def write_group_metadata(self, windows: dict[str, list[dict[str, float]]]) -> None:
        """``multiscales``, ``omero`` and ``image-label`` of every image; labels first."""
        version, fmt, n_levels = self.spec.version, self.spec.zarr_format, len(self.shapes)
        for spec in sorted(self.images, key=lambda s: not s.is_label):
            store = self._store(spec.root)
            attrs = ngff.image_attrs(spec, self.info, n_levels, version, windows.get(spec.name))
            zarr.open_group(store, path=spec.group, mode="r+", zarr_format=fmt).attrs.update(attrs)
            if spec.is_label:
                parent, _, name = spec.group.rpartition("/")
                labels = zarr.open_group(store, path=parent, mode="r+", zarr_format=fmt)
                labels.attrs.update(ngff.labels_attrs([name], version))

    def manifest(
        self, state: str, results: RunResults | None = None, found: Found | None = None
    ) -> dict[str, Any]:
        """``tilex.json``: the run's record, its results and findings, ``state``, the layout and the fingerprint."""
        info = self.info
        manifest = info.record()
        if results is not None:
            manifest["timings"] = dict(results.timings)
            if results.cluster is not None:
                manifest["cluster"] = results.cluster.plain()
        manifest["state"] = state
        manifest["output"] = {
            "format": "ome-zarr",
            "ome_zarr_version": self.spec.version,
            "zarr_format": self.spec.zarr_format,
            "shape": list(info.shape),
            "unit": self.spec.unit,
            "chunk": self.spec.chunk,
            "levels": [list(s) for s in self.shapes],
            "images": {s.name: s.path for s in self.images},
            "bands": _bands(info.band_names, info.wavelengths),
            "channels": info.channels,
            "pixel_size_um": info.pixel_size_um,
            "writer": f"tilex {__version__}",
        }
        if found is not None:
            manifest["found"] = found.to_dict(tuple(info.band_names))
        manifest["resume"] = fingerprint(info.provenance)
        return manifest

    def write_manifest(
        self, state: str, results: RunResults | None = None, found: Found | None = None
    ) -> None:
        """``tilex.json`` with ``state``, written atomically."""
        with os_errors_name(self.path / MANIFEST):
            write_json_atomic(self.path / MANIFEST, self.manifest(state, results, found))

    def finish(self, results: RunResults | None = None) -> None:
        """Group metadata, then ``"state": "complete"`` (with ``results``), then the journal is dropped."""
        windows, found = self.summaries()
        with os_errors_name(self.path):
            self.write_group_metadata(windows)
            self.write_manifest("complete", results, found)
        self.journal.clear()
        shutil.rmtree(self.path / SCRATCH, ignore_errors=True)  # a killed streaming run's spills


def _bands(names: Sequence[str], wavelengths: Sequence[float | None]) -> list[dict[str, Any]]:
    return [
        {"name": n, "wavelength_nm": w, "label_value": i + 1, "colour": hex_colour(c)}
        for i, (n, w, c) in enumerate(
            zip(names, wavelengths, band_colours(len(names)), strict=True)
        )
    ]
