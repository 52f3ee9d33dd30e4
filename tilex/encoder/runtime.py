"""The encoder at inference: a network made ready to run on one :class:`~tilex.device.Backend`.

:func:`build_encoder` returns an :class:`Encoder`: eval mode, BatchNorm folded
into the convolutions (a separate module of plain convolutions),
``torch.inference_mode``, the backend's memory format and precision (autocast
for ``bf16``/``fp16``, TF32 only when asked for). Any other network can be
plugged in with ``build_encoder(network=...)``: its visible image goes
through a luminance adapter unless another adapter is given, and its halo is
measured with an impulse unless declared.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
from collections.abc import Iterator

import torch
from torch import nn

from tilex.colour import LUMA
from tilex.device import Backend, resolve_device
from tilex.encoder.network import (
    SiameseNetwork,
    conv_radius,
    fold_batchnorm,
    prune_channels,
    receptive_radius,
)
from tilex.encoder.weights import load_network, weights_sha256

__all__ = ["Encoder", "build_encoder"]

# widest intermediate activation (32 channels) allowed per band chunk, in bytes
_CHUNK_BYTES_CPU, _CHUNK_BYTES_CUDA = 256 << 20, 2 << 30


class _Luminance(nn.Module):
    """Visible adapter for plugged-in networks: :data:`tilex.colour.LUMA` weights."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.tensor(LUMA).reshape(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight.to(x.dtype)).sum(dim=1, keepdim=True)


