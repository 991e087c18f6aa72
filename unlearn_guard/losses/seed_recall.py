"""Seed-anchored memory loss: do the seeds the last probe found still land on the concept's images?

The probe (SPEC 2) inverts each image of the concept to a seed s_i; a model that still remembers
regenerates the image from it (MoFC: at least 25 dB). This loss runs a short differentiable DDIM
pass from those seeds through the *current* model and penalises how close it still lands on the
images' latents, so the gradient moves the adapter until the old seeds lead elsewhere.

Notation (SPEC -> code), per image i of the concept; latents (C, h, w), D = C*h*w entries:
    z0_i          clean latent of image i (VAE posterior mean * scaling_factor)   `latents[i]`
    s_i           the probe's seed for image i (at t_max of its schedule)          `seeds[i]`
    c_i           the prompt's embedding                                           `embeddings[i]`
    DDIM_S(s)     S DDIM steps (eta = 0, no CFG) from t_max to the clean end,      `sample(...)`
                  through the current model, gradients through every UNet call
    tau           squared distance per entry at which a memory counts as gone      `config.tau`

    L = (1/|V|) sum_{i in V} exp(-||DDIM_S(s_i) - z0_i||^2 / (D tau))

V: the images whose seed is finite (the probe writes NaN rows for images whose inversion
diverged; they are skipped). L is 1 while the seeds land on the images and falls to 0 as they
land elsewhere; exp keeps the gradient from pushing forever once a memory is gone.
Cost: S UNet evaluations per image in the forward pass (S * |V| per call), about 2x that again
in the backward pass. Keep S equal to the probe's step count, so s_i sits at the timestep the
probe put it at (the schedule's t_max depends on S: 981 at 50 steps, 901 at 10 for SD 1.4).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

import torch

from ..errors import InputError
from ..models.bundle import DiffusionModel
from ..validation import is_number, require
from .base import MemoryLoss, MemoryLossConfig, register_memory_loss
from .common import check_seed_source, checked_latents, resolve_seeds, sample

SeedSource = Callable[[], "torch.Tensor | None"]


@dataclasses.dataclass(frozen=True)
class SeedRecallConfig(MemoryLossConfig):
    """Seed-anchored loss (module docstring).

    Args:
        steps: S (see `MemoryLossConfig`); match the probe's step count.
        tau: squared distance per latent entry at which exp(-d/tau) = 1/e; 0.1 by default, a
            tenth of a unit-variance latent's spread.
        checkpoint: see `MemoryLossConfig`.
    """

    kind: ClassVar[str] = "seed_recall"
    tau: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        require(is_number(self.tau) and self.tau > 0, "SeedRecallConfig.tau", self.tau, "a finite number > 0")


@register_memory_loss
class SeedRecallLoss(MemoryLoss):
    """L = mean_i exp(-||DDIM_S(s_i) - z0_i||^2 / (D tau)) over images with a finite seed.

    Args:
        model, latents, embeddings: see `MemoryLoss`; latents (B, C, h, w).
        config: a `SeedRecallConfig`.
        seeds: where the seeds come from when `forward` is called without them: a callable
            returning (B, C, h, w) or None (e.g. `lambda: monitor.latest_seeds`; None before
            the first probe, and the loss is then 0), or a fixed tensor; None: pass them to `forward`.

    The seeds are copied and detached; the source's tensors are never written.
    """

    config_class = SeedRecallConfig

    def __init__(self, model: DiffusionModel, latents: torch.Tensor, embeddings: torch.Tensor,
                 config: SeedRecallConfig | None = None, seeds: SeedSource | torch.Tensor | None = None) -> None:
        super().__init__(model, latents, embeddings, config)
        check_seed_source(seeds)
        self.seeds = seeds
        self.last_used: int = 0  # images with a finite seed in the last call

    def forward(self, seeds: torch.Tensor | None = None) -> torch.Tensor:
        """The loss (0-dim, compute dtype); 0 without seeds. Raises InputError when every seed is
        NaN/Inf, NonFiniteError when a UNet call gives NaN/Inf (naming images and timestep)."""
        found = resolve_seeds(seeds, self.seeds, self.latents.shape)
        if found is None:
            self.last_used = 0
            return self.latents.new_zeros(())
        finite = torch.isfinite(found.detach()).flatten(1).all(1).cpu()  # (B,) diverged rows are NaN
        rows = [int(i) for i in finite.nonzero().flatten()]
        if not rows:
            raise InputError(f"seeds: all {found.shape[0]} rows hold NaN or Inf (every inversion diverged)")
        start = checked_latents(found[rows], self.model, "seeds")  # (V, C, h, w), detached copy
        index = torch.tensor(rows, device=self.latents.device)
        # 1. DDIM_S from the seeds through the current model (gradients into the adapter)
        landed = sample(self.model, self.schedule, start, self.embeddings[index], "SeedRecallLoss",
                        self.config.checkpoint, rows)
        # 2. squared distance per entry to the images' latents, then the recall kernel
        distance = (landed - self.latents[index]).pow(2).flatten(1).mean(1)  # (V,)
        self.last_used = len(rows)
        return torch.exp(-distance / self.config.tau).mean()
