"""Inversion-based memory loss: push the seeds the current model finds for the concept's images
toward the likelihood of seeds a model that never knew the concept would find.

d_N and the memory score (SPEC 4-5, `unlearn_guard.signal`) read how likely the seeds of the
concept's images are: a remembering model inverts them to seeds as likely as anything it knows,
a model retrained without the concept to less likely ones (higher NLL). This loss inverts the
images with a short, differentiable DDIM inversion (ReNoise with K = 0, no noise
regularisation, S steps) through the current model and pushes the seeds' NLL toward a target:
the retrained model's seeds (`nll_statistics(retrained_seeds)`) or, by default, a never-known
set, N(0, I) draws (mean D (1/2 + ln(2 pi)/2), std sqrt(D/2)).

Notation (SPEC -> code), per image i; latents (C, h, w), D = C*h*w entries:
    z0_i          clean latent of image i                                 `latents[i]`
    INV_S(z0)     S inverse DDIM steps, gradients through every UNet call `invert(...)`
    NLL(z)        sum(z^2)/2 + D ln(2 pi)/2 (SPEC 4)                      `nll`
    m_T, s_T      target mean and std of the seeds' NLL                   `config.target_mean / target_std`
    m, s          mean and population std of NLL(INV_S(z0_i)) over i

    statistic "hinge":       L = (1/B) sum_i relu(m_T - NLL(INV_S(z0_i))) / D
        each seed is pushed out to the target NLL and no further;
    statistic "gaussian_w2": L = ((m - m_T)^2 + (s - s_T)^2) / D^2
        the squared 2-Wasserstein distance between Gaussians fitted to the NLLs (the `mofc`
        distance of SPEC 5), per entry squared; needs B >= 2.
Anchor on known content (`keep_weight` > 0, with reference latents z0_j of *other* content):
    L += keep_weight * (1/R) sum_j (NLL(INV_S(z0_j)) - NLL_0j)^2 / D
with NLL_0j the reference seeds' NLL under the model as it was when the loss was built. Without
it, raising the concept's NLL can raise every image's NLL alike (measured in the small world:
the reference seeds' mean NLL rose above the N set's, which leaves the memory score undefined);
the anchor asks the model to forget the concept only.
Cost: S UNet evaluations per image (concept and reference) in the forward pass, about 2x that
again in the backward pass (3x with `checkpoint`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

import torch

from ..errors import InputError
from ..models.bundle import DiffusionModel
from ..validation import is_number, require
from .base import MemoryLoss, MemoryLossConfig, register_memory_loss
from .common import HALF_LOG_2PI, checked_reference, invert

Statistic = Literal["hinge", "gaussian_w2"]


def seed_nll(seeds: torch.Tensor) -> torch.Tensor:
    """NLL of each seed (B,) = sum(z^2)/2 + D ln(2 pi)/2 (SPEC 4), differentiable."""
    entries = seeds[0].numel()
    return 0.5 * seeds.pow(2).flatten(1).sum(1) + entries * HALF_LOG_2PI


def normal_nll_statistics(entries: int) -> tuple[float, float]:
    """Mean and std of NLL(z) for z ~ N(0, I_D): D (1/2 + ln(2 pi)/2) and sqrt(D/2) (chi-square)."""
    return entries * (0.5 + HALF_LOG_2PI), math.sqrt(entries / 2.0)


@torch.no_grad()
def nll_statistics(seeds: torch.Tensor) -> tuple[float, float]:
    """Mean and population std of the seeds' NLL: the target from a retrained model's seeds (B, C, h, w)."""
    if not isinstance(seeds, torch.Tensor) or seeds.ndim != 4 or seeds.shape[0] < 1:
        shape = tuple(seeds.shape) if isinstance(seeds, torch.Tensor) else type(seeds).__name__
        raise InputError(f"seeds: got {shape}; expected seeds (B, C, h, w)")
    nll = seed_nll(seeds.double())
    nll = nll[torch.isfinite(nll)]
    if len(nll) == 0:
        raise InputError("seeds: every row holds NaN or Inf")
    return float(nll.mean()), float(nll.std(unbiased=False))


@dataclasses.dataclass(frozen=True)
class InversionLikelihoodConfig(MemoryLossConfig):
    """Inversion-based loss (module docstring).

    Args:
        steps: S (see `MemoryLossConfig`).
        statistic: "hinge" (each seed's NLL up to m_T) or "gaussian_w2" (mean and std of the
            NLLs toward (m_T, s_T)).
        target_mean / target_std: m_T and s_T; None: those of N(0, I) draws of the latent's shape
            (`normal_nll_statistics`). From a retrained model: `nll_statistics(its_seeds)`.
        keep_weight: weight of the anchor on the reference images' NLL (module docstring); 0: off.
        checkpoint: see `MemoryLossConfig`.
    """

    kind: ClassVar[str] = "inversion_likelihood"
    statistic: Statistic = "hinge"
    target_mean: float | None = None
    target_std: float | None = None
    keep_weight: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        name = "InversionLikelihoodConfig"
        require(self.statistic in ("hinge", "gaussian_w2"), f"{name}.statistic", self.statistic,
                "'hinge' or 'gaussian_w2'")
        require(self.target_mean is None or is_number(self.target_mean), f"{name}.target_mean", self.target_mean,
                "None or a finite number")
        require(self.target_std is None or (is_number(self.target_std) and self.target_std >= 0),
                f"{name}.target_std", self.target_std, "None or a finite number >= 0")
        require(is_number(self.keep_weight) and self.keep_weight >= 0, f"{name}.keep_weight", self.keep_weight,
                "a finite number >= 0 (0 = no anchor)")

    def unet_evaluations(self, images: int, reference: int = 0) -> int:
        """UNet evaluations of one forward call: S per concept image, and per reference image with the anchor."""
        return self.steps * (images + (reference if self.keep_weight > 0 else 0))


@register_memory_loss
class InversionLikelihoodLoss(MemoryLoss):
    """Push the NLL of INV_S(z0_i) toward a never-known target (module docstring).

    Args:
        model, latents, embeddings: see `MemoryLoss`; latents (B, C, h, w), B >= 2 for "gaussian_w2".
        config: an `InversionLikelihoodConfig`.
        reference_latents / reference_embeddings: (R, C, h, w) latents of other content and their
            prompts' embeddings ((R or 1, L, D)), for the anchor; required when keep_weight > 0.
            Their NLL under the model as it is now is recorded here (no gradients).
    """

    config_class = InversionLikelihoodConfig

    def __init__(self, model: DiffusionModel, latents: torch.Tensor, embeddings: torch.Tensor,
                 config: InversionLikelihoodConfig | None = None, reference_latents: torch.Tensor | None = None,
                 reference_embeddings: torch.Tensor | None = None) -> None:
        super().__init__(model, latents, embeddings, config)
        self.reference_latents = self.reference_embeddings = self.reference_nll = None
        if self.config.keep_weight > 0:
            if reference_latents is None or reference_embeddings is None:
                raise InputError("reference_latents: keep_weight > 0 needs reference_latents and reference_embeddings "
                                 "(images of other content)")
            self.reference_latents, self.reference_embeddings = checked_reference(
                model, reference_latents, reference_embeddings, self.latents)
            with torch.no_grad():
                self.reference_nll = seed_nll(invert(model, self.schedule, self.reference_latents,
                                                     self.reference_embeddings, "InversionLikelihoodLoss"))  # (R,)
        if self.config.statistic == "gaussian_w2" and self.latents.shape[0] < 2:
            raise InputError(f"latents: got {self.latents.shape[0]} image; the 'gaussian_w2' statistic needs >= 2")
        normal_mean, normal_std = normal_nll_statistics(self.entries)
        self.target_mean = self.config.target_mean if self.config.target_mean is not None else normal_mean
        self.target_std = self.config.target_std if self.config.target_std is not None else normal_std

    @property
    def unet_evaluations(self) -> int:
        """UNet evaluations of one forward call (S per concept image, and per reference image with the anchor)."""
        reference = 0 if self.reference_latents is None else self.reference_latents.shape[0]
        return self.config.unet_evaluations(self.latents.shape[0], reference)

    def forward(self) -> torch.Tensor:
        """The loss (0-dim, compute dtype). NonFiniteError when a UNet call gives NaN/Inf."""
        # 1. INV_S(z0) through the current model (gradients into the adapter)
        seeds = invert(self.model, self.schedule, self.latents, self.embeddings, "InversionLikelihoodLoss",
                       self.config.checkpoint)  # (B, C, h, w)
        # 2. the seeds' NLL (SPEC 4), then the statistic
        nll = seed_nll(seeds)  # (B,)
        if self.config.statistic == "hinge":
            loss = torch.relu(self.target_mean - nll).mean() / self.entries
        else:
            mean, std = nll.mean(), nll.var(unbiased=False).clamp_min(1e-12).sqrt()
            loss = ((mean - self.target_mean) ** 2 + (std - self.target_std) ** 2) / self.entries**2
        if self.reference_latents is None:
            return loss
        # 3. the anchor: the reference seeds' NLL stays where it was
        kept = seed_nll(invert(self.model, self.schedule, self.reference_latents, self.reference_embeddings,
                               "InversionLikelihoodLoss", self.config.checkpoint))  # (R,)
        return loss + self.config.keep_weight * (kept - self.reference_nll).pow(2).mean() / self.entries
