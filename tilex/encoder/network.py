"""The ArtExtract Siamese network, its BatchNorm folding, receptive field and designed weights.

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
the visible image (its extra 3x3 ``conv``); an encoder's ``radius`` is the
halo a tile needs to see the input the whole image gives it, so its core
matches the whole image's features up to float32 rounding (convolutions of
another shape round differently: within 1e-6 in ``tests/test_encoder.py``).

Designed weights (where the trained default starts)
---------------------------------------------------
No trained ArtExtract weights are published, so tilex designed an
initialisation (:func:`designed_network`, ``--weights designed``),
deterministic and documented; ``tilex train`` (:mod:`tilex.training`)
learns the default weights from it by reshaping its low-pass path, and
they keep its live channels and so its cost
(:func:`tilex.encoder.weights.default_network`):

* every BatchNorm is the identity (mean 0, variance ``1 - eps``, weight 1,
  bias 0: ``(x - 0) / sqrt(1 - eps + eps) * 1 + 0 == x`` exactly in float32);
* ``conv`` is the luminance ``0.299 R + 0.587 G + 0.114 B``
  (:data:`tilex.colour.LUMA`, centre tap);
* ``E`` carries two channels: channel 0 the identity (centre taps 1) and
  channel 1 a blur (separable binomial ``[1, 2, 1] / 4`` in ``conv1``,
  ``conv2`` and ``conv3``); ``conv_out`` = blur - identity. With the residual
  ``+ x``: ``E(x) = leaky(B(x) - x + x) = B(x)`` where ``B`` is the binomial
  low-pass of order 6 (about a Gaussian of sigma 1.22 px). All biases are 0:
  for inputs in [0, 1] (tilex scales integer pixels into [0, 1]) every
  activation is non-negative, so every LeakyReLU is the identity and ``E`` is
  exactly linear (within 3 px of the image's border each layer's own zero
  padding shades the blur, as in ArtExtract).

So the designed dissimilarity is ``|B(gray(visible)) - B(band)|``: the pixel
baseline ``|gray - band|`` with sensor noise averaged away, which is what
makes the fused score find hidden under-drawings better than raw pixels on
``tilex synth`` scans (see ``benchmarks/bench_encoder.py``). The taps the
design leaves at zero make the *measured* radius of these weights 3 px, less
than the architecture's; the halo is always the architecture's (6 px).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tilex.colour import LUMA

__all__ = [
    "FoldedCNN",
    "ResidualCNN",
    "SiameseNetwork",
    "conv_radius",
    "designed_network",
    "fold_batchnorm",
    "prune_channels",
    "receptive_radius",
]

_SLOPE = 0.01


class ResidualCNN(nn.Module):
    """ArtExtract's shared encoder ``E``: four convolutions with BN and a residual.

    Maps ``[B, 1, H, W]`` to ``[B, 1, H, W]``; receptive-field radius 5 px.

    Examples
    --------
    >>> ResidualCNN().eval()(torch.rand(2, 1, 16, 16)).shape
    torch.Size([2, 1, 16, 16])
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
    >>> net = designed_network()
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

    def forward(
        self, visible: torch.Tensor, band: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_visible(visible), self.encode_band(band)


class FoldedCNN(nn.Module):
    """:class:`ResidualCNN` with each BatchNorm folded into its convolution (inference only).

    Build it with :func:`fold_batchnorm`.
    """

    def __init__(
        self, conv1: nn.Conv2d, conv2: nn.Conv2d, conv3: nn.Conv2d, conv_out: nn.Conv2d
    ) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3, self.conv_out = conv1, conv2, conv3, conv_out
        self.act = nn.LeakyReLU(_SLOPE)

    def convs(self) -> list[nn.Conv2d]:
        """The four convolutions, input first."""
        return [self.conv1, self.conv2, self.conv3, self.conv_out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv1(x))
        h = self.act(self.conv2(h))
        h = self.act(self.conv3(h))
        return self.act(self.conv_out(h) + x)


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` as one convolution, computed in float64 then rounded once."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    folded = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
    )
    with torch.no_grad():
        folded.weight.copy_((conv.weight.double() * scale[:, None, None, None]).float())
        folded.bias.copy_(((bias - bn.running_mean.double()) * scale + bn.bias.double()).float())
    return folded


def fold_batchnorm(cnn: ResidualCNN) -> FoldedCNN:
    """Fold the eval-mode BatchNorms of ``cnn`` into its convolutions.

    Examples
    --------
    >>> net = designed_network()
    >>> x = torch.rand(1, 1, 16, 16)
    >>> bool(torch.allclose(fold_batchnorm(net.cnn)(x), net.cnn.eval()(x), atol=1e-6))
    True
    """
    return FoldedCNN(
        _fold(cnn.conv1, cnn.bn1),
        _fold(cnn.conv2, cnn.bn2),
        _fold(cnn.conv3, cnn.bn3),
        _fold(cnn.conv_out, cnn.bn_out),
    ).eval()


def prune_channels(cnn: FoldedCNN) -> FoldedCNN:
    """``cnn`` without the hidden channels that cannot change its output.

    A hidden channel is dropped when every weight and the bias that make it
    are 0 (it is ``leaky(0) = 0`` at every pixel, padding included, so the
    next convolution adds only zeros from it) or when every weight that reads
    it is 0; dropping one may leave another so, until none is. The designed
    weights, and the trained default learnt from them, use 2 of each 16 or
    32 channels (see the module notes), so their band path does about 1/175
    of the multiplications; densely trained weights usually keep every
    channel. What remains is the same sums without their
    zero terms: in PyTorch's default memory format the features are bit for
    bit those of ``cnn`` on this project's CPUs; in ``channels_last`` (tilex's
    CPU default, 3x faster here for the narrow layers) oneDNN rounds some sums
    differently, by at most one float32 step (``tests/test_encoder.py``).
    Every convolution keeps its kernel, so the receptive field is the same.

    Examples
    --------
    >>> folded = fold_batchnorm(designed_network().cnn)
    >>> [c.out_channels for c in prune_channels(folded).convs()]
    [2, 2, 2, 1]
    >>> x = torch.rand(1, 1, 24, 24)
    >>> bool(torch.allclose(prune_channels(folded)(x), folded(x), rtol=0, atol=1e-6))
    True
    """
    convs = cnn.convs()
    keep = [list(range(c.out_channels)) for c in convs[:-1]]
    changed = True
    while changed:
        changed = False
        for j, kept in enumerate(keep):
            ins = [0] if j == 0 else keep[j - 1]
            conv, reader = convs[j], convs[j + 1]
            outs = [0] if j + 1 == len(keep) else keep[j + 1]
            live = [
                k
                for k in kept
                if (conv.weight[k, ins].any() or conv.bias[k] != 0)
                and reader.weight[outs][:, k].any()
            ] or kept[:1]  # a layer keeps at least one channel
            if live != kept:
                keep[j], changed = live, True
    ins = [[0], *keep]
    outs = [*keep, [0]]
    return FoldedCNN(*(_select(c, o, i) for c, o, i in zip(convs, outs, ins, strict=True))).eval()


def _select(conv: nn.Conv2d, outs: list[int], ins: list[int]) -> nn.Conv2d:
    """The convolution of ``conv`` from input channels ``ins`` to output channels ``outs``."""
    part = nn.Conv2d(len(ins), len(outs), conv.kernel_size, padding=conv.padding, bias=True)
    with torch.no_grad():
        part.weight.copy_(conv.weight[outs][:, ins])
        part.bias.copy_(conv.bias[outs])
    return part


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
    :func:`~tilex.encoder.build_encoder` when the architecture's is known.

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


def designed_network() -> SiameseNetwork:
    """The designed :class:`SiameseNetwork` (see the module docstring).

    ``E`` is a binomial blur of order 6 and ``conv`` the luminance, so for
    inputs in [0, 1] ``g = B(gray(visible))`` and ``b_i = B(band_i)``.

    Examples
    --------
    >>> net = designed_network()
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
        net.conv.weight[0, :, 1, 1] = torch.tensor(LUMA)
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
