"""SDXL on a tiny model built here (text_time UNet, two CLIP text encoders, the second with a
projection, a tiny force_upcast VAE): conditioning against `StableDiffusionXLPipeline` itself,
inversion and reconstruction against diffusers' schedulers, the probe, multi-memory search,
sampling against the pipeline, a peft LoRA fine-tune with the monitor, ESD, loading (folder, an
erased UNet, a LoRA), the gate end to end, and the refusals with their reasons."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import TOLERANCES, assert_close
from test_model_families import (assert_gate_runs_on_a_folder, assert_inversion_recovers_seeds,
                                 assert_monitor_watches_a_lora_loop, smooth_images)
from test_probe import QUICK
from unlearn_guard.config import InversionConfig, RegularizationConfig
from unlearn_guard.errors import ModelError
from unlearn_guard.inversion.reconstruct import ddim_reconstruct
from unlearn_guard.inversion.renoise import Conditioning, NoisePredictor, renoise_invert
from unlearn_guard.models import DiffusionModel
from unlearn_guard.models.tiny import build_tiny_sdxl_components
from unlearn_guard.schedule import ddim_schedule

PROMPTS = ["a circle", "a red ring"]


@pytest.fixture(scope="module")
def xl_components():
    return build_tiny_sdxl_components(seed=0)


def xl_pipe(components):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture()
def xl_model(xl_components):
    """A fresh copy per test: training tests add adapters to its UNet."""
    return DiffusionModel.from_pipeline(xl_pipe(copy.deepcopy(xl_components)))


# --------------------------------------------------------------------------- conditioning
def test_embeddings_and_unet_inputs_are_the_pipelines(xl_model, xl_components):
    """encode_prompts packs exactly what `StableDiffusionXLPipeline.encode_prompt` gives (token states,
    pooled embedding) with the pipeline's default time ids, and predict_noise calls the UNet with them."""
    pipe = xl_pipe(xl_components)
    tokens, _, pooled, _ = pipe.encode_prompt(PROMPTS, device="cpu", num_images_per_prompt=1,
                                              do_classifier_free_guidance=False)
    embeddings = xl_model.encode_prompts(PROMPTS)
    assert xl_model.family == "sdxl" and embeddings.shape[:2] == (2, 16 + 1)
    inputs = xl_model.unet_conditioning(embeddings)
    assert torch.equal(inputs["encoder_hidden_states"], tokens)
    assert torch.equal(inputs["added_cond_kwargs"]["text_embeds"], pooled)
    time_ids = pipe._get_add_time_ids((64, 64), (0, 0), (64, 64), dtype=torch.float32,
                                      text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    assert torch.equal(inputs["added_cond_kwargs"]["time_ids"], time_ids.expand(2, -1))
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = pipe.unet(z, 500, encoder_hidden_states=tokens,
                           added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids.expand(2, -1)}).sample
    assert torch.equal(xl_model.predict_noise(z, 500, embeddings), theirs)
    # the packed rows travel with their prompt through batch operations
    swapped = xl_model.unet_conditioning(embeddings.flip(0))
    assert torch.equal(swapped["added_cond_kwargs"]["text_embeds"], pooled.flip(0))


def test_inversion_and_reconstruction_match_diffusers(xl_model):
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    config = InversionConfig(num_steps=10, renoise_steps=0, early_window=(0, 1), late_window=(0, 1),
                             regularization=RegularizationConfig(enabled=False))
    schedule = ddim_schedule(xl_model.scheduler_config, 10)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    z0 = xl_model.encode_images(smooth_images(2) * 2 - 1, gens)
    embeddings = xl_model.encode_prompts(PROMPTS)
    cond = Conditioning(embeddings)
    inputs = xl_model.unet_conditioning(embeddings)

    def diffusers_loop(scheduler, z):
        scheduler.set_timesteps(10)
        with torch.no_grad():
            for t in scheduler.timesteps:
                z = scheduler.step(xl_model.unet(z, t, **inputs).sample, t, z).prev_sample
        return z

    ours = renoise_invert(NoisePredictor(xl_model), z0, cond, schedule, config, gens)
    assert_close(ours, diffusers_loop(DDIMInverseScheduler.from_config(xl_model.scheduler_config, clip_sample=False), z0),
                 scale=10)
    seeds = torch.randn(z0.shape, generator=torch.Generator().manual_seed(3))
    rebuilt = ddim_reconstruct(NoisePredictor(xl_model), seeds, cond, schedule)
    assert_close(rebuilt, diffusers_loop(DDIMScheduler.from_config(xl_model.scheduler_config, clip_sample=False), seeds),
                 scale=10)


def test_inversion_of_a_ddim_sample_recovers_its_seed(xl_model):
    assert_inversion_recovers_seeds(xl_model)


