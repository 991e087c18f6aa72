"""The small shapes world: renderer, tokenizer, the training command, and the shipped weights."""

from __future__ import annotations

import json

import pytest
import torch

from unlearn_guard.world import (
    SHAPES,
    WEIGHTS_DIR,
    concept_accuracy,
    load_classifier,
    load_world_model,
    make_dataset,
    training_report,
)
from unlearn_guard.world.model import build_word_tokenizer
from unlearn_guard.world.shapes import caption_variant, concept_prompt, sample_scene


def test_renderer_is_seeded_and_shapes_differ():
    a, scenes, captions = make_dataset(12, seed=3)
    b, _, _ = make_dataset(12, seed=3)
    assert torch.equal(a, b) and a.shape == (12, 3, 32, 32) and a.dtype == torch.uint8
    assert captions[0] == f"a {scenes[0].colour} {scenes[0].shape} on a {scenes[0].background} background"
    same_place = [make_dataset(1, seed=5, shape=s)[0][0] for s in SHAPES]  # same scene draws, other shape
    for i in range(len(SHAPES)):
        for j in range(i + 1, len(SHAPES)):
            assert not torch.equal(same_place[i], same_place[j]), (SHAPES[i], SHAPES[j])


def test_every_caption_word_is_in_the_tokenizer():
    tokenizer = build_word_tokenizer()
    unk = tokenizer.unk_token_id
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        scene = sample_scene(g)
        for variant in range(4):
            ids = tokenizer(caption_variant(scene, variant)).input_ids
            assert unk not in ids and len(ids) <= tokenizer.model_max_length
    assert tokenizer("a zebra").input_ids.count(unk) == 1  # negative control: unknown words are <unk>
    assert tokenizer("A RED Circle").input_ids == tokenizer("a red circle").input_ids


def test_training_command_writes_a_loadable_pipeline(tmp_path):
    from diffusers import StableDiffusionPipeline

    from unlearn_guard.world.train import WorldTrainingConfig, train_world

    config = WorldTrainingConfig(dataset_size=256, vae_steps=5, unet_steps=5, classifier_steps=5,
                                 eval_images_per_concept=1, unet_batch=8, vae_batch=8)
    report = train_world(tmp_path, config, progress=False)
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "pipeline", safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)
    assert pipe.vae.config.scaling_factor == pytest.approx(report["scaling_factor"])
    assert json.loads((tmp_path / "training.json").read_text())["config"]["unet_steps"] == 5
    model = load_world_model(tmp_path)
    assert model.resolution == 32 and model.vae_scale_factor == 4
    load_classifier(tmp_path)


def test_exclude_trains_without_the_shape_and_keeps_the_full_classifier(tmp_path):
    from safetensors.torch import load_file

    from unlearn_guard.world.train import WorldTrainingConfig, retain_set, train_world

    pixels, scenes, _ = make_dataset(200, seed=0)
    kept_pixels, kept_scenes = retain_set(pixels, scenes, "circle")
    assert all(scene.shape != "circle" for scene in kept_scenes)
    dropped = sum(scene.shape == "circle" for scene in scenes)
    assert dropped > 0 and len(kept_scenes) == 200 - dropped and len(kept_pixels) == len(kept_scenes)
    # The retain set is the full draw minus the shape: the other scenes are the same, in order.
    others = [i for i, scene in enumerate(scenes) if scene.shape != "circle"]
    assert torch.equal(kept_pixels, pixels[others])

    config = WorldTrainingConfig(dataset_size=256, vae_steps=3, unet_steps=3, eval_images_per_concept=1,
                                 unet_batch=8, vae_batch=8, exclude="square")
    report = train_world(tmp_path, config, progress=False)
    assert report["excluded_shape"] == "square" and report["training_images"] < report["training_images_drawn"] == 256
    assert "copied" in report["classifier_source"]
    shipped = load_file(str(WEIGHTS_DIR / "classifier.safetensors"))
    copied = load_file(str(tmp_path / "classifier.safetensors"))
    assert all(torch.equal(shipped[k], copied[k]) for k in shipped)


def test_exclude_names_a_known_shape():
    from unlearn_guard.cli import SHAPES_FOR_CLI
    from unlearn_guard.errors import InputError
    from unlearn_guard.world.train import WorldTrainingConfig

    assert SHAPES_FOR_CLI == SHAPES
    with pytest.raises(InputError, match="exclude: got 'star'"):
        WorldTrainingConfig(exclude="star")


