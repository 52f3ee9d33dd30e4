"""``tilex export``: an output as a pyramidal OME-TIFF, or as a static IIIF folder."""

from __future__ import annotations

import click

from tilex.export import COMPRESSIONS, EXPORT_IMAGES


@click.command("export")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["ome-tiff", "iiif"]),
    default="ome-tiff",
    show_default=True,
    help="ome-tiff: one image as a pyramidal, tiled OME-TIFF with SubIFDs (QuPath, Fiji, "
    "IIPImage, libvips). iiif: visible, overlay and collage as static IIIF Image API 3.0 "
    "level-0 tiles with a Presentation 3.0 manifest, in a folder for any web server.",
)
@click.option(
    "--image",
    type=click.Choice(EXPORT_IMAGES),
    default="overlay",
    show_default=True,
    help="ome-tiff: which image to export (visible: the scan's visible image in colour; visible, "
    "evidence and dissimilarity only if the run stored them).",
)
@click.option(
    "-o",
    "--output",
    "dest",
    type=click.Path(),
    default=None,
    help="ome-tiff: the file to write (default OUT/<image>.ome.tif); "
    "iiif: the folder to write (default OUT-iiif beside OUT).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Draw the overlay, score and collage at this threshold instead of the run's (e.g. one "
    "chosen in `tilex view`), without re-encoding the scan. Below the run's threshold only "
    "outputs that store evidence can; the collage then marks pixels whose band is unknown.",
)
@click.option(
    "--compression",
    type=click.Choice(COMPRESSIONS),
    default="zlib",
    show_default=True,
    help="ome-tiff: tile compression (zlib is deflate, read by every tool; jpeg, lossy, "
    "for the overlay and the visible image only).",
)
@click.option(
    "--tile-format",
    type=click.Choice(["jpg", "png"]),
    default="jpg",
    show_default=True,
    help="iiif: tile format (png is lossless and larger).",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 95),
    default=90,
    show_default=True,
    help="JPEG quality of jpeg tiles.",
)
@click.option(
    "--base-url",
    default=None,
    help="iiif: the address the folder will be served at; IIIF ids are absolute "
    "(default http://localhost:8000/<folder name>).",
)
@click.option("--overwrite", is_flag=True, help="Replace the file or folder if it exists.")
def command(
    out: str,
    fmt: str,
    image: str,
    dest: str | None,
    threshold: float | None,
    compression: str,
    tile_format: str,
    quality: int,
    base_url: str | None,
    overwrite: bool,
) -> None:
    """Export the tilex output OUT with all its pyramid levels.

    The OME-TIFF opens in QuPath, Fiji/Bio-Formats, napari and libvips: its
    levels are the OME-Zarr pyramid's, as SubIFDs of 512x512 tiles, the
    overlay and the visible image as interleaved RGB. The IIIF folder opens
    in Mirador, Universal Viewer and OpenSeadragon once on a web server; its
    index.html shows it.
    """
    from pathlib import Path

    _refuse_options_of_the_other_format(fmt)
    if fmt == "ome-tiff":
        from tilex.export import export_ome_tiff

        path = export_ome_tiff(
            out,
            dest,
            image=image,
            compression=compression,
            quality=quality,
            threshold=threshold,
            overwrite=overwrite,
        )
        click.echo(f"wrote {path}")
        return

    from tilex.cli.progress import progress_bars

    from tilex.iiif import export_iiif

    folder = (
        Path(dest)
        if dest is not None
        else Path(out).resolve().with_name(f"{Path(out).resolve().name}-iiif")
    )
    with progress_bars() as progress:
        path = export_iiif(
            out,
            folder,
            base_url=base_url,
            tile_format=tile_format,  # type: ignore[arg-type]
            quality=quality,
            threshold=threshold,
            overwrite=overwrite,
            progress=progress,
        )
    click.echo(f"wrote {path}")
    if base_url is None:
        click.echo(
            f"  look: python -m http.server 8000 --directory {path.resolve().parent}"
            f", then open http://localhost:8000/{path.resolve().name}/index.html"
        )


_ONLY = {"ome-tiff": ("image", "compression"), "iiif": ("tile_format", "base_url")}


def _refuse_options_of_the_other_format(fmt: str) -> None:
    """``--image`` with ``--format iiif`` (and the like) would be ignored: say so instead."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    for other, names in _ONLY.items():
        for name in names if other != fmt else ():
            if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
                option = "--" + name.replace("_", "-")
                raise click.UsageError(f"{option} is for --format {other}, not --format {fmt}")