# --------------------------------------------------------------------------- probe, search, sampling
def test_probe_batch_equals_singles_and_memory_search_runs(xl_model):
    from unlearn_guard import probe
    from unlearn_guard.attacks import find_memories

    images = smooth_images(3)
    whole = probe(xl_model, images, "a shape", config=QUICK, batch_size=3, keep_seeds=True)
    single = probe(xl_model, images, "a shape", config=QUICK, batch_size=1, keep_seeds=True)
    assert_close(whole.erased.seeds, single.erased.seeds, scale=10)
    assert_close(whole.erased.nll, single.erased.nll, dtype=torch.float32, scale=10)
    found = find_memories(xl_model, images[:2], "a shape", support=smooth_images(2, seed=5), memories=2,
                          reference=smooth_images(2, seed=9), reference_prompts="a ring", config=QUICK)
    assert len(found.images) == 2 and all(len(image.memories) == 2 for image in found.images)


@pytest.mark.parametrize("name", ["ddim", "euler"])
def test_sampling_matches_the_sdxl_pipeline(xl_components, name):
    import diffusers

    from unlearn_guard.sampling import SCHEDULER_CLASSES, sample_from_embeddings

    components = dict(xl_components)
    # DDIM: ours never clips x0 (SPEC 1); a DDIMScheduler built from SDXL's Euler config would, by default
    class_name, overrides = ("DDIMScheduler", {"clip_sample": False}) if name == "ddim" else SCHEDULER_CLASSES[name]
    components["scheduler"] = getattr(diffusers, class_name).from_config(components["scheduler"].config, **overrides)
    pipe = xl_pipe(components)
    model = DiffusionModel.from_pipeline(pipe)
    seeds = [3, 14]
    cond, uncond = model.encode_prompts(PROMPTS), model.encode_prompts([""]).expand(2, -1, -1)
    ours = sample_from_embeddings(model, cond, uncond, seeds, 4, 3.0, scheduler=name)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    latents = torch.stack([torch.randn((4, 8, 8), generator=g) for g in generators])
    theirs = pipe(PROMPTS, negative_prompt=["", ""], num_inference_steps=4, guidance_scale=3.0, latents=latents,
                  generator=generators, output_type="pt").images
    rtol, atol = TOLERANCES[torch.float32]
    torch.testing.assert_close(ours, theirs, rtol=rtol * 10, atol=atol * 10)


# --------------------------------------------------------------------------- training
def test_monitor_watches_an_sdxl_lora_fine_tune(xl_model):
    """A user's SDXL loop on a peft LoRA: the denoising loss with SDXL's extras in the UNet call."""
    def eps_loss(model, embeddings, g):
        noisy, noise = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
        t = torch.randint(0, 1000, (2,), generator=g)
        out = model.unet(noisy, t, **model.unet_conditioning(embeddings)).sample
        return torch.nn.functional.mse_loss(out, noise)

    assert_monitor_watches_a_lora_loop(xl_model, eps_loss)


def test_esd_lora_erases_an_sdxl_model_and_saves_an_adapter(xl_model, tmp_path):
    from unlearn_guard import load_model
    from unlearn_guard.trainers import ESDConfig, esd_lora_erase, save_esd_adapter

    config = ESDConfig(concept="a circle", iterations=3, ddim_steps=5, seed=0, lr=1e-2)
    result = esd_lora_erase(xl_model, config, progress=False)
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    save_esd_adapter(xl_model, tmp_path / "adapter", config=config)
    erased = xl_model.encode_prompts(PROMPTS)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    xl_pipe(xl_components_copy := build_tiny_sdxl_components(seed=0)).save_pretrained(tmp_path / "base")
    del xl_components_copy
    reloaded = load_model(tmp_path / "base", lora=tmp_path / "adapter")
    assert reloaded.family == "sdxl" and reloaded.loaded_weights[-1]["argument"] == "lora"
    assert_close(reloaded.predict_noise(z, 400, erased), xl_model.predict_noise(z, 400, erased), scale=10)


# --------------------------------------------------------------------------- loading, the gate, refusals
def test_folder_and_erased_unet_load_as_sdxl(xl_components, tmp_path):
    from safetensors.torch import save_file

    from unlearn_guard import load_model

    xl_pipe(xl_components).save_pretrained(tmp_path / "base")
    model = load_model(tmp_path / "base")
    assert model.family == "sdxl" and model.text_encoder_2 is not None
    erased = {k: v + 0.01 for k, v in xl_components["unet"].state_dict().items()}
    save_file({k: v.contiguous() for k, v in erased.items()}, tmp_path / "unet.safetensors")
    overlaid = load_model(tmp_path / "base", unet_weights=tmp_path / "unet.safetensors")
    key = "conv_in.weight"
    assert torch.equal(overlaid.unet.state_dict()[key], erased[key])
    assert overlaid.loaded_weights[-1]["argument"] == "unet_weights"


