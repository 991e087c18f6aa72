"""Text-to-image sampling with a `DiffusionModel`: DDIM (eta = 0) with classifier-free guidance.

Used to score concepts (classifier accuracy from a prompt) on the original and erased models.
The loop is `unlearn_guard.sampling.sample_from_embeddings` (the model's own schedule, one seed per
image), so a batch equals its singles and a LoRA-adapted UNet samples through exactly the same code.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..models.bundle import DiffusionModel
from ..sampling import sample_from_embeddings


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
    prompts = list(prompts)
    cond = torch.cat([model.encode_prompts(prompts[s : s + batch_size]) for s in range(0, len(prompts), batch_size)])
    uncond = model.encode_prompts([""]).expand(len(prompts), -1, -1)
    return sample_from_embeddings(model, cond, uncond, [seed + i for i in range(len(prompts))], num_steps,
                                  guidance_scale, batch_size)
