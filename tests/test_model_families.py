"""Model families beyond SD 1.x, on tiny models built here: an SD 2.x-style v-prediction model
(SPEC 1.1). Each goes through the schedule oracles (diffusers' own steps), inversion and
reconstruction, the probe (batch equal to singles), sampling against the diffusers pipeline, a
training loop on a peft LoRA with the monitor, and the gate end to end."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import TOLERANCES, assert_close
from unlearn_guard.config import InversionConfig, RegularizationConfig
from unlearn_guard.inversion.reconstruct import ddim_reconstruct
from unlearn_guard.inversion.renoise import Conditioning, NoisePredictor, renoise_invert
from unlearn_guard.models import DiffusionModel
from unlearn_guard.models.tiny import TinyModelSpec, build_tiny_components
from unlearn_guard.schedule import (alpha_prod_at, alphas_cumprod, ddim_schedule, ddim_step, epsilon_from_output,
                                    x0_from_output)

from test_probe import QUICK  # 6 steps, K = 1, regularisation on; the typical band open (random weights)


@pytest.fixture(scope="module")
def v_components():
    return build_tiny_components(seed=0, spec=TinyModelSpec(prediction_type="v_prediction"))


@pytest.fixture()
def v_model(v_components):
    """A fresh copy per test: training tests add adapters to its UNet."""
    return DiffusionModel.from_components(**copy.deepcopy(v_components))


def smooth_images(n: int, seed: int = 1234) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False).clamp(0, 1)


# --------------------------------------------------------------------------- the conversions (SPEC 1.1)
@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample", "epsilon"])
@pytest.mark.parametrize("index", [0, 7, 19])
def test_conversions_match_diffusers_ddim_step(prediction_type, index):
    """Our DDIM step on eps converted from a random model output equals diffusers' DDIMScheduler
    step on that output with the same prediction type, and so does the x0 it predicts."""
    from diffusers import DDIMScheduler

    from unlearn_guard.models.tiny import SD14_SCHEDULER_CONFIG

    config = {k: v for k, v in SD14_SCHEDULER_CONFIG.items() if k != "_class_name"}
    scheduler = DDIMScheduler.from_config(config, prediction_type=prediction_type)
    scheduler.set_timesteps(20)
    schedule = ddim_schedule(dict(config, prediction_type=prediction_type), 20)
    t = int(scheduler.timesteps[index])
    a_t, a_s = schedule.alphas_at(schedule.timesteps.index(t))
    g = torch.Generator().manual_seed(index)
    z_t, output = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    theirs = scheduler.step(output, t, z_t, eta=0.0)
    eps = epsilon_from_output(output, z_t, a_t, prediction_type)
    assert_close(ddim_step(z_t, eps, a_t, a_s), theirs.prev_sample, scale=10)
    assert_close(x0_from_output(output, z_t, a_t, prediction_type), theirs.pred_original_sample, scale=10)
    if prediction_type == "epsilon":
        assert eps is output  # SD 1.x untouched, bit for bit
    elif t >= 100:  # negative control (where the step is not near the identity): output read as eps is off
        assert (ddim_step(z_t, output, a_t, a_s) - theirs.prev_sample).abs().max() > 1e-2


def test_per_sample_alphas_and_fractional_timesteps():
    """abar per batch element broadcasts like one abar per call; a fractional timestep gives the
    abar of the sigma Euler interpolates (diffusers' EulerDiscreteScheduler, "linspace")."""
    from diffusers import EulerDiscreteScheduler

    from unlearn_guard.models.tiny import SD14_SCHEDULER_CONFIG

    config = {k: v for k, v in SD14_SCHEDULER_CONFIG.items() if k != "_class_name"}
    alphas = alphas_cumprod(config)
    g = torch.Generator().manual_seed(0)
    z_t, output = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    timesteps = torch.tensor([5, 400, 999])
    batched = epsilon_from_output(output, z_t, alpha_prod_at(alphas, timesteps), "v_prediction")
    for i, t in enumerate(timesteps.tolist()):
        one = epsilon_from_output(output[i : i + 1], z_t[i : i + 1], alpha_prod_at(alphas, t), "v_prediction")
        torch.testing.assert_close(batched[i : i + 1], one, rtol=0, atol=0)
    euler = EulerDiscreteScheduler.from_config(config, timestep_spacing="linspace")
    euler.set_timesteps(7)
    fractional = [float(t) for t in euler.timesteps if float(t) != round(float(t))]
    assert fractional
    for t, sigma in zip(euler.timesteps.tolist(), euler.sigmas.tolist()):
        assert float(alpha_prod_at(alphas, t)) == pytest.approx(1 / (1 + sigma**2), rel=1e-6)


# --------------------------------------------------------------------------- inversion and reconstruction
def test_inversion_and_reconstruction_match_diffusers_with_v_prediction(v_model):
    """DDIM reconstruction against diffusers' DDIMScheduler stepping on the UNet's raw v output, and
    K = 0 inversion against DDIMInverseScheduler on the eps that DDIMScheduler's own conversion gives
    at the timestep the UNet sees (SPEC 1.1: DDIMInverseScheduler itself converts v at the
    sample's lower noise level instead). Reading v as eps (the old behaviour) is far off."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    assert v_model.prediction_type == "v_prediction"
    config = InversionConfig(num_steps=10, renoise_steps=0, early_window=(0, 1), late_window=(0, 1),
                             regularization=RegularizationConfig(enabled=False))
    schedule = ddim_schedule(v_model.scheduler_config, 10)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    z0 = v_model.encode_images(smooth_images(2) * 2 - 1, gens)
    cond = Conditioning(v_model.encode_prompts(["a shape", "a ring"]))
    ours = renoise_invert(NoisePredictor(v_model), z0, cond, schedule, config, gens)

    def diffusers_loop(scheduler, z, output=lambda z, t: v_model.unet(z, t, encoder_hidden_states=cond.cond).sample):
        scheduler.set_timesteps(10)
        with torch.no_grad():
            for t in scheduler.timesteps:
                z = scheduler.step(output(z, t), t, z).prev_sample
        return z

    converter = DDIMScheduler.from_config(v_model.scheduler_config, clip_sample=False)

    def eps_by_diffusers(z, t):  # eps = (z - sqrt(abar_t) x0) / sqrt(1 - abar_t), x0 from DDIMScheduler.step
        converter.set_timesteps(10)
        x0 = converter.step(v_model.unet(z, t, encoder_hidden_states=cond.cond).sample, t, z).pred_original_sample
        a = converter.alphas_cumprod[t]
        return (z - a.sqrt() * x0) / (1 - a).sqrt()

    inverse = DDIMInverseScheduler.from_config({**v_model.scheduler_config, "prediction_type": "epsilon"},
                                               clip_sample=False)
    assert_close(ours, diffusers_loop(inverse, z0, eps_by_diffusers), scale=10)
    seeds = torch.randn(z0.shape, generator=torch.Generator().manual_seed(3))
    rebuilt = ddim_reconstruct(NoisePredictor(v_model), seeds, cond, schedule)
    theirs = diffusers_loop(DDIMScheduler.from_config(v_model.scheduler_config, clip_sample=False), seeds)
    assert_close(rebuilt, theirs, scale=10)
    mislabelled = DiffusionModel(v_model.unet, v_model.vae, v_model.text_encoder, v_model.tokenizer,
                                 {**v_model.scheduler_config, "prediction_type": "epsilon"})
    wrong = ddim_reconstruct(NoisePredictor(mislabelled), seeds, cond, schedule)
    assert (wrong - theirs).abs().max() > 0.1


def assert_inversion_recovers_seeds(model) -> None:
    """A DDIM sample inverted: K = 0 (plain DDIM inversion) approaches the seed as steps grow (its
    error is first order in the step); ReNoise's fixed point (K = 10, last iterate, no noise
    regularisation) recovers it to float32 tolerance. Shared by every model family's tests."""
    cond = Conditioning(model.encode_prompts(["a shape", "a ring"]))
    seed = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def round_trip(steps: int, k: int) -> float:
        schedule = ddim_schedule(model.scheduler_config, steps)
        z0 = ddim_reconstruct(NoisePredictor(model), seed, cond, schedule)
        config = InversionConfig(num_steps=steps, renoise_steps=k, early_window=(k, k + 1), late_window=(k, k + 1),
                                 regularization=RegularizationConfig(enabled=False))
        back = renoise_invert(NoisePredictor(model), z0, cond, schedule, config,
                              [torch.Generator().manual_seed(i) for i in range(2)])
        return float((back - seed).abs().max())

    coarse, fine = round_trip(10, 0), round_trip(40, 0)
    assert fine < coarse / 2.5, (coarse, fine)
    rtol, atol = TOLERANCES[torch.float32]
    assert round_trip(10, 10) < 10 * (atol + rtol * float(seed.abs().max()))


