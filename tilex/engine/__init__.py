"""The engine: split -> infer -> merge, one pipeline loop for every pass over a scan.

Modules, in pipeline order:

- :mod:`tilex.engine.pipeline`: the loop (:class:`Engine`): tiles read ahead
  on threads, encoded on the device, handed to a *merger*, results written by
  a writer thread into a sink.
- :mod:`tilex.engine.statistics`: the statistics pass (sampled squares in
  mosaics, merged into exact histograms).
- :mod:`tilex.engine.fuse`: the exact merger (each core fused on its own).
- :mod:`tilex.engine.feather`: the feathered merger (overlapping tiles
  cross-faded before the fusion).
- :mod:`tilex.engine.trial`: trial encodes (the tile that fits the GPU).
"""

from tilex.engine.feather import FeatherMerger, axis_weights, extent_of, feather_order, tile_weights
from tilex.engine.fuse import FuseMerger
from tilex.engine.pipeline import Engine, Merger, Progress, Writer
from tilex.engine.statistics import HistogramMerger, histogram
from tilex.engine.statistics import measure as measure_statistics
from tilex.engine.trial import fit_tile, trial_encode

__all__ = [
    "Engine",
    "FeatherMerger",
    "FuseMerger",
    "HistogramMerger",
    "Merger",
    "Progress",
    "Writer",
    "axis_weights",
    "extent_of",
    "feather_order",
    "fit_tile",
    "histogram",
    "measure_statistics",
    "tile_weights",
    "trial_encode",
]
