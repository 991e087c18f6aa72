"""Sampling settings: every scheduler against diffusers' own pipeline, batch equals singles (the
ancestral sampler included), the DDIM path bit for bit as before, the worst case over settings,
and the settings' checks. The pipeline oracle is `StableDiffusionPipeline` loaded from the shipped
world's folder, given the same initial latents and per-image generators."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import TOLERANCES
from unlearn_guard.attacks import prompt_success, worst_case_prompt_success
from unlearn_guard.callbacks import MonitorConfig, ProbeMonitor, PromptCheck
from unlearn_guard.errors import InputError
from unlearn_guard.inversion.renoise import Conditioning, NoisePredictor
from unlearn_guard.schedule import ddim_schedule, ddim_step
from unlearn_guard.models import DiffusionModel
from unlearn_guard.sampling import (DEFAULT_SETTING, SCHEDULER_CLASSES, SCHEDULER_NAMES, STANDARD_SETTINGS,
                                    WORLD_SETTINGS, SamplingSetting, as_settings, build_scheduler,
                                    sample_from_embeddings, sample_with_setting)

from test_callbacks import CHEAP, fake_memory_result

PROMPTS = ["a circle", "a red square", "a ring"]
SEEDS = [3, 14, 15]
STEPS = 4


@pytest.fixture(scope="module")
def world_pipe():
    from unlearn_guard.world import load_world_pipeline

    pipe = load_world_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def world(world_pipe):
    model = DiffusionModel.from_pipeline(world_pipe)
    cond = model.encode_prompts(PROMPTS)  # (3, L, D)
    uncond = model.encode_prompts([""]).expand(len(PROMPTS), -1, -1)
    return model, cond, uncond


def pipeline_images(pipe, name: str, guidance: float, seeds=SEEDS, steps: int = STEPS) -> torch.Tensor:
    """diffusers' own loop: the pipeline with scheduler `name`, the same initial latents, the
    per-image generators (which then give the ancestral noise), output_type="pt"."""
    from diffusers import DDIMScheduler

    pipe.scheduler = (DDIMScheduler.from_config(pipe.scheduler.config) if name == "ddim"
                      else build_scheduler(pipe.scheduler.config, name))
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    side = pipe.unet.config.sample_size
    latents = torch.stack([torch.randn((pipe.unet.config.in_channels, side, side), generator=g) for g in generators])
    return pipe(PROMPTS[: len(seeds)], num_inference_steps=steps, guidance_scale=guidance, latents=latents,
                generator=generators, output_type="pt").images


# --------------------------------------------------------------------------- against diffusers


@pytest.mark.parametrize("guidance", [1.0, 3.0])
@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_each_scheduler_matches_the_diffusers_pipeline(world, world_pipe, name, guidance):
    """Ours (DDIM: our own step; the rest: diffusers' scheduler in our loop) against the pipeline
    loop; the diffusers schedulers agree to float32 round-off, our DDIM to the table's float32
    tolerance (its coefficients are formed in float64)."""
    model, cond, uncond = world
    ours = sample_from_embeddings(model, cond, uncond, SEEDS, STEPS, guidance, scheduler=name)
    theirs = pipeline_images(world_pipe, name, guidance)
    rtol, atol = TOLERANCES[torch.float32]
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=atol)


def test_the_pipeline_comparison_can_fail(world, world_pipe):
    """Negative control: another scheduler, or the ancestral noise from other generators, is far off."""
    model, cond, uncond = world
    euler = sample_from_embeddings(model, cond, uncond, SEEDS, STEPS, 3.0, scheduler="euler")
    assert (euler - pipeline_images(world_pipe, "euler-a", 3.0)).abs().max() > 0.05
    shifted = sample_from_embeddings(model, cond, uncond, [s + 1 for s in SEEDS], STEPS, 3.0, scheduler="euler-a")
    assert (shifted - pipeline_images(world_pipe, "euler-a", 3.0)).abs().max() > 0.05


def test_fractional_timesteps_match_the_pipeline(world_pipe):
    """Euler with "linspace" spacing at 5 steps steps between training timesteps (749.25, ...): the
    UNet gets the float timestep as the pipeline gives it, not a rounded one."""
    from diffusers import StableDiffusionPipeline

    config = {**world_pipe.scheduler.config, "timestep_spacing": "linspace"}
    scheduler = build_scheduler(config, "euler")
    scheduler.set_timesteps(5)
    assert any(float(t) != round(float(t)) for t in scheduler.timesteps)
    pipe = StableDiffusionPipeline(**{**world_pipe.components, "scheduler": scheduler})
    pipe.set_progress_bar_config(disable=True)
    model = DiffusionModel.from_pipeline(pipe)
    cond, uncond = model.encode_prompts(PROMPTS), model.encode_prompts([""]).expand(3, -1, -1)
    ours = sample_from_embeddings(model, cond, uncond, SEEDS, 5, 3.0, scheduler="euler")
    rtol, atol = TOLERANCES[torch.float32]
    torch.testing.assert_close(ours, pipeline_images(pipe, "euler", 3.0, steps=5), rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- DDIM unchanged


@torch.no_grad()
def ddim_as_before(model, cond, uncond, seeds, num_steps, guidance_scale, batch_size):
    """`sample_from_embeddings` as it was before sampling settings (commit 431efb0), verbatim."""
    schedule = ddim_schedule(model.scheduler_config, num_steps)
    side = model.resolution // model.vae_scale_factor
    shape = (model.latent_channels, side, side)
    predict = NoisePredictor(model)
    outputs = []
    for start in range(0, len(seeds), batch_size):
        stop = min(start + batch_size, len(seeds))
        z = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
                         for s in seeds[start:stop]]).to(model.device)
        conditioning = Conditioning(cond[start:stop], None if uncond is None else uncond[start:stop], guidance_scale)
        for index in reversed(range(schedule.num_steps)):
            eps = predict(z, schedule.timesteps[index], conditioning)
            z = ddim_step(z, eps, *schedule.alphas_at(index))
        outputs.append(model.decode_latents(z).cpu())
    return torch.cat(outputs)


@pytest.mark.parametrize("guidance, batch_size", [(4.0, 64), (1.0, 2)])
def test_the_ddim_path_is_bit_for_bit_unchanged(world, guidance, batch_size):
    model, cond, uncond = world
    before = ddim_as_before(model, cond, uncond, SEEDS, STEPS, guidance, batch_size)
    assert torch.equal(sample_from_embeddings(model, cond, uncond, SEEDS, STEPS, guidance, batch_size), before)
    setting = SamplingSetting("ddim", guidance, STEPS)
    assert torch.equal(sample_with_setting(model, cond, uncond, SEEDS, setting, batch_size), before)


# --------------------------------------------------------------------------- batch equals singles


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_batch_equals_singles_and_same_seed_is_identical(world, name):
    """Image i depends on its seed alone, also for the ancestral sampler's per-step noise. The UNet's
    CPU kernels sum in another order for another batch size (measured up to 5e-5 on images in
    [0, 1] at 10 PNDM steps), hence 1e-4; a swapped seed moves pixels by more than 0.05."""
    model, cond, uncond = world
    batch = sample_from_embeddings(model, cond, uncond, SEEDS, STEPS, 3.0, scheduler=name)
    singles = torch.cat([sample_from_embeddings(model, cond[i : i + 1], uncond[i : i + 1], SEEDS[i : i + 1], STEPS,
                                                3.0, scheduler=name) for i in range(3)])
    torch.testing.assert_close(batch, singles, rtol=0, atol=1e-4)
    chunked = sample_from_embeddings(model, cond, uncond, SEEDS, STEPS, 3.0, batch_size=2, scheduler=name)
    torch.testing.assert_close(chunked, batch, rtol=0, atol=1e-4)
    assert torch.equal(sample_from_embeddings(model, cond, uncond, SEEDS, STEPS, 3.0, scheduler=name), batch)
    swapped = sample_from_embeddings(model, cond, uncond, [SEEDS[1], SEEDS[0], SEEDS[2]], STEPS, 3.0, scheduler=name)
    assert (swapped[0] - batch[0]).abs().max() > 0.05


def test_the_ancestral_sampler_draws_fresh_noise_from_each_images_generator(world):
    """Same initial latent, other step noise: euler-a differs from euler; a neighbour's seed never
    reaches an image (its row equals the row sampled alone, to round-off)."""
    model, cond, uncond = world
    a = sample_from_embeddings(model, cond[:2], uncond[:2], [7, 8], STEPS, 3.0, scheduler="euler-a")
    b = sample_from_embeddings(model, cond[:2], uncond[:2], [7, 99], STEPS, 3.0, scheduler="euler-a")
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-4)
    euler = sample_from_embeddings(model, cond[:1], uncond[:1], [7], STEPS, 3.0, scheduler="euler")
    assert (euler[0] - a[0]).abs().max() > 0.01


# --------------------------------------------------------------------------- settings and their checks


def test_bad_scheduler_name_is_a_one_line_input_error_listing_the_names(world):
    model, cond, uncond = world
    for call in (lambda: sample_from_embeddings(model, cond, uncond, SEEDS, scheduler="heun"),
                 lambda: SamplingSetting("heun", 4.0, 25),
                 lambda: prompt_success(model, "a circle", lambda x: [True] * len(x), 1, scheduler="heun")):
        with pytest.raises(InputError) as raised:
            call()
        message = str(raised.value)
        assert "heun" in message and "\n" not in message
        assert all(name in message for name in SCHEDULER_NAMES)


@pytest.mark.parametrize("fields, match", [
    (dict(scheduler=3), "scheduler"),
    (dict(guidance_scale=0.5), "guidance_scale"),
    (dict(guidance_scale=float("nan")), "guidance_scale"),
    (dict(guidance_scale=True), "guidance_scale"),
    (dict(num_steps=0), "num_steps"),
    (dict(num_steps=2.0), "num_steps"),
    (dict(num_steps=True), "num_steps"),
])
def test_setting_rejects_bad_values(fields, match):
    with pytest.raises(InputError, match=match):
        SamplingSetting(**{"scheduler": "ddim", "guidance_scale": 4.0, "num_steps": 25, **fields})


def test_setting_label_round_trip_and_parse():
    setting = SamplingSetting("euler-a", 4, 25)
    assert setting.label == "euler-a g4.0 25 steps" and DEFAULT_SETTING.label == "ddim g4.0 25 steps"
    assert SamplingSetting.from_dict(setting.to_dict()) == setting and setting.stochastic
    assert SamplingSetting.parse("pndm:3:25") == SamplingSetting("pndm", 3.0, 25)
    for bad in ("pndm:3", "pndm:x:25", "pndm:3:25:1", "heun:3:25"):
        with pytest.raises(InputError, match="SCHEDULER:GUIDANCE:STEPS|heun"):
            SamplingSetting.parse(bad)
    with pytest.raises(InputError, match="unknown fields"):
        SamplingSetting.from_dict({"scheduler": "ddim", "guidance_scale": 4, "num_steps": 25, "eta": 0})


def test_named_sets():
    assert WORLD_SETTINGS[0] == DEFAULT_SETTING  # the world's evaluation setting comes first
    for chosen in (WORLD_SETTINGS, STANDARD_SETTINGS):
        assert len({s.label for s in chosen}) == len(chosen) and {s.scheduler for s in chosen} >= {"ddim", "pndm"}
        assert any(s.guidance_scale == 1.0 for s in chosen) and any(s.stochastic for s in chosen)
    assert as_settings("world") == WORLD_SETTINGS and as_settings(DEFAULT_SETTING) == (DEFAULT_SETTING,)
    assert as_settings([DEFAULT_SETTING.to_dict()]) == (DEFAULT_SETTING,)
    assert as_settings("ddim:4:25, pndm:3:25") == (DEFAULT_SETTING, SamplingSetting("pndm", 3.0, 25))
    for bad, match in (("sd", "expected one of"), ("ddim:4", "SCHEDULER:GUIDANCE:STEPS"), ([], "non-empty"), ([DEFAULT_SETTING, DEFAULT_SETTING], "more than once"),
                       ([("ddim", 4, 25)], "SamplingSetting")):
        with pytest.raises(InputError, match=match):
            as_settings(bad)


def test_every_named_scheduler_builds_from_an_sd_config():
    from unlearn_guard.models.tiny import SD14_SCHEDULER_CONFIG

    assert set(SCHEDULER_CLASSES) == set(SCHEDULER_NAMES) - {"ddim"}
    for name, (class_name, _) in SCHEDULER_CLASSES.items():
        scheduler = build_scheduler(SD14_SCHEDULER_CONFIG, name)
        assert type(scheduler).__name__ == class_name
        scheduler.set_timesteps(25)
        assert scheduler.config.num_train_timesteps == 1000 and float(scheduler.init_noise_sigma) >= 1.0
    assert build_scheduler({**SD14_SCHEDULER_CONFIG, "algorithm_type": "sde-dpmsolver++"},
                           "dpm++").config.algorithm_type == "dpmsolver++"


# --------------------------------------------------------------------------- the worst case


class Scripted:
    """A judge that answers call k with `counts[k]` True verdicts (one call per setting, in order)."""

    def __init__(self, counts: list[int]) -> None:
        self.counts = list(counts)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        count = self.counts.pop(0)
        return torch.arange(len(images)) < count


SMALL = (SamplingSetting("ddim", 4.0, 2), SamplingSetting("pndm", 3.0, 2), SamplingSetting("euler-a", 1.0, 2))


@pytest.mark.parametrize("counts, worst", [([1, 3, 2], 1), ([2, 2, 0], 0), ([0, 0, 4], 2)])
def test_worst_case_picks_the_highest_rate_first_on_ties(tiny_model, counts, worst):
    found = worst_case_prompt_success(tiny_model, "a red circle", Scripted(counts), SMALL, n=4)
    assert [r.rate for r in found.results] == [c / 4 for c in counts]
    assert found.worst_setting == SMALL[worst] and found.rate == max(counts) / 4
    assert [r.setting for r in found.results] == list(SMALL)
    data = found.to_dict()
    assert data["worst"]["label"] == SMALL[worst].label and len(data["settings"]) == 3
    assert data["settings"][0]["setting"] == SMALL[0].to_dict()
    assert "<- worst" in found.summary_table().splitlines()[worst]


def test_each_setting_measures_what_prompt_success_measures(tiny_model):
    def bright(images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3)) > 0.5

    found = worst_case_prompt_success(tiny_model, ["a red circle", "a blue square"], bright, SMALL, n=3, seed=9)
    for setting, result in zip(SMALL, found.results):
        direct = prompt_success(tiny_model, ["a red circle", "a blue square"], bright, 3, seed=9,
                                num_steps=setting.num_steps, guidance_scale=setting.guidance_scale,
                                scheduler=setting.scheduler)
        assert result.verdicts == direct.verdicts and direct.setting == setting
        assert direct.to_dict()["setting"] == setting.to_dict()


# --------------------------------------------------------------------------- the monitor's prompt check


def test_prompt_check_default_is_the_single_ddim_setting():
    check = PromptCheck("a circle", lambda x: [False] * len(x), num_steps=10, guidance_scale=2.0)
    assert check.sampling == (SamplingSetting("ddim", 2.0, 10),) and check.settings is None
    assert check.to_dict()["settings"] == [SamplingSetting("ddim", 2.0, 10).to_dict()]
    assert PromptCheck("a circle", lambda x: x, settings="world").sampling == WORLD_SETTINGS
    with pytest.raises(InputError, match="settings"):
        PromptCheck("a circle", lambda x: x, settings="everything")


def test_the_monitor_records_the_worst_setting(tiny_model, tiny_images):
    check = PromptCheck("a red circle", Scripted([0, 2, 1]), max_success=0.1, n=2, settings=SMALL)
    monitor = ProbeMonitor(tiny_model, tiny_images[:2], "a red circle", reference=tiny_images[2:], reference_prompts="q",
                           config=MonitorConfig(every_n_steps=1, probe=CHEAP, target=0.5),
                           probe_fn=lambda *args: fake_memory_result(0.3, 0.2, 0.45), prompt_check=check)
    record = monitor.probe_now(1)
    assert record.prompt_success == 1.0 and record.prompt_setting == SMALL[1].label and not monitor.should_stop
    assert type(record).from_dict(record.to_dict()) == record
    assert dataclasses.asdict(record)["prompt_setting"] == "pndm g3.0 2 steps"