def test_a_v_prediction_world_learns_the_schedulers_velocity(tmp_path, monkeypatch):
    """`train-world --prediction-type v_prediction`: the UNet's regression target is the scheduler's
    `get_velocity(z0, noise, t)` (diffusers' own), the saved scheduler says v, and the model loads as
    a v model; an unknown prediction type is one line naming the field."""
    import torch.nn.functional as F

    from unlearn_guard.errors import InputError
    from unlearn_guard.world import train as world_train

    targets, velocities = [], []
    real_mse = F.mse_loss
    monkeypatch.setattr(world_train.F, "mse_loss", lambda out, target: targets.append(target) or real_mse(out, target))
    from diffusers import DDIMScheduler

    real_velocity = DDIMScheduler.get_velocity
    monkeypatch.setattr(DDIMScheduler, "get_velocity",
                        lambda self, *a: velocities.append(real_velocity(self, *a)) or velocities[-1])
    config = world_train.WorldTrainingConfig(dataset_size=128, vae_steps=2, unet_steps=2, classifier_steps=2,
                                             eval_images_per_concept=1, unet_batch=4, vae_batch=4,
                                             prediction_type="v_prediction")
    world_train.train_world(tmp_path, config, progress=False)
    unet_targets = [t for t in targets if t.shape == (4, 4, 8, 8)]
    assert len(unet_targets) == len(velocities) == 2 and all(t is v for t, v in zip(unet_targets, velocities))
    assert load_world_model(tmp_path).prediction_type == "v_prediction"
    with pytest.raises(InputError, match="^prediction_type: got 'v-pred'; expected one of "):
        world_train.WorldTrainingConfig(prediction_type="v-pred")


# ----------------------------------------------------------------------------- the shipped weights
def test_shipped_weights_are_in_the_package():
    assert (WEIGHTS_DIR / "pipeline" / "model_index.json").is_file()  # never skip: they are committed


def test_shipped_weights_report_is_the_training_commands():
    report = training_report()
    assert report["config"]["seed"] == 0 and report["config"]["unet_steps"] >= 1000
    assert report["classifier_heldout_accuracy"] >= 0.97


def test_shipped_classifier_on_fresh_renders():
    classifier = load_classifier()
    pixels, scenes, _ = make_dataset(600, seed=12345)  # a seed training never used
    labels = torch.tensor([s.shape_index for s in scenes])
    accuracy = float((classifier.predict(pixels.float() / 255) == labels).float().mean())
    assert accuracy >= 0.97


def test_shipped_model_generates_its_concepts():
    from unlearn_guard.world.generate import generate

    model = load_world_model()
    classifier = load_classifier()
    accuracies = {}
    for k, shape in enumerate(SHAPES):
        images = generate(model, [concept_prompt(shape)] * 8, seed=500 + 100 * k)
        accuracies[shape] = concept_accuracy(classifier, images, shape)
    mean = sum(accuracies.values()) / len(accuracies)
    assert mean >= MIN_GENERATED_ACCURACY, accuracies


def test_probe_reconstructs_shipped_world_images():
    from unlearn_guard import probe

    model = load_world_model()
    pixels, scenes, captions = make_dataset(4, seed=777)
    result = probe(model, pixels, captions, config="mofc", progress=False)
    assert float(result.erased.psnr.mean()) >= MIN_PROBE_PSNR


# Thresholds for the shipped weights, measured on them (2026-11-23, CPU): generated accuracy 1.00 with
# these seeds (0.896 over 16 images per concept in training.json, diamond the weakest at 0.5), mofc
# reconstruction PSNR 30.5 dB on these 4 images. Margins cover other BLAS builds; 25 dB is the
# paper's floor for "the model still reconstructs the concept".
MIN_GENERATED_ACCURACY = 0.8
MIN_PROBE_PSNR = 25.0


# ----------------------------------------------------------------------------- the retrained worlds (ground truth)
@pytest.mark.parametrize("shape", ["circle", "square"])
def test_shipped_retrained_worlds_are_the_exclude_commands(shape):
    from unlearn_guard.world import retrained_world_dir

    report, full = training_report(retrained_world_dir(shape)), training_report()
    assert report["excluded_shape"] == shape and report["training_images"] < report["training_images_drawn"] == 24000
    same = {k: v for k, v in report["config"].items() if k not in ("exclude", "threads")}
    assert same == {k: v for k, v in full["config"].items() if k not in ("exclude", "threads")}
    assert "copied" in report["classifier_source"] and report["vae_psnr_mean"] > 28


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_a_retrained_world_cannot_draw_its_shape_and_draws_the_others(shape):
    from unlearn_guard.world.evaluate import accuracy_from_prompt, kept_accuracy

    classifier = load_classifier()
    never, original = load_world_model(without=shape), load_world_model()
    # Measured (16 images, these seeds): circle 0.19 / square 0.00 retrained vs 1.00 / 1.00 original; kept 0.95 / 0.88.
    assert accuracy_from_prompt(never, classifier, shape, 16, 123) <= 0.25
    assert accuracy_from_prompt(original, classifier, shape, 16, 123) >= 0.8
    assert kept_accuracy(never, classifier, shape, 8, 456) >= 0.7


def test_an_unshipped_retrained_world_is_a_clear_error():
    from unlearn_guard.errors import ModelError

    with pytest.raises(ModelError, match="no shipped world retrained without 'ring'; shipped: \\['circle', 'square', 'triangle'\\]"):
        load_world_model(without="ring")