def test_inversion_of_a_ddim_sample_recovers_its_seed(v_model):
    assert_inversion_recovers_seeds(v_model)


# --------------------------------------------------------------------------- probe, sampling, training
@pytest.mark.parametrize("regularization, scale", [(False, 10), (True, 50)])
def test_probe_batch_equals_singles(v_model, regularization, scale):
    """Batched and one-image probes agree. With the noise regulariser on, float32 round-off grows
    more on this random v-model than on the eps model (tests/test_probe.py holds that one at scale
    10), hence the wider scale there: the converted eps has nearly flat patches, where PatchKL's
    gradient (1 / variance) amplifies it; a trained v model's does not (benchmarks/precision_sensitivity.py
    --worlds). In float64 the two chunkings agree bit for bit (docs/models.md, "Precision")."""
    import dataclasses

    from unlearn_guard import probe

    config = dataclasses.replace(QUICK, inversion=dataclasses.replace(
        QUICK.inversion, regularization=RegularizationConfig(enabled=regularization)))
    images = smooth_images(3)
    whole = probe(v_model, images, "a shape", config=config, batch_size=3, keep_seeds=True)
    single = probe(v_model, images, "a shape", config=config, batch_size=1, keep_seeds=True)
    assert_close(whole.erased.seeds, single.erased.seeds, scale=scale)
    assert_close(whole.erased.nll, single.erased.nll, dtype=torch.float32, scale=scale)
    assert torch.isfinite(whole.erased.psnr).all()


