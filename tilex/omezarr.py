"""The tilex output folder: a streaming, pyramidal OME-Zarr writer and its reader.

Layout of an output folder ``OUT/``:

``tilex.json``
    Provenance (``RunInfo.metadata``: inputs, bands, parameters, weights,
    statistics, version, timings), the layout written here (``"output"``),
    the run's fingerprint for ``--resume`` (``"resume"``) and ``"state"``:
    ``"statistics"`` from :meth:`OmeZarrSink.prepare`, ``"running"`` from
    :meth:`OmeZarrSink.open`, ``"failed"`` after :meth:`OmeZarrSink.abort`,
    ``"complete"`` written last by :meth:`OmeZarrSink.close`.  Written
    atomically (temp file, fsync, ``os.replace``).
``.journal/``
    Only while a run is incomplete: one marker per written unit (see
    :mod:`tilex.journal`).
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
back (in a fresh run).  When a unit of level ``k`` is complete it is reduced 2x
into its parent unit of level ``k + 1``, which completes after its (up to four)
children.  Any tile order works, but memory stays bounded (about two units
per level) only when units arrive in Morton order, as the engine delivers
them for a sink that sets ``write_unit``.

Group metadata (``multiscales``, ``omero``, ``image-label``) and the
``complete`` state are written last, at :meth:`OmeZarrSink.close`, so an
interrupted or aborted run never looks complete.

Crash safety: every written unit of every level is synced and journaled in
``OUT/.journal`` (:mod:`tilex.journal`); ``tilex.json`` says ``"statistics"``
from :meth:`OmeZarrSink.prepare` until the statistics are saved with
``"running"``.  ``OmeZarrSink(..., resume=True)`` continues such an output:
level-0 units in the journal are skipped, and a parent unit created on resume
reads back and reduces its children that the journal holds (only those: a
fresh run never reads back).  The ``omero`` display windows come from a
fixed pixel lattice sampled per level-0 unit and journaled with it, so they
do not depend on the order units were written in, on resuming or on which
worker wrote what.

Layout code (arrays, one-unit writes, manifest, group metadata) lives in
:class:`OutputLayout`, shared with the workers of :mod:`tilex.distributed`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from tilex._version import __version__
from tilex.errors import OutputError, OutputExistsError, ResumeMismatchError
from tilex.journal import Journal, check_resumable, failpoint, fingerprint, fsync_files
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
    "LayoutSpec",
    "OmeZarrSink",
    "OutputLayout",
    "band_colours",
    "os_errors_name",
    "read_manifest",
    "tile_field",
    "write_json_atomic",
]

log = logging.getLogger("tilex")

Version = Literal["0.4", "0.5"]
MANIFEST = "tilex.json"
SCRATCH = ".pyramid"  # reduced children waiting for their parent, inside OUT
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


@contextmanager
def os_errors_name(path: str | os.PathLike) -> Iterator[None]:
    """Give an OSError raised while writing ``path`` that file name, when it names none.

    ``write()`` on a full disk raises ``No space left on device`` without a
    file name; the one-line error should still say where tilex was writing.
    The error stays an OSError of the same errno (``except OSError`` works).

    Examples
    --------
    >>> import errno
    >>> try:
    ...     with os_errors_name("OUT/score.ome.zarr/0"):
    ...         raise OSError(errno.ENOSPC, "No space left on device")
    ... except OSError as err:
    ...     print(err.filename, err.errno == errno.ENOSPC)
    OUT/score.ome.zarr/0 True
    """
    try:
        yield
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror or str(err), os.fspath(path)) from err


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
    # not tempfile.mkstemp, whose mode 0600 would hide tilex.json from colleagues: the umask decides
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
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

WINDOW_SAMPLES = 1 << 16
"""About how many pixels per channel the display windows are estimated from."""


def window_stride(shape: tuple[int, int], samples: int = WINDOW_SAMPLES) -> int:
    """Side of the pixel lattice sampled for display windows (1: every pixel).

    Examples
    --------
    >>> window_stride((256, 256)), window_stride((4096, 4096))
    (1, 16)
    """
    h, w = shape
    return max(1, math.ceil(math.sqrt(h * w / samples)))


def _window_sample(data: np.ndarray, region: tuple[int, int, int, int], stride: int) -> dict:
    """One unit's share of the display-window sample: the lattice pixels and exact extrema.

    The lattice is anchored at scan pixel (0, 0), so the union of the units'
    samples does not depend on which units were written when, or by whom.
    """
    y0, _, x0, _ = region
    channels = data.shape[0]
    flat = data.reshape(channels, -1)
    lattice = data[:, (-y0) % stride :: stride, (-x0) % stride :: stride]
    return {
        "sample": lattice.reshape(channels, -1).astype(np.float32),
        # fmin/fmax skip NaN (normalised dissimilarity keeps it) without a masked copy
        "lo": np.fmin.reduce(flat, axis=1).astype(np.float64),
        "hi": np.fmax.reduce(flat, axis=1).astype(np.float64),
    }


def _windows(channels: int, parts: list[dict]) -> list[dict[str, float]]:
    """``omero`` windows from the units' samples: robust percentiles within exact extrema."""
    flat = {"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0}
    if not parts:
        return [dict(flat) for _ in range(channels)]
    sample = np.concatenate([p["sample"] for p in parts], axis=1)
    lows = np.fmin.reduce(np.stack([p["lo"] for p in parts]), axis=0)
    highs = np.fmax.reduce(np.stack([p["hi"] for p in parts]), axis=0)
    out = []
    for c in range(channels):
        values = sample[c][np.isfinite(sample[c])]
        if values.size == 0:
            out.append(dict(flat))
            continue
        start, end = (float(v) for v in np.percentile(values, WINDOW_PERCENTILES))
        lo, hi = float(lows[c]), float(highs[c])
        lo, hi = (lo if np.isfinite(lo) else start), (hi if np.isfinite(hi) else end)
        if end <= start:  # a flat channel: widen so viewers get a usable range
            end = start + 1.0
        out.append({"min": min(lo, start), "max": max(hi, end), "start": start, "end": end})
    return out


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class LayoutSpec:
    """How an output's arrays are laid out: OME-Zarr version, write unit, chunk, codec.

    Examples
    --------
    >>> LayoutSpec(unit=256, chunk=128).zarr_format
    3
    """

    version: Version = "0.5"
    unit: int = 4096
    chunk: int = 512
    compressor: Compression | None = Compression()  # noqa: RUF009 (frozen, immutable)

    def __post_init__(self) -> None:
        if self.version not in ("0.4", "0.5"):
            raise OutputError(f"OME-Zarr version must be '0.5' or '0.4', got {self.version!r}")
        c, u = self.chunk, self.unit
        if c < 1 or u < c or u % c or u % 2:
            raise OutputError(f"write unit {u} must be an even multiple of the chunk {c}")

    @property
    def zarr_format(self) -> int:
        return 3 if self.version == "0.5" else 2


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


class OutputLayout:
    """The arrays and metadata of one output folder, shared by every writer.

    Creates or opens the arrays of every level, writes one whole unit of one
    level (one aligned assignment per image, files synced, then journaled),
    reads one back, and writes ``tilex.json`` and the group metadata.  The
    streaming :class:`OmeZarrSink` and the workers of :mod:`tilex.distributed`
    both write through it, so their outputs are the same bytes.

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
        self.shapes = level_shapes(info.shape, spec.chunk)
        self.arrays: dict[str, list[Any]] = {}
        self.journal = Journal(self.path)
        self.stride = window_stride(info.shape)
        self._store_factory = store or zarr.storage.LocalStore
        self._stores: dict[str, Any] = {}

    # -- geometry -------------------------------------------------------------

    @property
    def windowed(self) -> list[ImageSpec]:
        """The images whose display windows are measured (float images)."""
        return [s for s in self.images if not s.is_label and s.dtype != np.uint8]

    def grid(self, level: int) -> tuple[int, int]:
        """Rows and columns of write units on ``level``."""
        h, w = self.shapes[level]
        u = self.spec.unit
        return -(-h // u), -(-w // u)

    def units(self, level: int) -> list[tuple[int, int]]:
        rows, cols = self.grid(level)
        return [(r, c) for r in range(rows) for c in range(cols)]

    def region(self, level: int, index: tuple[int, int]) -> tuple[int, int, int, int]:
        h, w = self.shapes[level]
        u = self.spec.unit
        return (index[0] * u, min(h, (index[0] + 1) * u), index[1] * u, min(w, (index[1] + 1) * u))

    def children(self, level: int, index: tuple[int, int]) -> list[tuple[int, int]]:
        """The units of ``level - 1`` that reduce into unit ``index`` of ``level``."""
        rows, cols = self.grid(level - 1)
        return [
            (2 * index[0] + dy, 2 * index[1] + dx)
            for dy in (0, 1)
            for dx in (0, 1)
            if 2 * index[0] + dy < rows and 2 * index[1] + dx < cols
        ]

    def new_unit(self, level: int, index: tuple[int, int]) -> _Unit:
        """An empty buffer for one unit of one level."""
        region = self.region(level, index)
        uh, uw = region[1] - region[0], region[3] - region[2]
        data = {
            s.name: np.zeros((uh, uw) if s.is_label else (s.channels, uh, uw), s.dtype)
            for s in self.images
        }
        mask = np.zeros((uh, uw), bool) if level == 0 else None
        return _Unit(level, index, region, data, mask=mask)

    def reduce_child(self, parent: _Unit, child: tuple[int, int], data: dict[str, np.ndarray]) -> int:
        """Reduce a finished child unit 2x into its place in ``parent``; the pixels filled."""
        return self.place_reduced(parent, child, self.reduce(data))

    def reduce(self, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A finished unit's images reduced 2x (what its parent receives)."""
        return {spec.name: spec.reduce(data[spec.name]) for spec in self.images}

    def place_reduced(self, parent: _Unit, child: tuple[int, int], reduced: dict[str, np.ndarray]) -> int:
        """Copy a child's reduced images into their quarter of ``parent``; the pixels filled."""
        half = self.spec.unit // 2
        oy, ox = (child[0] % 2) * half, (child[1] % 2) * half
        rh = rw = 0
        for spec in self.images:
            part = reduced[spec.name]
            rh, rw = part.shape[-2:]
            parent.data[spec.name][..., oy : oy + rh, ox : ox + rw] = part
        return rh * rw

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
            root, _, sub = spec.path.partition("/")
            fresh = root not in self._stores
            store = self._store(root)
            if fresh:
                zarr.open_group(store, mode="w", zarr_format=fmt)
            if sub:  # labels/winner: create the intermediate groups, metadata comes at close
                zarr.open_group(store, path="labels", mode="a", zarr_format=fmt)
                zarr.open_group(store, path=sub, mode="a", zarr_format=fmt)
            arrays = []
            for k, (h, w) in enumerate(self.shapes):
                lead = () if spec.is_label else (int(spec.channels or 1),)
                kwargs: dict[str, Any] = {
                    "shape": (*lead, h, w),
                    "dtype": spec.dtype,
                    "chunks": (*(1,) * len(lead), self.spec.chunk, self.spec.chunk),
                    "compressors": codec,
                    "fill_value": 0,
                    "zarr_format": fmt,
                }
                if fmt == 3:
                    kwargs["shards"] = (*(1,) * len(lead), self.spec.unit, self.spec.unit)
                    kwargs["dimension_names"] = ["y", "x"] if spec.is_label else ["c", "y", "x"]
                else:
                    kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
                name = f"{sub}/{k}" if sub else str(k)
                arrays.append(zarr.create_array(store, name=name, **kwargs))
            self.arrays[spec.name] = arrays
        self.journal.mark_arrays()

    def open_arrays(self) -> None:
        """Open the arrays :meth:`create_arrays` made (on resume, and on workers)."""
        for spec in self.images:
            root, _, sub = spec.path.partition("/")
            store = self._store(root)
            self.arrays[spec.name] = [
                zarr.open_array(store, path=f"{sub}/{k}" if sub else str(k), mode="r+",
                                zarr_format=self.spec.zarr_format)  # type: ignore[arg-type]
                for k in range(len(self.shapes))
            ]

    def remove_partial_files(self) -> None:
        """Delete zarr's temporary ``*.partial`` files left by a killed writer."""
        for spec in self.images:
            root = self.path / spec.path.partition("/")[0]
            for folder, _, files in os.walk(root):
                for name in files:
                    if name.endswith(".partial"):
                        os.unlink(os.path.join(folder, name))

    def _files(self, array: Any, level: int, index: tuple[int, int], root: str) -> list[Path]:
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

    def write_unit(self, level: int, index: tuple[int, int], data: dict[str, np.ndarray]) -> None:
        """One aligned assignment per image (whole shards / chunks), then fsync their files."""
        y0, y1, x0, x1 = self.region(level, index)
        files: list[Path] = []
        for spec in self.images:
            array = self.arrays[spec.name][level]
            with os_errors_name(self.path / spec.path / str(level)):
                array[..., y0:y1, x0:x1] = data[spec.name]
            files += self._files(array, level, index, spec.path.partition("/")[0])
        with os_errors_name(self.path):
            fsync_files(files)

    def commit_unit(self, level: int, index: tuple[int, int], data: dict[str, np.ndarray]) -> None:
        """Write a finished unit durably, then journal it (with its window sample at level 0)."""
        self.write_unit(level, index, data)
        payload = None
        if level == 0:
            region = self.region(0, index)
            payload = {}
            for spec in self.windowed:
                values = data[spec.name]
                part = _window_sample(values, region, self.stride)
                payload.update({f"{spec.name}.{k}": v for k, v in part.items()})
        failpoint("unit" if level == 0 else f"level{level}")
        self.journal.mark(level, index, payload)

    def read_unit(self, level: int, index: tuple[int, int]) -> dict[str, np.ndarray]:
        """Read one written unit of one level back (resume and the distributed pyramid)."""
        y0, y1, x0, x1 = self.region(level, index)
        return {
            spec.name: np.asarray(self.arrays[spec.name][level][..., y0:y1, x0:x1])
            for spec in self.images
        }

    def assemble_parent(self, level: int, index: tuple[int, int]) -> _Unit:
        """Unit ``index`` of ``level`` reduced from its written children on ``level - 1``."""
        parent = self.new_unit(level, index)
        for child in self.children(level, index):
            parent.covered += self.reduce_child(parent, child, self.read_unit(level - 1, child))
        return parent

    # -- metadata -------------------------------------------------------------

    def windows(self) -> dict[str, list[dict[str, float]]]:
        """Display windows of the float images, from the level-0 journal samples."""
        parts: dict[str, list[dict]] = {s.name: [] for s in self.windowed}
        for index in self.units(0):
            payload = self.journal.payload(0, index)
            for name, found in parts.items():
                found.append({k: payload[f"{name}.{k}"] for k in ("sample", "lo", "hi")})
        return {s.name: _windows(int(s.channels or 1), parts[s.name]) for s in self.windowed}

    def write_group_metadata(self) -> None:
        """``multiscales``, ``omero`` and ``image-label`` of every image; labels first."""
        windows = self.windows()
        for spec in sorted(self.images, key=lambda s: not s.is_label):
            self._write_group(spec, windows.get(spec.name))

    def _write_group(self, spec: ImageSpec, windows: list[dict[str, float]] | None) -> None:
        root, _, sub = spec.path.partition("/")
        store = self._store(root)
        info, version, fmt = self.info, self.spec.version, self.spec.zarr_format
        attrs: dict[str, Any] = {
            "multiscales": [_multiscales(spec, len(self.shapes), info.pixel_size_um, version)]
        }
        if spec.is_label:
            attrs["image-label"] = _image_label(info, version)
            group = zarr.open_group(store, path=sub, mode="r+", zarr_format=fmt)
            group.attrs.update(_wrap(version, attrs))
            labels = zarr.open_group(store, path="labels", mode="r+", zarr_format=fmt)
            labels.attrs.update(_wrap(version, {"labels": [sub.rsplit("/", 1)[-1]]}))
            return
        if windows is None:
            windows = [{"min": 0.0, "max": 255.0, "start": 0.0, "end": 255.0}] * int(spec.channels or 1)
        attrs["omero"] = _omero(spec, windows, version)
        group = zarr.open_group(store, mode="r+", zarr_format=fmt)
        group.attrs.update(_wrap(version, attrs))

    def manifest(self, state: str) -> dict[str, Any]:
        info = self.info
        manifest: dict[str, Any] = dict(info.metadata)
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
        manifest["resume"] = fingerprint(info.metadata)
        return manifest

    def write_manifest(self, state: str) -> None:
        """``tilex.json`` with ``state``, written atomically."""
        with os_errors_name(self.path / MANIFEST):
            write_json_atomic(self.path / MANIFEST, self.manifest(state))

    def finish(self) -> None:
        """Group metadata, then ``"state": "complete"``, then the journal is dropped."""
        self.write_group_metadata()
        self.write_manifest("complete")
        self.journal.clear()


def read_manifest(path: Path) -> dict[str, Any]:
    """``tilex.json`` of an output folder, or an :class:`OutputError` saying why not."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise OutputError(
            f"{path} is not a tilex output: no {MANIFEST} (run `tilex run ... -o {path}`)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        manifest["output"]["ome_zarr_version"]  # noqa: B018 - present in every tilex output
    except (ValueError, KeyError, TypeError) as err:
        raise OutputError(f"{manifest_path} is not a valid tilex manifest: {err}") from None
    return manifest


def check_layout_matches(path: Path, manifest: dict, info: RunInfo, spec: LayoutSpec) -> None:
    """Refuse to resume into an output laid out otherwise (version, unit, chunk, shape)."""
    stored = manifest["output"]
    want = {"ome_zarr_version": spec.version, "unit": spec.unit, "chunk": spec.chunk,
            "shape": list(info.shape)}
    diffs = [f"{k} (output: {stored.get(k)}, now: {v})" for k, v in want.items() if stored.get(k) != v]
    if diffs:
        raise ResumeMismatchError(
            f"cannot resume {path}: its layout differs: {'; '.join(diffs)} "
            "(rerun with the original options, or start again with --overwrite)"
        )


# --------------------------------------------------------------------------- sink


def tile_field(result: TileResult, spec: ImageSpec) -> np.ndarray:
    """The array of ``result`` that feeds image ``spec``, checked and cast to its dtype."""
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




class OmeZarrSink:
    """Streams tile results into a tilex output folder of pyramidal OME-Zarr images.

    Implements the :class:`tilex.sink.Sink` protocol with ``write_unit = unit``:
    the engine completes ``unit x unit`` regions of level 0 one after another
    in Morton order; each completed unit is written with one aligned
    assignment per image and reduced into the next level, recursively.  Each
    written unit is journaled (see :mod:`tilex.journal`), so a killed run can
    be resumed.

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
    resume : bool
        Continue the interrupted run that wrote ``path``: units its journal
        holds are kept (:meth:`skip` tells the engine which tiles to leave
        out) and only the others are written.

    Raises
    ------
    OutputExistsError
        ``path`` exists, is not empty, and ``overwrite`` is false.
    OutputError
        ``resume`` and ``path`` is not a tilex output.

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
    >>> from tilex.output import open_output
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
        resume: bool = False,
    ) -> None:
        self.spec = LayoutSpec(version, unit, chunk, compressor)
        self.path = Path(path)
        self.version: Version = version
        self.zarr_format = self.spec.zarr_format
        self.overwrite = overwrite
        self.resume = resume
        self.write_unit: int | None = unit
        self.unit, self.chunk = unit, chunk
        self.compressor = compressor
        self.workers = max(1, workers)
        self.state = "new"
        self.already_complete = False
        self._layout: OutputLayout | None = None
        self._restored: list[set[tuple[int, int]]] = []
        if resume:
            read_manifest(self.path)
        else:
            self._check_target()

    # -- before the engine ------------------------------------------------------

    def prepare(self, info: RunInfo) -> dict | None:
        """Lay out the folder before the statistics pass, or check the one to resume.

        A fresh output gets ``tilex.json`` with ``"state": "statistics"`` and
        the run's fingerprint.  On resume the stored fingerprint and layout
        must match ``info`` (:class:`~tilex.errors.ResumeMismatchError`
        otherwise); returns the statistics the interrupted run saved, if it
        got that far (``None`` otherwise).
        """
        if self.state != "new":
            raise OutputError(f"sink for {self.path} was already prepared (state {self.state})")
        if info.n_bands > 255:
            raise OutputError(f"winner labels are uint8: at most 255 bands, got {info.n_bands}")
        layout = OutputLayout(self.path, info, self.spec, store=self._store)
        saved = None
        if self.resume:
            manifest = read_manifest(self.path)
            check_layout_matches(self.path, manifest, info, self.spec)
            check_resumable(self.path, manifest, info.metadata)
            self.already_complete = manifest.get("state") == "complete"
            if self.already_complete:  # killed between "complete" and dropping the journal
                layout.journal.clear()
            saved = manifest.get("stats")
            self._restored = [layout.journal.completed(k) for k in range(len(layout.shapes))]
        else:
            self._check_target()
            try:
                if self.path.exists():
                    shutil.rmtree(self.path)
                self.path.mkdir(parents=True)
                layout.write_manifest("statistics")
            except OSError as err:
                raise OutputError(f"cannot write the output {self.path}: {err.strerror or err}") from err
        self._layout = layout
        self.state = "prepared"
        return saved

    @property
    def layout(self) -> OutputLayout:
        """The output's :class:`OutputLayout` (after :meth:`prepare` or :meth:`open`)."""
        if self._layout is None:
            raise OutputError(f"sink for {self.path} is not prepared yet")
        return self._layout

    def skip(self, tile: Any) -> bool:
        """Whether a tile lies in a level-0 unit the resumed run already wrote."""
        if not self._restored:
            return False
        return (tile.core[0] // self.unit, tile.core[2] // self.unit) in self._restored[0]

    # -- protocol -------------------------------------------------------------

    def open(self, info: RunInfo) -> None:
        """Lay out the arrays of every level and ``tilex.json`` ("running")."""
        if self.state == "new":
            self.prepare(info)
        elif self.state != "prepared":
            raise OutputError(f"sink for {self.path} was already opened (state {self.state})")
        if self.already_complete:
            raise OutputError(f"output {self.path} is already complete: nothing to resume")
        layout = self._layout
        assert layout is not None
        layout.info = info  # the statistics may have been added since prepare()
        layout.write_manifest("running")
        with os_errors_name(self.path):
            if self.resume and layout.journal.has_arrays():
                layout.open_arrays()
                layout.remove_partial_files()
            else:
                self._restored = [set() for _ in layout.shapes]
                layout.create_arrays()
        self._units: list[dict[tuple[int, int], _Unit]] = [{} for _ in layout.shapes]
        self._done: list[set[tuple[int, int]]] = [set(r) for r in self._restored]
        # children reduced and spilled to disk, per parent, until the parent is whole
        self._spilled: list[dict[tuple[int, int], set[tuple[int, int]]]] = [{} for _ in layout.shapes]
        shutil.rmtree(self._scratch, ignore_errors=True)  # a killed run's spills: recomputed
        self._scratch.mkdir(parents=True)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tilex-zarr")
        self._pending: list[Future] = []
        self.state = "running"
        if self.resume:
            self._complete_orphans()

    def write(self, result: TileResult) -> None:
        """Copy one tile core into its unit buffers; write units as they complete."""
        layout = self._require_running()
        y0, y1, x0, x1 = result.region
        h, w = layout.shapes[0]
        if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise OutputError(f"tile region {result.region} is outside the output shape {(h, w)}")
        fields = {s.name: self._field(result, s) for s in layout.images}
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
        missing += [(k, idx) for k, parents in enumerate(self._spilled) for idx in parents]
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
        shutil.rmtree(self._scratch, ignore_errors=True)
        with os_errors_name(self.path):
            layout.finish()
        self.state = "complete"
        self._units = []

    def abort(self) -> None:
        """Stop writing and mark the output ``"failed"``; never raises for write errors.

        From :meth:`prepare` on: a failed statistics pass or a failed
        :meth:`open` leaves the output failed too, never in an earlier state.
        """
        if self.state not in ("prepared", "running") or self.already_complete:
            return
        if self.state == "running":
            for fut in self._pending:
                fut.cancel()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pending = []
            self._units = []
        self.state = "failed"
        assert self._layout is not None
        try:
            self._layout.write_manifest("failed")
        except OSError as err:  # e.g. the disk is full: the error being raised says so
            log.debug("could not mark %s failed: %s", self.path, err)

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
        unit = self._units[level][index] = self._layout.new_unit(level, index)
        return unit

    @property
    def _scratch(self) -> Path:
        """Where reduced children wait for their parent (removed when the output is done)."""
        return self.path / SCRATCH

    def _complete(self, unit: _Unit) -> None:
        """Store a finished unit; hand its reduction to its parent, and finish that when whole.

        A parent is never held in memory while its children are computed: each
        child's 2x reduction is spilled to ``OUT/.pyramid`` and the parent is
        assembled only when the last child arrives. So memory holds one unit
        being filled, the writes in flight and one parent being assembled,
        however many pyramid levels the scan has.
        """
        layout = self._layout
        assert layout is not None
        self._units[unit.level].pop(unit.index, None)
        self._done[unit.level].add(unit.index)
        level = unit.level + 1
        parent = (unit.index[0] // 2, unit.index[1] // 2)
        feeds = level < len(layout.shapes) and not (self._restored and parent in self._restored[level])
        if feeds:  # else: the interrupted run wrote the parent after this unit, before its marker
            self._spill(level, parent, unit.index, layout.reduce(unit.data))
        self._drain(self.workers - 1)  # bounded in-flight writes, also when levels cascade
        self._pending.append(self._pool.submit(self._store_unit, unit))
        if feeds and self._ready(level, parent):
            self._complete(self._assemble(level, parent))

    def _spill_path(self, level: int, parent: tuple[int, int], child: tuple[int, int], name: str) -> Path:
        return self._scratch / f"L{level}-{parent[0]}-{parent[1]}" / f"{child[0]}-{child[1]}-{name}.npy"

    def _spill(self, level: int, parent: tuple[int, int], child: tuple[int, int],
               reduced: dict[str, np.ndarray]) -> None:
        for name, data in reduced.items():
            path = self._spill_path(level, parent, child, name)
            with os_errors_name(path):
                path.parent.mkdir(exist_ok=True)
                np.save(path, data, allow_pickle=False)
        self._spilled[level].setdefault(parent, set()).add(child)

    def _ready(self, level: int, index: tuple[int, int]) -> bool:
        """Whether every child of a parent is spilled, or was written by the interrupted run."""
        assert self._layout is not None
        spilled = self._spilled[level].get(index, set())
        restored = self._restored[level - 1] if self._restored else set()
        return all(c in spilled or c in restored for c in self._layout.children(level, index))

    def _assemble(self, level: int, index: tuple[int, int]) -> _Unit:
        """A whole parent unit from its spilled children (and, on resume, written ones read back)."""
        layout = self._layout
        assert layout is not None
        unit = layout.new_unit(level, index)
        spilled = self._spilled[level].pop(index, set())
        for child in layout.children(level, index):
            if child in spilled:
                reduced = {s.name: np.load(self._spill_path(level, index, child, s.name)) for s in layout.images}
                unit.covered += layout.place_reduced(unit, child, reduced)
            else:  # resuming: written by the interrupted run
                unit.covered += layout.reduce_child(unit, child, layout.read_unit(level - 1, child))
        shutil.rmtree(self._scratch / f"L{level}-{index[0]}-{index[1]}", ignore_errors=True)
        return unit

    def _complete_orphans(self) -> None:
        """Resuming: finish the parents whose children were all written, bottom up."""
        assert self._layout is not None
        for level in range(1, len(self._layout.shapes)):
            for index in self._layout.units(level):
                if index in self._done[level] or index in self._spilled[level]:
                    continue
                if all(c in self._restored[level - 1] for c in self._layout.children(level, index)):
                    self._complete(self._assemble(level, index))

    def _store_unit(self, unit: _Unit) -> None:
        """One aligned assignment per image: whole shards (0.5) / chunks (0.4), once."""
        assert self._layout is not None
        with os_errors_name(self.path):  # the journal's marker, when the unit's own files are not it
            self._layout.commit_unit(unit.level, unit.index, unit.data)

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
                f"output {p} already exists: choose another folder, pass overwrite (--overwrite) "
                "or continue an interrupted run (--resume)"
            )
        if not (p / MANIFEST).is_file():
            raise OutputError(f"refusing to overwrite {p}: it is not empty and holds no {MANIFEST}")

    def _store(self, path: Path) -> Any:
        """The zarr store of one image root (tests override this to watch writes)."""
        return zarr.storage.LocalStore(path)

    # -- helpers --------------------------------------------------------------

    def _require_running(self) -> OutputLayout:
        if self.state != "running" or self._layout is None:
            raise OutputError(f"sink for {self.path} is not open for writing (state {self.state})")
        return self._layout

    _field = staticmethod(tile_field)
