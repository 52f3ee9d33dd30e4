"""``tilex synth``: write a synthetic multispectral scan with a known hidden figure."""

from __future__ import annotations

from pathlib import Path

import click
from tilex.cli.progress import progress_bars


def _size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    from tilex.synthetic import parse_size

    try:
        return parse_size(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _tile(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value < 16 or value % 16:
        raise click.BadParameter(f"{value} is not a positive multiple of 16 (TIFF tiles)")
    return value


def _human(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


@click.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--size",
    default="2048x2048",
    show_default=True,
    callback=_size,
    help="Scan size HxW, or N for N x N; any size streams with bounded memory.",
)
@click.option(
    "--bands",
    type=click.IntRange(1, 254),
    default=8,
    show_default=True,
    help="Number of bands: classic spreads them from 365 to 1700 nm; physical from 400 to "
    "1000 nm (FWHM 40 nm), and draws a band set from the seed when this is not given.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**32 - 1),
    default=0,
    show_default=True,
    help="Seed of the figure, textures and noise; the same seed writes the same bytes.",
)
@click.option(
    "--tile",
    type=int,
    default=512,
    show_default=True,
    callback=_tile,
    help="TIFF tile side in pixels (a multiple of 16).",
)
@click.option(
    "--compression",
    type=click.Choice(["zstd", "zlib", "none"]),
    default="zstd",
    show_default=True,
    help="TIFF compression of every file.",
)
@click.option(
    "--overwrite", is_flag=True, help="Write into a non-empty OUT_DIR, replacing the scan's files."
)
@click.option(
    "--model",
    type=click.Choice(["classic", "physical"]),
    default="classic",
    show_default=True,
    help="classic: the original portrait-under-a-still-life scene; physical: Kubelka-Munk "
    "layers of measured pigments, CIE colour, a camera per band, traps.",
)
@click.option(
    "--recipe",
    type=click.Choice(["mixed", "underdrawing", "composition", "nothing", "random"]),
    default="mixed",
    show_default=True,
    help="Physical model only: what lies under the paint (nothing: an empty truth mask).",
)
@click.option(
    "--holdout",
    is_flag=True,
    help="Physical model only: held-out pigments, band sets and camera ranges (for validation).",
)
@click.pass_context
def command(
    ctx: click.Context,
    out_dir: Path,
    size: tuple[int, int],
    bands: int,
    seed: int,
    tile: int,
    compression: str,
    overwrite: bool,
    model: str,
    recipe: str,
    holdout: bool,
) -> None:
    """Write a synthetic scan with a hidden figure to OUT_DIR.

    OUT_DIR gets scan.json (the manifest `tilex run` reads), visible.tif
    (uint8 RGB), one uint16 file per band, hidden_mask.tif (uint8, 1 on the
    hidden figure: the ground truth) and synth.json (the generator's
    parameters); all are tiled BigTIFFs.

    Example: tilex synth scan --size 8192x8192 --bands 8

    Example: tilex synth scan --model physical --recipe underdrawing --seed 3
    """
    import json

    from tilex.cli.main import verbosity

    from tilex.errors import OutputExistsError
    from tilex.synthetic import MASK_FILE, synth
    from tilex.synthetic.physical import synth_physical

    given = ctx.get_parameter_source("bands") is not click.core.ParameterSource.DEFAULT
    if model == "classic":
        for name in ("recipe", "holdout"):
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
                raise click.BadParameter(f"--{name} needs --model physical", param_hint=f"--{name}")

    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise OutputExistsError(
            f"{out_dir}: exists and is not empty; pass --overwrite or choose another OUT_DIR"
        )
    chatty = verbosity() >= 0  # -q keeps only the last line
    h, w = size
    if chatty:
        what = f"{bands} band(s)" if model == "classic" or given else "a seeded band set"
        extra = f", {recipe} recipe{', held out' if holdout else ''}" if model == "physical" else ""
        click.echo(
            f"writing a {h}x{w} {model} synthetic scan with {what}, seed {seed}{extra}, to {out_dir}"
        )
    with progress_bars() as progress:
        common = dict(tile=tile, compression=compression, overwrite=overwrite, progress=progress)
        if model == "physical":
            manifest = synth_physical(
                out_dir,
                size=size,
                seed=seed,
                recipe=recipe,
                bands=bands if given else None,
                holdout=holdout,
                **common,
            )
        else:
            manifest = synth(out_dir, size=size, bands=bands, seed=seed, **common)
    listed = json.loads(manifest.read_text())
    bands_files = [b["file"] for b in listed["bands"]]
    files = [listed["visible"], *bands_files, MASK_FILE, "synth.json"]
    shown = set(files)
    if len(bands_files) > 12:  # a long band list is summarised, the sizes still add up
        shown -= set(bands_files[4:-2])
    notes = {MASK_FILE: "  (ground truth: 1 on the hidden figure)", manifest.name: "  (manifest)"}
    total = 0
    for name in [manifest.name, *files]:
        nbytes = (manifest.parent / name).stat().st_size
        total += nbytes
        if not chatty:
            continue
        if name in shown or name == manifest.name:
            click.echo(f"  {name:<20} {_human(nbytes):>10}{notes.get(name, '')}")
        elif name == bands_files[4]:
            click.echo(f"  ... {len(bands_files) - 6} more band files")
    click.echo(f"wrote {len(files) + 1} files, {_human(total)}; next: tilex run {manifest} -o OUT")
