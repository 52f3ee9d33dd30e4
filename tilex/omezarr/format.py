"""The tilex output format: what an output folder holds, and the one reader of its manifest.

Layout of an output folder ``OUT/``:

``tilex.json``
    The manifest (:data:`MANIFEST`): the run's record (inputs, bands,
    parameters, weights, statistics, version; :meth:`tilex.sink.RunInfo.record`),
    its timings and, on a cluster, where it ran (:class:`tilex.sink.RunResults`),
    the layout written (``"output"``), the run's fingerprint for ``--resume``
    (``"resume"``, :mod:`tilex.resume`) and ``"state"``: ``"statistics"``,
    ``"running"``, ``"failed"`` or, written last, ``"complete"`` (see
    :mod:`tilex.omezarr.sink`). Written atomically
    (:func:`tilex.omezarr.journal.write_atomic`) and read by
    :func:`read_manifest` only.
``.journal/``
    Only while a run is incomplete: one marker per written unit
    (:mod:`tilex.omezarr.journal`).
``.pyramid/``
    Only while a run is incomplete: reduced units waiting for their parent
    (:data:`SCRATCH`).
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

Format (:class:`LayoutSpec`): OME-Zarr 0.5 (Zarr v3, sharded) by default;
``version="0.4"`` writes Zarr v2 without shards for older tools. Chunks are
``chunk x chunk`` (512) on every level with a channel chunk of 1; shards (0.5)
are ``unit x unit`` (4096), the *write unit*: the region written at once, so
each shard is written whole, once, by one writer. Images have axes ``c, y,
x`` and the label image ``y, x``. Level ``k`` halves level ``k - 1``
(rounding up) until the longest side fits one chunk (:mod:`tilex.pyramid`);
its metadata is in :mod:`tilex.omezarr.ngff`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tilex.errors import OutputError
from tilex.grid import DEFAULT_CHUNK, DEFAULT_UNIT
from tilex.pyramid import reduce_mean, reduce_mean_uint8, reduce_mode
from tilex.sink import RunInfo, TileResult

__all__ = [
    "MANIFEST",
    "SCRATCH",
    "Compression",
    "ImageSpec",
    "LayoutSpec",
    "Version",
    "band_colours",
    "hex_colour",
    "output_images",
    "read_manifest",
    "tile_field",
]

Version = Literal["0.4", "0.5"]
MANIFEST = "tilex.json"
SCRATCH = ".pyramid"  # reduced children waiting for their parent, inside OUT

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


def hex_colour(rgb: tuple[int, int, int]) -> str:
    """An RGB triple as the ``RRGGBB`` text OME metadata uses.

    Examples
    --------
    >>> hex_colour((31, 119, 180))
    '1F77B4'
    """
    return "{:02X}{:02X}{:02X}".format(*rgb)


@dataclass(frozen=True)
class Compression:
    """Blosc settings for every array of an output.

    zstd at level 1 by default: on a default run's level-0 images (2048^2 of
    each, 512 px chunks) it compressed to the same 21.6 MB as level 3 in 0.24 s
    against 0.58 s; lz4 was faster still but 50 % larger.

    Examples
    --------
    >>> Compression(cname="lz4", clevel=1)
    Compression(cname='lz4', clevel=1, shuffle=True)
    """

    cname: str = "zstd"
    clevel: int = 1
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
class LayoutSpec:
    """How an output's arrays are laid out: OME-Zarr version, write unit, chunk, codec.

    Raises :class:`~tilex.errors.OutputError` for an unknown version, or a
    unit that is not an even multiple of the chunk (a parent unit must take
    exactly the 2x2 reductions of its children's units).

    Examples
    --------
    >>> LayoutSpec(unit=256, chunk=128).zarr_format
    3
    >>> LayoutSpec(unit=1000, chunk=512)
    Traceback (most recent call last):
    ...
    tilex.errors.OutputError: write unit 1000 must be an even multiple of the chunk 512
    """

    version: Version = "0.5"
    unit: int = DEFAULT_UNIT
    chunk: int = DEFAULT_CHUNK
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

    @property
    def root(self) -> str:
        """The image's top folder in ``OUT`` (its zarr store), e.g. ``collage.ome.zarr``."""
        return self.path.partition("/")[0]

    @property
    def group(self) -> str:
        """The image's group inside its store (``""`` for the store's root)."""
        return self.path.partition("/")[2]

    def buffer_shape(self, h: int, w: int) -> tuple[int, ...]:
        """The array shape of an ``h x w`` region of this image."""
        return (h, w) if self.is_label else (int(self.channels or 1), h, w)


def output_images(info: RunInfo) -> list[ImageSpec]:
    """The images an output holds for a run described by ``info``.

    Examples
    --------
    >>> info = RunInfo((8, 8), ("ir",), (1000.0,), channels=2, keep_normalised=True)
    >>> [(s.name, s.channels) for s in output_images(info)]
    [('collage', 2), ('winner', None), ('score', 1), ('overlay', 3), ('dissimilarity', 1)]
    """
    bands = tuple(
        name if w is None else f"{name} ({w:g} nm)"
        for name, w in zip(info.band_names, info.wavelengths, strict=True)
    )
    colours = tuple(hex_colour(c) for c in band_colours(info.n_bands))
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
    if info.keep_evidence:
        images.append(
            ImageSpec(
                "evidence", "evidence.ome.zarr", "evidence", f32, 1, reduce_mean, "mean",
                ("evidence",), ("FFFFFF",),
            )
        )  # fmt: skip
    if info.keep_visible:
        images.append(
            ImageSpec(
                "visible", "visible.ome.zarr", "visible", u8, 3, reduce_mean_uint8, "mean",
                ("red", "green", "blue"), ("FF0000", "00FF00", "0000FF"),
            )
        )  # fmt: skip
    if info.keep_normalised:
        images.append(
            ImageSpec(
                "dissimilarity", "dissimilarity.ome.zarr", "normalised", f32, info.n_bands,
                reduce_mean, "mean", bands, colours,
            )
        )  # fmt: skip
    return images


def tile_field(result: TileResult, spec: ImageSpec) -> np.ndarray:
    """The array of ``result`` that feeds image ``spec``, checked and cast to its dtype.

    Raises
    ------
    OutputError
        The result lacks the field, or its shape is not the region's.
    """
    data = getattr(result, spec.field)
    if data is None:
        raise OutputError(f"tile {result.region} has no {spec.field!r} but the output keeps it")
    data = np.asarray(data)
    if spec.name in ("score", "evidence"):
        data = data[None]
    y0, y1, x0, x1 = result.region
    want = spec.buffer_shape(y1 - y0, x1 - x0)
    if data.shape != want:
        raise OutputError(
            f"tile {result.region}: {spec.field} has shape {data.shape}, expected {want}"
        )
    if data.dtype != spec.dtype:
        data = data.astype(spec.dtype)
    return data


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """``tilex.json`` of an output folder (or that file itself), checked to be tilex's.

    The one reader of the manifest: the sink (resume), :func:`tilex.omezarr.open_output`
    and ``--stats-from`` (:meth:`tilex.stats.BandStats.from_output`) all read it here.

    Raises
    ------
    OutputError
        No manifest there, or one that is not a tilex output's.

    Examples
    --------
    >>> read_manifest("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tilex.errors.OutputError: /nonexistent is not a tilex output: no tilex.json ...
    """
    path = Path(path)
    manifest_path = path if path.is_file() else path / MANIFEST
    if not manifest_path.is_file():
        raise OutputError(
            f"{path} is not a tilex output: no {MANIFEST} (run `tilex run ... -o {path}`)"
        )
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except OSError as err:
        raise OutputError(f"cannot read {manifest_path}: {err.strerror or err}") from None
    try:
        manifest = json.loads(text)
        layout = manifest["output"]
        # present in every tilex output since the first: what a reader needs to open the arrays
        str(layout["ome_zarr_version"]), int(layout["zarr_format"]), dict(layout["images"])
    except (ValueError, KeyError, TypeError) as err:
        raise OutputError(f"{manifest_path} is not a valid tilex manifest: {err}") from None
    return manifest
