"""probe(): end to end on the tiny model; batching, seeds, invariants, OOM, errors."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from unlearn_guard.config import InversionConfig, ProbeConfig
from unlearn_guard.errors import InputError, InsufficientDataError, ModelError, NonFiniteError
from unlearn_guard.models import DiffusionModel, snapshot_module_state
from unlearn_guard.models.tiny import build_tiny_components
from unlearn_guard.probe import ProbeFailure, probe

from conftest import assert_close

probe_module = importlib.import_module("unlearn_guard.probe")  # the module (unlearn_guard.probe is the function)

# A cheap custom preset for behaviour tests: 6 steps, K=1, reachable windows, regularisation on.
QUICK = ProbeConfig(
    preset="custom",
    inversion=InversionConfig(num_steps=6, renoise_steps=1, early_window=(0, 2), late_window=(0, 2)),
    n_normal=20,
    bootstrap_samples=50,
    progress=False,
    # A random-weight tiny model's seeds are not typical N(0, I) draws: under the default band its memory
    # score is undefined (tests/test_controls.py). These tests check mechanics, so the band is open.
    memory_typical_sigmas=1e6,
)


def test_probe_end_to_end_with_reference(tiny_model, tiny_images):
    result = probe(tiny_model, tiny_images[:2], "a red circle", reference=tiny_images[2:], reference_prompts="a square",
                   config=QUICK, keep_seeds=True, keep_reconstructions=True)
    assert len(result.erased.images) == 2 and len(result.reference.images) == 2
    assert result.erased.seeds.shape == (2, 4, 8, 8)
    assert result.erased.reconstructions.shape == (2, 3, 64, 64)
    # Per-image numbers are the functions of the kept tensors they claim to be.
    expected_nll = (result.erased.seeds.double() ** 2 / 2).flatten(1).sum(1) + 256 * 0.9189385332046727
    assert_close(result.erased.nll, expected_nll)
    md = result.memory_distance
    assert md.n_erased == 2 and md.n_reference == 2 and md.n_normal == 20 and md.kind == "mofc"
    assert md.ci_low <= md.ci_high and torch.isfinite(torch.tensor(md.value))
    assert result.erased.unet_evaluations == 2 * (6 * 3 + 6)
    data = json.loads(result.to_json())
    assert data["config"]["inversion"]["num_steps"] == 6
    assert data["provenance"]["versions"]["torch"].startswith("2.")
    assert "d_N (mofc)" in result.summary_table()


def test_probe_without_reference_reports_no_distance(tiny_model, tiny_images):
    result = probe(tiny_model, tiny_images[:1], "x", config=QUICK)
    assert result.memory_distance is None and result.d_n is None
    assert "not computed" in result.summary_table()


def test_chunking_never_changes_the_answer(tiny_model, tiny_images):
    whole = probe(tiny_model, tiny_images, "p", config=QUICK, batch_size=4, keep_seeds=True)
    single = probe(tiny_model, tiny_images, "p", config=QUICK, batch_size=1, keep_seeds=True)
    assert_close(whole.erased.seeds, single.erased.seeds, scale=10)
    assert_close(whole.erased.nll, single.erased.nll, dtype=torch.float32)
    assert_close(whole.erased.psnr, single.erased.psnr, dtype=torch.float32, scale=10)


def test_a_reference_set_measured_before_is_taken_as_it_is(tiny_model, tiny_images, monkeypatch):
    """`measured={"reference": ...}`: R's probe from an earlier call on the same model and config is not
    inverted again, and the result is the one a probe that inverted R itself gives, bit for bit."""
    reference = tiny_images[2:]
    first = probe(tiny_model, tiny_images[:2], "a red circle", reference=reference, reference_prompts="a square",
                  config=QUICK)
    others = tiny_images[:2].flip(-1)  # another concept set against the same R
    alone = probe(tiny_model, others, "a blue circle", reference=reference, reference_prompts="a square", config=QUICK)
    inverted = []
    real = probe_module.probe_image_set
    monkeypatch.setattr(probe_module, "probe_image_set", lambda m, images, config, label, *a: inverted.append(label)
                        or real(m, images, config, label, *a))
    reused = probe(tiny_model, others, "a blue circle", reference=reference, reference_prompts="a square", config=QUICK,
                   measured={"reference": first.reference})
    assert inverted == ["erased", "control"]
    assert reused.reference.images == alone.reference.images and reused.erased.images == alone.erased.images
    assert reused.control.images == alone.control.images
    assert reused.memory_distance == alone.memory_distance and reused.memory == alone.memory
    assert reused.control_memory == alone.control_memory and reused.notes == alone.notes
    # Refused: a set of other images or prompts, a set that is not one beside E, anything but a SetProbe.
    with pytest.raises(InputError, match="other images or prompts"):
        probe(tiny_model, others, "a blue circle", reference=reference, reference_prompts="a ring", config=QUICK,
              measured={"reference": first.reference})
    with pytest.raises(InputError, match="expected a SetProbe for a set"):
        probe(tiny_model, others, "c", reference=reference, reference_prompts="a square", config=QUICK,
              measured={"erased": first.erased})
    with pytest.raises(InputError, match="expected a SetProbe for a set"):
        probe(tiny_model, others, "c", reference=reference, reference_prompts="a square", config=QUICK,
              measured={"reference": first.reference.to_dict()})
    assert inverted == ["erased", "control"]  # refused before any inversion


def test_same_seed_identical_other_seed_differs(tiny_model, tiny_images):
    a = probe(tiny_model, tiny_images[:2], "p", config=QUICK, keep_seeds=True)
    b = probe(tiny_model, tiny_images[:2], "p", config=QUICK, keep_seeds=True)
    c = probe(tiny_model, tiny_images[:2], "p", config=QUICK.replace(seed=1), keep_seeds=True)
    assert torch.equal(a.erased.seeds, b.erased.seeds)
    assert not torch.allclose(a.erased.seeds, c.erased.seeds)


@pytest.mark.parametrize(
    "setup",
    ["all_train", "mixed_modes", "frozen_unet", "partly_frozen"],
)
def test_probe_leaves_weights_flags_and_modes_unchanged(tiny_images, setup):
    model = DiffusionModel.from_components(**build_tiny_components(seed=3))
    if setup == "all_train":
        for m in model.modules():
            m.train()
    elif setup == "mixed_modes":
        model.unet.train()
        model.unet.down_blocks[0].eval()
        model.text_encoder.train()
    elif setup == "frozen_unet":
        model.unet.requires_grad_(False)
    else:
        model.unet.train()
        model.unet.conv_in.requires_grad_(False)
        model.vae.requires_grad_(False)
    before = snapshot_module_state(*model.modules())
    probe(model, tiny_images[:2], "p", config=QUICK)
    assert snapshot_module_state(*model.modules()) == before


def test_peft_wrapped_unet_in_training_works_as_is(tiny_images):
    from peft import LoraConfig

    components = build_tiny_components(seed=4)
    unet = components["unet"]
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    unet.train()
    model = DiffusionModel.from_components(**components)
    before = snapshot_module_state(*model.modules())
    result = probe(model, tiny_images[:2], "p", config=QUICK)
    assert len(result.erased.images) == 2
    assert snapshot_module_state(*model.modules()) == before
    assert any(p.requires_grad for p in unet.parameters())  # the adapter is still trainable


def test_out_of_memory_halves_the_chunk_and_retries(tiny_model, tiny_images, monkeypatch):
    original = tiny_model.predict_noise
    seen_batches = []

    def limited(latents, timestep, embeddings):
        seen_batches.append(latents.shape[0])
        if latents.shape[0] > 2:  # the KL target doubles a chunk of 2 to a batch of 4: 1 image fits
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(latents, timestep, embeddings)

    reference = probe(tiny_model, tiny_images, "p", config=QUICK, batch_size=1, keep_seeds=True)
    tiny_model.predict_noise = limited
    result = probe(tiny_model, tiny_images, "p", config=QUICK, batch_size=4, keep_seeds=True)
    assert 4 in seen_batches or 8 in seen_batches  # it did try the big chunk first
    assert_close(result.erased.seeds, reference.erased.seeds, scale=10)


def test_out_of_memory_at_batch_one_is_a_probe_failure(tiny_model, tiny_images):
    def always_oom(latents, timestep, embeddings):
        raise torch.OutOfMemoryError("CUDA out of memory")

    tiny_model.predict_noise = always_oom
    with pytest.raises(ProbeFailure, match="batch size 1"):
        probe(tiny_model, tiny_images[:2], "p", config=QUICK, batch_size=2)


def test_nan_in_latents_names_image_and_timestep(tiny_model, tiny_images):
    original = tiny_model.predict_noise

    def poisoned(latents, timestep, embeddings):
        eps = original(latents, timestep, embeddings)
        return eps * float("nan") if timestep == 333 else eps

    tiny_model.predict_noise = poisoned
    with pytest.raises(NonFiniteError, match=r"image\[0\].*t=333"):
        probe(tiny_model, tiny_images[:1], "p", config=QUICK)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"reference": "R"}, InsufficientDataError, r"images \(E\) has 1"),
        ({"images": 2, "reference": 1}, InsufficientDataError, r"reference \(R\) has 1"),
        ({"config": "nope"}, InputError, "unknown preset 'nope'"),
        ({"overrides": {"n_normal": 1}}, InputError, "n_normal"),
        ({"four_channels": True}, InputError, "4 channels looks like a VAE latent"),
        ({"prompts": ["only one"], "images": 2}, InputError, "prompts"),
    ],
)
def test_bad_input_is_a_clear_error(tiny_model, tiny_images, kwargs, error, match):
    n_images = kwargs.get("images", 1)
    images = tiny_images[:n_images]
    if kwargs.get("four_channels"):
        images = torch.rand(2, 4, 64, 64)
    reference = None
    if "reference" in kwargs:
        reference = tiny_images[: (kwargs["reference"] if isinstance(kwargs["reference"], int) else 2)]
    with pytest.raises(error, match=match):
        probe(tiny_model, images, kwargs.get("prompts", "p"), reference=reference, reference_prompts="r",
              config=kwargs.get("config", QUICK), **kwargs.get("overrides", {}))


def test_mismatched_model_parts_are_refused(tiny_components):
    components = dict(tiny_components)
    components["vae"] = build_tiny_components(seed=5)["vae"].double()
    with pytest.raises(ModelError, match="different dtypes"):
        DiffusionModel.from_components(**components)


def test_non_model_argument_is_refused(tiny_images):
    with pytest.raises(InputError, match="expected a DiffusionModel"):
        probe(42, tiny_images[:1], "p", config=QUICK)


def test_presets_run_on_tiny_model(tiny_model, tiny_images):
    # The real presets, one image each: mofc costs 350 UNet evaluations, fast 40.
    for preset, evaluations in (("mofc", 350), ("fast", 40)):
        result = probe(tiny_model, tiny_images[:1], "p", config=preset, progress=False)
        assert result.erased.unet_evaluations == evaluations
        assert result.config.preset == preset


def test_probe_reads_folders_with_prompts_csv_and_pil_images(tiny_model, tiny_images, tmp_path):
    from PIL import Image

    folders = {}
    for label, offset in (("concept", 0), ("reference", 2)):
        folder = tmp_path / label
        folder.mkdir()
        rows = ["file,prompt"]
        for i in range(2):
            array = (tiny_images[offset + i].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            Image.fromarray(array).save(folder / f"{label}_{i}.png")
            rows.append(f"{label}_{i}.png,a {label} number {i}")
        (folder / "prompts.csv").write_text("\n".join(rows) + "\n")
        folders[label] = folder
    result = probe(tiny_model, folders["concept"], reference=folders["reference"], config=QUICK)
    assert [i.name for i in result.erased.images] == ["concept_0.png", "concept_1.png"]
    assert result.erased.images[1].prompt == "a concept number 1"
    assert result.reference.images[0].source.endswith("reference_0.png")
    assert result.d_n is not None
    pil = [Image.open(folders["concept"] / f"concept_{i}.png") for i in range(2)]
    from_pil = probe(tiny_model, pil, ["a concept number 0", "a concept number 1"], config=QUICK)
    # Same pixels, same prompts, same seed: the same numbers whichever way the images arrived.
    assert_close(from_pil.erased.nll, result.erased.nll)


def test_atomic_write_leaves_no_temporary_file_and_a_normal_mode(tmp_path):
    import os
    import stat

    from unlearn_guard.files import write_text_atomic

    target = write_text_atomic(tmp_path / "sub" / "result.json", "{}")
    assert target.read_text() == "{}"
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]  # the temporary file was renamed
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_released_stream_is_batch_invariant_and_seeds_every_image_alike(tiny_model, tiny_images):
    # rng="released": a fresh generator seeded 42 per image, so identical images get identical
    # seeds wherever they sit in the set, and chunking changes nothing.
    images = torch.cat([tiny_images[:2], tiny_images[:1]])  # image 0 again at index 2
    config = QUICK.replace(rng="released")
    whole = probe(tiny_model, images, "p", config=config, batch_size=3, keep_seeds=True)
    single = probe(tiny_model, images, "p", config=config, batch_size=1, keep_seeds=True)
    assert_close(whole.erased.seeds, single.erased.seeds, scale=10)
    assert torch.equal(whole.erased.seeds[0], whole.erased.seeds[2])
    derived = probe(tiny_model, images, "p", config=QUICK, keep_seeds=True)  # per-image streams differ
    assert not torch.allclose(derived.erased.seeds[0], derived.erased.seeds[2])


def test_released_stream_draws_the_posterior_sample_then_two_unused_latents(tiny_model, tiny_images):
    # The first regularisation call's offsets come after 3 latent-sized randn draws: changing the
    # image seed changes the result, and replaying the stream by hand gives the same z_T.
    from unlearn_guard.probe import consume_released_extra_draws, image_generators

    config = QUICK.replace(rng="released", image_seed=5)
    result = probe(tiny_model, tiny_images[:1], "p", config=config, keep_seeds=True)
    other = probe(tiny_model, tiny_images[:1], "p", config=config.replace(image_seed=6), keep_seeds=True)
    assert not torch.allclose(result.erased.seeds, other.erased.seeds)
    generators = image_generators(config, "erased", [0])
    assert generators[0].initial_seed() == 5
    before = generators[0].get_state()
    consume_released_extra_draws(generators, (4, 8, 8))
    replay = torch.Generator().manual_seed(5)
    torch.randn((2, 1, 4, 8, 8), generator=replay)
    assert torch.equal(generators[0].get_state(), replay.get_state()) and not torch.equal(before, replay.get_state())


def test_external_normal_set_is_used_and_recorded(tiny_model, tiny_images):
    normal = [float(v) for v in torch.linspace(355.0, 366.0, 12)]
    result = probe(tiny_model, tiny_images[:2], "p", reference=tiny_images[2:], reference_prompts="q",
                   config=QUICK, normal_nll=normal)
    assert torch.equal(result.normal_nll, torch.tensor(normal, dtype=torch.float64))
    assert result.memory_distance.n_normal == 12 and result.provenance["normal_set"] == "external"
    from unlearn_guard.stats.functional import memory_relative_distance

    assert result.d_n == pytest.approx(memory_relative_distance(result.erased.nll, result.reference.nll, normal))
    drawn = probe(tiny_model, tiny_images[:2], "p", reference=tiny_images[2:], reference_prompts="q", config=QUICK)
    assert drawn.provenance["normal_set"] == "drawn" and drawn.memory_distance.n_normal == QUICK.n_normal


@pytest.mark.parametrize(
    "normal,match",
    [([360.0], "at least 2"), ([[1.0, 2.0]], "1-D"), ([360.0, float("nan")], "NaN or Inf"), ("abc", "sequence of numbers")],
)
def test_bad_external_normal_set_is_refused_before_compute(tiny_model, tiny_images, normal, match):
    with pytest.raises(InputError, match=match):
        probe(tiny_model, tiny_images[:2], "p", reference=tiny_images[2:], reference_prompts="q", config=QUICK,
              normal_nll=normal)


def test_a_concept_set_that_diverges_entirely_is_no_memory_not_an_error(tiny_model, tiny_images, monkeypatch):
    # Every E image diverges (a poisoned UNet while E is probed), R is fine: the probe reports E as
    # holding no memory (score 0) and no d_N, instead of raising.
    original_predict, original_probe_set = tiny_model.predict_noise, probe_module.probe_image_set
    poisoned = {"on": False}

    def predict(latents, timestep, embeddings):
        eps = original_predict(latents, timestep, embeddings)
        return eps * float("nan") if poisoned["on"] and timestep > 500 else eps

    def probe_set(model, images, config, label="erased", schedule=None):
        poisoned["on"] = label == "erased"
        return original_probe_set(model, images, config, label, schedule)

    tiny_model.predict_noise = predict
    monkeypatch.setattr(probe_module, "probe_image_set", probe_set)
    result = probe(tiny_model, tiny_images[:2], "p", reference=tiny_images[2:], reference_prompts="q", config=QUICK)
    assert all(image.diverged.startswith("inversion at timestep t=") for image in result.erased.images)
    assert not any(image.diverged for image in result.reference.images)
    assert result.memory.value == 0.0 and result.memory.n_diverged == 2
    assert result.memory_distance is None and any("d_N not computed" in note for note in result.notes)
