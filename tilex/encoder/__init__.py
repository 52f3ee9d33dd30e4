"""The ArtExtract Siamese encoder: network, weights and runtime.

* :mod:`tilex.encoder.network`: the architecture, BatchNorm folding, the
  receptive field and the designed weights (and why they are so);
* :mod:`tilex.encoder.weights`: reading and writing weights (safetensors or
  weights-only torch files), their SHA-256 and the shipped trained default;
* :mod:`tilex.encoder.runtime`: :func:`build_encoder` and the
  :class:`Encoder` it returns, running on a :class:`tilex.device.Backend`.

Importing this package imports torch; ``import tilex`` does not.

Examples
--------
>>> from tilex.encoder import build_encoder
>>> build_encoder().radius
6
"""

from tilex.device import PRECISIONS
from tilex.encoder.network import (
    FoldedCNN,
    ResidualCNN,
    SiameseNetwork,
    conv_radius,
    designed_network,
    fold_batchnorm,
    prune_channels,
    receptive_radius,
)
from tilex.encoder.runtime import Encoder, build_encoder
from tilex.encoder.weights import (
    TRAINED_WEIGHTS,
    WEIGHT_NAMES,
    default_network,
    load_network,
    save_weights,
    weights_sha256,
)

__all__ = [
    "PRECISIONS",
    "TRAINED_WEIGHTS",
    "WEIGHT_NAMES",
    "Encoder",
    "FoldedCNN",
    "ResidualCNN",
    "SiameseNetwork",
    "build_encoder",
    "conv_radius",
    "default_network",
    "designed_network",
    "fold_batchnorm",
    "load_network",
    "prune_channels",
    "receptive_radius",
    "save_weights",
    "weights_sha256",
]
