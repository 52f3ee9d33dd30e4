"""The run plan: every option of a run, parsed, validated and defaulted in one place.

A :class:`RunPlan` is a frozen value built once, before any work, from the
command line (:meth:`RunPlan.from_options`) or from Python keywords
(:func:`tilex.run`'s ``**overrides``). It groups the options by the stage they
steer:

========== ================= ============================================
field      value             what it decides
========== ================= ============================================
device     :class:`DeviceSpec`  where the encoder runs, in what precision
tiling     :class:`TilingSpec`  tile size, reader threads, queue depth,
                                exact halo or feathered overlap
fusion     :class:`FusionSpec`  normalisation, threshold, kept maps
statistics :class:`~tilex.stats.StatsSpec`  percentiles and sample of the
                                whole-scan statistics (``--norm band``)
output     :class:`OutputSpec`  OME-Zarr version, write unit, chunk,
                                overwrite or resume
cluster    :class:`ClusterSpec` or ``None``  a dask.distributed cluster
calibration :class:`~tilex.calibration.CalibrationSpec`  whether each band is
                                compared with its prediction from the
                                visible image (``--calibrate``; registered by default)
========== ================= ============================================

plus ``weights`` and ``stats_from`` (paths). Each option is checked by one
``parse_*`` helper; a bad value raises :class:`~tilex.errors.PlanError` (a
:class:`~tilex.errors.UsageError`: one line and exit status 2 on the command
line) naming the option, the value and what is expected. Combinations that
cannot run (``--resume`` with ``--overwrite``, feathering on a cluster, an
overlap wider than half the tile) are refused when the plan is built.

What depends on the machine or the encoder is settled later, once:
:meth:`RunPlan.resolve` fills in the tile for the device and the reader count,
and the halo rule (a tile at least twice the encoder's radius) is checked by
:meth:`TilingSpec.check_halo` when the encoder is known.

Examples
--------
>>> plan = RunPlan.from_options(norm="pixel", threshold=0.6, tile=384)
>>> plan.fusion.norm, plan.tiling.tile, plan.needs_statistics
('pixel', 384, False)
>>> RunPlan.from_options(threshold=float("nan"))
Traceback (most recent call last):
...
tilex.errors.PlanError: --threshold must be a number in [0, 1], got nan
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from tilex.calibration import CalibrationSpec
from tilex.device import PRECISIONS, parse_device
from tilex.errors import PlanError
from tilex.grid import DEFAULT_CHUNK, DEFAULT_TILE, DEFAULT_UNIT
from tilex.stats import StatsSpec

__all__ = [
    "BLEND_MODES",
    "NORMS",
    "OPTIONS",
    "ClusterSpec",
    "DeviceSpec",
    "FusionSpec",
    "OutputSpec",
    "RunPlan",
    "TilingSpec",
    "parse_threshold",
    "parse_tile",
]

NORMS = ("noise", "band", "pixel")
"""``noise``: over each band's noise floor (:func:`tilex.stats.noise_floor`), the default;
``band``: ArtExtract's per-band percentile stretch; ``pixel``: across the bands at each pixel."""
BLEND_MODES = ("exact", "feather")
"""``exact``: halo = encoder radius, the whole image's result (up to float32 rounding); ``feather``: cross-faded overlaps."""


# --------------------------------------------------------------------------- parse helpers


