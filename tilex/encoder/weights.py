"""Encoder weights on disk: safetensors or weights-only torch files, never pickle.

A network's identity is :func:`weights_sha256`, the digest of the canonical
safetensors bytes of its state dict (float32, sorted, without BatchNorm's
``num_batches_tracked`` training counter): the same whether the weights came
from a ``.safetensors`` file, an ArtExtract ``torch.save`` checkpoint or
a network in memory. Runs record it, and distributed workers check it
against the client's.

Two weights ship by name: ``"trained"``, the default
(``tilex/weights/trained.safetensors``, written by ``tilex train`` with its
model card ``trained.json`` beside it, see :mod:`tilex.training`), and
``"designed"``, the documented filter it was trained from
(:func:`~tilex.encoder.network.designed_network`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tilex.encoder.network import SiameseNetwork, designed_network
from tilex.errors import WeightsError
from tilex.plan import WEIGHT_NAMES

__all__ = [
    "TRAINED_WEIGHTS",
    "WEIGHT_NAMES",
    "default_network",
    "load_network",
    "save_weights",
    "weights_sha256",
]

TRAINED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "trained.safetensors"
"""The shipped trained weights (the default); their model card is ``trained.json`` beside them."""


def _canonical(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float32, contiguous, CPU tensors without ``num_batches_tracked`` (a training counter)."""
    return {
        k: v.detach().to("cpu", torch.float32).contiguous()
        for k, v in sorted(state.items())
        if not k.endswith("num_batches_tracked")
    }


def weights_sha256(network: nn.Module) -> str:
    """SHA-256 of the canonical safetensors bytes of ``network``'s state dict.

    The same digest as ``sha256sum`` of the file :func:`save_weights` writes,
    whatever file the weights came from.

    Examples
    --------
    >>> len(weights_sha256(designed_network()))
    64
    """
    from safetensors.torch import save

    return hashlib.sha256(save(_canonical(network.state_dict()))).hexdigest()


def save_weights(network: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``network``'s state dict as safetensors (canonical bytes, no metadata).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_weights(designed_network(), Path(folder) / "w.safetensors")
    ...     weights_sha256(load_network(path)) == weights_sha256(designed_network())
    True
    """
    from safetensors.torch import save

    path = Path(path)
    path.write_bytes(save(_canonical(network.state_dict())))
    return path


def _read_state(path: Path) -> Mapping[str, Any]:
    """Read a state dict from safetensors or a ``torch.save`` file (weights_only)."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    with path.open("rb") as f:
        head = f.read(9)
    # safetensors: 8-byte little-endian header length, then a JSON object
    if len(head) == 9 and head[8:9] == b"{":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise WeightsError(
                f"weights file {path} is not a readable safetensors file: {err}"
            ) from None
    try:
        # weights_only: tensors and plain containers only, never arbitrary pickled objects
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise WeightsError(
            f"weights file {path} is neither safetensors nor a weights-only torch state dict "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    for key in ("state_dict", "model_state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise WeightsError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state


def default_network() -> SiameseNetwork:
    """The default :class:`~tilex.encoder.SiameseNetwork`: the shipped trained weights.

    Examples
    --------
    >>> weights_sha256(default_network()) == weights_sha256(load_network("trained"))
    True
    """
    return load_network(TRAINED_WEIGHTS)


def load_network(path: str | os.PathLike | None = None) -> SiameseNetwork:
    """Load a :class:`~tilex.encoder.SiameseNetwork`: the trained default when ``path`` is ``None``.

    ``path`` may also be a name of :data:`WEIGHT_NAMES`: ``"trained"`` (the
    default) or ``"designed"`` (:func:`~tilex.encoder.network.designed_network`).

    ``path`` is a ``.safetensors`` file or a ``torch.save``'d ArtExtract state
    dict (read with ``weights_only=True``; a ``"state_dict"`` wrapper and a
    ``"module."`` prefix are accepted). ``num_batches_tracked`` is ignored.
    Missing, unexpected, mis-shaped or non-finite tensors raise one
    :class:`~tilex.errors.WeightsError` that names the file and lists them all.

    Examples
    --------
    >>> net = load_network()  # the trained default
    >>> sorted(net.state_dict())[:3]
    ['cnn.bn1.bias', 'cnn.bn1.num_batches_tracked', 'cnn.bn1.running_mean']
    """
    if path is None or str(path) == "trained":
        path = TRAINED_WEIGHTS
    elif str(path) == "designed":
        return designed_network()
    path = Path(path)
    state = _read_state(path)
    net = SiameseNetwork()
    expected = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}
    given = {k: v for k, v in given.items() if not k.endswith("num_batches_tracked")}
    problems = []
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected: {', '.join(unexpected)}")
    wrong = []
    for key in sorted(set(expected) & set(given)):
        value = given[key]
        if not isinstance(value, torch.Tensor):
            wrong.append(f"{key} is a {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != tuple(expected[key].shape):
            wrong.append(f"{key} {tuple(value.shape)} != {tuple(expected[key].shape)}")
        elif not bool(torch.isfinite(value.float()).all()):
            wrong.append(f"{key} holds NaN or infinity")
    if wrong:
        problems.append(f"mis-shaped or invalid: {'; '.join(wrong)}")
    if problems:
        raise WeightsError(
            f"weights file {path} does not match ArtExtract's SiameseNetwork: "
            + " | ".join(problems)
        )
    net.load_state_dict({k: given[k].float() for k in expected}, strict=False)
    return net.eval()
