"""Options shared by the commands: ``-v``/``-q`` on every one, and the scan options.

``-v``/``-q`` work before the command (``tilex -q run ...``) and after it
(``tilex run ... -q``) alike; each adds to one balance on the root context
(:func:`set_verbosity`), which sets the log level, progress bars and
tracebacks.

For the commands that read a scan (``info``, ``run``, ...), it is chosen
either by one ``SCAN`` argument (a ``scan.json``, a folder
holding one, or a multi-channel OME-TIFF / OME-Zarr / Zarr) or by
``--visible FILE`` with one ``--band NAME[@NM]=FILE`` per band.  Band texts are
parsed inside the command (not in a click callback) so that a mistake becomes
a :class:`tilex.errors.ScanError`: one ``tilex: error:`` line and exit 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import click

from tilex.errors import ScanError

if TYPE_CHECKING:
    from tilex.scan import Scan

__all__ = [
    "QUIET_HELP",
    "VERBOSE_HELP",
    "scan_from_options",
    "scan_options",
    "set_verbosity",
    "verbosity_options",
]

F = TypeVar("F", bound=Callable[..., object])

VERBOSE_HELP = "More log output (repeat for debug); show tracebacks."
QUIET_HELP = "Less output: no progress bars, warnings only."


def set_verbosity(ctx: click.Context, level: int) -> None:
    """Record the ``-v``/``-q`` balance on the root context and log to stderr to match.

    Below 0: warnings only (no work estimate, no progress bars); 0: info;
    above 0: debug, and tracebacks with errors.
    """
    ctx.find_root().ensure_object(dict)["verbosity"] = level
    logging.basicConfig(
        level=logging.WARNING if level < 0 else logging.INFO if level == 0 else logging.DEBUG,
        format="tilex: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _add_verbosity(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if value:
        root = ctx.find_root()
        step = value if param.name == "verbose" else -value
        set_verbosity(root, int((root.obj or {}).get("verbosity", 0)) + step)


def verbosity_options(command: click.Command) -> click.Command:
    """Give ``command`` its own ``-v``/``-q``, adding to the group's.

    Examples
    --------
    >>> @verbosity_options
    ... @click.command()
    ... def command():
    ...     pass
    >>> [p.name for p in command.params]
    ['verbose', 'quiet']
    """
    if any(
        p.name == "verbose" for p in command.params
    ):  # registered twice (a module imported again)
        return command
    command.params += [
        click.Option(
            ["-v", "--verbose"],
            count=True,
            expose_value=False,
            callback=_add_verbosity,
            help=VERBOSE_HELP,
        ),
        click.Option(
            ["-q", "--quiet"],
            count=True,
            expose_value=False,
            callback=_add_verbosity,
            help=QUIET_HELP,
        ),
    ]
    return command


def _input_range(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[float, float] | None:
    from tilex.scan import parse_input_range

    # a ScanError, not click's usage error: one ``tilex: error:`` line naming the option
    return parse_input_range(value, "--input-range")


def scan_options(func: F) -> F:
    """Add the ``SCAN`` argument and the ``--visible``/``--band``/``--input-range`` options.

    The command receives ``scan``, ``visible``, ``band`` (a tuple of
    texts) and ``input_range``; pass them to :func:`scan_from_options`.

    Examples
    --------
    >>> @click.command()
    ... @scan_options
    ... def command(scan, visible, band, input_range):
    ...     opened = scan_from_options(scan, visible, band, input_range)
    """
    func = click.option(
        "--input-range",
        default=None,
        callback=_input_range,
        metavar="LO,HI",
        help="The values of the float32 inputs that mean 0 and 1 (default 0,1: reflectance), "
        "e.g. 0,65535; integer images are always scaled by their type's range.",
    )(func)
    func = click.option(
        "--band",
        "band",
        multiple=True,
        metavar="NAME[@NM]=FILE",
        help="A registered band image with its name and optional wavelength in nm "
        "(repeat per band; with --visible instead of SCAN).",
    )(func)
    func = click.option(
        "--visible",
        type=click.Path(),
        default=None,
        metavar="FILE",
        help="The visible image (RGB, RGBA or gray), with --band instead of SCAN.",
    )(func)
    func = click.argument("scan", required=False, type=click.Path())(func)
    return func


def scan_from_options(
    scan: str | None,
    visible: str | None,
    band: Sequence[str],
    input_range: tuple[float, float] | None = None,
) -> Scan:
    """Open the scan chosen by :func:`scan_options`'s values.

    Returns
    -------
    tilex.scan.Scan

    Raises
    ------
    ScanError
        Neither or both ways given, a malformed ``--band``, or any error of
        :func:`tilex.scan.open_scan`.

    Examples
    --------
    >>> scan_from_options(None, "v.tif", ["ir@1000=ir.tif"])  # doctest: +SKIP
    <Scan 6000x8000, 1 bands: ir>
    """
    from tilex.scan import open_scan, parse_band_option

    if scan is not None:
        if visible is not None or band:
            raise ScanError("give either SCAN or --visible with --band, not both")
        return open_scan(scan, input_range=input_range)
    if visible is None:
        if band:
            raise ScanError("--band needs --visible FILE (the visible image of the scan)")
        raise ScanError(
            "no scan given: give SCAN (scan.json, its folder or a multi-channel "
            "OME-TIFF/OME-Zarr) or --visible FILE --band NAME[@NM]=FILE ..."
        )
    if not band:
        raise ScanError("--visible needs at least one --band NAME[@NM]=FILE")
    bands = [parse_band_option(text) for text in band]
    return open_scan(visible=visible, bands=bands, input_range=input_range)