@pytest.mark.parametrize("name", ["ddim", "euler", "dpm++"])
def test_sampling_matches_the_diffusers_pipeline(v_components, name):
    """Our loop (eps handed to the scheduler) against `StableDiffusionPipeline` with the model's own
    v-prediction scheduler of the same class."""
    import diffusers
    from diffusers import StableDiffusionPipeline

    from unlearn_guard.sampling import SCHEDULER_CLASSES, sample_from_embeddings

    components = dict(v_components)
    config = dict(components["scheduler"].config)
    class_name, overrides = ("DDIMScheduler", {}) if name == "ddim" else SCHEDULER_CLASSES[name]
    components["scheduler"] = getattr(diffusers, class_name).from_config(config, **overrides)
    assert components["scheduler"].config.prediction_type == "v_prediction"
    pipe = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    model = DiffusionModel.from_pipeline(pipe)
    prompts, seeds = ["a circle", "a ring"], [3, 14]
    cond, uncond = model.encode_prompts(prompts), model.encode_prompts([""]).expand(2, -1, -1)
    ours = sample_from_embeddings(model, cond, uncond, seeds, 4, 3.0, scheduler=name)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    latents = torch.stack([torch.randn((4, 8, 8), generator=g) for g in generators])
    theirs = pipe(prompts, num_inference_steps=4, guidance_scale=3.0, latents=latents, generator=generators,
                  output_type="pt").images
    rtol, atol = TOLERANCES[torch.float32]
    torch.testing.assert_close(ours, theirs, rtol=rtol * 10, atol=atol * 10)


def assert_monitor_watches_a_lora_loop(model, loss_of) -> None:
    """A user's loop on a peft LoRA, with the loss `loss_of(model, embeddings, generator)` the
    family trains with: the monitor probes at its cadence (steps 2 and 4), changes nothing the loop
    owns, and records a result each time. Shared by every model family's tests."""
    from unlearn_guard.callbacks import MonitorConfig, ProbeMonitor
    from unlearn_guard.models.adapters import add_lora_adapter
    from unlearn_guard.models.module_state import snapshot_module_state

    params = add_lora_adapter(model.unet, rank=4, lora_alpha=4, target_modules=["to_k", "to_v"], adapter_name="user",
                              seed=0)
    monitor = ProbeMonitor(model, smooth_images(2), ["a shape"] * 2, reference=smooth_images(2, seed=9),
                           reference_prompts=["a ring"] * 2,
                           config=MonitorConfig(every_n_steps=2, probe=QUICK, signal="d_n"))
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    embeddings = model.encode_prompts(["a shape"] * 2)
    g = torch.Generator().manual_seed(0)
    for step in range(1, 5):
        loss_of(model, embeddings, g).backward()
        optimizer.step()
        optimizer.zero_grad()
        before = snapshot_module_state(*model.modules())
        monitor.maybe_probe(step)
        assert snapshot_module_state(*model.modules()).differences(before) == []
    assert [r.step for r in monitor.history] == [2, 4] and all(r.ok for r in monitor.history)


