"""The ArtExtract Siamese encoder: network, weights, BN folding, receptive field.

Architecture
------------
ArtExtract (GSoC 2024) encodes the visible image and every band with one
shared CNN ``E`` (a Siamese network: same weights on both sides)::

    visible [B, 3, H, W] -> conv (3->1, 3x3) -> E -> g [B, 1, H, W]
    band    [B, 1, H, W] ---------------------> E -> b [B, 1, H, W]

    E(x) = leaky(bn_out(conv_out(h)) + x),   h = leaky(bn3(conv3(h2))),
    h2 = leaky(bn2(conv2(h1))),   h1 = leaky(bn1(conv1(x)))

with ``conv1`` 1->16 3x3, ``conv2`` 16->32 3x3, ``conv3`` 32->32 5x5,
``conv_out`` 32->1 3x3, zero "same" padding everywhere, LeakyReLU slope 0.01.
Parameter names are ArtExtract's (``conv.weight``, ``cnn.conv1.weight``,
``cnn.bn1.running_mean``...), so its ``state_dict`` files load as they are.
The receptive-field radius is 1 + 1 + 2 + 1 = 5 px for a band and 6 px for
the visible image (its extra 3x3 ``conv``); :class:`Encoder.radius` is the
halo a tile needs for results identical to the whole image's.

Default weights (designed, not trained)
---------------------------------------
No trained ArtExtract weights are published, so tilex ships a *designed*
initialisation (:func:`default_network`), deterministic and documented:

* every BatchNorm is the identity (mean 0, variance ``1 - eps``, weight 1,
  bias 0: ``(x - 0) / sqrt(1 - eps + eps) * 1 + 0 == x`` exactly in float32);
* ``conv`` is the luminance ``0.299 R + 0.587 G + 0.114 B`` (centre tap);
* ``E`` carries two channels: channel 0 the identity (centre taps 1) and
  channel 1 a blur (separable binomial ``[1, 2, 1] / 4`` in ``conv1``,
  ``conv2`` and ``conv3``); ``conv_out`` = blur - identity. With the residual
  ``+ x``: ``E(x) = leaky(B(x) - x + x) = B(x)`` where ``B`` is the binomial
  low-pass of order 6 (about a Gaussian of sigma 1.22 px). All biases are 0:
  for inputs in [0, 1] (tilex scales integer pixels into [0, 1]) every
  activation is non-negative, so every LeakyReLU is the identity and ``E`` is
  exactly linear (within 3 px of the image's border each layer's own zero
  padding shades the blur, as in ArtExtract).

So the default dissimilarity is ``|B(gray(visible)) - B(band)|``: the pixel
baseline ``|gray - band|`` with sensor noise averaged away, which is what
makes the fused score find hidden under-drawings better than raw pixels on
``tilex synth`` scans (see ``benchmarks/bench_encoder.py``). The taps the
design leaves at zero make the *measured* radius of these weights 3 px, less
than the architecture's; the halo is always the architecture's (6 px).

Inference
---------
:func:`build_encoder` returns an :class:`Encoder`: eval mode, BatchNorm folded
into the convolutions (a separate module of plain convolutions),
``torch.inference_mode``, optional channels-last memory and autocast. Any
other network can be plugged in with ``build_encoder(network=...)``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tilex.errors import DeviceError, WeightsError

__all__ = [
    "PRECISIONS",
    "Encoder",
    "FoldedCNN",
    "ResidualCNN",
    "SiameseNetwork",
    "build_encoder",
    "conv_radius",
    "default_network",
    "fold_batchnorm",
    "load_network",
    "receptive_radius",
    "save_weights",
    "weights_sha256",
]

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
"""Encoder precisions: ``fp32`` anywhere, ``bf16`` on CPU and CUDA, the rest CUDA only."""

_SLOPE = 0.01
_LUMINANCE = (0.299, 0.587, 0.114)
# widest intermediate activation (32 channels) allowed per band chunk, in bytes
_CHUNK_BYTES = {"cpu": 256 << 20, "cuda": 2 << 30}


# --------------------------------------------------------------------------
# the network


class ResidualCNN(nn.Module):
    """ArtExtract's shared encoder ``E``: four convolutions with BN and a residual.

    Maps ``[B, 1, H, W]`` to ``[B, 1, H, W]``; receptive-field radius 5 px.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 32, 5, padding=2)
        self.bn3 = nn.BatchNorm2d(32)
        self.conv_out = nn.Conv2d(32, 1, 3, padding=1)
        self.bn_out = nn.BatchNorm2d(1)
        self.act = nn.LeakyReLU(_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.bn1(self.conv1(x)))
        h = self.act(self.bn2(self.conv2(h)))
        h = self.act(self.bn3(self.conv3(h)))
        return self.act(self.bn_out(self.conv_out(h)) + x)


