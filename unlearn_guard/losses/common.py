"""What the memory losses share: input checks, a UNet call with gradients, the DDIM passes.

Shapes: latents and seeds (B, C, h, w); prompt embeddings (B, L, D) or (1, L, D).
The compute dtype is float64 when the UNet is float64 (gradient checks), float32 otherwise (the
adapter trains in float32 beside a half-precision base, as `esd_lora_erase` does).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import InputError, NonFiniteError
from ..schedule import DDIMSchedule, ddim_step, inverse_ddim_step
from ..models.bundle import DiffusionModel

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def compute_dtype(model: DiffusionModel) -> torch.dtype:
    return torch.float64 if model.dtype == torch.float64 else torch.float32


def checked_latents(value: Any, model: DiffusionModel, name: str) -> torch.Tensor:
    """A detached copy of (B, C, h, w) latents in the compute dtype on the model's device.

    Raises InputError for a non-tensor, a wrong shape, or NaN/Inf (naming the rows)."""
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
    if not isinstance(value, torch.Tensor) or value.ndim != 4 or value.shape[0] < 1 \
            or value.shape[1] != model.latent_channels:
        raise InputError(f"{name}: got {shape}; expected latents (B, {model.latent_channels}, h, w) with B >= 1")
    if not value.is_floating_point():
        raise InputError(f"{name}: got dtype {value.dtype}; expected a floating-point tensor")
    finite = torch.isfinite(value).flatten(1).all(1)
    if not bool(finite.all()):
        rows = [int(i) for i in (~finite).nonzero().flatten()][:10]
        raise InputError(f"{name}: rows {rows} hold NaN or Inf")
    return value.detach().to(model.device, compute_dtype(model)).clone()


def checked_embeddings(value: Any, batch: int, model: DiffusionModel, name: str = "embeddings") -> torch.Tensor:
    """(B, L, D) embeddings from (B, L, D) or (1, L, D), detached, in the model's dtype."""
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
    if not isinstance(value, torch.Tensor) or value.ndim != 3 or value.shape[0] not in (1, batch):
        raise InputError(f"{name}: got {shape}; expected (1 or {batch}, L, D) prompt embeddings")
    if not bool(torch.isfinite(value).all()):
        raise InputError(f"{name}: holds NaN or Inf")
    return value.detach().to(model.device, model.dtype).expand(batch, -1, -1).contiguous()