def _number(value: Any, option: str, expected: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PlanError(f"{option} must be {expected}, got {value!r}") from None
    if not math.isfinite(number):
        raise PlanError(f"{option} must be {expected}, got {number}")
    return number


def _integer(value: Any, option: str, expected: str) -> int:
    if isinstance(value, bool):
        raise PlanError(f"{option} must be {expected}, got {value!r}")
    number = _number(value, option, expected)
    if number != int(number):
        raise PlanError(f"{option} must be {expected}, got {value!r}")
    return int(number)


def parse_threshold(value: Any) -> float:
    """A finite threshold in [0, 1].

    Examples
    --------
    >>> parse_threshold("0.25")
    0.25
    """
    threshold = _number(value, "--threshold", "a number in [0, 1]")
    if not 0.0 <= threshold <= 1.0:
        raise PlanError(f"--threshold must be a number in [0, 1], got {threshold:g}")
    return threshold


def parse_tile(value: Any) -> int | None:
    """A tile core side in px (``None``: the device's default).

    Any size of at least 16 px is accepted here; :meth:`TilingSpec.check_halo`
    later asks for at least twice the encoder's radius.

    Examples
    --------
    >>> parse_tile(384), parse_tile(None)
    (384, None)
    """
    if value is None:
        return None
    tile = _integer(value, "--tile", "a whole number of px >= 16")
    if tile < 16:
        raise PlanError(f"--tile must be a whole number of px >= 16, got {tile}")
    return tile


def _choice(value: Any, option: str, choices: tuple[str, ...]) -> str:
    text = str(value)
    if text not in choices:
        raise PlanError(f"{option} must be one of {', '.join(choices)}, got {value!r}")
    return text


def _side(value: Any, option: str) -> int:
    side = _integer(value, option, "a multiple of 16 px, at least 16")
    if side < 16 or side % 16:
        raise PlanError(f"{option} must be a multiple of 16 px, at least 16, got {side}")
    return side


WEIGHT_NAMES = ("trained", "designed")
"""Encoder weights given by name rather than by file: the shipped default and the designed filter."""


def _path(value: Any) -> Path | None:
    return None if value is None or value == "" else Path(value)


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class DeviceSpec:
    """Where the encoder runs and in what precision (resolved by :func:`tilex.device.resolve_device`).

    Examples
    --------
    >>> DeviceSpec("cpu", "bf16")
    DeviceSpec(device='cpu', precision='bf16')
    """

    device: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", parse_device(self.device))
        object.__setattr__(self, "precision", _choice(self.precision, "--precision", PRECISIONS))


@dataclass(frozen=True)
class TilingSpec:
    """How the scan is cut into tiles and how tiles move through the engine.

    Parameters
    ----------
    tile
        Core side in px; ``None`` for the device's default
        (:data:`DEFAULT_TILE`). Any size from twice the encoder's radius
        works: the last tile of each write unit is clipped at the unit's edge.
    readers
        Reader threads decoding tiles ahead (``None``: 2 to 8, from the CPUs).
    depth
        Tiles waiting in each queue between stages.
    blend, overlap
        ``"exact"`` (each tile read with the encoder's radius as halo: one
        whole-image pass's result, up to float32 rounding) or ``"feather"`` (tiles overlap by
        ``overlap`` px, at most half the tile, and are cross-faded; see
        :mod:`tilex.engine.feather`).
    """

    tile: int | None = None
    readers: int | None = None
    depth: int = 4
    blend: str = "exact"
    overlap: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tile", parse_tile(self.tile))
        if self.readers is not None:
            readers = _integer(self.readers, "readers", "a number of threads >= 1")
            if readers < 1:
                raise PlanError(f"readers must be a number of threads >= 1, got {readers}")
            object.__setattr__(self, "readers", readers)
        depth = _integer(self.depth, "depth", "a queue depth >= 1")
        if depth < 1:
            raise PlanError(f"depth must be a queue depth >= 1, got {depth}")
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "blend", _choice(self.blend, "--blend", BLEND_MODES))
        if self.blend == "exact":
            if self.overlap is not None:
                raise PlanError(
                    "--overlap is only used with --blend feather; the exact mode's halo "
                    "is the encoder's radius"
                )
            return
        if self.overlap is None:
            raise PlanError("--blend feather needs --overlap PX")
        overlap = _integer(self.overlap, "--overlap", "a whole number of px >= 1")
        if overlap < 1:
            raise PlanError(f"--overlap must be a whole number of px >= 1, got {overlap}")
        object.__setattr__(self, "overlap", overlap)
        if self.tile is not None:
            self.check_overlap(self.tile)

    @property
    def feathered(self) -> bool:
        return self.blend == "feather"

    def check_overlap(self, tile: int) -> None:
        """Refuse a feather overlap wider than half of ``tile`` (the ramps would overlap)."""
        if self.feathered and 2 * int(self.overlap or 0) > tile:
            raise PlanError(
                f"--overlap {self.overlap} px is more than half the tile ({tile} px); "
                f"use --overlap <= {tile // 2} or a larger --tile"
            )

    def check_halo(self, tile: int, halo: int) -> None:
        """Refuse an exact-mode tile smaller than twice the encoder's radius ``halo``."""
        if not self.feathered and tile < 2 * halo:
            raise PlanError(
                f"--tile {tile} px is smaller than twice the encoder's halo ({halo} px): "
                f"use --tile {max(16, 2 * halo)} or more"
            )

    def resolve(self, cuda: bool) -> TilingSpec:
        """This spec with the tile and reader count filled in for the device."""
        tile = self.tile or DEFAULT_TILE["cuda" if cuda else "cpu"]
        readers = self.readers or max(2, min(8, os.cpu_count() or 2))
        resolved = replace(self, tile=tile, readers=readers)
        resolved.check_overlap(tile)
        return resolved


