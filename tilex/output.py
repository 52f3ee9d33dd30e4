"""Deprecated alias: the reader lives in :mod:`tilex.omezarr` (``from tilex.omezarr import open_output``)."""

from tilex.omezarr.reader import Output, OutputImage, open_output

__all__ = ["Output", "OutputImage", "open_output"]
