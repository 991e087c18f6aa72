"""Text-to-image sampling from a `DiffusionModel`: DDIM (eta = 0) with classifier-free guidance.

One loop serves the small world's `generate` (prompts) and the attacks (text embeddings with a
learned token spliced in). It uses the model's own schedule (`ddim_schedule`, SPEC 1) and one
seed per image (image i starts from `randn` of a generator seeded with `seeds[i]`), so a batch
equals its singles and the chunk size never changes an image.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .inversion.renoise import Conditioning, NoisePredictor
from .inversion.schedule import ddim_schedule, ddim_step
from .models.bundle import DiffusionModel
from .models.module_state import preserve_module_state


@torch.no_grad()
def sample_from_embeddings(
    model: DiffusionModel,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    seeds: Sequence[int],
    num_steps: int = 25,
    guidance_scale: float = 4.0,
    batch_size: int = 64,
) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1], float32 on the CPU, from text embeddings.

    Args:
        cond: (N, L, D) conditional embeddings, one row per image.
        uncond: (N, L, D) unconditional embeddings (the empty prompt); needed when guidance_scale != 1.
        seeds: N ints; image i's initial latent is randn from `torch.Generator().manual_seed(seeds[i])`.
        num_steps / guidance_scale: DDIM steps of the model's schedule and the CFG scale.
        batch_size: images per UNet call (does not change the images).
    """
    if len(seeds) != cond.shape[0] or (uncond is not None and uncond.shape[0] != cond.shape[0]):
        raise ValueError(f"got {len(seeds)} seeds, {cond.shape[0]} cond and "
                         f"{None if uncond is None else uncond.shape[0]} uncond rows; expected one of each per image")
    if guidance_scale != 1.0 and uncond is None:
        raise ValueError("guidance_scale != 1 needs `uncond` embeddings")
    schedule = ddim_schedule(model.scheduler_config, num_steps)
    side = model.resolution // model.vae_scale_factor
    shape = (model.latent_channels, side, side)
    predict = NoisePredictor(model)
    outputs = []
    with preserve_module_state(*model.modules()):
        for start in range(0, len(seeds), batch_size):
            stop = min(start + batch_size, len(seeds))
            z = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
                             for s in seeds[start:stop]]).to(model.device)  # (b, C, h, w)
            conditioning = Conditioning(cond[start:stop], None if uncond is None else uncond[start:stop], guidance_scale)
            for index in reversed(range(schedule.num_steps)):
                eps = predict(z, schedule.timesteps[index], conditioning)
                z = ddim_step(z, eps, *schedule.alphas_at(index))
            outputs.append(model.decode_latents(z).cpu())
    return torch.cat(outputs)
