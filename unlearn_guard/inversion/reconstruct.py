"""Reconstruction from seeds (SPEC 3): DDIM (eta = 0) from z_T down to the clean end, then decode.

Walks the inversion timesteps backwards (981, ..., 1 for SD 1.4 at 50 steps); the step from
t = 1 lands on abar[0], exactly where the inversion started. Guidance 1 (no CFG) in `mofc`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .renoise import Conditioning, FiniteWatch, NoisePredictor
from ..schedule import DDIMSchedule, ddim_step


def ddim_reconstruct(
    predict: NoisePredictor,
    seeds: torch.Tensor,
    conditioning: Conditioning,
    schedule: DDIMSchedule,
    names: Sequence[str] | None = None,
    check_finite: bool = True,
    on_step: Callable[[int], None] | None = None,
    watch: FiniteWatch | None = None,
) -> torch.Tensor:
    """Denoise seeds z_T (B, C, h, w) to clean latents (B, C, h, w), float32 (one UNet call per step).

    NaN/Inf raises NonFiniteError naming image and timestep when `check_finite`, or is recorded
    per image in `watch` (its step index counts down from num_steps - 1) when one is given.
    """
    names = list(names) if names is not None else [f"image[{i}]" for i in range(seeds.shape[0])]
    raise_at_end = watch is None and check_finite
    if raise_at_end:
        watch = FiniteWatch(seeds.shape[0], seeds.device, names)
    z = seeds.float()
    for count, index in enumerate(reversed(range(schedule.num_steps))):
        timestep = schedule.timesteps[index]
        alpha_t, alpha_s = schedule.alphas_at(index)
        z = ddim_step(z, predict(z, timestep, conditioning), alpha_t, alpha_s)
        if watch is not None:
            watch.update(z, index)  # on the device: no host sync inside the loop
        if on_step is not None:
            on_step(count)
    if raise_at_end:
        watch.check(lambda i: f"during reconstruction at timestep t={schedule.timesteps[i]}")
    return z
