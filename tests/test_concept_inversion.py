"""Concept Inversion (SPEC 7): only the token's row trained, the model left exactly as found,
reproducible, diffusers' format (loaded back with `load_textual_inversion`), the judge's checks,
the Wilson interval, errors, and that it learns in the small world (with a negative control)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import binomtest

from unlearn_guard.attacks import (
    ConceptInversionConfig,
    ShapeJudge,
    attack_success,
    concept_inversion,
    judge_images,
    load_judge,
    load_learned_embedding,
    prompt_success,
)
from unlearn_guard.attacks.concept_inversion import encode_with_token, template_slots
from unlearn_guard.errors import InputError
from unlearn_guard.models import DiffusionModel, snapshot_module_state
from unlearn_guard.models.tiny import build_tiny_components
from unlearn_guard.stats import wilson_interval

# The tiny model's tokenizer is character-level: "x" is one token ("x</w>"), "shape" is five.
TINY = ConceptInversionConfig(init_token="x", steps=4, batch_size=2, progress=False)


def test_only_the_token_is_trained_and_the_model_is_left_exactly_as_found(tiny_images):
    model = DiffusionModel.from_components(**build_tiny_components(seed=5))
    model.unet.train()  # a model mid-training: train mode, weights that want gradients
    model.text_encoder.requires_grad_(True)
    vocabulary = len(model.tokenizer)
    before = snapshot_module_state(*model.modules())
    init_row = model.text_encoder.get_input_embeddings().weight[
        model.tokenizer("x", add_special_tokens=False).input_ids[0]].detach().clone()
    learned = concept_inversion(model, tiny_images[:3], TINY, lr=1e-1)
    assert snapshot_module_state(*model.modules()) == before
    assert len(model.tokenizer) == vocabulary and learned.token not in model.tokenizer.get_vocab()
    assert all(p.grad is None for module in model.modules() for p in module.parameters())
    assert learned.vector.shape == init_row.shape and not torch.allclose(learned.vector, init_row)  # it moved
    assert len(learned.losses) == 4 and learned.config.steps == 4


def test_a_seeded_run_is_reproducible(tiny_model, tiny_images):
    a = concept_inversion(tiny_model, tiny_images[:2], TINY)
    b = concept_inversion(tiny_model, tiny_images[:2], TINY)
    c = concept_inversion(tiny_model, tiny_images[:2], TINY, seed=1)
    assert torch.equal(a.vector, b.vector) and a.losses == b.losses
    assert not torch.equal(a.vector, c.vector)


def test_saved_in_diffusers_format_and_loaded_by_load_textual_inversion(tiny_model, tiny_images, tmp_path):
    from diffusers import StableDiffusionPipeline

    learned = concept_inversion(tiny_model, tiny_images[:2], TINY, token="<circle-ci>")
    folder = learned.save(tmp_path / "embedding")
    tensors = load_file(str(folder / "learned_embeds.safetensors"))
    assert list(tensors) == ["<circle-ci>"] and tensors["<circle-ci>"].shape == (1, learned.vector.numel())
    # a fresh pipeline of the same model (loading changes its tokenizer and text encoder)
    pipe = StableDiffusionPipeline(**build_tiny_components(seed=0), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.load_textual_inversion(str(folder), token="<circle-ci>")
    loaded, _ = pipe.encode_prompt("a <circle-ci>", "cpu", 1, False)
    slots, positions = template_slots(tiny_model.tokenizer, ["a {}"], "x")
    with torch.no_grad():
        ours = encode_with_token(tiny_model, slots, positions, learned.vector)
    torch.testing.assert_close(loaded, ours, rtol=1e-5, atol=1e-6)
    # and our own loader reads back the same token, vector and carrier
    again = load_learned_embedding(folder)
    assert again.token == "<circle-ci>" and again.init_token == "x" and torch.equal(again.vector, learned.vector)
    assert again.config == learned.config and again.losses == learned.losses


def test_attack_success_counts_the_judge_and_gives_a_wilson_interval(tiny_model, tiny_images):
    learned = concept_inversion(tiny_model, tiny_images[:2], TINY)
    bright = lambda images: images.mean(dim=(1, 2, 3)) > 0.5  # noqa: E731 - any callable images -> bools
    result = attack_success(tiny_model, learned, bright, n=6, num_steps=3, batch_size=4)
    assert result.images.shape == (6, 3, 64, 64) and result.n == 6
    assert result.successes == int(bright(result.images).sum()) == sum(result.verdicts)
    assert (result.ci_low, result.ci_high) == pytest.approx(wilson_interval(result.successes, 6))
    assert result.prompt == "a <concept>"
    # batching never changes an image
    other = attack_success(tiny_model, learned, bright, n=6, num_steps=3, batch_size=1)
    torch.testing.assert_close(other.images, result.images, rtol=1e-4, atol=1e-5)
    baseline = prompt_success(tiny_model, "a x", bright, n=4, num_steps=3)
    assert baseline.n == 4 and baseline.images is None


@pytest.mark.parametrize("answer, expected", [
    (lambda images: [True], "returned shape"),
    (lambda images: images.mean(dim=(1, 2, 3)), "expected booleans"),
    (lambda images: torch.full((len(images),), float("nan")), "NaN"),
    (lambda images: "yes", "expected"),
])
def test_a_judge_that_does_not_answer_with_booleans_is_named(answer, expected):
    with pytest.raises(InputError, match=expected):
        judge_images(answer, torch.rand(3, 3, 8, 8))
    assert judge_images(lambda images: [1, 0, 1], torch.rand(3, 3, 8, 8)).tolist() == [True, False, True]


@pytest.mark.parametrize("k, n", [(0, 1), (0, 16), (1, 16), (8, 16), (16, 16), (3, 7), (29, 32)])
def test_wilson_interval_matches_scipy(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-12)
    wider = wilson_interval(k, n, 0.99)
    assert wider[0] <= expected.low + 1e-12 and wider[1] >= expected.high - 1e-12


@pytest.mark.parametrize("change, expected", [
    ({"init_token": "shape"}, "init_token: 'shape' is 5 tokens"),
    ({"token": "a"}, "already in the tokenizer"),
    ({"templates": ("a picture",)}, "templates"),
    ({"steps": 0}, "steps"),
    ({"lr": float("nan")}, "lr"),
    ({"token": "two words"}, "token"),
])
def test_bad_settings_are_named(tiny_model, tiny_images, change, expected):
    with pytest.raises(InputError, match=expected):
        concept_inversion(tiny_model, tiny_images[:1], TINY, **change)


def test_bad_images_and_embeddings_are_named(tiny_model, tmp_path):
    with pytest.raises(InputError, match="images"):
        concept_inversion(tiny_model, torch.rand(2, 4, 64, 64), TINY)
    with pytest.raises(InputError, match="does not exist"):
        load_learned_embedding(tmp_path / "missing")
    with pytest.raises(InputError, match="shapes-world:SHAPE"):
        load_judge("circle")
    with pytest.raises(InputError, match="not callable"):
        load_judge("math:pi")
    with pytest.raises(InputError, match="cannot import"):
        load_judge("no_such_module_here:judge")
    assert isinstance(load_judge("shapes-world:circle"), ShapeJudge)


def test_it_learns_the_concept_in_the_small_world():
    """Started from "square", 100 steps on circles make the token draw circles; the start did not."""
    from unlearn_guard.world import load_world_model, probe_sets

    model = load_world_model()
    circles = probe_sets("circle", 8, seed=10_000).concept
    judge = ShapeJudge("circle")
    start = prompt_success(model, "a square", judge, n=16)  # the init token's own prompt: the negative control
    learned = concept_inversion(model, circles, init_token="square", steps=100, lr=2e-2, progress=False)
    after = attack_success(model, learned, judge, n=16)
    assert start.rate <= 0.2 and after.rate >= 0.8, (start.summary(), after.summary())
