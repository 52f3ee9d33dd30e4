"""The ArtExtract encoder: architecture, radius, BN folding, weights I/O, default weights."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch import nn

from tilex.encoder import (
    SiameseNetwork,
    build_encoder,
    conv_radius,
    designed_network,
    fold_batchnorm,
    load_network,
    prune_channels,
    receptive_radius,
    save_weights,
    weights_sha256,
)
from tilex.errors import DeviceError, WeightsError
from tilex.metrics import roc_auc, score_map
from tilex.synthetic import render

ARTEXTRACT_KEYS = {
    "conv.weight",
    "conv.bias",
    *(f"cnn.{c}.{p}" for c in ("conv1", "conv2", "conv3", "conv_out") for p in ("weight", "bias")),
    *(
        f"cnn.{b}.{p}"
        for b in ("bn1", "bn2", "bn3", "bn_out")
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    ),
}


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------
# architecture and receptive field


def test_parameter_names_are_artextracts():
    assert set(SiameseNetwork().state_dict()) == ARTEXTRACT_KEYS


def test_impulse_radius_is_6_visible_5_bands_and_matches_kernels(random_network):
    net = random_network(1)
    assert receptive_radius(net.cnn, 1) == conv_radius(net.cnn) == 5
    assert receptive_radius(nn.Sequential(net.conv, net.cnn), 3) == conv_radius(net) == 6
    enc = build_encoder(network=net)
    assert (enc.visible_radius, enc.band_radius, enc.radius, enc.channels) == (6, 5, 6, 1)


@pytest.mark.parametrize(
    ("make", "radius"),
    [
        (lambda: nn.Conv2d(1, 2, 7, padding=3), 3),
        (lambda: nn.Conv2d(1, 1, 3, padding=2, dilation=2), 2),
        (
            lambda: nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 5, padding=2)
            ),
            3,
        ),
    ],
)
@pytest.mark.parametrize("seed", range(3))
def test_impulse_radius_of_plain_modules(make, radius, seed):
    torch.manual_seed(seed)
    module = make()
    assert receptive_radius(module, 1) == conv_radius(module) == radius


def test_impulse_radius_grows_past_its_first_window():
    deep = nn.Sequential(*(nn.Conv2d(1, 1, 9, padding=4) for _ in range(5)))  # radius 20 > 33 // 2
    assert receptive_radius(deep, 1) == 20


def test_encoder_halo_is_enough_for_identical_tiles(random_network):
    """A crop grown by `radius` encodes its core exactly as the whole image does."""
    enc = build_encoder(network=random_network(2))
    vis, bands = rand(3, 48, 56, seed=1), rand(3, 48, 56, seed=2)
    g, b = enc.encode(vis, bands)
    r, (y0, y1, x0, x1) = enc.radius, (17, 31, 20, 40)
    gc, bc = enc.encode(
        vis[:, y0 - r : y1 + r, x0 - r : x1 + r].contiguous(),
        bands[:, y0 - r : y1 + r, x0 - r : x1 + r].contiguous(),
    )
    torch.testing.assert_close(gc[:, r:-r, r:-r], g[:, y0:y1, x0:x1], atol=1e-6, rtol=0)
    torch.testing.assert_close(bc[..., r:-r, r:-r], b[..., y0:y1, x0:x1], atol=1e-6, rtol=0)


# --------------------------------------------------------------------------
# BN folding and inference


def test_folded_equals_unfolded(random_network):
    net = random_network(3)
    x = rand(2, 1, 40, 36, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(net.cnn)(x), net.cnn(x), atol=1e-5, rtol=0)
    folded = build_encoder(network=net)
    unfolded = build_encoder(network=net, fold=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.band_path.modules())
    vis, bands = rand(3, 40, 36, seed=4), rand(5, 40, 36, seed=5)
    for a, b in zip(folded.encode(vis, bands), unfolded.encode(vis, bands), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(
            folded.encode(vis, bands)[0], net.encode_visible(vis[None])[0], atol=1e-5, rtol=0
        )


def test_pruning_drops_only_channels_that_cannot_change_the_output(random_network):
    designed = fold_batchnorm(designed_network().cnn)
    pruned = prune_channels(designed)
    assert [c.out_channels for c in pruned.convs()] == [2, 2, 2, 1]
    assert [c.kernel_size for c in pruned.convs()] == [c.kernel_size for c in designed.convs()]
    dense = fold_batchnorm(random_network(5).cnn)  # trained-like weights: nothing to drop
    assert [c.out_channels for c in prune_channels(dense).convs()] == [16, 32, 32, 1]
    # a dead conv1 channel (no weight, no bias) leaves the conv2 channel reading only it dead
    # too; a conv3 channel nobody reads goes; a bias-only channel stays (padding sees it)
    with torch.no_grad():
        dense.conv1.weight[3] = 0
        dense.conv1.bias[3] = 0
        dense.conv2.weight[7] = 0
        dense.conv2.weight[7, 3] = 0.5
        dense.conv2.bias[7] = 0
        dense.conv2.weight[9] = 0  # bias only
        dense.conv_out.weight[0, 11] = 0
    cut = prune_channels(dense)
    assert [c.out_channels for c in cut.convs()] == [15, 31, 31, 1]
    x = rand(3, 1, 37, 41, seed=8)
    for net, small in ((designed, pruned), (dense, cut)):
        with torch.no_grad():
            torch.testing.assert_close(small(x), net(x), atol=1e-6, rtol=0)
    # what the engine runs: the default encoder's halo is the architecture's, memory
    # format either way, features within float32 rounding of the unpruned path's
    vis, bands = rand(3, 40, 36, seed=9), rand(4, 40, 36, seed=10)
    for channels_last in (False, True):
        enc = build_encoder("designed", channels_last=channels_last)
        assert enc.radius == 6 and [c.out_channels for c in enc.band_path.convs()] == [2, 2, 2, 1]
        g, b = enc.encode(vis, bands)
        with torch.no_grad():
            torch.testing.assert_close(b[:, 0], designed(bands[:, None])[:, 0], atol=1e-6, rtol=0)
            full = designed(designed_network().conv(vis[None]))[0]
        torch.testing.assert_close(g, full, atol=1e-6, rtol=0)


def test_encode_shapes_chunks_and_memory_format(random_network):
    enc = build_encoder(network=random_network(4))
    vis, bands = rand(3, 33, 45, seed=6), rand(7, 33, 45, seed=7)
    g, b = enc.encode(vis, bands)
    assert g.shape == (1, 33, 45) and b.shape == (7, 1, 33, 45)
    assert g.dtype == b.dtype == torch.float32
    g1, b1 = build_encoder(network=random_network(4), band_batch=2).encode(vis, bands)
    torch.testing.assert_close(b1, b, atol=1e-6, rtol=0)
    g2, b2 = build_encoder(network=random_network(4), channels_last=True).encode(vis, bands)
    torch.testing.assert_close(g2, g, atol=1e-5, rtol=0)
    torch.testing.assert_close(b2, b, atol=1e-5, rtol=0)


def test_encode_refuses_bad_inputs():
    enc = build_encoder()
    with pytest.raises(ValueError, match=r"visible must be \[3, h, w\]"):
        enc.encode(rand(1, 8, 8), rand(2, 8, 8))
    with pytest.raises(ValueError, match="bands must be"):
        enc.encode(rand(3, 8, 8), rand(2, 8, 9))
    with pytest.raises(TypeError, match="float32"):
        enc.encode(rand(3, 8, 8).double(), rand(2, 8, 8))


def test_precision_and_device_choices_on_cpu():
    vis, bands = rand(3, 24, 24, seed=8), rand(2, 24, 24, seed=9)
    g32, b32 = build_encoder().encode(vis, bands)
    g16, b16 = build_encoder(precision="bf16").encode(vis, bands)  # CPU autocast
    assert g16.dtype == torch.float32
    torch.testing.assert_close(b16, b32, atol=2e-2, rtol=0)
    for precision in ("fp16", "tf32"):
        with pytest.raises(DeviceError, match="needs a CUDA device"):
            build_encoder(precision=precision)
    with pytest.raises(ValueError, match="precision must be one of"):
        build_encoder(precision="fp64")
    with pytest.raises(DeviceError):
        build_encoder(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            build_encoder(device="cuda")


def test_plugged_network_radius_measured_or_declared():
    enc = build_encoder(network=nn.Conv2d(1, 4, 5, padding=2))
    assert (enc.radius, enc.channels) == (2, 4)
    g, b = enc.encode(rand(3, 16, 16), rand(3, 16, 16))
    assert g.shape == (4, 16, 16) and b.shape == (3, 4, 16, 16)
    adapter = nn.Conv2d(3, 1, 3, padding=1)
    enc = build_encoder(network=nn.Conv2d(1, 2, 3, padding=1), visible_adapter=adapter)
    assert (enc.visible_radius, enc.band_radius) == (2, 1)
    assert build_encoder(network=nn.Conv2d(1, 2, 3, padding=1), radius=4).radius == 4
    with pytest.raises(ValueError, match="not both"):
        build_encoder(weights="x.safetensors", network=nn.Identity())


# --------------------------------------------------------------------------
# weights I/O


def test_save_load_safetensors_roundtrip(tmp_path, random_network):
    net = random_network(5)
    path = save_weights(net, tmp_path / "w.safetensors")
    loaded = load_network(path)
    for key, value in net.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(loaded.state_dict()[key], value, atol=0, rtol=0)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == weights_sha256(net) == build_encoder(weights=path).weights_sha256


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_loads_artextract_state_dict_with_num_batches_tracked(tmp_path, fmt, random_network):
    net = random_network(6)
    state = net.state_dict()
    assert "cnn.bn1.num_batches_tracked" in state
    path = tmp_path / f"artextract.{fmt}"
    if fmt == "pt":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    enc = build_encoder(weights=path)
    assert enc.weights_sha256 == weights_sha256(net)
    vis, bands = rand(3, 20, 20), rand(2, 20, 20)
    for a, b in zip(
        enc.encode(vis, bands), build_encoder(network=net).encode(vis, bands), strict=True
    ):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_one_error_lists_missing_unexpected_and_misshaped(tmp_path, random_network):
    state = random_network(7).state_dict()
    del state["cnn.conv1.bias"]
    state["cnn.extra.weight"] = torch.zeros(3)
    state["cnn.conv2.weight"] = torch.zeros(32, 16, 5, 5)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="bad.pt") as info:
        load_network(path)
    message = str(info.value)
    assert "missing: cnn.conv1.bias" in message
    assert "unexpected: cnn.extra.weight" in message
    assert "cnn.conv2.weight (32, 16, 5, 5) != (32, 16, 3, 3)" in message


_UNPICKLED = []


def _record_unpickling():  # what a malicious pickle would run
    _UNPICKLED.append(True)
    return torch.zeros(1)


class _Payload:
    def __reduce__(self):
        return (_record_unpickling, ())


def test_pickled_objects_are_refused_weights_only(tmp_path, random_network):
    state = dict(random_network(8).state_dict())
    state["cnn.conv1.bias"] = _Payload()
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="evil.pt"):
        load_network(path)
    assert not _UNPICKLED


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("garbage.pt", b"\x00not a weights file" * 10),
        ("trunc.safetensors", b'\x40\x00\x00\x00\x00\x00\x00\x00{"cnn.conv1.weight": {'),
        ("empty.safetensors", b""),
    ],
)
def test_unreadable_files_name_themselves(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=name):
        load_network(path)


def test_missing_file_and_non_state_dict(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_network(tmp_path / "nope.safetensors")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="not a state dict"):
        load_network(tmp_path / "list.pt")


def test_nonfinite_weights_are_refused(tmp_path, random_network):
    net = random_network(9)
    with torch.no_grad():
        net.cnn.conv3.weight[0, 0, 0, 0] = float("nan")
    path = save_weights(net, tmp_path / "nan.safetensors")
    with pytest.raises(WeightsError, match="conv3.weight holds NaN"):
        load_network(path)


# --------------------------------------------------------------------------
# the designed weights, and the trained default


def test_designed_weights_are_deterministic_and_a_binomial_blur():
    net = designed_network()
    assert (
        weights_sha256(net)
        == weights_sha256(load_network("designed"))
        == build_encoder("designed").weights_sha256
    )
    x = rand(1, 1, 30, 30, seed=10)
    for bn in (net.cnn.bn1, net.cnn.bn2, net.cnn.bn3, net.cnn.bn_out):
        probe = rand(1, bn.num_features, 5, 5)
        assert torch.equal(bn(probe), probe)  # exactly the identity
    k = torch.tensor([1.0, 6.0, 15.0, 20.0, 15.0, 6.0, 1.0]) / 64.0  # binomial of order 6
    blur = torch.nn.functional.conv2d(x, torch.outer(k, k)[None, None], padding=3)
    with torch.no_grad():
        # inside: E is the order-6 binomial; near the border each layer zero-pads on its own
        torch.testing.assert_close(
            net.encode_band(x)[..., 3:-3, 3:-3], blur[..., 3:-3, 3:-3], atol=1e-6, rtol=0
        )
        gray = 0.299 * x + 0.587 * x * 0.5 + 0.114 * x * 0.25
        vis = torch.cat([x, 0.5 * x, 0.25 * x], dim=1)
        torch.testing.assert_close(
            net.encode_visible(vis), net.encode_band(gray), atol=1e-6, rtol=0
        )


def _aucs(size: int, seed: int, weights: str) -> tuple[float, float]:
    scan = render((size, size), bands=8, seed=seed)
    visible = scan.visible.transpose(2, 0, 1).astype(np.float32) / 255.0
    bands = scan.bands.astype(np.float32) / 65535.0
    g, b = build_encoder(weights).encode(torch.from_numpy(visible), torch.from_numpy(bands))
    encoder_auc = roc_auc(score_map(g.numpy(), b.numpy(), q=(1, 99), threshold=0.5), scan.mask)
    gray = np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), visible, axes=1)
    pixel_auc = roc_auc(score_map(gray[None], bands[:, None], q=(1, 99), threshold=0.5), scan.mask)
    return encoder_auc, pixel_auc


@pytest.mark.parametrize("seed", [0, 1])
def test_the_weights_reveal_the_hidden_figure_uncalibrated(seed):
    designed, pixel = _aucs(256, seed, "designed")
    trained, _ = _aucs(256, seed, "trained")
    assert designed >= 0.95 and trained >= 0.95  # acceptance bar 0.90, with margin
    # ArtExtract's fusion (uncalibrated, band norm): the designed blur at least matches the
    # pixel difference; the trained default, fitted for the calibrated fusion, is a wider
    # blur and a little below the designed one here (0.976 and 0.966 against 0.979 and 0.972)
    assert designed >= pixel - 0.002
    assert trained >= designed - 0.015
