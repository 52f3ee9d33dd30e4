"""The tilex output folder: a streaming, pyramidal OME-Zarr writer and its reader.

Layout of an output folder ``OUT/``:

``tilex.json``
    Provenance (``RunInfo.metadata``: inputs, bands, parameters, weights,
    statistics, version, timings), the layout written here (``"output"``) and
    ``"state"``: ``"running"`` from :meth:`OmeZarrSink.open`, ``"failed"``
    after :meth:`OmeZarrSink.abort`, ``"complete"`` written last by
    :meth:`OmeZarrSink.close`.  Written atomically (temp file, fsync,
    ``os.replace``).
``collage.ome.zarr``
    The winning band's features (float32, C channels) with the label image
    ``labels/winner`` (uint8, 0 = no band wins, i = band i; ``image-label``
    colours and properties name each band and its wavelength).
``score.ome.zarr``
    The winner's normalised dissimilarity (float32, 1 channel).
``overlay.ome.zarr``
    The visible image in grey with the scored pixels tinted blue (uint8 RGB).
``dissimilarity.ome.zarr``
    Only with ``RunInfo.keep_normalised``: every band's normalised
    dissimilarity (float32, N channels).

Format: OME-Zarr 0.5 (Zarr v3, sharded) by default; ``version="0.4"`` writes
Zarr v2 without shards for older tools.  Chunks are ``chunk x chunk`` (512)
on every level with a channel chunk of 1; shards (0.5) are ``unit x unit``
(4096).  Images have axes ``c, y, x`` and the label image ``y, x``.  Level
``k`` halves level ``k - 1`` (rounding up) until the longest side fits one
chunk; its transform is scale ``2**k`` and translation ``(2**k - 1) / 2``
(pixel centres, level-0 pixel units, times the pixel size in micrometres when
it is known).  See :mod:`tilex.pyramid`.

Streaming: the sink assembles one ``unit x unit`` region of each level in
memory and assigns it with one aligned ``array[...] = buffer``, so each shard
(0.5) or chunk (0.4) is written whole, once, by one writer, and never read
back.  When a unit of level ``k`` is complete it is reduced 2x into its
parent unit of level ``k + 1``, which completes after its (up to four)
children.  Any tile order works, but memory stays bounded (about two units
per level) only when units arrive in Morton order, as the engine delivers
them for a sink that sets ``write_unit``.

Group metadata (``multiscales``, ``omero``, ``image-label``) and the
``complete`` state are written last, at :meth:`OmeZarrSink.close`, so an
interrupted or aborted run never looks complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from tilex._version import __version__
from tilex.errors import OutputError, OutputExistsError
from tilex.pyramid import (
    level_shapes,
    level_transform,
    reduce_mean,
    reduce_mean_uint8,
    reduce_mode,
)
from tilex.sink import RunInfo, TileResult

__all__ = [
    "Compression",
    "ImageSpec",
    "OmeZarrSink",
    "Output",
    "OutputImage",
    "band_colours",
    "open_output",
    "write_json_atomic",
]

log = logging.getLogger("tilex")

Version = Literal["0.4", "0.5"]
MANIFEST = "tilex.json"
WINDOW_PERCENTILES = (0.5, 99.5)
"""Robust percentiles of each channel used as its ``omero`` display window."""

_PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (174, 199, 232),
    (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148),
    (247, 182, 210), (219, 219, 141), (158, 218, 229), (127, 127, 127), (255, 255, 255),
)  # fmt: skip


def band_colours(n: int) -> list[tuple[int, int, int]]:
    """One distinct RGB colour per band (band ``i`` is ``winner == i + 1``).

    Examples
    --------
    >>> band_colours(2)
    [(31, 119, 180), (255, 127, 14)]
    """
    return [_PALETTE[i % len(_PALETTE)] for i in range(n)]


def _hex(rgb: tuple[int, int, int]) -> str:
    return "{:02X}{:02X}{:02X}".format(*rgb)


@dataclass(frozen=True)
class Compression:
    """Blosc settings for every array of an output.

    Examples
    --------
    >>> Compression(cname="lz4", clevel=1)
    Compression(cname='lz4', clevel=1, shuffle=True)
    """

    cname: str = "zstd"
    clevel: int = 3
    shuffle: bool = True

    def __post_init__(self) -> None:
        if self.cname not in ("zstd", "lz4", "lz4hc", "blosclz", "zlib"):
            raise ValueError(f"unknown blosc compressor {self.cname!r}")
        if not 0 <= self.clevel <= 9:
            raise ValueError(f"clevel must be 0..9, got {self.clevel}")

    def codec(self, zarr_format: int) -> Any:
        """The zarr v3 codec or the numcodecs v2 compressor for these settings."""
        if zarr_format == 3:
            from zarr.codecs import BloscCodec

            return BloscCodec(
                cname=self.cname,
                clevel=self.clevel,
                shuffle="shuffle" if self.shuffle else "noshuffle",
            )
        from numcodecs import Blosc

        return Blosc(
            cname=self.cname,
            clevel=self.clevel,
            shuffle=Blosc.SHUFFLE if self.shuffle else Blosc.NOSHUFFLE,
        )


@dataclass(frozen=True)
class ImageSpec:
    """One image (or label image) of the output and how to fill and reduce it."""

    name: str  # "collage", "winner", ...
    path: str  # relative to OUT, e.g. "collage.ome.zarr/labels/winner"
    field: str  # the TileResult attribute that feeds it
    dtype: np.dtype
    channels: int | None  # None: a label image with axes (y, x)
    reduce: Callable[[np.ndarray], np.ndarray]
    method: str  # for the multiscales "type"/"metadata"
    channel_labels: tuple[str, ...] = ()
    channel_colours: tuple[str, ...] = ()

    @property
    def is_label(self) -> bool:
        return self.channels is None


def output_images(info: RunInfo) -> list[ImageSpec]:
    """The images an output holds for a run described by ``info``."""
    bands = tuple(
        name if w is None else f"{name} ({w:g} nm)"
        for name, w in zip(info.band_names, info.wavelengths, strict=True)
    )
    colours = tuple(_hex(c) for c in band_colours(info.n_bands))
    f32, u8 = np.dtype(np.float32), np.dtype(np.uint8)
    images = [
        ImageSpec(
            "collage", "collage.ome.zarr", "collage", f32, info.channels, reduce_mean, "mean",
            tuple(f"feature {c}" for c in range(info.channels)), ("FFFFFF",) * info.channels,
        ),
        ImageSpec("winner", "collage.ome.zarr/labels/winner", "winner", u8, None, reduce_mode, "mode"),
        ImageSpec("score", "score.ome.zarr", "score", f32, 1, reduce_mean, "mean", ("score",), ("FFFFFF",)),
        ImageSpec(
            "overlay", "overlay.ome.zarr", "overlay", u8, 3, reduce_mean_uint8, "mean",
            ("red", "green", "blue"), ("FF0000", "00FF00", "0000FF"),
        ),
    ]  # fmt: skip
    if info.keep_normalised:
        images.append(
            ImageSpec(
                "dissimilarity", "dissimilarity.ome.zarr", "normalised", f32, info.n_bands,
                reduce_mean, "mean", bands, colours,
            )
        )  # fmt: skip
    return images


# --------------------------------------------------------------------------- metadata


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically: temp file, fsync, ``os.replace``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.json"
    >>> write_json_atomic(p, {"state": "running"})
    >>> json.loads(p.read_text())
    {'state': 'running'}
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _axes(spec: ImageSpec, pixel_size_um: float | None) -> list[dict[str, str]]:
    space: dict[str, str] = {"type": "space"}
    if pixel_size_um is not None:
        space["unit"] = "micrometer"
    axes = [{"name": "y", **space}, {"name": "x", **space}]
    return axes if spec.is_label else [{"name": "c", "type": "channel"}, *axes]


def _multiscales(
    spec: ImageSpec, n_levels: int, pixel_size_um: float | None, version: Version
) -> dict:
    lead = [] if spec.is_label else [1.0]
    datasets = []
    for k in range(n_levels):
        scale, shift = level_transform(k, pixel_size_um or 1.0)
        datasets.append(
            {
                "path": str(k),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [*lead, scale, scale]},
                    {"type": "translation", "translation": [*[0.0] * len(lead), shift, shift]},
                ],
            }
        )
    ms: dict[str, Any] = {
        "name": spec.name,
        "axes": _axes(spec, pixel_size_um),
        "datasets": datasets,
        "type": spec.method,
        "metadata": {
            "method": f"tilex.pyramid.{spec.reduce.__name__}",
            "description": "2x2 reduction per level, sizes ceil(n/2), pixel-centre transforms",
            "version": __version__,
        },
    }
    if version == "0.4":
        ms = {"version": "0.4", **ms}
    return ms


def _omero(spec: ImageSpec, windows: list[dict[str, float]], version: Version) -> dict:
    channels = []
    for c, (label, colour, window) in enumerate(
        zip(spec.channel_labels, spec.channel_colours, windows, strict=True)
    ):
        channels.append(
            {
                "label": label,
                "color": colour,
                "window": window,
                "active": spec.name == "overlay" or c == 0,
                "coefficient": 1.0,
                "family": "linear",
                "inverted": False,
            }
        )
    omero: dict[str, Any] = {
        "name": spec.name,
        "channels": channels,
        "rdefs": {
            "model": "color" if spec.name == "overlay" else "greyscale",
            "defaultZ": 0,
            "defaultT": 0,
        },
    }
    if version == "0.4":
        omero = {"version": "0.4", **omero}
    return omero


def _image_label(info: RunInfo, version: Version) -> dict:
    colours = [
        {"label-value": i + 1, "rgba": [*rgb, 255]}
        for i, rgb in enumerate(band_colours(info.n_bands))
    ]
    properties = [
        {"label-value": i + 1, "band": name, "wavelength_nm": w}
        for i, (name, w) in enumerate(zip(info.band_names, info.wavelengths, strict=True))
    ]
    label: dict[str, Any] = {
        "colors": colours,
        "properties": properties,
        "source": {"image": "../../"},
    }
    return {"version": "0.4", **label} if version == "0.4" else label


def _wrap(version: Version, attrs: dict) -> dict:
    """Group attributes for ``version``: 0.5 nests them under ``"ome"``."""
    return {"ome": {"version": "0.5", **attrs}} if version == "0.5" else attrs


# --------------------------------------------------------------------------- windows


class _WindowSampler:
    """A small uniform per-channel sample of a streamed image, for display windows.

    Each tile contributes every ``stride``-th pixel; when the sample outgrows
    ``cap`` it keeps every second value and doubles the stride, so the sample
    stays uniform over the image at about ``cap`` values per channel.
    """

    def __init__(self, channels: int, cap: int = 1 << 16) -> None:
        self.channels, self.cap, self.stride = channels, cap, 1
        self.parts: list[np.ndarray] = []
        self.size = 0
        self.lo = np.full(channels, np.inf)
        self.hi = np.full(channels, -np.inf)

    def add(self, data: np.ndarray) -> None:
        flat = data.reshape(self.channels, -1)
        # fmin/fmax skip NaN (normalised dissimilarity keeps it) without a masked copy
        self.lo = np.fmin(self.lo, np.fmin.reduce(flat, axis=1))
        self.hi = np.fmax(self.hi, np.fmax.reduce(flat, axis=1))
        part = flat[:, :: self.stride].astype(np.float32)
        self.parts.append(part)
        self.size += part.shape[1]
        if self.size > 2 * self.cap:
            whole = np.concatenate(self.parts, axis=1)[:, ::2]
            self.parts, self.size, self.stride = [whole], whole.shape[1], self.stride * 2

    def windows(self) -> list[dict[str, float]]:
        if not self.parts:
            return [{"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0}] * self.channels
        sample = np.concatenate(self.parts, axis=1)
        out = []
        for c in range(self.channels):
            values = sample[c][np.isfinite(sample[c])]
            if values.size == 0:
                out.append({"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0})
                continue
            start, end = (float(v) for v in np.percentile(values, WINDOW_PERCENTILES))
            lo, hi = float(self.lo[c]), float(self.hi[c])
            lo, hi = (lo if np.isfinite(lo) else start), (hi if np.isfinite(hi) else end)
            if end <= start:  # a flat channel: widen so viewers get a usable range
                end = start + 1.0
            out.append({"min": min(lo, start), "max": max(hi, end), "start": start, "end": end})
        return out


# --------------------------------------------------------------------------- sink


@dataclass
class _Unit:
    """A ``unit x unit`` region of one level being assembled in memory."""

    level: int
    index: tuple[int, int]
    region: tuple[int, int, int, int]  # y0, y1, x0, x1 in this level's pixels
    data: dict[str, np.ndarray]
    covered: int = 0
    mask: np.ndarray | None = None  # level 0 only: which pixels arrived

    @property
    def area(self) -> int:
        y0, y1, x0, x1 = self.region
        return (y1 - y0) * (x1 - x0)


@dataclass
class _Layout:
    info: RunInfo
    images: list[ImageSpec]
    shapes: list[tuple[int, int]]
    arrays: dict[str, list[Any]] = field(default_factory=dict)  # name -> zarr array per level


class OmeZarrSink:
    """Streams tile results into a tilex output folder of pyramidal OME-Zarr images.

    Implements the :class:`tilex.sink.Sink` protocol with ``write_unit = unit``:
    the engine completes ``unit x unit`` regions of level 0 one after another
    in Morton order; each completed unit is written with one aligned
    assignment per image and reduced into the next level, recursively.

    Parameters
    ----------
    path : path-like
        The output folder ``OUT``.
    version : {"0.5", "0.4"}
        OME-Zarr version: 0.5 writes Zarr v3 with ``unit x unit`` shards,
        0.4 writes Zarr v2 with ``/`` chunk keys and no shards.
    overwrite : bool
        Replace an existing tilex output at ``path`` (a folder that is not a
        tilex output is never deleted).
    unit : int
        Side of the write unit and of the shards; a multiple of ``chunk``.
    chunk : int
        Side of the chunks on every level.
    compressor : Compression or None
        Blosc settings, or ``None`` for uncompressed chunks.
    workers : int
        Threads that write finished units (each unit is written by exactly one).

    Raises
    ------
    OutputExistsError
        ``path`` exists, is not empty, and ``overwrite`` is false.

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
    >>> [a.shape for a in open_output(out)["collage"].levels]
    [(2, 200, 300), (2, 100, 150), (2, 50, 75)]
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        version: Version = "0.5",
        overwrite: bool = False,
        unit: int = 4096,
        chunk: int = 512,
        compressor: Compression | None = Compression(),  # noqa: B008 (frozen, immutable)
        workers: int = 2,
    ) -> None:
        if version not in ("0.4", "0.5"):
            raise OutputError(f"OME-Zarr version must be '0.5' or '0.4', got {version!r}")
        if chunk < 1 or unit < chunk or unit % chunk or unit % 2:
            raise OutputError(f"write unit {unit} must be an even multiple of the chunk {chunk}")
        self.path = Path(path)
        self.version: Version = version
        self.zarr_format = 3 if version == "0.5" else 2
        self.overwrite = overwrite
        self.write_unit: int | None = unit
        self.unit, self.chunk = unit, chunk
        self.compressor = compressor
        self.workers = max(1, workers)
        self.state = "new"
        self._layout: _Layout | None = None
        self._check_target()

    # -- protocol -------------------------------------------------------------

    def open(self, info: RunInfo) -> None:
        """Lay out the folder, the arrays of every level and ``tilex.json`` ("running")."""
        if self.state != "new":
            raise OutputError(f"sink for {self.path} was already opened (state {self.state})")
        h, w = info.shape
        if info.n_bands > 255:
            raise OutputError(f"winner labels are uint8: at most 255 bands, got {info.n_bands}")
        self._check_target()
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        layout = _Layout(info, output_images(info), level_shapes((h, w), self.chunk))
        self._write_manifest(info, "running")
        self._stores: dict[str, Any] = {}
        for spec in layout.images:
            layout.arrays[spec.name] = self._create_arrays(spec, layout.shapes)
        self._layout = layout
        self._units: list[dict[tuple[int, int], _Unit]] = [{} for _ in layout.shapes]
        self._done: list[set[tuple[int, int]]] = [set() for _ in layout.shapes]
        self._samplers = {
            s.name: _WindowSampler(s.channels)
            for s in layout.images
            if not s.is_label and s.dtype != np.uint8
        }
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tilex-zarr")
        self._pending: list[Future] = []
        self.state = "running"

    def write(self, result: TileResult) -> None:
        """Copy one tile core into its unit buffers; write units as they complete."""
        layout = self._require_running()
        y0, y1, x0, x1 = result.region
        h, w = layout.shapes[0]
        if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise OutputError(f"tile region {result.region} is outside the output shape {(h, w)}")
        fields = {s.name: self._field(result, s) for s in layout.images}
        for name, sampler in self._samplers.items():
            sampler.add(fields[name])
        u = self.unit
        for uy in range(y0 // u, (y1 - 1) // u + 1):
            for ux in range(x0 // u, (x1 - 1) // u + 1):
                unit = self._unit(0, (uy, ux))
                uy0, _, ux0, _ = unit.region
                ty0, ty1 = max(y0, uy * u), min(y1, (uy + 1) * u)
                tx0, tx1 = max(x0, ux * u), min(x1, (ux + 1) * u)
                dst = (slice(ty0 - uy0, ty1 - uy0), slice(tx0 - ux0, tx1 - ux0))
                src = (slice(ty0 - y0, ty1 - y0), slice(tx0 - x0, tx1 - x0))
                for name, data in fields.items():
                    unit.data[name][(..., *dst)] = data[(..., *src)]
                assert unit.mask is not None
                unit.covered += int((ty1 - ty0) * (tx1 - tx0) - np.count_nonzero(unit.mask[dst]))
                unit.mask[dst] = True
                if unit.covered == unit.area:
                    self._complete(unit)
        self._drain(self.workers)  # at most one finished unit queued per writer thread

    def close(self) -> None:
        """Finish the writes, then the group metadata, then ``"state": "complete"``.

        Raises
        ------
        OutputError
            Some pixels were never delivered (the output is marked failed).
        """
        layout = self._require_running()
        missing = [(k, idx) for k, units in enumerate(self._units) for idx in units]
        if missing or not self._done[-1]:
            self.abort()
            where = missing[0] if missing else (0, (0, 0))
            raise OutputError(
                f"output {self.path} is incomplete: {len(missing) or 'all'} write unit(s) never "
                f"received all their pixels (first: level {where[0]} unit {where[1]})"
            )
        try:
            self._drain(0)
        except BaseException:
            self.abort()
            raise
        self._pool.shutdown()
        for spec in sorted(layout.images, key=lambda s: not s.is_label):  # labels first
            self._write_group_metadata(spec, layout)
        self._write_manifest(layout.info, "complete")
        self.state = "complete"
        self._units = []

    def abort(self) -> None:
        """Stop writing and mark the output ``"failed"``; never raises for write errors."""
        if self.state != "running":
            return
        self.state = "failed"
        for fut in self._pending:
            fut.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending = []
        self._units = []
        assert self._layout is not None
        self._write_manifest(self._layout.info, "failed")

    # -- units ----------------------------------------------------------------

    def _unit(self, level: int, index: tuple[int, int]) -> _Unit:
        unit = self._units[level].get(index)
        if unit is not None:
            return unit
        if index in self._done[level]:
            raise OutputError(
                f"level {level} write unit {index} was already written: tiles must not repeat "
                "once a unit is complete (shards are written once)"
            )
        assert self._layout is not None
        h, w = self._layout.shapes[level]
        u = self.unit
        region = (
            index[0] * u,
            min(h, (index[0] + 1) * u),
            index[1] * u,
            min(w, (index[1] + 1) * u),
        )
        uh, uw = region[1] - region[0], region[3] - region[2]
        data = {
            s.name: np.zeros((uh, uw) if s.is_label else (s.channels, uh, uw), s.dtype)
            for s in self._layout.images
        }
        mask = np.zeros((uh, uw), bool) if level == 0 else None
        unit = self._units[level][index] = _Unit(level, index, region, data, mask=mask)
        return unit

    def _complete(self, unit: _Unit) -> None:
        assert self._layout is not None
        del self._units[unit.level][unit.index]
        self._done[unit.level].add(unit.index)
        self._pending.append(self._pool.submit(self._store_unit, unit))
        parent_level = unit.level + 1
        if parent_level == len(self._layout.shapes):
            return
        parent = self._unit(parent_level, (unit.index[0] // 2, unit.index[1] // 2))
        half = self.unit // 2
        oy, ox = (unit.index[0] % 2) * half, (unit.index[1] % 2) * half
        rh = rw = 0
        for spec in self._layout.images:
            reduced = spec.reduce(unit.data[spec.name])
            rh, rw = reduced.shape[-2:]
            parent.data[spec.name][..., oy : oy + rh, ox : ox + rw] = reduced
        parent.covered += rh * rw
        if parent.covered == parent.area:
            self._complete(parent)

    def _store_unit(self, unit: _Unit) -> None:
        """One aligned assignment per image: whole shards (0.5) / chunks (0.4), once."""
        assert self._layout is not None
        y0, y1, x0, x1 = unit.region
        for spec in self._layout.images:
            array = self._layout.arrays[spec.name][unit.level]
            array[..., y0:y1, x0:x1] = unit.data[spec.name]

    def _drain(self, keep: int) -> None:
        """Wait for the oldest writes until at most ``keep`` are in flight; raise their errors."""
        while len(self._pending) > keep:
            self._pending.pop(0).result()
        done = [f for f in self._pending if f.done()]
        for fut in done:
            self._pending.remove(fut)
            fut.result()

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
                f"output {p} already exists: choose another folder or pass overwrite (--overwrite)"
            )
        if not (p / MANIFEST).is_file():
            raise OutputError(f"refusing to overwrite {p}: it is not empty and holds no {MANIFEST}")

    def _store(self, path: Path) -> Any:
        """The zarr store of one image root (tests override this to watch writes)."""
        return zarr.storage.LocalStore(path)

    def _create_arrays(self, spec: ImageSpec, shapes: list[tuple[int, int]]) -> list[Any]:
        root, _, sub = spec.path.partition("/")
        store = self._stores.get(root)
        if store is None:
            store = self._stores[root] = self._store(self.path / root)
            zarr.open_group(store, mode="w", zarr_format=self.zarr_format)
        if sub:  # labels/winner: create the intermediate groups, metadata comes at close
            zarr.open_group(store, path="labels", mode="a", zarr_format=self.zarr_format)
            zarr.open_group(store, path=sub, mode="a", zarr_format=self.zarr_format)
        codec = [self.compressor.codec(self.zarr_format)] if self.compressor else None
        arrays = []
        for k, (h, w) in enumerate(shapes):
            lead = () if spec.is_label else (int(spec.channels or 1),)
            kwargs: dict[str, Any] = {
                "shape": (*lead, h, w),
                "dtype": spec.dtype,
                "chunks": (*(1,) * len(lead), self.chunk, self.chunk),
                "compressors": codec,
                "fill_value": 0,
                "zarr_format": self.zarr_format,
            }
            if self.zarr_format == 3:
                kwargs["shards"] = (*(1,) * len(lead), self.unit, self.unit)
                kwargs["dimension_names"] = ["y", "x"] if spec.is_label else ["c", "y", "x"]
            else:
                kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
            name = f"{sub}/{k}" if sub else str(k)
            arrays.append(zarr.create_array(store, name=name, **kwargs))
        return arrays

    def _write_group_metadata(self, spec: ImageSpec, layout: _Layout) -> None:
        root, _, sub = spec.path.partition("/")
        store = self._stores[root]
        info = layout.info
        attrs: dict[str, Any] = {
            "multiscales": [
                _multiscales(spec, len(layout.shapes), info.pixel_size_um, self.version)
            ]
        }
        if spec.is_label:
            attrs["image-label"] = _image_label(info, self.version)
            group = zarr.open_group(store, path=sub, mode="r+", zarr_format=self.zarr_format)
            group.attrs.update(_wrap(self.version, attrs))
            labels = zarr.open_group(store, path="labels", mode="r+", zarr_format=self.zarr_format)
            labels.attrs.update(_wrap(self.version, {"labels": [sub.rsplit("/", 1)[-1]]}))
            return
        sampler = self._samplers.get(spec.name)
        windows = (
            sampler.windows()
            if sampler is not None
            else [{"min": 0.0, "max": 255.0, "start": 0.0, "end": 255.0}] * int(spec.channels or 1)
        )
        attrs["omero"] = _omero(spec, windows, self.version)
        group = zarr.open_group(store, mode="r+", zarr_format=self.zarr_format)
        group.attrs.update(_wrap(self.version, attrs))

    def _write_manifest(self, info: RunInfo, state: str) -> None:
        manifest: dict[str, Any] = dict(info.metadata)
        manifest["state"] = state
        manifest["output"] = {
            "format": "ome-zarr",
            "ome_zarr_version": self.version,
            "zarr_format": self.zarr_format,
            "shape": list(info.shape),
            "unit": self.unit,
            "chunk": self.chunk,
            "levels": [list(s) for s in level_shapes(info.shape, self.chunk)],
            "images": {s.name: s.path for s in output_images(info)},
            "bands": [
                {"name": n, "wavelength_nm": w, "label_value": i + 1, "colour": _hex(c)}
                for i, (n, w, c) in enumerate(
                    zip(info.band_names, info.wavelengths, band_colours(info.n_bands), strict=True)
                )
            ],
            "channels": info.channels,
            "pixel_size_um": info.pixel_size_um,
            "writer": f"tilex {__version__}",
        }
        write_json_atomic(self.path / MANIFEST, manifest)

    # -- helpers --------------------------------------------------------------

    def _require_running(self) -> _Layout:
        if self.state != "running" or self._layout is None:
            raise OutputError(f"sink for {self.path} is not open for writing (state {self.state})")
        return self._layout

    @staticmethod
    def _field(result: TileResult, spec: ImageSpec) -> np.ndarray:
        data = getattr(result, spec.field)
        if data is None:
            raise OutputError(f"tile {result.region} has no {spec.field!r} but the output keeps it")
        data = np.asarray(data)
        if spec.name == "score":
            data = data[None]
        y0, y1, x0, x1 = result.region
        want = (y1 - y0, x1 - x0) if spec.is_label else (spec.channels, y1 - y0, x1 - x0)
        if data.shape != want:
            raise OutputError(
                f"tile {result.region}: {spec.field} has shape {data.shape}, expected {want}"
            )
        if data.dtype != spec.dtype:
            data = data.astype(spec.dtype)
        return data


# --------------------------------------------------------------------------- reader


@dataclass(frozen=True)
class OutputImage:
    """One image of an output: its levels (zarr arrays, level 0 first) and metadata."""

    name: str
    path: Path
    levels: tuple[Any, ...]
    attrs: dict[str, Any]  # OME attributes (unwrapped from "ome" in 0.5)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(a.shape) for a in self.levels]

    @property
    def channel_labels(self) -> list[str]:
        return [c.get("label", "") for c in self.attrs.get("omero", {}).get("channels", [])]

    def level_for(self, max_side: int) -> int:
        """The first (largest) level whose longest side is at most ``max_side``."""
        for k, shape in enumerate(self.shapes):
            if max(shape[-2:]) <= max_side:
                return k
        return len(self.levels) - 1


@dataclass(frozen=True)
class Output:
    """A tilex output folder opened for reading (see :func:`open_output`)."""

    path: Path
    manifest: dict[str, Any]
    images: dict[str, OutputImage]

    @property
    def state(self) -> str:
        return str(self.manifest.get("state", "unknown"))

    @property
    def version(self) -> str:
        return str(self.manifest["output"]["ome_zarr_version"])

    @property
    def bands(self) -> list[dict[str, Any]]:
        return list(self.manifest["output"].get("bands", []))

    def __getitem__(self, name: str) -> OutputImage:
        try:
            return self.images[name]
        except KeyError:
            raise OutputError(
                f"output {self.path} has no image {name!r} (it has {', '.join(self.images)})"
            ) from None


def open_output(path: str | os.PathLike, *, require_complete: bool = True) -> Output:
    """Open a tilex output folder for reading.

    Parameters
    ----------
    path : path-like
        The output folder (holding ``tilex.json``).
    require_complete : bool
        Refuse an output whose run did not complete.

    Returns
    -------
    Output

    Raises
    ------
    OutputError
        Not a tilex output, or incomplete while ``require_complete``.

    Examples
    --------
    >>> open_output("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tilex.errors.OutputError: /nonexistent is not a tilex output: no tilex.json ...
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise OutputError(
            f"{path} is not a tilex output: no {MANIFEST} (run `tilex run ... -o {path}`)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        layout = manifest["output"]
        version, zarr_format = layout["ome_zarr_version"], int(layout["zarr_format"])
    except (ValueError, KeyError, TypeError) as err:
        raise OutputError(f"{manifest_path} is not a valid tilex manifest: {err}") from None
    state = manifest.get("state")
    if require_complete and state != "complete":
        raise OutputError(
            f"output {path} is incomplete (state {state!r}): the run did not finish; rerun it"
        )
    images: dict[str, OutputImage] = {}
    for name, rel in layout["images"].items():
        images[name] = _open_image(name, path / rel, version, zarr_format, layout)
    return Output(path, manifest, images)


def _open_image(name: str, path: Path, version: str, zarr_format: int, layout: dict) -> OutputImage:
    try:
        group = zarr.open_group(path, mode="r", zarr_format=zarr_format)  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError) as err:
        raise OutputError(f"cannot open image {name!r} at {path}: {err}") from None
    attrs = dict(group.attrs)
    if version == "0.5":
        attrs = dict(attrs.get("ome", {}))
    multiscales = attrs.get("multiscales")
    if multiscales:
        paths: Iterable[str] = [d["path"] for d in multiscales[0]["datasets"]]
    else:  # incomplete output: the levels the layout promised
        paths = [str(k) for k in range(len(layout["levels"]))]
    levels = tuple(group[p] for p in paths)
    return OutputImage(name, path, levels, attrs)
