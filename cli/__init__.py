"""The ``tilex`` command line (installed as ``tilex.cli``)."""

from tilex.cli.main import main

__all__ = ["main"]
