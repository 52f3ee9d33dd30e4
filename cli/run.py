"""``tilex run``: fuse a scan into a pyramidal OME-Zarr output."""

from __future__ import annotations

import click
from tilex.cli.options import FiniteFloatRange, scan_from_options, scan_options
from tilex.cli.progress import format_rate, progress_bars


def _clip(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, float]:
    from tilex.stats import parse_clip

    try:
        return parse_clip(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _sample(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not (0.0 < value <= 1.0):
        raise click.BadParameter(f"must be in (0, 1], got {value:g}")
    return value


def _tile(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and (value < 16 or value % 16):
        raise click.BadParameter(f"must be a multiple of 16 of at least 16 px, got {value}")
    return value


def _blend(blend: str, overlap: int | None, tile: int | None) -> None:
    """Check --blend/--overlap together (and against --tile, or the 512 px CPU default)."""
    if blend == "exact":
        if overlap is not None:
            raise click.BadParameter("only used with --blend feather", param_hint="--overlap")
        return
    if overlap is None:
        raise click.BadParameter("--blend feather needs --overlap PX", param_hint="--overlap")
    limit = (tile or 512) // 2
    if overlap > limit:
        raise click.BadParameter(
            f"{overlap} px is more than half the tile ({tile or 512} px"
            f"{'' if tile else ', the CPU default'}); use at most {limit} or a larger --tile",
            param_hint="--overlap",
        )


def _workers(ctx: click.Context, param: click.Parameter, value: str | None) -> int | str | None:
    if value is None or value == "gpus":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise click.BadParameter(f"must be a number of workers >= 1 or 'gpus', got {value!r}")
    return n


def _unit(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value < 16 or value % 16:
        raise click.BadParameter(f"must be a multiple of 16 of at least 16 px, got {value}")
    return value


@click.command("run")
@scan_options
@click.option("-o", "--out", "out", required=True, type=click.Path(), help="Output folder (OME-Zarr collage, score, overlay, tilex.json).")
@click.option("--tile", type=int, default=None, callback=_tile, help="Tile core side in px: a multiple of 16 that divides --unit (with the default unit: 16, 32, 64, ..., 2048 or 4096); one longer than the scan is lowered to the least that covers it. Tiles are read with the encoder's halo (6 px for the default weights), so under about 32 px most of the work is halo (warned). Default 512 on CPU, 2048 on GPU, halved while it does not fit in GPU memory.")
@click.option("--norm", type=click.Choice(["band", "pixel"]), default="band", show_default=True, help="Normalise each band over the whole scan (band) or across bands at each pixel (pixel).")
@click.option("--threshold", type=FiniteFloatRange(0.0, 1.0), default=0.5, show_default=True, help="Normalised dissimilarity at or below which a band does not count.")
@click.option("--clip", default="1,99", show_default=True, callback=_clip, help="Percentiles LO,HI of each band's dissimilarity mapped to 0 and 1 (0,100 = min/max).")
@click.option("--stats-sample", type=FiniteFloatRange(), default=None, callback=_sample, help="Fraction (0, 1] of the scan measured for the statistics (default 0.05, at least 64 squares of 64 px; 1 = every pixel).")
@click.option("--stats-from", type=click.Path(exists=True), default=None, help="Reuse the statistics of an earlier output, so a series is normalised alike.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:<index>.")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16", "fp16"]), default="fp32", show_default=True, help="Encoder precision (reduced precisions on CUDA only).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None, help="Encoder weights (.safetensors or an ArtExtract .pt state dict).")
@click.option("--keep-dissimilarity", is_flag=True, help="Also write the per-band normalised maps (dissimilarity.ome.zarr).")
@click.option("--ome-zarr-version", type=click.Choice(["0.5", "0.4"]), default="0.5", show_default=True, help="0.5 (Zarr v3, sharded) or 0.4 (Zarr v2) for older tools.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--blend", type=click.Choice(["exact", "feather"]), default="exact", show_default=True, help="exact: each tile read with the encoder's full halo (identical to one whole-image pass); feather: tiles overlap by --overlap px and are cross-faded, an approximation for encoders too wide for a halo.")
@click.option("--overlap", type=click.IntRange(min=1), default=None, metavar="PX", help="With --blend feather: px each tile extends past its core, at most half the tile (default tile 512 on CPU: at most 256).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run into OUT: only unfinished units are computed (same inputs and options required).")
@click.option("--scheduler", default=None, metavar="ADDRESS", help="Run on an existing dask.distributed cluster, e.g. tcp://host:8786 (see docs/cluster.md).")
@click.option("--workers", default=None, callback=_workers, metavar="N|gpus", help="Run on N local worker processes, or one per GPU with dask-cuda ('gpus').")
@click.option("--unit", type=int, default=4096, show_default=True, callback=_unit, help="Write unit and shard side in px: a multiple of --chunk.")
@click.option("--chunk", type=int, default=512, show_default=True, callback=_unit, help="Chunk side in px on every pyramid level.")
def command(scan, visible, band, input_range, out, tile, norm, threshold, clip, stats_sample, stats_from,
            device, precision, weights, keep_dissimilarity, ome_zarr_version, overwrite,
            blend, overlap, resume, scheduler, workers, unit, chunk) -> None:
    """Fuse SCAN (scan.json, its folder, or a multi-channel OME-TIFF/OME-Zarr) into OUT."""
    import tilex

    _blend(blend, overlap, tile)

    opened = scan_from_options(scan, visible, band, input_range)
    with progress_bars() as progress:
        report = tilex.run(
            opened, out, weights=weights, tile=tile, norm=norm, threshold=threshold, clip=clip,
            stats_sample=stats_sample, stats_from=stats_from, device=device, precision=precision,
            keep_normalised=keep_dissimilarity, ome_zarr_version=ome_zarr_version,
            overwrite=overwrite, progress=progress, blend=blend, overlap=overlap,
            resume=resume, scheduler=scheduler, workers=workers, unit=unit, chunk=chunk,
        )
    if report.already_complete:
        click.echo(f"{report.out} is already complete: nothing to resume")
        return
    h, w = report.shape
    click.echo(
        f"wrote {report.out} ({h}x{w}, {opened.n_bands} bands) in {report.timings['total_s']:.1f} s: "
        f"{format_rate(report.megapixels_per_second)}"
    )