def test_monitor_watches_a_peft_lora_fine_tune_with_the_v_target(v_model):
    """The loss of diffusers' training scripts for a v model: MSE against `get_velocity`."""
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(v_model.scheduler_config)

    def v_loss(model, embeddings, g):
        x0, noise = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
        t = torch.randint(0, 1000, (2,), generator=g)
        out = model.unet(noise_scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=embeddings).sample
        return torch.nn.functional.mse_loss(out, noise_scheduler.get_velocity(x0, noise, t))

    assert_monitor_watches_a_lora_loop(v_model, v_loss)


def test_esd_erases_on_a_v_prediction_model(v_model):
    """ESD's target is formed from converted eps, and its prediction is converted the same way: the
    loss is finite and training moves the LoRA."""
    from unlearn_guard.trainers import ESDConfig, esd_lora_erase

    result = esd_lora_erase(v_model, ESDConfig(concept="a shape", iterations=3, ddim_steps=5, seed=0), progress=False)
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))


# --------------------------------------------------------------------------- the gate, end to end
def assert_gate_runs_on_a_folder(pipe, tmp_path, capsys, family: str, prediction_type: str) -> None:
    """`unlearn-guard gate --model FOLDER` on a saved pipeline of any family: a verdict, its exit
    code, finite numbers in gate.json, the model's family and prediction type in both reports."""
    from unlearn_guard.gate.folders import save_image_folder

    from _gate_helpers import CHEAP, json_line, run_cli

    pipe.save_pretrained(tmp_path / "model")
    to_uint8 = lambda x: (x * 255).round().to(torch.uint8)  # noqa: E731
    save_image_folder(tmp_path / "concept", to_uint8(smooth_images(3)), ["a shape"] * 3)
    save_image_folder(tmp_path / "reference", to_uint8(smooth_images(3, seed=7)), ["a ring"] * 3)
    code, out, err = run_cli(["gate", "--model", str(tmp_path / "model"), "--concept-images", str(tmp_path / "concept"),
                              "--reference-images", str(tmp_path / "reference"), "--output", str(tmp_path / "out"),
                              "--json", *CHEAP], capsys)
    verdict = json_line(out)
    assert "Traceback" not in err
    assert code == verdict["exit_code"] in (0, 1, 4), err
    report = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert report["checkpoints"][0]["probe"]["config"]["inversion"]["num_steps"] == 3
    assert all(image["nll"] > 0 for image in report["checkpoints"][0]["probe"]["erased"]["images"])
    assert report["model"]["model_family"] == family and report["model"]["prediction_type"] == prediction_type
    assert report["model"]["kind"] == "folder"  # the fingerprint is still there
    assert f"model_family {family}, prediction_type {prediction_type}" in (tmp_path / "out" / "report.html").read_text()


def test_gate_end_to_end_on_a_v_prediction_folder(v_components, tmp_path, capsys):
    from diffusers import StableDiffusionPipeline

    assert_gate_runs_on_a_folder(StableDiffusionPipeline(**v_components, safety_checker=None, feature_extractor=None,
                                                         requires_safety_checker=False), tmp_path, capsys,
                                 family="sd", prediction_type="v_prediction")


# --------------------------------------------------------------------------- attacks and losses on v models
def test_the_gradient_paths_read_v_as_eps(v_model):
    """The memory losses' UNet call (with gradients) gives what predict_noise gives, per-sample
    timesteps included; the token attacks train and move their tokens on a v model."""
    from unlearn_guard.attacks import AdversarialPromptConfig, adversarial_prompt_attack, concept_inversion
    from unlearn_guard.attacks.concept_inversion import ConceptInversionConfig
    from unlearn_guard.losses.common import predict_noise

    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    embeddings = v_model.encode_prompts(["a shape", "a ring"])
    with torch.enable_grad():
        with_grad = predict_noise(v_model, z.requires_grad_(), 700, embeddings)
    assert_close(with_grad.detach(), v_model.predict_noise(z.detach(), 700, embeddings))
    learned = concept_inversion(v_model, smooth_images(2), ConceptInversionConfig(init_token="x", steps=3, batch_size=2,
                                                                                   progress=False), lr=1e-1)
    assert len(learned.losses) == 3 and all(torch.isfinite(torch.tensor(learned.losses)))
    config = AdversarialPromptConfig.from_preset("world", timesteps=(100, 900), steps_per_timestep=2, num_steps=3)
    result = adversarial_prompt_attack(v_model, ["a circle", "a ring"], [0, 1], lambda images: [False] * len(images),
                                       config, targets=smooth_images(2), progress=False)
    assert result.asr.n == 2 and result.unet_evaluations["attack"] > 0
