"""Trial encodes: one full tile of zeros through the encoder before a scan starts.

:func:`fit_tile` finds the largest tile that fits the GPU's memory; the timed
trial of :mod:`tilex.estimate` uses :func:`trial_encode` too.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from tilex.device import Backend
from tilex.engine.pipeline import out_of_memory

__all__ = ["fit_tile", "trial_encode"]

log = logging.getLogger("tilex")


def fit_tile(encoder: Any, backend: Backend, tile: int, n_bands: int, *, minimum: int = 128) -> int:
    """The largest tile, from ``tile`` down by halves, whose encoding fits the device.

    One trial encode of a full tile (core and halo, every band) runs before
    the scan starts; on out-of-memory the tile is halved, with a warning, down
    to ``minimum``.
    """
    while True:
        try:
            trial_encode(encoder, backend, tile, n_bands)
            return tile
        except Exception as err:
            if not out_of_memory(err) or tile // 2 < minimum:
                raise
            log.warning("tile %d px does not fit in device memory; trying %d px", tile, tile // 2)
            _release_device_memory(backend)
            tile //= 2


def trial_encode(
    encoder: Any,
    backend: Backend,
    tile: int,
    n_bands: int,
    shape: tuple[int, int] | None = None,
    *,
    calibrated: bool = False,
    halo: int | None = None,
) -> tuple[int, int]:
    """Encode one full tile of zeros (core and halo, every band), wait for it, return its shape.

    The tile is clipped to ``shape`` (a scan smaller than one tile) when given.
    ``calibrated``: as a calibrated run encodes it, every band and its
    prediction through the band path (``2 * n_bands`` planes, no visible).
    ``halo``: the tile's halo (default the encoder's radius).
    """
    side = tile + 2 * (encoder.radius if halo is None else halo)
    h, w = (side, side) if shape is None else (min(side, shape[0]), min(side, shape[1]))
    visible = bands = g = None
    try:
        if calibrated:
            bands = backend.upload(np.zeros((2 * n_bands, h, w), np.float32))
            g = encoder.encode_bands(bands)
        else:
            visible = backend.upload(np.zeros((3, h, w), np.float32))
            bands = backend.upload(np.zeros((n_bands, h, w), np.float32))
            g, _ = encoder.encode(visible, bands)
        backend.download(backend.to_kernel(g[:1, :1, :1]))  # a device encode is over once read
        return h, w
    finally:  # an out-of-memory traceback keeps this frame: let the device free the trial's arrays
        visible = bands = g = None


def _release_device_memory(backend: Backend) -> None:
    if backend.is_cuda:
        import torch

        torch.cuda.empty_cache()