class SiameseNetwork(nn.Module):
    """ArtExtract's Siamese network: a visible adapter ``conv`` and the shared ``cnn``.

    Examples
    --------
    >>> net = default_network()
    >>> g, b = net(torch.rand(1, 3, 32, 32), torch.rand(1, 1, 32, 32))
    >>> g.shape, b.shape
    (torch.Size([1, 1, 32, 32]), torch.Size([1, 1, 32, 32]))
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)
        self.cnn = ResidualCNN()

    def encode_visible(self, visible: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 1, H, W]``."""
        return self.cnn(self.conv(visible))

    def encode_band(self, band: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` -> ``[B, 1, H, W]``."""
        return self.cnn(band)

    def forward(self, visible: torch.Tensor, band: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_visible(visible), self.encode_band(band)


class FoldedCNN(nn.Module):
    """:class:`ResidualCNN` with each BatchNorm folded into its convolution (inference only)."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, conv3: nn.Conv2d, conv_out: nn.Conv2d) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3, self.conv_out = conv1, conv2, conv3, conv_out
        self.act = nn.LeakyReLU(_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv1(x))
        h = self.act(self.conv2(h))
        h = self.act(self.conv3(h))
        return self.act(self.conv_out(h) + x)


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` as one convolution, computed in float64 then rounded once."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                       padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True)
    with torch.no_grad():
        folded.weight.copy_((conv.weight.double() * scale[:, None, None, None]).float())
        folded.bias.copy_(((bias - bn.running_mean.double()) * scale + bn.bias.double()).float())
    return folded


def fold_batchnorm(cnn: ResidualCNN) -> FoldedCNN:
    """Fold the eval-mode BatchNorms of ``cnn`` into its convolutions.

    Examples
    --------
    >>> net = default_network()
    >>> x = torch.rand(1, 1, 16, 16)
    >>> bool(torch.allclose(fold_batchnorm(net.cnn)(x), net.cnn.eval()(x), atol=1e-6))
    True
    """
    return FoldedCNN(_fold(cnn.conv1, cnn.bn1), _fold(cnn.conv2, cnn.bn2),
                     _fold(cnn.conv3, cnn.bn3), _fold(cnn.conv_out, cnn.bn_out)).eval()


# --------------------------------------------------------------------------
# receptive field


def conv_radius(module: nn.Module) -> int:
    """Analytic receptive-field radius of a chain of stride-1 convolutions.

    The sum of ``dilation * (kernel - 1) // 2`` over every ``nn.Conv2d`` in
    ``module`` (each taken at its wider axis): exact for a sequential chain
    such as :class:`ResidualCNN`, an upper bound for parallel branches.

    Examples
    --------
    >>> net = SiameseNetwork()
    >>> conv_radius(net.cnn), conv_radius(net)
    (5, 6)
    """
    total = 0
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if any(s != 1 for s in m.stride):
                raise ValueError(f"conv_radius needs stride-1 convolutions, got {m}")
            total += max(d * (k - 1) // 2 for k, d in zip(m.kernel_size, m.dilation, strict=True))
    return total


# input ranges of successive impulse trials: zero-ish positive, then signed and wider
_PROBE_RANGES = ((0.01, 0.11), (-1.0, 1.0), (0.0, 1.0), (-0.1, 0.1))


def receptive_radius(
    module: nn.Module,
    in_channels: int,
    *,
    size: int = 33,
    max_size: int = 513,
    trials: int = 4,
    seed: int = 0,
) -> int:
    """Measure a module's receptive-field radius with an impulse, in float64.

    Runs a copy of ``module`` (eval mode, float64, CPU) on a random input
    and on the same input with its centre pixel bumped, and returns the
    largest Chebyshev distance from the centre of an output that changed.
    Repeated over ``trials`` inputs (small positive ones first, then signed
    ones, so that a ReLU dead on one input is alive on another) and both
    impulse signs; the input grows (doubling up to ``max_size``) while the
    change reaches its border. A measurement can only under-estimate (a tap
    that is zero, or a unit dead on every trial): declare ``radius=`` in
    :func:`build_encoder` when the architecture's is known.

    Examples
    --------
    >>> net = SiameseNetwork()
    >>> receptive_radius(net.cnn, 1), receptive_radius(nn.Sequential(net.conv, net.cnn), 3)
    (5, 6)
    """
    probe = copy.deepcopy(module).to(device="cpu", dtype=torch.float64).eval()
    gen = torch.Generator().manual_seed(seed)
    while True:
        c = size // 2
        radius = -1
        with torch.inference_mode():
            for trial in range(trials):
                lo, hi = _PROBE_RANGES[trial % len(_PROBE_RANGES)]
                noise = torch.rand(1, in_channels, size, size, generator=gen, dtype=torch.float64)
                base = lo + (hi - lo) * noise
                out0 = probe(base)
                for sign in (1.0, -1.0):
                    bumped = base.clone()
                    bumped[..., c, c] += 0.5 * sign
                    delta = (probe(bumped) - out0).abs().amax(dim=(0, 1))
                    # identical inputs give identical outputs outside the field: any change counts
                    changed = torch.nonzero(delta > 1e-14 * (1.0 + out0.abs().amax()))
                    if len(changed):
                        radius = max(radius, int((changed - c).abs().max()))
        if radius < c or size >= max_size:
            break
        size = min(2 * size + 1, max_size)
    if radius >= c:
        raise ValueError(f"receptive field reaches past {max_size} px; declare radius= instead")
    return max(radius, 0)


# --------------------------------------------------------------------------
# default weights


def default_network() -> SiameseNetwork:
    """The designed default :class:`SiameseNetwork` (see the module docstring).

    ``E`` is a binomial blur of order 6 and ``conv`` the luminance, so for
    inputs in [0, 1] ``g = B(gray(visible))`` and ``b_i = B(band_i)``.

    Examples
    --------
    >>> net = default_network()
    >>> x = torch.full((1, 1, 9, 9), 0.5)
    >>> float(net.encode_band(x).detach()[0, 0, 4, 4])
    0.5
    """
    net = SiameseNetwork()
    binom3 = torch.tensor([1.0, 2.0, 1.0]) / 4.0
    blur3 = torch.outer(binom3, binom3)
    blur5 = torch.zeros(5, 5)
    blur5[1:4, 1:4] = blur3  # conv3 is 5x5: the design uses its centre 3x3
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)  # 1 / sqrt(var + eps) == 1 exactly in float32
                m.weight.fill_(1.0)
                m.bias.zero_()
        net.conv.weight[0, :, 1, 1] = torch.tensor(_LUMINANCE)
        cnn = net.cnn
        cnn.conv1.weight[0, 0, 1, 1] = 1.0  # channel 0: identity
        cnn.conv1.weight[1, 0] = blur3  # channel 1: blur
        cnn.conv2.weight[0, 0, 1, 1] = 1.0
        cnn.conv2.weight[1, 1] = blur3
        cnn.conv3.weight[0, 0, 2, 2] = 1.0
        cnn.conv3.weight[1, 1] = blur5
        cnn.conv_out.weight[0, 1, 1, 1] = 1.0  # + blur
        cnn.conv_out.weight[0, 0, 1, 1] = -1.0  # - identity, cancelled by the residual
    return net.eval()


# --------------------------------------------------------------------------
# weights I/O


def _canonical(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float32, contiguous, CPU tensors without ``num_batches_tracked`` (a training counter)."""
    return {k: v.detach().to("cpu", torch.float32).contiguous()
            for k, v in sorted(state.items()) if not k.endswith("num_batches_tracked")}


def weights_sha256(network: nn.Module) -> str:
    """SHA-256 of the canonical safetensors bytes of ``network``'s state dict.

    The same digest as ``sha256sum`` of the file :func:`save_weights` writes,
    whatever file the weights came from.

    Examples
    --------
    >>> len(weights_sha256(default_network()))
    64
    """
    from safetensors.torch import save

    return hashlib.sha256(save(_canonical(network.state_dict()))).hexdigest()


def save_weights(network: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``network``'s state dict as safetensors (canonical bytes, no metadata).

    Examples
    --------
    >>> save_weights(default_network(), tmp_path / "w.safetensors")  # doctest: +SKIP
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
            raise WeightsError(f"weights file {path} is not a readable safetensors file: {err}") from None
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


def load_network(path: str | os.PathLike | None = None) -> SiameseNetwork:
    """Load a :class:`SiameseNetwork`; the designed default when ``path`` is ``None``.

    ``path`` is a ``.safetensors`` file or a ``torch.save``'d ArtExtract state
    dict (read with ``weights_only=True``; a ``"state_dict"`` wrapper and a
    ``"module."`` prefix are accepted). ``num_batches_tracked`` is ignored.
    Missing, unexpected, mis-shaped or non-finite tensors raise one
    :class:`~tilex.errors.WeightsError` that names the file and lists them all.

    Examples
    --------
    >>> net = load_network()  # the designed default
    >>> sorted(net.state_dict())[:3]
    ['cnn.bn1.bias', 'cnn.bn1.num_batches_tracked', 'cnn.bn1.running_mean']
    """
    if path is None:
        return default_network()
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
            f"weights file {path} does not match ArtExtract's SiameseNetwork: " + " | ".join(problems)
        )
    net.load_state_dict({k: given[k].float() for k in expected}, strict=False)
    return net.eval()


# --------------------------------------------------------------------------
# inference


class _Luminance(nn.Module):
    """Visible adapter for plugged-in networks: ``0.299 R + 0.587 G + 0.114 B``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.tensor(_LUMINANCE).reshape(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight.to(x.dtype)).sum(dim=1, keepdim=True)


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DeviceError(f"device {device!r} is not cpu, cuda or cuda:<index> ({err})") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise DeviceError(f"device {device!r}: tilex runs the encoder on cpu or cuda")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {device!r}: torch sees no CUDA device (use --device cpu)")
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise DeviceError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def _check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device.type == "cpu" and precision in ("tf32", "fp16"):
        raise DeviceError(f"precision {precision!r} needs a CUDA device; on cpu use 'fp32' or 'bf16'")


class Encoder:
    """A ready-to-run encoder: eval mode, BN folded, no autograd.

    Build it with :func:`build_encoder`. Attributes: ``radius`` (the halo a
    tile needs: the larger of ``visible_radius`` and ``band_radius``),
    ``channels`` (C), ``device`` (a ``torch.device``), ``precision``,
    ``channels_last``, ``band_batch`` (bands per forward pass, ``None`` for
    automatic) and ``weights_sha256``.
    """

    def __init__(
        self,
        visible_path: nn.Module,
        band_path: nn.Module,
        *,
        visible_radius: int,
        band_radius: int,
        channels: int,
        device: torch.device,
        precision: str,
        channels_last: bool,
        band_batch: int | None,
        weights_sha256: str,
    ) -> None:
        self.visible_path = visible_path
        self.band_path = band_path
        self.visible_radius = int(visible_radius)
        self.band_radius = int(band_radius)
        self.radius = max(self.visible_radius, self.band_radius)
        self.channels = int(channels)
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.band_batch = band_batch
        self.weights_sha256 = weights_sha256

    def __repr__(self) -> str:
        return (f"Encoder(radius={self.radius}, channels={self.channels}, device={str(self.device)!r}, "
                f"precision={self.precision!r}, sha256={self.weights_sha256[:12]}...)")

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if self.device.type == "cuda":
                # cuDNN uses TF32 for float32 convolutions by default: keep fp32 exact
                stack.enter_context(torch.backends.cudnn.flags(
                    enabled=True, benchmark=torch.backends.cudnn.benchmark,
                    deterministic=torch.backends.cudnn.deterministic,
                    allow_tf32=self.precision == "tf32",
                ))
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
        return max(1, min(n, _CHUNK_BYTES[self.device.type] // max(per_band, 1)))

    def encode(self, visible: torch.Tensor, bands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
            raise ValueError(f"bands must be [N, h, w] with h, w of visible {tuple(visible.shape[1:])}, "
                             f"got {tuple(bands.shape)}")
        for name, t in (("visible", visible), ("bands", bands)):
            if t.dtype != torch.float32:
                raise TypeError(f"{name} must be float32, got {t.dtype}")
            if t.device != self.device:
                raise ValueError(f"{name} is on {t.device} but the encoder runs on {self.device}; move it first")
        n, h, w = bands.shape
        chunk = self._chunk(n, h, w)
        with self._context():
            g = self.visible_path(self._prepare(visible[None]))[0].float().contiguous()
            b = torch.empty((n, g.shape[0], h, w), dtype=torch.float32, device=self.device)
            for i in range(0, n, chunk):
                b[i:i + chunk] = self.band_path(self._prepare(bands[i:i + chunk, None])).float()
        return g, b


def build_encoder(
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    *,
    network: nn.Module | None = None,
    visible_adapter: nn.Module | None = None,
    radius: int | None = None,
    band_batch: int | None = None,
    fold: bool = True,
) -> Encoder:
    """Build an :class:`Encoder` from weights or from any network.

    Parameters
    ----------
    weights
        A weights file for :func:`load_network`; ``None`` for the designed
        default. Not with ``network``.
    device
        ``"cpu"``, ``"cuda"`` or ``"cuda:<i>"`` (:class:`~tilex.errors.DeviceError`
        when unavailable).
    precision
        ``"fp32"`` (TF32 off on CUDA), ``"tf32"`` (CUDA), ``"bf16"`` (autocast;
        CUDA, or CPU where it is slow unless the CPU has bf16 units) or
        ``"fp16"`` (autocast, CUDA). Outputs are always float32.
    channels_last
        Run convolutions in channels-last memory format.
    compile
        Wrap both paths in ``torch.compile`` (compiles on first use).
    network
        A :class:`SiameseNetwork` (BN folded, radius 6/5 from its kernels), or
        any module mapping ``[B, 1, H, W]`` to ``[B, C, H, W]``, used as ``E``.
    visible_adapter
        For a plain ``network``: the module mapping ``[B, 3, H, W]`` to
        ``[B, 1, H, W]`` before ``E`` (default: luminance).
    radius
        Declared halo of both paths; measured by :func:`receptive_radius`
        when ``None`` for a plain ``network``.
    band_batch
        Bands per forward pass; ``None`` sizes it from the region.
    fold
        Fold BatchNorm into the convolutions (``False`` only to compare).

    Examples
    --------
    >>> enc = build_encoder()
    >>> enc.radius, enc.visible_radius, enc.band_radius, enc.channels
    (6, 6, 5, 1)
    >>> plain = build_encoder(network=nn.Conv2d(1, 4, 5, padding=2))
    >>> plain.radius, plain.channels
    (2, 4)
    """
    dev = _resolve_device(device)
    _check_precision(precision, dev)
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
        band_path = fold_batchnorm(network.cnn) if fold else network.cnn
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
            band_r, visible_r = receptive_radius(band_path, 1), receptive_radius(visible_path, 3)
        else:
            band_r = visible_r = int(radius)
        with torch.inference_mode():
            channels = int(band_path(torch.zeros(1, 1, 8, 8)).shape[1])
    if radius is not None:
        band_r = visible_r = int(radius)

    visible_path.to(dev)
    band_path.to(dev)
    if channels_last:
        visible_path.to(memory_format=torch.channels_last)
        band_path.to(memory_format=torch.channels_last)
    for p in (*visible_path.parameters(), *band_path.parameters()):
        p.requires_grad_(False)
    if compile:
        visible_path = torch.compile(visible_path)
        band_path = torch.compile(band_path)
    return Encoder(visible_path, band_path, visible_radius=visible_r, band_radius=band_r,
                   channels=channels, device=dev, precision=precision, channels_last=channels_last,
                   band_batch=band_batch, weights_sha256=sha)
