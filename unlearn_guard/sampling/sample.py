"""Text-to-image sampling from a `DiffusionModel` with classifier-free guidance.

One loop serves the small world's `generate` (prompts) and the attacks (text embeddings with a
learned token spliced in). "ddim" (the default) is DDIM with eta = 0 on the model's own schedule
(`ddim_schedule`, SPEC 1); any other scheduler name runs diffusers' scheduler built from the
model's scheduler config, stepped as `StableDiffusionPipeline` steps it (initial latent times
`init_noise_sigma`, `scale_model_input` before the UNet, `step` after). Either way image i starts
from `randn` of a generator seeded with `seeds[i]`, and an ancestral sampler draws its fresh
noise from that same generator, so a batch equals its singles and the chunk size never changes
an image.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..inversion.renoise import Conditioning, NoisePredictor
from ..schedule import ddim_schedule, ddim_step
from ..models.bundle import DiffusionModel
from ..models.module_state import preserve_module_state
from .schedulers import build_scheduler, step_accepts_generator
from .settings import SamplingSetting, check_scheduler


@torch.no_grad()
def sample_from_embeddings(
    model: DiffusionModel,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    seeds: Sequence[int],
    num_steps: int = 25,
    guidance_scale: float = 4.0,
    batch_size: int = 64,
    scheduler: str = "ddim",
) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1], float32 on the CPU, from text embeddings.

    Args:
        cond: (N, L, D) conditional embeddings, one row per image.
        uncond: (N, L, D) unconditional embeddings (the empty prompt); needed when guidance_scale != 1.
        seeds: N ints; image i's initial latent is randn from `torch.Generator().manual_seed(seeds[i])`.
        num_steps / guidance_scale: steps of the model's schedule and the CFG scale.
        batch_size: images per UNet call (does not change the images).
        scheduler: "ddim" (ours, eta = 0) or a diffusers scheduler by name (`SCHEDULER_NAMES`).
    """
    check_scheduler(scheduler)
    if len(seeds) != cond.shape[0] or (uncond is not None and uncond.shape[0] != cond.shape[0]):
        raise ValueError(f"got {len(seeds)} seeds, {cond.shape[0]} cond and "
                         f"{None if uncond is None else uncond.shape[0]} uncond rows; expected one of each per image")
    if guidance_scale != 1.0 and uncond is None:
        raise ValueError("guidance_scale != 1 needs `uncond` embeddings")
    schedule = ddim_schedule(model.scheduler_config, num_steps) if scheduler == "ddim" else None
    side = model.resolution // model.vae_scale_factor
    shape = (model.latent_channels, side, side)
    predict = NoisePredictor(model)
    outputs = []
    with preserve_module_state(*model.modules()):
        for start in range(0, len(seeds), batch_size):
            stop = min(start + batch_size, len(seeds))
            generators = [torch.Generator().manual_seed(int(s)) for s in seeds[start:stop]]
            z = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(model.device)  # (b, C, h, w)
            conditioning = Conditioning(cond[start:stop], None if uncond is None else uncond[start:stop], guidance_scale)
            if schedule is not None:
                for index in reversed(range(schedule.num_steps)):
                    eps = predict(z, schedule.timesteps[index], conditioning)
                    z = ddim_step(z, eps, *schedule.alphas_at(index))
            else:
                z = _denoise_with_diffusers(model, scheduler, num_steps, z, generators, conditioning, predict)
            outputs.append(model.decode_latents(z).cpu())
    return torch.cat(outputs)


def _denoise_with_diffusers(model: DiffusionModel, name: str, num_steps: int, noise: torch.Tensor,
                            generators: list[torch.Generator], conditioning: Conditioning,
                            predict: NoisePredictor) -> torch.Tensor:
    """Clean latents (b, C, h, w) from `noise` with diffusers' scheduler `name`, stepped as the SD pipeline does."""
    # 1. A fresh scheduler per chunk: the multistep ones (PNDM, DPM++, LMS) keep earlier outputs.
    scheduler = build_scheduler(model.scheduler_config, name)
    scheduler.set_timesteps(num_steps, device=model.device)
    z = noise * scheduler.init_noise_sigma  # read after set_timesteps: Euler's depends on the sigmas
    # 2. Ancestral samplers draw fresh noise at every step from image i's generator (the one that drew
    #    its initial latent): diffusers' `randn_tensor` draws row i from generators[i] when given a
    #    list, as the pipeline does with `generator=[...]`, so row i never depends on the others.
    extra = {"generator": generators} if step_accepts_generator(scheduler) else {}
    # 3. The pipeline's loop: scale the input, predict with CFG, step.
    for t in scheduler.timesteps:
        eps = predict(scheduler.scale_model_input(z, t), t, conditioning)
        z = scheduler.step(eps, t, z, **extra).prev_sample
    return z


@torch.no_grad()
def sample_with_setting(
    model: DiffusionModel,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    seeds: Sequence[int],
    setting: SamplingSetting,
    batch_size: int = 64,
) -> torch.Tensor:
    """`sample_from_embeddings` with a `SamplingSetting`'s scheduler, guidance scale and steps."""
    if not isinstance(setting, SamplingSetting):
        from ..errors import InputError

        raise InputError(f"setting: got {type(setting).__name__}; expected a SamplingSetting")
    return sample_from_embeddings(model, cond, uncond, seeds, setting.num_steps, setting.guidance_scale, batch_size,
                                  scheduler=setting.scheduler)