@dataclass(frozen=True)
class FusionSpec:
    """How band dissimilarities are fused into winners (see :mod:`tilex.kernels`).

    Examples
    --------
    >>> FusionSpec(norm="pixel", threshold=0.7)
    FusionSpec(norm='pixel', threshold=0.7, keep_normalised=False)
    """

    norm: str = "noise"
    threshold: float = 0.5
    keep_normalised: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", _choice(self.norm, "--norm", NORMS))
        object.__setattr__(self, "threshold", parse_threshold(self.threshold))
        object.__setattr__(self, "keep_normalised", bool(self.keep_normalised))

    @property
    def needs_statistics(self) -> bool:
        """Whether fusing needs whole-scan statistics (``norm`` ``noise`` or ``band``)."""
        return self.norm != "pixel"

    @property
    def kernel_norm(self) -> str:
        """The kernels' mode: ``noise`` is their ``band`` mode with ``lo = 0, hi = 2 * floor``."""
        return "pixel" if self.norm == "pixel" else "band"


@dataclass(frozen=True)
class OutputSpec:
    """The OME-Zarr output's layout, and what to do with an existing one."""

    ome_zarr_version: Literal["0.4", "0.5"] = "0.5"
    unit: int = DEFAULT_UNIT
    chunk: int = DEFAULT_CHUNK
    overwrite: bool = False
    resume: bool = False

    def __post_init__(self) -> None:
        version = _choice(self.ome_zarr_version, "--ome-zarr-version", ("0.5", "0.4"))
        object.__setattr__(self, "ome_zarr_version", version)
        unit, chunk = _side(self.unit, "--unit"), _side(self.chunk, "--chunk")
        if unit % chunk:
            raise PlanError(f"--unit {unit} px must be a multiple of --chunk {chunk} px")
        object.__setattr__(self, "unit", unit)
        object.__setattr__(self, "chunk", chunk)
        if self.resume and self.overwrite:
            raise PlanError(
                "give --resume (continue OUT) or --overwrite (start OUT again), not both"
            )


@dataclass(frozen=True)
class ClusterSpec:
    """Where to run on dask.distributed: a scheduler's address, or local workers (``N`` or ``"gpus"``).

    Examples
    --------
    >>> ClusterSpec(workers="2").workers
    2
    """

    scheduler: str | None = None
    workers: int | str | None = None

    def __post_init__(self) -> None:
        if (self.scheduler is None) == (self.workers is None):
            raise PlanError("give --scheduler ADDRESS or --workers N, not both or neither")
        if self.workers is not None and self.workers != "gpus":
            workers = _integer(self.workers, "--workers", "a number of workers >= 1 or 'gpus'")
            if workers < 1:
                raise PlanError(
                    f"--workers must be a number of workers >= 1 or 'gpus', got {workers}"
                )
            object.__setattr__(self, "workers", workers)


# --------------------------------------------------------------------------- the plan

OPTIONS: dict[str, tuple[str, str]] = {
    "device": ("device", "device"),
    "precision": ("device", "precision"),
    "tile": ("tiling", "tile"),
    "readers": ("tiling", "readers"),
    "depth": ("tiling", "depth"),
    "blend": ("tiling", "blend"),
    "overlap": ("tiling", "overlap"),
    "norm": ("fusion", "norm"),
    "threshold": ("fusion", "threshold"),
    "keep_normalised": ("fusion", "keep_normalised"),
    "clip": ("statistics", "clip"),
    "stats_sample": ("statistics", "sample"),
    "ome_zarr_version": ("output", "ome_zarr_version"),
    "unit": ("output", "unit"),
    "chunk": ("output", "chunk"),
    "overwrite": ("output", "overwrite"),
    "resume": ("output", "resume"),
    "calibrate": ("calibration", "mode"),
    "visible_encoding": ("calibration", "visible"),
}
"""Flat option name (as on the command line, ``-`` as ``_``) -> (plan field, spec field)."""

_ALIASES = {"keep_dissimilarity": "keep_normalised"}  # the command line's name for it


