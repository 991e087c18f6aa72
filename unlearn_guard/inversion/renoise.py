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

Fast path: every roll-offset table of the whole inversion is drawn before the first step (the
draws a lazy loop would make, in the released code's order) and copied to the device once; the elementwise work of an iteration and the
regularisation run as fused ops (`unlearn_guard.kernels`, backend "auto" | "triton" | "torch");
NaN/Inf is tracked on the device and checked once at the end, so the step loop never waits on
the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..config import InversionConfig, RegularizationConfig
from ..errors import NonFiniteError
from ..kernels.dispatch import Backend, check_backend
from ..kernels.noise_regularization import autocorr_levels, draw_roll_offsets, noise_regularization
from ..kernels.renoise_update import inverse_step_coefficients, renoise_update
from ..models.bundle import DiffusionModel
from ..schedule import DDIMSchedule


@dataclass
class Conditioning:
    """Text conditioning of a batch: cond (B, L, D); uncond (B, L, D) only when CFG is on."""

    cond: torch.Tensor
    uncond: torch.Tensor | None = None
    guidance_scale: float = 1.0

    def subset(self, index: torch.Tensor | slice) -> "Conditioning":
        return Conditioning(self.cond[index], None if self.uncond is None else self.uncond[index], self.guidance_scale)

    @property
    def guided(self) -> bool:
        return self.uncond is not None and self.guidance_scale != 1.0


class NoisePredictor:
    """eps_theta with optional CFG, counting UNet sample-evaluations (a batch of B counts B).

    `backend` picks the fused ops ("auto" | "triton" | "torch") for everything that consumes
    this predictor's outputs: the CFG combine here and the ReNoise step's update and regulariser.
    """

    def __init__(self, model: DiffusionModel, backend: Backend = "torch") -> None:
        check_backend(backend)
        self.model = model
        self.backend = backend
        self.evaluations = 0

    def pair(self, latents: torch.Tensor, timestep: int, conditioning: Conditioning) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(eps_cond, eps_uncond) float32; eps_uncond is None without CFG. One UNet call either way."""
        if not conditioning.guided:
            self.evaluations += latents.shape[0]
            return self.model.predict_noise(latents, timestep, conditioning.cond), None
        # (2B, ...): one UNet call for the unconditional and the conditional halves.
        both = self.model.predict_noise(
            torch.cat([latents, latents]), timestep, torch.cat([conditioning.uncond, conditioning.cond])
        )
        self.evaluations += 2 * latents.shape[0]
        eps_uncond, eps_cond = both.chunk(2)
        return eps_cond, eps_uncond

    def __call__(self, latents: torch.Tensor, timestep: int, conditioning: Conditioning) -> torch.Tensor:
        eps_cond, eps_uncond = self.pair(latents, timestep, conditioning)
        if eps_uncond is None:
            return eps_cond
        return renoise_update(latents, eps_cond, eps_uncond, conditioning.guidance_scale, backend=self.backend).eps


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


def regularization_calls(config: InversionConfig, timestep: int) -> int:
    """How many noise_regularization calls (one offset table each) the step at `timestep` makes.

    Mirrors `renoise_step`'s control flow; the step checks that it consumed exactly this many.
    mofc: 7 for t < 250 (eps_0..eps_5 and the average), 0 otherwise.
    """
    start, stop = config.window_for(timestep)
    num_iters = config.renoise_steps + 1
    if not (regularization_active(config.regularization) and start < num_iters):
        return 0
    will_average = start < min(stop, num_iters)
    calls = 0
    for k in range(start, num_iters):
        calls += 1
        if will_average and k == num_iters - 1 and not (start <= k < stop):
            break  # the unused last iteration: its draws are consumed, nothing else
    return calls + (1 if will_average else 0)


def draw_inversion_offsets(
    config: InversionConfig,
    schedule: DDIMSchedule,
    generators: Sequence[torch.Generator],
    latent_shape: Sequence[int],
    device: torch.device | str = "cpu",
) -> list[list[torch.Tensor]]:
    """Every offset table of a whole inversion, per step and call, drawn up front in call order.

    Per image the draws come from its generator in exactly the order the steps consume them,
    so this equals drawing lazily. All tables travel to `device` in one copy.
    """
    counts = [regularization_calls(config, t) for t in schedule.timesteps]
    tables = [
        draw_regularization_offsets(config.regularization, generators, latent_shape) for _ in range(sum(counts))
    ]
    if not tables:
        return [[] for _ in counts]
    stacked = torch.stack(tables)  # (calls, B, outer, rolls, C, L) int64
    if torch.device(device).type == "cuda":
        stacked = stacked.to(torch.int32).pin_memory().to(device, non_blocking=True)
    per_step, used = [], 0
    for count in counts:
        per_step.append(list(stacked[used : used + count]))
        used += count
    return per_step


def regularize(
    eps: torch.Tensor,
    eps_opt: torch.Tensor,
    config: RegularizationConfig,
    offsets: torch.Tensor,
    backend: Backend = "torch",
) -> torch.Tensor:
    """One noise_regularization call (SPEC 2.5) with a table from `draw_regularization_offsets`."""
    return noise_regularization(
        eps,
        eps_opt,
        offsets.to(eps.device),
        lambda_kl=config.lambda_kl,
        lambda_ac=config.lambda_ac_for(*eps.shape[-2:]),
        kl_grad_clip=config.kl_grad_clip,
        patch_size=config.patch_size,
        backend=backend,
    )


class FiniteWatch:
    """Remembers, on the device, the first step at which each image's latent held NaN or Inf.

    `update` costs no host sync; `check` syncs once and raises NonFiniteError naming the images
    and the step where it first appeared.
    """

    def __init__(self, batch: int, device: torch.device, names: Sequence[str]) -> None:
        self.names = list(names)
        self.first_bad = torch.full((batch,), -1, dtype=torch.long, device=device)

    def update(self, latents: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(latents.flatten(1)).all(dim=1)
        self.first_bad = torch.where((self.first_bad < 0) & bad, step, self.first_bad)

    def check(self, describe: Callable[[int], str]) -> None:
        first_bad = self.first_bad.cpu()
        if bool((first_bad >= 0).any()):
            step = int(first_bad[first_bad >= 0].min())
            bad = [self.names[i] for i in torch.nonzero(first_bad == step).flatten().tolist()]
            raise NonFiniteError(f"NaN or Inf in the latent of image(s) {bad} {describe(step)}")

    def diverged_steps(self) -> list[int | None]:
        """Per image, the first step whose latent held NaN/Inf, or None (one host sync)."""
        return [None if step < 0 else step for step in self.first_bad.cpu().tolist()]


def check_finite_latents(latents: torch.Tensor, names: Sequence[str], where: str) -> None:
    """NonFiniteError naming the images whose latent has NaN/Inf (one device sync per call)."""
    watch = FiniteWatch(latents.shape[0], latents.device, names)
    watch.update(latents, 0)
    watch.check(lambda _: where)


def renoise_step(
    predict: NoisePredictor,
    z: torch.Tensor,
    z0: torch.Tensor,
    timestep: int,
    alpha_prod_t: float,
    alpha_prod_s: float,
    conditioning: Conditioning,
    config: InversionConfig,
    offsets: Sequence[torch.Tensor],
) -> torch.Tensor:
    """One ReNoise inversion step z (at s) -> z (at t) for a batch (SPEC 2.3).

    offsets: this step's roll-offset tables, `regularization_calls(config, timestep)` of them.
    """
    start, stop = config.window_for(timestep)
    num_iters = config.renoise_steps + 1
    regularizing = regularization_active(config.regularization) and start < num_iters
    will_average = start < min(stop, num_iters)
    batch = z.shape[0]
    backend = predict.backend
    guidance = conditioning.guidance_scale
    step = inverse_step_coefficients(alpha_prod_t, alpha_prod_s)
    tables = iter(offsets)

    eps_opt = first = None
    if regularizing:
        # Iteration 0 and the KL target share one UNet call: [z0, z] at the target timestep t.
        both_cond, both_uncond = predict.pair(torch.cat([z0, z]), timestep, _repeat(conditioning, 2))
        eps_opt = renoise_update(
            z0, both_cond[:batch], None if both_uncond is None else both_uncond[:batch], guidance, backend=backend
        ).eps
        first = (both_cond[batch:], None if both_uncond is None else both_uncond[batch:])
    eps_avg = None
    z_iter = z
    for k in range(num_iters):
        in_window = start <= k < stop
        if will_average and k == num_iters - 1 and not in_window:
            # Its latent is discarded; only the regularisation's random draws are kept (SPEC 2.4).
            if regularizing and k >= start:
                next(tables)
            break
        eps_cond, eps_uncond = first if (k == 0 and first is not None) else predict.pair(z_iter, timestep, conditioning)
        regularize_now = regularizing and k >= start
        # 1. CFG combine, 2. running mean over the window, 3. inverse step unless regularising first.
        update = renoise_update(
            z, eps_cond, eps_uncond, guidance, eps_avg,
            avg_index=k - start if in_window else None,
            step_coefficients=None if regularize_now else step,
            backend=backend,
        )  # fmt: skip
        if in_window:
            eps_avg = update.eps_avg
        if regularize_now:
            eps = regularize(update.eps, eps_opt, config.regularization, next(tables), backend)
            z_iter = renoise_update(z, eps, step_coefficients=step, backend=backend).z_next
        else:
            z_iter = update.z_next
    if eps_avg is not None:
        if regularizing:
            eps_avg = regularize(eps_avg, eps_opt, config.regularization, next(tables), backend)
        z_iter = renoise_update(z, eps_avg, step_coefficients=step, backend=backend).z_next
    if next(tables, None) is not None:
        raise RuntimeError(f"renoise_step at t={timestep} left offset tables unused; regularization_calls is out of date")
    return z_iter


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
    watch: FiniteWatch | None = None,
) -> torch.Tensor:
    """Invert clean latents z0 (B, C, h, w) into seeds z_T (B, C, h, w), float32.

    Args:
        predict: the model's noise predictor (counts UNet evaluations; its backend runs the fused ops).
        z0: clean latents, scaling_factor * VAE posterior sample or mean.
        conditioning: prompt embeddings (and unconditional ones when CFG is on).
        schedule: from `ddim_schedule(model.scheduler_config, config.num_steps)`.
        generators: one CPU generator per image (roll offsets).
        names: image names for error messages.
        check_finite: raise NonFiniteError naming the image and the first timestep with NaN/Inf.
        on_step: called after each step (progress bars).
        watch: record NaN/Inf per image here instead of raising (the caller decides what a
            diverged image means); `check_finite` is then ignored.
    """
    if len(generators) != z0.shape[0]:
        raise ValueError(f"got {len(generators)} generators for {z0.shape[0]} images; expected one per image")
    names = list(names) if names is not None else [f"image[{i}]" for i in range(z0.shape[0])]
    offsets = draw_inversion_offsets(config, schedule, generators, z0.shape[1:], z0.device)
    raise_at_end = watch is None and check_finite
    if raise_at_end:
        watch = FiniteWatch(z0.shape[0], z0.device, names)
    z = z0.float()
    for index, timestep in enumerate(schedule.timesteps):
        alpha_t, alpha_s = schedule.alphas_at(index)
        z = renoise_step(predict, z, z0, timestep, alpha_t, alpha_s, conditioning, config, offsets[index])
        if watch is not None:
            watch.update(z, index)
        if on_step is not None:
            on_step(index)
    if raise_at_end:
        watch.check(
            lambda i: f"during inversion at timestep t={schedule.timesteps[i]} (step {i + 1}/{schedule.num_steps})"
        )
    return z