class Encoder:
    """A ready-to-run encoder: eval mode, BN folded, no autograd.

    Build it with :func:`build_encoder`. Attributes: ``backend`` (the
    :class:`~tilex.device.Backend` it runs on) and, taken from it, ``device``
    (a ``torch.device``), ``precision`` and ``channels_last``; ``radius`` (the
    halo a tile needs: the larger of ``visible_radius`` and ``band_radius``),
    ``channels`` (C), ``band_batch`` (bands per forward pass, ``None`` for
    automatic) and ``weights_sha256``.
    """

    def __init__(
        self,
        visible_path: nn.Module,
        band_path: nn.Module,
        *,
        backend: Backend,
        visible_radius: int,
        band_radius: int,
        channels: int,
        band_batch: int | None,
        weights_sha256: str,
    ) -> None:
        self.visible_path = visible_path
        self.band_path = band_path
        self.backend = backend
        self._device = backend.device  # built once: encode() compares it with every input
        self.visible_radius = int(visible_radius)
        self.band_radius = int(band_radius)
        self.radius = max(self.visible_radius, self.band_radius)
        self.channels = int(channels)
        self.band_batch = band_batch
        self.weights_sha256 = weights_sha256

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def precision(self) -> str:
        return self.backend.precision

    @property
    def channels_last(self) -> bool:
        return self.backend.channels_last

    def __repr__(self) -> str:
        return (
            f"Encoder(radius={self.radius}, channels={self.channels}, "
            f"device={self.backend.name!r}, precision={self.precision!r}, "
            f"sha256={self.weights_sha256[:12]}...)"
        )

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if self.backend.is_cuda:
                # cuDNN uses TF32 for float32 convolutions by default: keep fp32 exact
                stack.enter_context(
                    torch.backends.cudnn.flags(
                        enabled=True,
                        benchmark=torch.backends.cudnn.benchmark,
                        deterministic=torch.backends.cudnn.deterministic,
                        allow_tf32=self.precision == "tf32",
                    )
                )
            if self.precision in ("bf16", "fp16"):
                dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
                stack.enter_context(torch.autocast(device_type=self.device.type, dtype=dtype))
            yield

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _chunk(self, n: int, h: int, w: int) -> int:
        if self.band_batch:
            return max(1, min(n, self.band_batch))
        per_band = 32 * 4 * h * w  # the widest activation of ArtExtract's E
        budget = _CHUNK_BYTES_CUDA if self.backend.is_cuda else _CHUNK_BYTES_CPU
        return max(1, min(n, budget // max(per_band, 1)))

    def encode(
        self, visible: torch.Tensor, bands: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode one region: ``visible [3, h, w]``, ``bands [N, h, w]`` -> ``g [C, h, w]``, ``b [N, C, h, w]``.

        Inputs are float32 tensors on :attr:`device`; outputs are float32 on
        the same device. Bands go through ``E`` in chunks of
        :attr:`band_batch` (automatic: about 256 MiB of activations on CPU).

        Examples
        --------
        >>> enc = build_encoder()
        >>> g, b = enc.encode(torch.rand(3, 32, 48), torch.rand(4, 32, 48))
        >>> tuple(g.shape), tuple(b.shape)
        ((1, 32, 48), (4, 1, 32, 48))
        """
        if visible.ndim != 3 or visible.shape[0] != 3:
            raise ValueError(f"visible must be [3, h, w], got {tuple(visible.shape)}")
        if bands.ndim != 3 or bands.shape[1:] != visible.shape[1:]:
            raise ValueError(
                f"bands must be [N, h, w] with h, w of visible {tuple(visible.shape[1:])}, "
                f"got {tuple(bands.shape)}"
            )
        for name, t in (("visible", visible), ("bands", bands)):
            if t.dtype != torch.float32:
                raise TypeError(f"{name} must be float32, got {t.dtype}")
            if t.device != self.device:
                raise ValueError(
                    f"{name} is on {t.device} but the encoder runs on {self.device}; move it first"
                )
        with self._context():
            g = self.visible_path(self._prepare(visible[None]))[0].float().contiguous()
        return g, self.encode_bands(bands)

    def encode_bands(self, planes: torch.Tensor) -> torch.Tensor:
        """Encode planes through the band path only: ``[M, h, w]`` -> ``[M, C, h, w]`` float32.

        The calibrated comparison (:mod:`tilex.calibration`) encodes each
        band and its prediction from the visible image with the same ``E``.
        Planes go through in chunks of :attr:`band_batch`, as in :meth:`encode`.

        Examples
        --------
        >>> enc = build_encoder()
        >>> tuple(enc.encode_bands(torch.rand(6, 32, 48)).shape)
        (6, 1, 32, 48)
        """
        if planes.ndim != 3:
            raise ValueError(f"planes must be [M, h, w], got {tuple(planes.shape)}")
        if planes.dtype != torch.float32:
            raise TypeError(f"planes must be float32, got {planes.dtype}")
        if planes.device != self.device:
            raise ValueError(
                f"planes is on {planes.device} but the encoder runs on {self.device}; move it first"
            )
        n, h, w = planes.shape
        chunk = self._chunk(n, h, w)
        with self._context():
            b = torch.empty((n, self.channels, h, w), dtype=torch.float32, device=self.device)
            for i in range(0, n, chunk):
                b[i : i + chunk] = self.band_path(
                    self._prepare(planes[i : i + chunk, None])
                ).float()
        return b


def _backend(
    backend: Backend | None,
    device: str | torch.device | None,
    precision: str | None,
    channels_last: bool | None,
) -> Backend:
    """The backend given, or the one the compatibility keywords describe."""
    legacy = (device, precision, channels_last) != (None, None, None)
    if backend is not None:
        if not isinstance(backend, Backend):
            raise TypeError(
                f"backend must be a tilex.device.Backend, got {backend!r}; "
                "pass backend=resolve_device(...) or device=..."
            )
        if legacy:
            raise ValueError("pass backend= or device=/precision=/channels_last=, not both")
        return backend
    # the keywords' defaults are build_encoder's historical ones: cpu, fp32, contiguous
    return resolve_device(
        "cpu" if device is None else str(device),
        precision="fp32" if precision is None else precision,
        channels_last=False if channels_last is None else bool(channels_last),
    )


def build_encoder(
    weights: str | os.PathLike | None = None,
    backend: Backend | None = None,
    *,
    network: nn.Module | None = None,
    visible_adapter: nn.Module | None = None,
    radius: int | None = None,
    band_batch: int | None = None,
    fold: bool = True,
    compile: bool = False,
    device: str | torch.device | None = None,
    precision: str | None = None,
    channels_last: bool | None = None,
) -> Encoder:
    """Build an :class:`Encoder` from weights or from any network.

    Parameters
    ----------
    weights
        A weights file or name for :func:`~tilex.encoder.load_network`
        (``"trained"``, ``"designed"``); ``None`` for the trained default.
        Not with ``network``.
    backend
        Where and how the encoder runs (:func:`tilex.device.resolve_device`):
        its torch device, precision and memory format. Outputs are always
        float32, whatever the precision.
    network
        A :class:`~tilex.encoder.SiameseNetwork` (BN folded, radius 6/5 from
        its kernels), or any module mapping ``[B, 1, H, W]`` to
        ``[B, C, H, W]``, used as ``E``.
    visible_adapter
        For a plain ``network``: the module mapping ``[B, 3, H, W]`` to
        ``[B, 1, H, W]`` before ``E`` (default: luminance).
    radius
        Declared halo of both paths; measured by
        :func:`~tilex.encoder.receptive_radius` when ``None`` for a plain
        ``network``.
    band_batch
        Bands per forward pass; ``None`` sizes it from the region.
    fold
        Fold BatchNorm into the convolutions (``False`` only to compare).
    compile
        Wrap both paths in ``torch.compile`` (compiles on first use).
    device, precision, channels_last
        Compatibility keywords, not with ``backend``: the same as
        ``backend=resolve_device(device, precision=precision,
        channels_last=channels_last)``, with the defaults ``"cpu"``,
        ``"fp32"`` and ``False``.

    Examples
    --------
    >>> from tilex.device import resolve_device
    >>> enc = build_encoder(backend=resolve_device("cpu", channels_last=False))
    >>> enc.radius, enc.visible_radius, enc.band_radius, enc.channels
    (6, 6, 5, 1)
    >>> enc.backend == build_encoder(device="cpu").backend
    True
    >>> plain = build_encoder(network=nn.Conv2d(1, 4, 5, padding=2))
    >>> plain.radius, plain.channels
    (2, 4)
    """
    backend = _backend(backend, device, precision, channels_last)
    if network is not None and weights is not None:
        raise ValueError("pass weights= or network=, not both")
    if band_batch is not None and band_batch < 1:
        raise ValueError(f"band_batch must be at least 1, got {band_batch}")
    if network is None:
        network = load_network(weights)
    network = copy.deepcopy(network).eval()
    sha = weights_sha256(network)

    if isinstance(network, SiameseNetwork):
        if visible_adapter is not None:
            raise ValueError("a SiameseNetwork has its own visible adapter (conv)")
        band_path = prune_channels(fold_batchnorm(network.cnn)) if fold else network.cnn
        visible_path = nn.Sequential(network.conv, band_path)
        band_r, visible_r = conv_radius(network.cnn), conv_radius(network)
        channels = 1
    else:
        adapter = (visible_adapter or _Luminance()).eval()
        band_path = network
        visible_path = nn.Sequential(adapter, network)
        if visible_adapter is not None:
            sha = hashlib.sha256((sha + weights_sha256(adapter)).encode()).hexdigest()
        if radius is None:
            band_r = receptive_radius(band_path, 1)
            visible_r = receptive_radius(visible_path, 3)
        else:
            band_r = visible_r = int(radius)
        with torch.inference_mode():
            channels = int(band_path(torch.zeros(1, 1, 8, 8)).shape[1])
    if radius is not None:
        band_r = visible_r = int(radius)

    for path in (visible_path, band_path):
        path.to(backend.device)
        if backend.channels_last:
            path.to(memory_format=torch.channels_last)
        for p in path.parameters():
            p.requires_grad_(False)
    if compile:
        visible_path = torch.compile(visible_path)
        band_path = torch.compile(band_path)
    return Encoder(
        visible_path,
        band_path,
        backend=backend,
        visible_radius=visible_r,
        band_radius=band_r,
        channels=channels,
        band_batch=band_batch,
        weights_sha256=sha,
    )
