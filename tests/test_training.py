"""tilex train: a few steps lower the loss, deterministically; the model card names the file;
the shipped trained default is what its card says."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np
import torch

from tilex.encoder.network import designed_network, fold_batchnorm, prune_channels
from tilex.encoder.weights import TRAINED_WEIGHTS, default_network, load_network, weights_sha256
from tilex.training import LowPass, TrainSpec, scene_loss, train, training_scenes, write

# small and fast: one whole scene a step (no crop or pick to draw), and many pairs so that
# the ranking term barely moves with the pairs drawn. With these settings 8 steps lowered
# the fixed loss on 8 of the seeds 1 to 10, by 1.2 % for seed 3 (an Intel Xeon with
# AVX-512); the gradient through the floors' exact medians is noisy (see the notes of
# issue 13). The settings before (3 scenes of 64 px, 3 picks a step) lowered it by 0.02 %
# on an AMD EPYC and raised it by 0.02 % on that Xeon.
SPEC = TrainSpec(
    seed=3, scenes=1, size=96, crop=96, steps=8, batch=1, lr=3e-3, pairs=65536, threads=1,
    synthetic=0,
)  # fmt: skip


def _mean_loss(cnn, scenes) -> float:
    with torch.no_grad():
        return float(np.mean([float(scene_loss(cnn, s, SPEC)) for s in scenes]))


def test_a_few_steps_lower_the_loss_deterministically():
    scenes = training_scenes(SPEC)
    first = train(SPEC, scenes)
    again = train(SPEC, scenes)
    assert first.losses == again.losses
    assert weights_sha256(first.network) == weights_sha256(again.network)
    assert weights_sha256(first.network) != weights_sha256(designed_network())
    assert _mean_loss(first.network.cnn, scenes) < _mean_loss(designed_network().cnn, scenes)


def test_training_and_validation_scenes_differ():
    train_scene = training_scenes(SPEC)[0]
    held_out = training_scenes(SPEC, holdout=True)[0]
    assert train_scene.bands.shape[0] != held_out.bands.shape[0] or not np.array_equal(
        train_scene.bands, held_out.bands
    )


def test_the_low_pass_starts_as_designed_and_stays_symmetric_with_unit_gain():
    start = LowPass()
    assert weights_sha256(start.network()) == weights_sha256(designed_network())
    with torch.no_grad():
        for taps in start.taps:  # any taps: each kernel is symmetric and sums to 1
            taps.copy_(torch.linspace(-0.3, 1.0, len(taps)))
    x = torch.rand(2, 1, 23, 23)
    net = start.network().eval()
    torch.testing.assert_close(start(x), net.cnn(x), atol=1e-6, rtol=0)
    for k in start.kernels():
        k = k.detach()
        torch.testing.assert_close(k.sum(), torch.tensor(1.0))
        for other in (k.T, k.flip(0), k.flip(1), k.rot90(1)):
            assert torch.equal(other, k)
    # a constant passes unchanged, so a band equal to its prediction has d = 0
    with torch.no_grad():
        c = torch.full((1, 1, 31, 31), 0.375)
        torch.testing.assert_close(net.cnn(c)[..., 8:-8, 8:-8], c[..., 8:-8, 8:-8])


def test_the_model_card_holds_the_files_sha256(tmp_path):
    model = train(SPEC, training_scenes(SPEC))
    path = write(SPEC, model, tmp_path / "w.safetensors")
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert card["weights_sha256"] == weights_sha256(load_network(path))
    assert card["recipe"]["seed"] == 3 and card["recipe"]["steps"] == SPEC.steps == 8


def test_the_shipped_default_is_its_model_card():
    card = json.loads(TRAINED_WEIGHTS.with_suffix(".json").read_text())
    assert card["file_sha256"] == hashlib.sha256(TRAINED_WEIGHTS.read_bytes()).hexdigest()
    net = default_network()
    assert card["weights_sha256"] == weights_sha256(net) == weights_sha256(load_network())
    assert card["recipe"] == asdict(TrainSpec())  # the default recipe made it
    # what the card reports the training learned is what the file holds
    live = [net.cnn.conv1.weight[1, 0], net.cnn.conv2.weight[1, 1]]
    live += [net.cnn.conv3.weight[1, 1], net.cnn.conv_out.weight[0, 1]]
    for kernel, written in zip(live, card["kernels"], strict=True):
        np.testing.assert_allclose(kernel.detach().numpy(), np.array(written), atol=1e-6)
    # it keeps the designed weights' live channels: no more work per pixel
    pruned = prune_channels(fold_batchnorm(net.cnn))
    assert [c.out_channels for c in pruned.convs()] == [2, 2, 2, 1]


def test_training_scenes_add_tilex_synth_scans():
    spec = TrainSpec(scenes=1, size=48, crop=48, synthetic=2, synthetic_size=64)
    scenes = training_scenes(spec)
    assert [s.name for s in scenes] == ["physical-0", "synth-1000", "synth-1001"]
    for scene in scenes[1:]:
        assert scene.bands.shape == scene.predicted.shape == (8, 64, 64)
        assert scene.hidden.any() and not scene.hidden.all()
        assert np.isfinite(scene.predicted).all()
