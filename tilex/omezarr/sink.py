"""The OME-Zarr sinks: :class:`OmeZarrSink` owns an output folder for one run, start to end.

One lifecycle, an explicit state machine (:class:`SinkState`)::

    NEW --prepare--> PREPARED --open--> RUNNING --close--> COMPLETE
     |                  |                  |
     +------------------+------abort-------+--> FAILED

    NEW --prepare (resume of a complete output)--> COMPLETE

``prepare`` lays out a fresh folder (``tilex.json`` ``"statistics"``) or
checks the one to resume (layout and fingerprint, :mod:`tilex.resume`)
before the statistics pass; ``open`` writes ``"running"`` with the
statistics and creates (or, resuming, opens) the arrays; ``close`` finishes
the pyramid, the group metadata and ``"complete"``; ``abort`` marks the
output ``"failed"`` from PREPARED or RUNNING, so a failed statistics pass or
a failed ``open`` never leaves an output in an earlier state, and it can be
resumed. Every state change goes through one method, ``_enter``, that refuses
a transition not drawn above.

In process, tiles stream through :class:`~tilex.omezarr.stream.PyramidStream`.
On a cluster (``open(info, external=True)``) the workers of
:mod:`tilex.distributed` write the units themselves, level 0 through
:class:`UnitSink` and the levels above with
:meth:`~tilex.omezarr.OutputLayout.assemble_parent`; ``close`` then only
checks the journal holds every unit of every level before finishing.

Crash safety: every written unit is synced and journaled
(:mod:`tilex.omezarr.journal`). ``OmeZarrSink(..., resume=True)`` continues
an interrupted output: ``prepare`` returns the statistics it saved
(:class:`~tilex.sink.Prepared`), ``skip`` tells the engine which tiles lie in
level-0 units already written, and the stream rebuilds only the missing
units of the pyramid.
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
from pathlib import Path
from types import EllipsisType
from typing import Any

import zarr

from tilex.errors import OutputError, OutputExistsError
from tilex.grid import Tile
from tilex.omezarr.format import (
    MANIFEST,
    Compression,
    LayoutSpec,
    Version,
    read_manifest,
    tile_field,
)
from tilex.omezarr.journal import os_errors_name
from tilex.omezarr.layout import OutputLayout
from tilex.omezarr.stream import PyramidStream
from tilex.omezarr.units import Index
from tilex.resume import check_layout_matches, check_resumable
from tilex.sink import Prepared, Record, RunInfo, RunResults, TileResult

__all__ = ["OmeZarrSink", "SinkState", "UnitSink"]

log = logging.getLogger("tilex")


class SinkState(enum.StrEnum):
    """Where an :class:`OmeZarrSink` is in its lifecycle."""

    NEW = "new"
    PREPARED = "prepared"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


_TRANSITIONS = {
    SinkState.NEW: {SinkState.PREPARED, SinkState.COMPLETE, SinkState.FAILED},
    SinkState.PREPARED: {SinkState.RUNNING, SinkState.FAILED},
    SinkState.RUNNING: {SinkState.COMPLETE, SinkState.FAILED},
    SinkState.COMPLETE: set(),
    SinkState.FAILED: set(),
}


class OmeZarrSink:
    """Streams tile results into a tilex output folder of pyramidal OME-Zarr images.

    A :class:`tilex.sink.ResumableSink` with ``write_unit = layout.unit``:
    the engine completes ``unit x unit`` regions of level 0 one after another
    in Morton order; each completed unit is written with one aligned
    assignment per image and reduced into the next level, recursively.

    Parameters
    ----------
    path : path-like
        The output folder ``OUT``.
    layout : LayoutSpec, optional
        Version, unit, chunk and compression; or give them one by one
        (``version``, ``unit``, ``chunk``, ``compressor``), not both.
    overwrite : bool
        Replace an existing tilex output at ``path`` (a folder that is not a
        tilex output is never deleted).
    resume : bool
        Continue the interrupted run that wrote ``path``.
    workers : int
        Threads that write finished units (each unit is written by exactly one).

    Raises
    ------
    OutputExistsError
        ``path`` exists, is not empty, and ``overwrite`` is false.
    OutputError
        ``resume`` and ``path`` is not a tilex output; or a bad layout.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from tilex.sink import RunInfo, TileResult
    >>> out = tempfile.mkdtemp() + "/OUT"
    >>> sink = OmeZarrSink(out, unit=256, chunk=128)
    >>> sink.open(RunInfo(shape=(200, 300), band_names=("ir",), wavelengths=(1000.0,), channels=2))
    >>> sink.write(TileResult((0, 200, 0, 300), np.ones((200, 300), np.uint8),
    ...     np.ones((200, 300), np.float32), np.ones((2, 200, 300), np.float32),
    ...     np.full((3, 200, 300), 128, np.uint8)))
    >>> sink.close()
    >>> sink.state
    <SinkState.COMPLETE: 'complete'>
    >>> from tilex.omezarr import open_output
    >>> [a.shape for a in open_output(out)["collage"].levels]
    [(2, 200, 300), (2, 100, 150), (2, 50, 75)]
    """

    def __init__(
        self,
        path: str | os.PathLike,
        layout: LayoutSpec | None = None,
        *,
        overwrite: bool = False,
        resume: bool = False,
        workers: int = 2,
        version: Version | None = None,
        unit: int | None = None,
        chunk: int | None = None,
        compressor: Compression | None | EllipsisType = ...,
    ) -> None:
        given = {
            k: v
            for k, v in {"version": version, "unit": unit, "chunk": chunk}.items()
            if v is not None
        }
        if compressor is not ...:  # None is a choice: uncompressed chunks
            given["compressor"] = compressor
        if layout is not None and given:
            raise TypeError(f"give the layout or {', '.join(given)}, not both")
        self.spec = layout or LayoutSpec(**given)
        self.path = Path(path)
        self.write_unit: int | None = self.spec.unit
        self.overwrite, self.resume, self.workers = overwrite, resume, max(1, workers)
        self.state = SinkState.NEW
        self._layout: OutputLayout | None = None
        self._restored: list[set[Index]] = []
        self._stream: PyramidStream | None = None  # None on a cluster: the workers write
        if resume:
            read_manifest(self.path)
        else:
            self._check_target()

    def _enter(self, state: SinkState) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise OutputError(f"sink for {self.path} cannot go from {self.state} to {state}")
        log.debug("output %s: %s -> %s", self.path, self.state, state)
        self.state = state

    @property
    def layout(self) -> OutputLayout:
        """The output's :class:`OutputLayout` (after :meth:`prepare` or :meth:`open`)."""
        if self._layout is None:
            raise OutputError(f"sink for {self.path} is not prepared yet")
        return self._layout

    # -- before the statistics pass ---------------------------------------------

    def prepare(self, info: RunInfo) -> Prepared:
        """Lay out the folder before the statistics pass, or check the one to resume.

        A fresh output gets ``tilex.json`` with ``"state": "statistics"`` and
        the run's fingerprint. On resume the stored layout and fingerprint
        must match ``info`` (:class:`~tilex.errors.ResumeMismatchError`
        otherwise); returns the statistics the interrupted run saved, if it
        got that far, and whether it is complete already (nothing to do).
        """
        if self.state != SinkState.NEW:
            raise OutputError(f"sink for {self.path} was already prepared (state {self.state})")
        if info.n_bands > 255:
            raise OutputError(f"winner labels are uint8: at most 255 bands, got {info.n_bands}")
        layout = self._layout = OutputLayout(self.path, info, self.spec, store=self._store)
        if not self.resume:
            self._check_target()
            try:
                if self.path.exists():
                    shutil.rmtree(self.path)
                self.path.mkdir(parents=True)
                layout.write_manifest("statistics")
            except OSError as err:
                raise OutputError(
                    f"cannot write the output {self.path}: {err.strerror or err}"
                ) from err
            self._enter(SinkState.PREPARED)
            return Prepared()
        manifest = read_manifest(self.path)
        check_layout_matches(self.path, manifest, info, self.spec)
        check_resumable(self.path, manifest, info.provenance)
        saved = Record(manifest["stats"]) if manifest.get("stats") else None
        if (
            manifest.get("state") == "complete"
        ):  # killed between "complete" and dropping the journal
            layout.journal.clear()
            self._enter(SinkState.COMPLETE)
            return Prepared(saved, complete=True)
        self._restored = [layout.journal.completed(k) for k in range(len(layout.shapes))]
        self._enter(SinkState.PREPARED)
        return Prepared(saved)

    def skip(self, tile: Tile) -> bool:
        """Whether a tile lies in a level-0 unit the resumed run already wrote."""
        if not self._restored:
            return False
        u = self.spec.unit
        return (tile.core[0] // u, tile.core[2] // u) in self._restored[0]

    # -- the run ------------------------------------------------------------------

    def open(self, info: RunInfo, *, external: bool = False) -> None:
        """Write ``"running"`` (with ``info.stats``), lay out or open the arrays, start writing.

        Prepares first when :meth:`prepare` was not called. With
        ``external=True`` units are written by others (the workers of
        :mod:`tilex.distributed`) and :meth:`write` is refused.
        """
        if self.state == SinkState.NEW:
            self.prepare(info)
        if self.state == SinkState.COMPLETE:
            raise OutputError(f"output {self.path} is already complete: nothing to resume")
        if self.state != SinkState.PREPARED:
            raise OutputError(f"sink for {self.path} was already opened (state {self.state})")
        layout = self.layout
        try:
            layout.use(info)  # the statistics may have been measured since prepare()
            layout.write_manifest("running")
            with os_errors_name(self.path):
                if self.resume and layout.journal.has_arrays():
                    layout.open_arrays()
                    layout.remove_partial_files()
                else:
                    self._restored = [set() for _ in layout.shapes]
                    layout.create_arrays()
                if not external:
                    self._stream = PyramidStream(layout, self._restored, self.workers)
            self._enter(SinkState.RUNNING)
            if self._stream is not None and self.resume:
                self._stream.complete_orphans()
        except BaseException:
            self.abort()
            raise

    def write(self, result: TileResult) -> None:
        """Copy one tile core into its unit buffers; write units as they complete."""
        if self.state != SinkState.RUNNING:
            raise OutputError(f"sink for {self.path} is not open for writing (state {self.state})")
        if self._stream is None:
            raise OutputError(
                f"output {self.path} is written by the cluster's workers: write() is refused"
            )
        self._stream.write(result)

    def close(self, results: RunResults = RunResults()) -> None:  # noqa: B008 (frozen)
        """Finish the writes, then the group metadata, then ``"state": "complete"`` with ``results``.

        Raises
        ------
        OutputError
            Some pixels or units were never written (the output is marked failed).
        """
        if self.state != SinkState.RUNNING:
            raise OutputError(f"sink for {self.path} is not open for writing (state {self.state})")
        layout = self.layout
        try:
            if self._stream is not None:
                self._stream.finish()
            else:
                missing = layout.missing()
                if missing:
                    level, index = missing[0]
                    raise OutputError(
                        f"output {self.path} is incomplete: {len(missing)} write unit(s) were never "
                        f"written (first: level {level} unit {index})"
                    )
            layout.finish(results)
        except BaseException:
            self.abort()
            raise
        self._stream = None
        self._enter(SinkState.COMPLETE)

    def abort(self) -> None:
        """Stop writing and mark the output ``"failed"``; never raises for write errors.

        From PREPARED or RUNNING; does nothing once complete or failed.
        """
        if self.state in (SinkState.COMPLETE, SinkState.FAILED):
            return
        written = self.state != SinkState.NEW
        if self._stream is not None:
            self._stream.cancel()
            self._stream = None
        self._enter(SinkState.FAILED)
        if not written:
            return
        try:
            self.layout.write_manifest("failed")
        except OSError as err:  # e.g. the disk is full: the error being raised says so
            log.debug("could not mark %s failed: %s", self.path, err)

    # -- files ----------------------------------------------------------------

    def _check_target(self) -> None:
        p = self.path
        if not p.exists():
            return
        if not p.is_dir():
            raise OutputExistsError(f"output {p} exists and is not a folder")
        if not any(p.iterdir()):
            return
        if not self.overwrite:
            raise OutputExistsError(
                f"output {p} already exists: choose another folder, pass overwrite (--overwrite) "
                "or continue an interrupted run (--resume)"
            )
        if not (p / MANIFEST).is_file():
            raise OutputError(f"refusing to overwrite {p}: it is not empty and holds no {MANIFEST}")

    def _store(self, path: Path) -> Any:
        """The zarr store of one image root (tests override this to watch writes)."""
        return zarr.storage.LocalStore(path)


class UnitSink:
    """A :class:`tilex.sink.Sink` over one level-0 unit, for the workers of a cluster.

    Takes the results of the tiles of unit ``index`` (:meth:`write`), then
    writes and journals the unit once all its pixels arrived (:meth:`close`).
    Opening and aborting do nothing: the output's own sink, on the client,
    owns its lifecycle.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from tilex.sink import RunInfo, TileResult
    >>> info = RunInfo(shape=(100, 60), band_names=("ir",), wavelengths=(None,), channels=1)
    >>> out = OmeZarrSink(tempfile.mkdtemp() + "/OUT", unit=64, chunk=32)
    >>> out.open(info, external=True)
    >>> unit = UnitSink(out.layout, (1, 0))
    >>> unit.write(TileResult((64, 100, 0, 60), np.ones((36, 60), np.uint8),
    ...     np.ones((36, 60), np.float32), np.ones((1, 36, 60), np.float32),
    ...     np.zeros((3, 36, 60), np.uint8)))
    >>> unit.close()
    >>> out.layout.journal.has(0, (1, 0))
    True
    >>> out.abort()
    """

    def __init__(self, layout: OutputLayout, index: Index) -> None:
        self.layout, self.index = layout, tuple(index)
        self.write_unit: int | None = layout.spec.unit
        self.buffer = layout.new_unit(0, self.index)

    def open(self, info: RunInfo) -> None:
        pass

    def write(self, result: TileResult) -> None:
        """Place one tile core, which must lie inside this unit."""
        y0, y1, x0, x1 = result.region
        uy0, uy1, ux0, ux1 = self.buffer.region
        if not (uy0 <= y0 < y1 <= uy1 and ux0 <= x0 < x1 <= ux1):
            raise OutputError(
                f"tile region {result.region} is outside level 0 unit {self.index} "
                f"{self.buffer.region}"
            )
        self.buffer.place(
            result.region, {s.name: tile_field(result, s) for s in self.layout.images}
        )

    def close(self, results: RunResults = RunResults()) -> None:  # noqa: B008 (frozen)
        """Write and journal the unit, if every pixel arrived (else :class:`OutputError`)."""
        if not self.buffer.complete:
            raise OutputError(
                f"level 0 unit {self.index} received {self.buffer.covered} of "
                f"{self.buffer.area} pixels"
            )
        self.layout.commit_unit(0, self.index, self.buffer.data)

    def abort(self) -> None:
        pass
