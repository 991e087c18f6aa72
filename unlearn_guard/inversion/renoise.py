"""Batched ReNoise inversion (SPEC 2): images' clean latents z0 -> seeds z_T.

Notation (SPEC -> code):
    z0                 `z0`, clean latents (B, C, h, w), float32
    z                  `z`, the latent at the previous (less noisy) timestep
    z_k                `z_iter`, the k-th estimate of the next latent, always anchored at z
    eps_opt            `eps_opt` = eps_theta(z0, t, c), the PatchKL target
    avg                `eps_avg`, running mean of eps_k over the averaging window
    K                  config.renoise_steps (K+1 evaluations, k = 0..K)

Every image has its own generator; all images share timesteps and control flow, so a batch
is exactly N single inversions run side by side. Random roll offsets are drawn for every
regularisation call, including the one on the last iteration whose latent is discarded when
an average exists, so the draw count per call and per step is the released code's (SPEC 2.4);
the UNet evaluation whose output is never used (that last iteration, outside the window) is
skipped, which changes no result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..config import InversionConfig, RegularizationConfig
from ..errors import NonFiniteError
from ..kernels.noise_regularization import autocorr_levels, draw_roll_offsets, noise_regularization_torch
from ..models.bundle import DiffusionModel
from .schedule import DDIMSchedule, inverse_ddim_step


@dataclass
class Conditioning:
    """Text conditioning of a batch: cond (B, L, D); uncond (B, L, D) only when CFG is on."""

    cond: torch.Tensor
    uncond: torch.Tensor | None = None
    guidance_scale: float = 1.0

    def subset(self, index: torch.Tensor | slice) -> "Conditioning":
        return Conditioning(self.cond[index], None if self.uncond is None else self.uncond[index], self.guidance_scale)


class NoisePredictor:
    """eps_theta with optional CFG, counting UNet sample-evaluations (a batch of B counts B)."""

    def __init__(self, model: DiffusionModel) -> None:
        self.model = model
        self.evaluations = 0

    def __call__(self, latents: torch.Tensor, timestep: int, conditioning: Conditioning) -> torch.Tensor:
        if conditioning.uncond is None or conditioning.guidance_scale == 1.0:
            self.evaluations += latents.shape[0]
            return self.model.predict_noise(latents, timestep, conditioning.cond)
        # (2B, ...): one UNet call for the unconditional and the conditional halves.
        both = self.model.predict_noise(
            torch.cat([latents, latents]), timestep, torch.cat([conditioning.uncond, conditioning.cond])
        )
        self.evaluations += 2 * latents.shape[0]
        eps_uncond, eps_cond = both.chunk(2)
        return eps_uncond + conditioning.guidance_scale * (eps_cond - eps_uncond)


def regularization_active(config: RegularizationConfig) -> bool:
    return config.enabled and config.num_reg_steps > 0 and (config.lambda_kl > 0 or config.lambda_ac > 0)


def draw_regularization_offsets(
    config: RegularizationConfig, generators: Sequence[torch.Generator], latent_shape: Sequence[int]
) -> torch.Tensor:
    """The roll offsets one regularisation call consumes: (B, outer, rolls, C, L), rolls = 0 without AC."""
    num_rolls = config.num_ac_rolls if config.lambda_ac > 0 else 0
    if num_rolls == 0:  # no AC term draws nothing; keep the outer-step count for the KL steps
        levels = len(autocorr_levels(*latent_shape[-2:]))
        return torch.zeros((len(generators), config.num_reg_steps, 0, latent_shape[0], levels), dtype=torch.long)
    return draw_roll_offsets(generators, config.num_reg_steps, num_rolls, *latent_shape)


def regularize(
    eps: torch.Tensor,
    eps_opt: torch.Tensor,
    config: RegularizationConfig,
    generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """One noise_regularization call (SPEC 2.5) with offsets drawn from the per-image generators."""
    offsets = draw_regularization_offsets(config, generators, eps.shape[1:])
    return noise_regularization_torch(
        eps,
        eps_opt,
        offsets.to(eps.device),
        lambda_kl=config.lambda_kl,
        lambda_ac=config.lambda_ac,
        kl_grad_clip=config.kl_grad_clip,
        patch_size=config.patch_size,
    )


def check_finite_latents(latents: torch.Tensor, names: Sequence[str], where: str) -> None:
    """NonFiniteError naming the images whose latent has NaN/Inf (one device sync per call)."""
    finite = torch.isfinite(latents.flatten(1)).all(dim=1)
    if not bool(finite.all()):
        bad = [names[i] for i in torch.nonzero(~finite).flatten().tolist()]
        raise NonFiniteError(f"NaN or Inf in the latent of image(s) {bad} {where}")


def renoise_step(
    predict: NoisePredictor,
    z: torch.Tensor,
    z0: torch.Tensor,
    timestep: int,
    alpha_prod_t: float,
    alpha_prod_s: float,
    conditioning: Conditioning,
    config: InversionConfig,
    generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """One ReNoise inversion step z (at s) -> z (at t) for a batch (SPEC 2.3)."""
    start, stop = config.window_for(timestep)
    num_iters = config.renoise_steps + 1
    regularizing = regularization_active(config.regularization) and start < num_iters
    will_average = start < min(stop, num_iters)
    batch = z.shape[0]

    eps_opt = None
    if regularizing:
        # Iteration 0 and the KL target share one UNet call: [z0, z] at the target timestep t.
        both = predict(torch.cat([z0, z]), timestep, _repeat(conditioning, 2))
        eps_opt, eps_first = both[:batch], both[batch:]
    eps_avg = None
    z_iter = z
    for k in range(num_iters):
        in_window = start <= k < stop
        output_unused = will_average and k == num_iters - 1 and not in_window
        if output_unused:
            # Its latent is discarded; only the regularisation's random draws are kept (SPEC 2.4).
            if regularizing and k >= start:
                draw_regularization_offsets(config.regularization, generators, z.shape[1:])
            break
        eps = eps_first if (k == 0 and eps_opt is not None) else predict(z_iter, timestep, conditioning)
        if in_window:
            j = k - start
            eps_avg = eps.clone() if eps_avg is None else (j * eps_avg + eps) / (j + 1)
        if regularizing and k >= start:
            eps = regularize(eps, eps_opt, config.regularization, generators)
        z_iter = inverse_ddim_step(z, eps, alpha_prod_t, alpha_prod_s)
    if eps_avg is None:
        return z_iter
    if regularizing:
        eps_avg = regularize(eps_avg, eps_opt, config.regularization, generators)
    return inverse_ddim_step(z, eps_avg, alpha_prod_t, alpha_prod_s)


def _repeat(conditioning: Conditioning, times: int) -> Conditioning:
    uncond = None if conditioning.uncond is None else conditioning.uncond.repeat(times, 1, 1)
    return Conditioning(conditioning.cond.repeat(times, 1, 1), uncond, conditioning.guidance_scale)


def renoise_invert(
    predict: NoisePredictor,
    z0: torch.Tensor,
    conditioning: Conditioning,
    schedule: DDIMSchedule,
    config: InversionConfig,
    generators: Sequence[torch.Generator],
    names: Sequence[str] | None = None,
    check_finite: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Invert clean latents z0 (B, C, h, w) into seeds z_T (B, C, h, w), float32.

    Args:
        predict: the model's noise predictor (counts UNet evaluations).
        z0: clean latents, scaling_factor * VAE posterior sample or mean.
        conditioning: prompt embeddings (and unconditional ones when CFG is on).
        schedule: from `ddim_schedule(model.scheduler_config, config.num_steps)`.
        generators: one CPU generator per image (roll offsets).
        names: image names for error messages.
        on_step: called after each step (progress bars).
    """
    if len(generators) != z0.shape[0]:
        raise ValueError(f"got {len(generators)} generators for {z0.shape[0]} images; expected one per image")
    names = list(names) if names is not None else [f"image[{i}]" for i in range(z0.shape[0])]
    z = z0.float()
    for index, timestep in enumerate(schedule.timesteps):
        alpha_t, alpha_s = schedule.alphas_at(index)
        z = renoise_step(predict, z, z0, timestep, alpha_t, alpha_s, conditioning, config, generators)
        if check_finite:
            check_finite_latents(z, names, f"during inversion at timestep t={timestep} (step {index + 1}/{schedule.num_steps})")
        if on_step is not None:
            on_step(index)
    return z
