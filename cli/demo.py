"""``tilex demo``: the whole job on a built-in synthetic scan, in one command."""

from __future__ import annotations

from pathlib import Path

import click
from tilex.cli.progress import format_rate, progress_bars


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    from tilex.synthetic import parse_size

    try:
        return parse_size(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@click.command("demo")
@click.argument("out", required=False, default="tilex-demo", type=click.Path(file_okay=False))
@click.option(
    "--size",
    default=None,
    callback=_size,
    help="Scan size HxW (default 2048x2048 on CPU, 8192x8192 on GPU: well within a minute).",
)
@click.option(
    "--bands",
    type=click.IntRange(1, 254),
    default=8,
    show_default=True,
    help="Number of synthetic bands.",
)
@click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:<index>."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing demo folder.")
def command(
    out: str, size: tuple[int, int] | None, bands: int, device: str, overwrite: bool
) -> None:
    """Make a synthetic scan with a hidden figure, find it, and show how to look.

    Writes OUT/scan (the synthetic scan), OUT/result (the OME-Zarr output) and
    OUT/preview.png.
    """
    import shutil

    import tilex
    from tilex.device import resolve_device, tune_host_allocator
    from tilex.errors import OutputExistsError
    from tilex.lock import output_lock
    from tilex.preview import write_preview

    root = Path(out)
    with output_lock(root):  # a second demo into OUT is refused before it deletes anything
        if root.exists() and any(root.iterdir()):
            if not overwrite:
                raise OutputExistsError(
                    f"{root}: folder exists; pass --overwrite or choose another OUT"
                )
            if not (
                (root / "scan" / "scan.json").exists() or (root / "result" / "tilex.json").exists()
            ):
                raise OutputExistsError(
                    f"{root}: not a tilex demo folder; refusing to delete it, choose another OUT"
                )
            with output_lock(root / "result"):  # not while a `tilex run -o OUT/result` writes it
                shutil.rmtree(root)
        backend = resolve_device(device)
        tune_host_allocator()  # the command owns its process: no page faults on every tile's buffers
        size = size or ((8192, 8192) if backend.is_cuda else (2048, 2048))
        click.echo(
            f"1/3 making a {size[0]}x{size[1]} synthetic scan with {bands} bands in {root / 'scan'}"
        )
        manifest = tilex.synth(root / "scan", size=size, bands=bands, seed=0)
        click.echo(f"2/3 finding what the bands see under the paint ({backend.name})")
        with progress_bars() as progress:
            report = tilex.run(manifest, root / "result", device=backend.name, progress=progress)
        preview = write_preview(root / "result", root / "preview.png")
        click.echo(f"3/3 drew {preview}")
        truth = root / "scan" / "hidden_mask.tif"
        found = report.found()
        if found is not None:
            checked = tilex.evaluate_output(root / "result", truth)
            click.echo(
                f"\n{found.describe(tuple(tilex.open_scan(manifest).band_names))}; "
                f"against the figure the generator hid: precision {checked.precision:.2f}, "
                f"recall {checked.recall:.2f}"
            )
        click.echo(
            f"\ndone in {report.timings['total_s']:.1f} s: {format_rate(report.megapixels_per_second)}.\n"
            f"  look:     {preview}  (collage | visible | hidden areas in blue)\n"
            f"  browse:   tilex view {root / 'result'}  (any zoom, live threshold)\n"
            f"  napari:   napari --plugin napari-ome-zarr {root / 'result' / 'overlay.ome.zarr'}\n"
            f"  QuPath:   tilex export {root / 'result'} --format ome-tiff -o overlay.ome.tif, then open it\n"
            f"  validate: tilex validate {root / 'result'}\n"
            f"  truth:    {truth} is the figure the generator hid"
        )
