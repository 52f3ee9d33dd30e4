"""Where the engine's results go: the sink contracts and an in-memory sink.

The engine hands each finished tile core to a sink as a :class:`TileResult`.
A sink that writes whole units (OME-Zarr shards) declares ``write_unit``; the
engine then delivers the tiles of one unit contiguously, units in Morton
(Z) order, so units complete one after another and the pyramid above them can
be reduced as they do (see :mod:`tilex.grid`).

Two contracts, both explicit :class:`typing.Protocol` classes:

:class:`Sink`
    ``open(info)``, ``write(result)`` per tile, then ``close(results)`` or
    ``abort()``. What a run learns on the way (statistics, timings, where it
    ran) reaches the sink as values: the statistics inside the
    :class:`RunInfo` given to ``open``, the rest as :class:`RunResults` given
    to ``close``. Nothing is shared and mutated.
:class:`ResumableSink`
    A sink that owns an output on disk: ``prepare(info)`` lays it out (or
    checks the one to resume) before the statistics pass and returns what an
    interrupted run left (:class:`Prepared`); ``skip(tile)`` says which tiles
    the interrupted run already wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tilex.grid import Region, Tile

__all__ = [
    "MemorySink",
    "Prepared",
    "Record",
    "ResumableSink",
    "RunInfo",
    "RunResults",
    "Sink",
    "TileResult",
]


@dataclass(frozen=True)
class TileResult:
    """The fused result of one tile core."""

    region: Region
    winner: np.ndarray  # uint8 [h, w]
    score: np.ndarray  # float32 [h, w]
    collage: np.ndarray  # float32 [C, h, w]
    overlay: np.ndarray  # uint8 [3, h, w]
    normalised: np.ndarray | None = None  # float32 [N, h, w]
    evidence: np.ndarray | None = None  # float32 [h, w]: the score before the threshold
    visible: np.ndarray | None = None  # uint8 [3, h, w]: the visible image, for people


class Record(dict):
    """A read-only, picklable, JSON-ready mapping (nested dicts read-only too).

    Examples
    --------
    >>> r = Record({"parameters": {"tile": 512}})
    >>> r["parameters"]["tile"] = 256
    Traceback (most recent call last):
    ...
    TypeError: a run's record is read-only: make a new one
    """

    def __init__(self, mapping: Mapping[str, Any] | None = None) -> None:
        super().__init__(
            {k: Record(v) if isinstance(v, Mapping) else v for k, v in (mapping or {}).items()}
        )

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a run's record is read-only: make a new one")

    __setitem__ = __delitem__ = setdefault = update = pop = popitem = clear = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple:
        return Record, (dict(self),)

    def plain(self) -> dict[str, Any]:
        """A mutable deep copy as ordinary dicts."""
        return {k: v.plain() if isinstance(v, Record) else v for k, v in self.items()}


def _frozen(mapping: Mapping[str, Any] | None) -> Record:
    return mapping if isinstance(mapping, Record) else Record(mapping)


@dataclass(frozen=True)
class RunInfo:
    """What a sink needs to lay out its output before the first tile.

    ``provenance`` is the read-only record of the run written to the output
    (inputs, bands, parameters, weights, version); ``stats`` the whole-scan
    statistics once measured (``None`` before, and for ``norm="pixel"``).
    Both are set when the value is made: a later stage makes a new value with
    :func:`dataclasses.replace`, never changes this one.
    """

    shape: tuple[int, int]
    band_names: tuple[str, ...]
    wavelengths: tuple[float | None, ...]
    channels: int
    pixel_size_um: float | None = None
    keep_normalised: bool = False
    keep_evidence: bool = False
    keep_visible: bool = False
    provenance: Record = field(default_factory=Record)
    stats: Record | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "provenance", _frozen(self.provenance))
        if self.stats is not None:
            object.__setattr__(self, "stats", _frozen(self.stats))

    @property
    def n_bands(self) -> int:
        return len(self.band_names)

    def record(self) -> dict[str, Any]:
        """The provenance with the statistics, as plain dicts to write out."""
        record = self.provenance.plain()
        if self.stats is not None:
            record["stats"] = self.stats.plain()
        return record


@dataclass(frozen=True)
class RunResults:
    """What a finished run reports to its sink at :meth:`Sink.close`."""

    timings: Mapping[str, float] = field(default_factory=dict)
    cluster: Record | None = None

    def __post_init__(self) -> None:
        rounded = {k: round(float(v), 3) for k, v in self.timings.items()}
        object.__setattr__(self, "timings", _frozen(rounded))
        if self.cluster is not None:
            object.__setattr__(self, "cluster", _frozen(self.cluster))


@dataclass(frozen=True)
class Prepared:
    """What :meth:`ResumableSink.prepare` found: the saved statistics, and whether all is done."""

    stats: Record | None = None
    complete: bool = False


@runtime_checkable
class Sink(Protocol):
    """Receives tile results from the engine, in the engine's order."""

    write_unit: int | None

    def open(self, info: RunInfo) -> None: ...

    def write(self, result: TileResult) -> None: ...

    def close(self, results: RunResults = ...) -> None: ...

    def abort(self) -> None: ...


@runtime_checkable
class ResumableSink(Sink, Protocol):
    """A sink owning an output on disk that an interrupted run can continue."""

    def prepare(self, info: RunInfo) -> Prepared: ...

    def skip(self, tile: Tile) -> bool: ...


class MemorySink:
    """Collects a whole result in memory: for tests and small jobs.

    ``written`` counts how many times each pixel was delivered (a tiling
    delivers each exactly once).
    """

    write_unit: int | None = None

    def __init__(self) -> None:
        self.info: RunInfo | None = None
        self.results: RunResults | None = None
        self.closed = False

    def open(self, info: RunInfo) -> None:
        h, w = info.shape
        self.info = info
        self.winner = np.zeros((h, w), np.uint8)
        self.score = np.zeros((h, w), np.float32)
        self.collage = np.zeros((info.channels, h, w), np.float32)
        self.overlay = np.zeros((3, h, w), np.uint8)
        self.normalised = (
            np.zeros((info.n_bands, h, w), np.float32) if info.keep_normalised else None
        )
        self.evidence = np.zeros((h, w), np.float32) if info.keep_evidence else None
        self.visible = np.zeros((3, h, w), np.uint8) if info.keep_visible else None
        self.written = np.zeros((h, w), np.uint16)

    def write(self, result: TileResult) -> None:
        y0, y1, x0, x1 = result.region
        self.winner[y0:y1, x0:x1] = result.winner
        self.score[y0:y1, x0:x1] = result.score
        self.collage[:, y0:y1, x0:x1] = result.collage
        self.overlay[:, y0:y1, x0:x1] = result.overlay
        if self.normalised is not None and result.normalised is not None:
            self.normalised[:, y0:y1, x0:x1] = result.normalised
        if self.evidence is not None and result.evidence is not None:
            self.evidence[y0:y1, x0:x1] = result.evidence
        if self.visible is not None and result.visible is not None:
            self.visible[:, y0:y1, x0:x1] = result.visible
        self.written[y0:y1, x0:x1] += 1

    def close(self, results: RunResults = RunResults()) -> None:  # noqa: B008 (frozen)
        self.results = results
        self.closed = True

    def abort(self) -> None:
        self.closed = False
