"""The ``tilex`` click group: logging, version, and errors for people.

Each command lives in its own module of this package and is registered in
``_COMMANDS``.  Errors a user can fix (:class:`tilex.errors.UsageError`) become
one line on stderr and exit status 2; a traceback is shown only with ``-v``.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click
from tilex.cli.options import QUIET_HELP, VERBOSE_HELP, set_verbosity, verbosity_options

from tilex._version import __version__
from tilex.errors import TilexError, UsageError, error_line

_COMMANDS = (
    "demo", "synth", "run", "batch", "info", "preview", "view", "export", "validate", "evaluate",
    "train",
)  # fmt: skip

log = logging.getLogger("tilex")


class TilexGroup(click.Group):
    """A group that turns tilex errors into one clear line and an exit status."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UsageError as err:
            _fail(ctx, err, status=2)
        except TilexError as err:
            _fail(ctx, err, status=1)
        except OSError as err:  # disk full, permissions, a vanished file: say which, briefly
            _fail(ctx, err, status=2)
        except KeyboardInterrupt:
            click.echo("tilex: interrupted", err=True)
            ctx.exit(130)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(super().list_commands(ctx))


def _fail(ctx: click.Context, err: Exception, *, status: int) -> None:
    if verbosity(ctx) > 0:
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    click.echo(f"tilex: error: {error_line(err)}", err=True)
    ctx.exit(status)


def verbosity(ctx: click.Context | None = None) -> int:
    """The ``-v``/``-q`` balance of the running command (0 when unknown)."""
    ctx = ctx or click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    return int((root.obj or {}).get("verbosity", 0)) if root else 0


@click.group(cls=TilexGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tilex", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", count=True, help=VERBOSE_HELP)
@click.option("-q", "--quiet", count=True, help=QUIET_HELP)
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: int) -> None:
    """tilex: find hidden paintings in gigapixel multispectral scans.

    Start with `tilex demo`, then `tilex run SCAN -o OUT` on your own scan.
    """
    set_verbosity(ctx, verbose - quiet)


for _name in _COMMANDS:  # every command also takes -v/-q after its name
    main.add_command(verbosity_options(importlib.import_module(f"tilex.cli.{_name}").command))
