"""tilex train: a few steps lower the loss, deterministically; the model card names the file."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from tilex.encoder.weights import load_network, weights_sha256
from tilex.training import TrainSpec, scene_loss, train, training_scenes, write

SPEC = TrainSpec(seed=1, scenes=3, size=48, steps=12, batch=3, lr=3e-4, threads=1)


def _mean_loss(network, scenes) -> float:
    with torch.no_grad():
        return float(np.mean([float(scene_loss(network, s, SPEC)) for s in scenes]))


def test_a_few_steps_lower_the_loss_deterministically():
    scenes = training_scenes(SPEC)
    first = train(SPEC, scenes)
    again = train(SPEC, scenes)
    assert first.losses == again.losses
    assert weights_sha256(first.network) == weights_sha256(again.network)
    from tilex.encoder.network import default_network

    assert _mean_loss(first.network, scenes) < _mean_loss(default_network(), scenes)


def test_training_and_validation_scenes_differ():
    train_scene = training_scenes(SPEC)[0]
    held_out = training_scenes(SPEC, holdout=True)[0]
    assert train_scene.bands.shape[0] != held_out.bands.shape[0] or not np.array_equal(
        train_scene.bands, held_out.bands
    )


def test_the_model_card_holds_the_files_sha256(tmp_path):
    model = train(SPEC, training_scenes(SPEC))
    path = write(SPEC, model, tmp_path / "w.safetensors")
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert card["weights_sha256"] == weights_sha256(load_network(path))
    assert card["recipe"]["seed"] == 1 and card["recipe"]["steps"] == SPEC.steps == 12
