"""Streaming a pyramid: level-0 tiles in, whole units of every level written as they complete.

:class:`PyramidStream` is the in-process writer behind
:class:`~tilex.omezarr.OmeZarrSink`. It assembles one ``unit x unit`` region
of level 0 in memory (:class:`~tilex.omezarr.units.UnitBuffer`) from the
tiles that cover it and, once every pixel has arrived, hands it to a pool of
writer threads (:meth:`~tilex.omezarr.OutputLayout.commit_unit`: one aligned
assignment per image, synced, journaled). The unit is also reduced 2x for
its parent on the level above, which completes after its (up to four)
children, and so on up the pyramid.

Memory: a parent is never held in memory while its children are computed.
Each child's reduction is *spilled* to ``OUT/.pyramid`` (:data:`~tilex.omezarr.format.SCRATCH`)
and the parent is assembled only when its last child arrives, once the writes
in flight are done. So memory holds one level-0 unit being filled and the
writes in flight (at most one per writer thread), or one parent being
assembled, however many levels the scan has (before 0.1.0's release, a
recursion up the levels kept every unit of a cascade alive until its top:
peak RSS grew by a unit's buffers per level). Any tile order works, but only
one unit per level is in flight when the units arrive in Morton order, as the
engine delivers them to a sink that sets ``write_unit``.

Resume: the units the journal holds (``restored``) are neither received nor
written again. A parent whose children were all written by the interrupted
run is finished at start (:meth:`PyramidStream.complete_orphans`); a parent
with some written children reads only those back and reduces them. A fresh
run never reads the arrays.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tilex.device import release_free_memory
from tilex.errors import OutputError
from tilex.omezarr.format import SCRATCH, tile_field
from tilex.omezarr.journal import os_errors_name
from tilex.omezarr.layout import OutputLayout, UnitData
from tilex.omezarr.units import Index, UnitBuffer
from tilex.sink import TileResult

__all__ = ["PyramidStream"]


class PyramidStream:
    """Assembles, reduces and writes the units of every level of one output.

    Parameters
    ----------
    layout : OutputLayout
        With its arrays created or opened.
    restored : sequence of sets
        Per level, the units an interrupted run already wrote (empty sets for
        a fresh run).
    workers : int
        Writer threads; each unit is written by exactly one.
    """

    def __init__(self, layout: OutputLayout, restored: Sequence[set[Index]], workers: int) -> None:
        self.layout = layout
        self.grid = layout.geometry
        self.workers = max(1, workers)
        self.scratch = layout.path / SCRATCH
        self._restored = [set(r) for r in restored]
        self._done = [set(r) for r in restored]
        self._units: list[dict[Index, UnitBuffer]] = [{} for _ in layout.shapes]
        # children reduced and spilled to disk, per parent, until the parent is whole
        self._spilled: list[dict[Index, set[Index]]] = [{} for _ in layout.shapes]
        shutil.rmtree(self.scratch, ignore_errors=True)  # a killed run's spills: recomputed
        self.scratch.mkdir(parents=True)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tilex-zarr")
        self._pending: list[Future] = []

    def held(self) -> list[int]:
        """How many units of each level are being filled in memory now."""
        return [len(units) for units in self._units]

    # -- in -------------------------------------------------------------------

    def write(self, result: TileResult) -> None:
        """Copy one tile core into its units' buffers; write the units it completes."""
        if not self.grid.contains(0, result.region):
            raise OutputError(
                f"tile region {result.region} is outside the output shape {self.grid.shapes[0]}"
            )
        fields = {s.name: tile_field(result, s) for s in self.layout.images}
        for index in self.grid.covering(0, result.region):
            unit = self._unit(0, index)
            unit.place(result.region, fields)
            if unit.complete:
                del unit  # _complete holds the only reference: it drops each unit once queued
                self._complete(self._units[0].pop(index))
        self._drain(self.workers)  # at most one finished unit queued per writer thread

    def complete_orphans(self) -> None:
        """Resuming: finish the parents whose children were all written, bottom up."""
        for level in range(1, len(self.layout.shapes)):
            for index in self.grid.units(level):
                if index in self._done[level] or index in self._spilled[level]:
                    continue
                if all(c in self._restored[level - 1] for c in self.grid.children(level, index)):
                    self._complete(self._assemble(level, index))
        # written and freed before the first tile: the orphans' read-backs and buffers would
        # otherwise overlap the first level-0 unit filling (a peak only a resume had)
        self._drain(0)
        release_free_memory()

    # -- out ------------------------------------------------------------------

    def finish(self) -> None:
        """Wait for every write; raise :class:`OutputError` if some unit never got all its pixels."""
        missing = [(k, i) for k, units in enumerate(self._units) for i in units]
        missing += [(k, i) for k, parents in enumerate(self._spilled) for i in parents]
        if missing or not self._done[-1]:
            where = missing[0] if missing else (0, (0, 0))
            raise OutputError(
                f"output {self.layout.path} is incomplete: {len(missing) or 'all'} write unit(s) never "
                f"received all their pixels (first: level {where[0]} unit {where[1]})"
            )
        self._drain(0)
        self._pool.shutdown()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def cancel(self) -> None:
        """Drop the buffers and the queued writes; wait for the ones running."""
        for fut in self._pending:
            fut.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending = []
        self._units = [{} for _ in self._units]

    # -- units ----------------------------------------------------------------

    def _unit(self, level: int, index: Index) -> UnitBuffer:
        unit = self._units[level].get(index)
        if unit is not None:
            return unit
        if index in self._done[level]:
            raise OutputError(
                f"level {level} write unit {index} was already written: tiles must not repeat "
                "once a unit is complete (shards are written once)"
            )
        unit = self._units[level][index] = self.layout.new_unit(level, index)
        return unit

    def _complete(self, unit: UnitBuffer | None) -> None:
        """Write a finished unit; spill its reduction for its parent, and finish that when whole.

        A loop up the levels, not a recursion: once a unit is queued for writing
        nothing here refers to it, so its buffers are freed as soon as it is
        written, not when the whole cascade of parents it completed is done; and
        a parent is assembled only once the writes in flight are done. So at
        most a level-0 unit being filled and ``workers`` units being written are
        in memory, however many levels the scan has. The caller must hold no
        reference of its own.
        """
        while unit is not None:
            ready = self._queue(unit)
            unit = None  # the write queue holds the only reference now
            if ready is not None:
                # the writes in flight first: a parent is assembled with no other unit in
                # memory, so a cascade up the levels never holds more than a level-0 unit does
                self._drain(0)
                unit = self._assemble(*ready)

    def _queue(self, unit: UnitBuffer) -> tuple[int, Index] | None:
        """Queue one finished unit's write and spill its reduction; its parent if now whole."""
        self._done[unit.level].add(unit.index)
        level, parent = unit.level + 1, self.grid.parent(unit.index)
        # a restored parent: the interrupted run wrote it after this unit, before this unit's marker
        feeds = level < len(self.layout.shapes) and parent not in self._restored[level]
        if feeds:
            self._spill(level, parent, unit.index, self.layout.reduce(unit.data))
        self._drain(self.workers - 1)  # bounded in-flight writes, also when levels cascade
        release_free_memory()  # what the finished units freed goes back to the OS
        self._pending.append(
            self._pool.submit(self.layout.commit_unit, unit.level, unit.index, unit.data)
        )
        return (level, parent) if feeds and self._ready(level, parent) else None

    def _spill_path(self, level: int, parent: Index, child: Index, name: str) -> Path:
        return (
            self.scratch / f"L{level}-{parent[0]}-{parent[1]}" / f"{child[0]}-{child[1]}-{name}.npy"
        )

    def _spill(self, level: int, parent: Index, child: Index, reduced: UnitData) -> None:
        for name, data in reduced.items():
            path = self._spill_path(level, parent, child, name)
            with os_errors_name(path):
                path.parent.mkdir(exist_ok=True)
                np.save(path, data, allow_pickle=False)
        self._spilled[level].setdefault(parent, set()).add(child)

    def _ready(self, level: int, index: Index) -> bool:
        """Whether every child of a parent is spilled, or was written by the interrupted run."""
        spilled = self._spilled[level].get(index, set())
        restored = self._restored[level - 1]
        return all(c in spilled or c in restored for c in self.grid.children(level, index))

    def _assemble(self, level: int, index: Index) -> UnitBuffer:
        """A whole parent from its spilled children (and, on resume, written ones read back)."""
        spilled = self._spilled[level].pop(index, set())

        def load(child: Index) -> UnitData | None:  # one child at a time: memory stays bounded
            if child not in spilled:
                return None
            return {
                s.name: np.load(self._spill_path(level, index, child, s.name))
                for s in self.layout.images
            }

        unit = self.layout.assemble_parent(level, index, load)
        shutil.rmtree(self.scratch / f"L{level}-{index[0]}-{index[1]}", ignore_errors=True)
        return unit

    def _drain(self, keep: int) -> None:
        """Wait for the oldest writes until at most ``keep`` are in flight; raise their errors."""
        while len(self._pending) > keep:
            self._pending.pop(0).result()
        for fut in [f for f in self._pending if f.done()]:
            self._pending.remove(fut)
            fut.result()
