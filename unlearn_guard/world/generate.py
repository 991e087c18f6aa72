"""Text-to-image sampling with a `DiffusionModel`: DDIM (eta = 0) with classifier-free guidance.

Used to score concepts (classifier accuracy from a prompt) on the original and erased models.
Uses the model's own schedule (`ddim_schedule`) and one generator per image, so a batch equals
its singles and a LoRA-adapted UNet samples through exactly the same code.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..inversion.renoise import Conditioning, NoisePredictor
from ..inversion.schedule import ddim_schedule, ddim_step
from ..models.bundle import DiffusionModel
from ..models.module_state import preserve_module_state


@torch.no_grad()
def generate(
    model: DiffusionModel,
    prompts: Sequence[str],
    seed: int = 0,
    num_steps: int = 25,
    guidance_scale: float = 4.0,
    batch_size: int = 64,
) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] for `prompts`; image i's noise comes from seed + i."""
    schedule = ddim_schedule(model.scheduler_config, num_steps)
    side = model.resolution // model.vae_scale_factor
    shape = (model.latent_channels, side, side)
    predict = NoisePredictor(model)
    outputs = []
    with preserve_module_state(*model.modules()):
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            z = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + start + i))
                             for i in range(len(chunk))]).to(model.device)
            conditioning = Conditioning(model.encode_prompts(chunk), model.encode_prompts([""] * len(chunk)),
                                        guidance_scale)
            for index in reversed(range(schedule.num_steps)):
                eps = predict(z, schedule.timesteps[index], conditioning)
                z = ddim_step(z, eps, *schedule.alphas_at(index))
            outputs.append(model.decode_latents(z).cpu())
    return torch.cat(outputs)