def checked_reference(model: DiffusionModel, reference_latents: Any, reference_embeddings: Any,
                      like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference latents (R, C, h, w) shaped like the concept latents `like`, and their prompt
    embeddings (R, L, D); both checked as `checked_latents` / `checked_embeddings` do."""
    latents = checked_latents(reference_latents, model, "reference_latents")
    if latents.shape[1:] != like.shape[1:]:
        raise InputError(f"reference_latents: got {tuple(latents.shape)}; expected "
                         f"(R, {', '.join(map(str, like.shape[1:]))}) like the latents")
    return latents, checked_embeddings(reference_embeddings, latents.shape[0], model, "reference_embeddings")


def check_seed_source(seeds: Any) -> None:
    """A loss's `seeds` argument: a tensor, a callable returning one (or None), or None."""
    if not (seeds is None or callable(seeds) or isinstance(seeds, torch.Tensor)):
        raise InputError(f"seeds: got {type(seeds).__name__}; expected a tensor, a callable returning one, or None")


def resolve_seeds(seeds: Any, source: Any, shape: torch.Size) -> torch.Tensor | None:
    """The seeds of this call: `seeds` if given, else what `source` holds or returns; None when
    there are none yet. Raises InputError unless they are one (C, h, w) seed per concept image."""
    if seeds is None:
        seeds = source() if callable(source) else source
    if seeds is None:
        return None
    if not isinstance(seeds, torch.Tensor) or tuple(seeds.shape) != tuple(shape):
        got = tuple(seeds.shape) if isinstance(seeds, torch.Tensor) else type(seeds).__name__
        raise InputError(f"seeds: got {got}; expected {tuple(shape)}, one seed per concept image "
                         "in the order of the latents")
    return seeds


def predict_noise(model: DiffusionModel, latents: torch.Tensor, timestep: int, embeddings: torch.Tensor,
                  checkpoint: bool = False) -> torch.Tensor:
    """eps_theta(z, t, c) *with* gradients (`DiffusionModel.predict_noise` is no-grad by design),
    in the latents' dtype (a v- or x0-prediction converted to eps, SPEC 1.1). `checkpoint`: recompute the call in the backward pass (less memory)."""

    def call(z: torch.Tensor) -> torch.Tensor:
        t = torch.full((z.shape[0],), int(timestep), device=z.device, dtype=torch.long)
        out = model.unet(z.to(model.dtype), t, **model.unet_conditioning(embeddings))
        return model.epsilon((out.sample if hasattr(out, "sample") else out[0]).to(z.dtype), z, timestep)

    if checkpoint and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint as recompute

        return recompute(call, latents, use_reentrant=False)
    return call(latents)


def ensure_finite_in_loss(tensor: torch.Tensor, loss: str, stage: str, timestep: int, rows: list[int] | None = None) -> None:
    """Raise NonFiniteError naming the loss, the stage, the timestep and the images (`rows`, when the
    batch is a subset) whose rows of `tensor` (B, ...) hold NaN or Inf."""
    finite = torch.isfinite(tensor.detach()).flatten(1).all(1)
    if not bool(finite.all()):
        bad = [int(i) for i in (~finite).nonzero().flatten()]
        if rows is not None:
            bad = [rows[i] for i in bad]
        raise NonFiniteError(f"{loss}: NaN or Inf in the {stage} at timestep t={timestep}, images {bad[:10]}")


def invert(model: DiffusionModel, schedule: DDIMSchedule, z0: torch.Tensor, embeddings: torch.Tensor,
           loss: str, checkpoint: bool = False, rows: list[int] | None = None) -> torch.Tensor:
    """S inverse DDIM steps (ReNoise with K = 0, no regularisation; SPEC 1-2) from z0 up to the
    schedule's last timestep, differentiable: (B, C, h, w) -> (B, C, h, w)."""
    z = z0
    for index, timestep in enumerate(schedule.timesteps):  # ascending: 1, ..., t_max
        alpha_t, alpha_s = schedule.alphas_at(index)
        eps = predict_noise(model, z, timestep, embeddings, checkpoint)
        ensure_finite_in_loss(eps, loss, "noise prediction (inversion)", timestep, rows)
        z = inverse_ddim_step(z, eps, alpha_t, alpha_s)
    return z


def sample(model: DiffusionModel, schedule: DDIMSchedule, seeds: torch.Tensor, embeddings: torch.Tensor,
           loss: str, checkpoint: bool = False, rows: list[int] | None = None) -> torch.Tensor:
    """S DDIM steps (eta = 0, no CFG; SPEC 3) from seeds at t_max down to the clean end, differentiable."""
    z = seeds
    for index in reversed(range(schedule.num_steps)):  # descending: t_max, ..., 1, then abar[0]
        alpha_t, alpha_s = schedule.alphas_at(index)
        timestep = schedule.timesteps[index]
        eps = predict_noise(model, z, timestep, embeddings, checkpoint)
        ensure_finite_in_loss(eps, loss, "noise prediction (sampling)", timestep, rows)
        z = ddim_step(z, eps, alpha_t, alpha_s)
    return z


@torch.no_grad()
def concept_latents(model: DiffusionModel, pixels: torch.Tensor) -> torch.Tensor:
    """z0 = scaling_factor * VAE posterior *mean* of images (B, 3, H, W) in [-1, 1]: a fixed target,
    no sampling. float32 (B, C, h, w)."""
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3:
        shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise InputError(f"pixels: got {shape}; expected images (B, 3, H, W) in [-1, 1]")
    return model.encode_images(pixels, None, mode="mean")
