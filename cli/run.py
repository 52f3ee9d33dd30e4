"""``tilex run``: fuse a scan into a pyramidal OME-Zarr output.

The options are only converted to their types here; every rule and default
lives in :class:`tilex.plan.RunPlan` (built by ``RunPlan.from_options``), so a
bad value or a bad combination is one ``tilex: error:`` line naming the
option, and exit status 2.
"""

from __future__ import annotations

import click
from tilex.cli.options import scan_from_options, scan_options
from tilex.cli.progress import format_rate, progress_bars

from tilex.calibration import CALIBRATION_MODES, VISIBLE_ENCODINGS
from tilex.device import PRECISIONS
from tilex.plan import BLEND_MODES, DEFAULT_CHUNK, DEFAULT_TILE, DEFAULT_UNIT, NORMS

_TILE_HELP = (
    "Tile core side in px: any size of at least 16 px and twice the encoder's halo (6 px for the "
    "default weights); each write unit's last tiles are clipped at its edge. Tiles are read with "
    "the halo, so small tiles mostly encode halo (warned under about 32 px). One longer than the "
    f"scan is lowered to cover it. Default {DEFAULT_TILE['cpu']} on CPU, {DEFAULT_TILE['cuda']} on "
    "GPU (halved while it does not fit in GPU memory)."
)


@click.command("run")
@scan_options
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(),
    help="Output folder (OME-Zarr collage, score, overlay, tilex.json).",
)
@click.option("--tile", type=int, default=None, help=_TILE_HELP)
@click.option(
    "--norm",
    type=click.Choice(NORMS),
    default=None,
    help="How dissimilarity becomes a score: noise (the default: over twice each band's noise "
    "floor, measured over the whole scan), band (stretched between percentiles of each band over "
    "the whole scan, ArtExtract's) or pixel (across the bands at each pixel).",
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Normalised dissimilarity at or below which a band does not count, in [0, 1] (default 0.5).",
)
@click.option(
    "--clip",
    default=None,
    metavar="LO,HI",
    help="Percentiles LO,HI of each band's dissimilarity mapped to 0 and 1 (default 1,99; 0,100 = min/max).",
)
@click.option(
    "--stats-sample",
    type=float,
    default=None,
    help="Fraction (0, 1] of the scan measured for the statistics (default 0.05, at least 64 and at most 4096 squares of 64 px; 1 = every pixel).",
)
@click.option(
    "--stats-from",
    type=click.Path(exists=True),
    default=None,
    help="Reuse the statistics of an earlier output, so a series is normalised alike.",
)
@click.option(
    "--device",
    default=None,
    help="auto (the default: a GPU when torch and CuPy see one), cpu, cuda or cuda:<index>.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=None,
    help="Encoder precision: fp32 (the default), bf16, or on CUDA tf32 and fp16.",
)
@click.option(
    "--weights",
    default=None,
    metavar="trained|designed|FILE",
    help="Encoder weights: 'trained' (the default, fitted by `tilex train`), 'designed' (the "
    "documented filter it started from) or a file (.safetensors or an ArtExtract .pt state dict).",
)
@click.option(
    "--keep-dissimilarity",
    is_flag=True,
    default=None,
    help="Also write the per-band normalised maps (dissimilarity.ome.zarr).",
)
@click.option(
    "--ome-zarr-version",
    type=click.Choice(["0.5", "0.4"]),
    default=None,
    help="0.5 (the default: Zarr v3, sharded) or 0.4 (Zarr v2) for older tools.",
)
@click.option("--overwrite", is_flag=True, default=None, help="Replace an existing output.")
@click.option(
    "--blend",
    type=click.Choice(BLEND_MODES),
    default=None,
    help="exact (the default): each tile read with the encoder's full halo, the result of one whole-image pass (same winners; maps equal up to float32 rounding); feather: tiles overlap by --overlap px and are cross-faded, an approximation for encoders too wide for a halo.",
)
@click.option(
    "--overlap",
    type=int,
    default=None,
    metavar="PX",
    help="With --blend feather: px each tile extends past its core, at most half the tile.",
)
@click.option(
    "--resume",
    is_flag=True,
    default=None,
    help="Continue an interrupted run into OUT: only unfinished units are computed (same inputs and options required).",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Run on an existing dask.distributed cluster, e.g. tcp://host:8786 (see docs/cluster.md).",
)
@click.option(
    "--workers",
    default=None,
    metavar="N|gpus",
    help="Run on N local worker processes, or one per GPU with dask-cuda ('gpus').",
)
@click.option(
    "--unit",
    type=int,
    default=None,
    help=f"Write unit and shard side in px, a multiple of --chunk (default {DEFAULT_UNIT}).",
)
@click.option(
    "--chunk",
    type=int,
    default=None,
    help=f"Chunk side in px on every pyramid level, a multiple of 16 (default {DEFAULT_CHUNK}).",
)
@click.option(
    "--calibrate",
    type=click.Choice(CALIBRATION_MODES),
    default=None,
    help="Compare each band with what the visible image predicts for it, fitted over the "
    "statistics' sample: registered (the default: colour, plus each band's sub-pixel "
    "misregistration from the visible image's gradients), colour (flat, then per visible colour "
    "what the band holds beyond it), flat (an affine function of linear R, G, B plus a quadratic surface "
    "over the scan for the band's uneven lighting), affine (without the surface), gain (a gain "
    "and offset of the linear luminance) or none (ArtExtract: with the visible image itself). "
    "Calibrated runs cost about twice the encoder work per pixel.",
)
@click.option(
    "--visible-encoding",
    type=click.Choice(VISIBLE_ENCODINGS),
    default=None,
    help="With --calibrate: how the visible image is encoded, srgb (the default: decoded to "
    "linear light first) or linear.",
)
def command(scan, visible, band, input_range, out, **options) -> None:
    """Fuse SCAN (scan.json, its folder, or a multi-channel OME-TIFF/OME-Zarr) into OUT."""
    import tilex
    from tilex.device import tune_host_allocator
    from tilex.plan import RunPlan

    plan = RunPlan.from_options(**{k: v for k, v in options.items() if v is not None})
    opened = scan_from_options(scan, visible, band, input_range)
    tune_host_allocator()  # the command owns its process: no page faults on every tile's buffers
    with progress_bars() as progress:
        report = tilex.run(opened, out, plan, progress=progress)
    if report.already_complete:
        click.echo(f"{report.out} is already complete: nothing to resume")
        return
    h, w = report.shape
    click.echo(
        f"wrote {report.out} ({h}x{w}, {opened.n_bands} bands) in {report.timings['total_s']:.1f} s: "
        f"{format_rate(report.megapixels_per_second)}"
    )
    found = report.found()
    if found is not None:
        threshold = report.plan.fusion.threshold if report.plan else None
        click.echo(
            f"{found.describe(tuple(opened.band_names))} (score above the threshold {threshold:g})"
        )