@dataclass(frozen=True)
class RunPlan:
    """Every option of a run, validated; see the module docstring.

    Build it with :meth:`from_options` (flat option names) or from the specs;
    change it with :meth:`with_options`. :meth:`to_dict` is its record in
    the output's provenance.
    """

    device: DeviceSpec = field(default_factory=DeviceSpec)
    tiling: TilingSpec = field(default_factory=TilingSpec)
    fusion: FusionSpec = field(default_factory=FusionSpec)
    statistics: StatsSpec = field(default_factory=StatsSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    cluster: ClusterSpec | None = None
    weights: Path | None = None
    stats_from: Path | None = None
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", _path(self.weights))
        object.__setattr__(self, "stats_from", _path(self.stats_from))
        if self.tiling.feathered and (self.output.resume or self.cluster is not None):
            raise PlanError(
                "--blend feather runs in one process only, without --resume or a cluster"
            )
        if self.stats_from is not None and not self.needs_statistics:
            raise PlanError("--stats-from reuses band statistics; --norm pixel uses none")

    @property
    def needs_statistics(self) -> bool:
        """Whether the run measures (or reuses) whole-scan statistics."""
        return self.fusion.needs_statistics

    @property
    def distributed(self) -> bool:
        return self.cluster is not None

    @classmethod
    def from_options(cls, **options: Any) -> RunPlan:
        """A plan from flat option names (those of ``tilex run``; ``None`` means the default).

        Names: the keys of :data:`OPTIONS`, plus ``weights``, ``stats_from``,
        ``scheduler`` and ``workers`` (and ``keep_dissimilarity`` for
        ``keep_normalised``).
        """
        return cls().with_options(**options)

    def with_options(self, **options: Any) -> RunPlan:
        """This plan with some options changed (flat names, see :meth:`from_options`)."""
        changes: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for name, value in options.items():
            name = _ALIASES.get(name, name)
            if name in ("weights", "stats_from"):
                top[name] = value
            elif name in ("scheduler", "workers"):
                top.setdefault("cluster", {})[name] = value
            elif name in OPTIONS:
                part, key = OPTIONS[name]
                if value is None and name not in ("tile", "readers", "overlap", "stats_sample"):
                    continue  # None: keep the default
                changes.setdefault(part, {})[key] = value
            else:
                raise TypeError(f"unknown run option {name!r}")
        specs = {part: replace(getattr(self, part), **values) for part, values in changes.items()}
        if "cluster" in top:
            wanted = {k: v for k, v in top.pop("cluster").items() if v is not None}
            specs["cluster"] = ClusterSpec(**wanted) if wanted else None
        return replace(self, **specs, **top)

    def resolve(self, cuda: bool) -> RunPlan:
        """This plan with the device-dependent defaults filled in (tile, reader threads)."""
        return replace(self, tiling=self.tiling.resolve(cuda))

    def layout(self) -> Any:
        """The output's :class:`tilex.omezarr.LayoutSpec`."""
        from tilex.omezarr import LayoutSpec

        out = self.output
        return LayoutSpec(out.ome_zarr_version, out.unit, out.chunk)

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain JSON values, spec by spec (paths as text)."""

        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            if hasattr(value, "__dataclass_fields__"):
                return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
            return value

        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    def parameters(self, *, halo: int, device: str, stats_sample: float | None) -> dict[str, Any]:
        """The ``parameters`` section of ``tilex.json``: what sets the output's pixels.

        Takes the resolved facts a plan does not hold: the encoder's ``halo``,
        the resolved ``device`` and the statistics' sampled fraction. Feather
        options appear only when feathering, so exact outputs keep their
        record (and their resume fingerprint) whatever the defaults;
        likewise ``calibrate`` and ``visible_encoding`` only when calibrating.
        """
        parameters: dict[str, Any] = {
            "norm": self.fusion.norm,
            "threshold": self.fusion.threshold,
            "clip": list(self.statistics.clip),
            "stats_sample": stats_sample,
            "stats_from": str(self.stats_from) if self.stats_from else None,
            "tile": self.tiling.tile,
            "halo": halo,
            "precision": self.device.precision,
            "device": device,
            "keep_dissimilarity": self.fusion.keep_normalised,
            "ome_zarr_version": self.output.ome_zarr_version,
        }
        if self.tiling.feathered:
            parameters.update(blend="feather", overlap=self.tiling.overlap)
        if self.calibration.enabled:  # absent when off: existing outputs keep their fingerprint
            parameters.update(
                calibrate=self.calibration.mode, visible_encoding=self.calibration.visible
            )
        return parameters


def describe(plan: RunPlan) -> Mapping[str, Any]:
    """A short record of ``plan`` for logs (only what differs from the defaults)."""
    default = RunPlan().to_dict()
    return {k: v for k, v in plan.to_dict().items() if v != default.get(k)}