def test_a_single_file_sdxl_loads_with_its_config_folder(xl_components, tmp_path):
    """Stability's single-file layout (sgm: label_emb, conditioner.embedders.0/1 with OpenCLIP names),
    written by the test-only reverse map, read by diffusers' from_single_file with the folder's
    configs: every tensor of every part comes back as it was (which also checks the reverse map)."""
    from safetensors.torch import save_file

    from helpers.ldm_keys import sdxl_pipeline_to_sgm
    from unlearn_guard import load_model

    xl_pipe(xl_components).save_pretrained(tmp_path / "configs")
    state = sdxl_pipeline_to_sgm(xl_components["unet"], xl_components["vae"], xl_components["text_encoder"],
                                 xl_components["text_encoder_2"])
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "sdxl.safetensors")
    model = load_model(tmp_path / "sdxl.safetensors", config=tmp_path / "configs")
    assert model.family == "sdxl" and model.loaded_weights[-1]["format"] == "single-file checkpoint (from_single_file)"
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        loaded, built = getattr(model, part).state_dict(), xl_components[part].state_dict()
        assert loaded.keys() == built.keys(), part
        assert all(torch.equal(loaded[k], built[k]) for k in built), part


def test_half_precision_keeps_the_vae_in_float32(xl_components):
    model = DiffusionModel.from_pipeline(xl_pipe(copy.deepcopy(xl_components))).to(dtype=torch.float16)
    assert model.dtype == torch.float16 and model.text_encoder_2.dtype == torch.float16
    assert next(model.vae.parameters()).dtype == torch.float32  # force_upcast, as diffusers decodes


def test_gate_end_to_end_on_an_sdxl_folder(xl_components, tmp_path, capsys):
    assert_gate_runs_on_a_folder(xl_pipe(xl_components), tmp_path, capsys, family="sdxl", prediction_type="epsilon")


def test_refusals_name_the_reason(xl_model, xl_components, tmp_path):
    from unlearn_guard import load_model
    from unlearn_guard.attacks import ShapeJudge, adversarial_prompt_attack, concept_inversion

    with pytest.raises(ModelError, match="Concept Inversion is not supported on SDXL: .*two"):
        concept_inversion(xl_model, smooth_images(2))
    with pytest.raises(ModelError, match="UnlearnDiffAtk.*not supported on SDXL"):
        adversarial_prompt_attack(xl_model, ["a circle"], [0], ShapeJudge("circle"), "world", base_model=xl_model)
    with pytest.raises(ModelError, match="needs text_encoder, text_encoder_2"):
        DiffusionModel.from_components(xl_components["unet"], xl_components["vae"], xl_components["text_encoder"],
                                       xl_components["tokenizer"], xl_components["scheduler"])
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    other = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=600, hidden_size=16, intermediate_size=20,
                                                       num_hidden_layers=1, num_attention_heads=2, projection_dim=32,
                                                       max_position_embeddings=16))
    with pytest.raises(ModelError, match=r"32 \+ 16 = 48 features but the SDXL UNet expects cross_attention_dim=80"):
        DiffusionModel.from_components(**{**xl_components, "text_encoder_2": other})
    xl_pipe(xl_components).save_pretrained(tmp_path / "refiner")
    index = json.loads((tmp_path / "refiner" / "model_index.json").read_text())
    (tmp_path / "refiner" / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionXLImg2ImgPipeline"}))
    with pytest.raises(ModelError, match="StableDiffusionXLImg2ImgPipeline: an image-to-image SDXL pipeline"):
        load_model(tmp_path / "refiner")


def test_the_sdxl_shaped_benchmark_model_is_sdxl_base_sized():
    """benchmarks/gpu.sh's SDXL row: built on the meta device (shapes only, no memory), it is SDXL
    base's architecture (2.57B UNet parameters) and passes the model checks."""
    from unlearn_guard.models.tiny import build_sdxl_shaped_components

    with torch.device("meta"):
        components = build_sdxl_shaped_components()
    assert sum(p.numel() for p in components["unet"].parameters()) == pytest.approx(2.567e9, rel=2e-3)
    model = DiffusionModel.from_components(**components)
    assert model.family == "sdxl" and model.resolution == 1024


def test_an_sdxl_hub_id_loads_from_the_cache_offline(xl_components, tmp_path):
    """A hub id is read from the Hugging Face cache (model_index.json names the SDXL pipeline), with
    the network off: a cache laid out as huggingface_hub writes it, in a fresh process (the hub
    library reads its cache folder when imported)."""
    import os
    import subprocess
    import sys

    revision = "0" * 40
    repo = tmp_path / "hub" / "models--tiny-org--tiny-sdxl"
    xl_pipe(xl_components).save_pretrained(repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    code = ("from unlearn_guard import load_model\n"
            "model = load_model('tiny-org/tiny-sdxl')\n"
            "print(model.family, type(model.text_encoder_2).__name__, model.source)")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["sdxl", "CLIPTextModelWithProjection", "tiny-org/tiny-sdxl"]
