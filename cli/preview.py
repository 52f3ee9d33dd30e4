"""``tilex preview``: collage | visible | hidden areas in blue, with a band legend."""

from __future__ import annotations

import click

from tilex.preview import MAX_SIDE


@click.command("preview")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "-o",
    "--output",
    "dest",
    type=click.Path(dir_okay=False),
    default=None,
    help="PNG to write (default OUT/preview.png).",
)
@click.option(
    "--max-side",
    type=click.IntRange(64, 16384),
    default=MAX_SIDE,
    show_default=True,
    help="Draw from the first pyramid level whose longest side is at most this.",
)
def command(out: str, dest: str | None, max_side: int) -> None:
    """Draw ArtExtract's three panels of the tilex output OUT as a PNG.

    Instant on any size: it reads one small pyramid level.
    """
    from tilex.preview import write_preview

    path = write_preview(out, dest, max_side=max_side)
    click.echo(f"wrote {path}")
