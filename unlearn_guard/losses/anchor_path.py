"""Seed-path anchor loss: along the path from each concept image to the seed the probe found for
it, the model should denoise toward *known* content, as a model that never saw the concept does.

Why this loss (measured in the small world, benchmarks/RESULTS.md): ESD only removes the
difference eps(x, c) - eps(x, "") on samples of the concept; on an image of the concept both
branches still explain it, so inversion keeps finding a likely seed that regenerates it (the
memory). The probe's seeds mark exactly those paths. This loss makes the model's prediction on
them equal to the frozen model's prediction *for a kept concept* (the anchor, as in concept
ablation, Kumari et al. 2023), with the concept's prompt and with the empty prompt, while an
anchor on known content keeps the reference images' predictions where they were.

Notation (SPEC -> code), per concept image i; latents (C, h, w), D = C*h*w entries:
    z0_i        clean latent of image i                                  `latents[i]`
    s_i         the probe's seed for image i, at t_max of an S-step      `seeds[i]`
                DDIM schedule (abar_max = abar at t_max)
    e_i         the seed's noise on the DDIM path:                       `path_noise`
                (s_i - sqrt(abar_max) z0_i) / sqrt(1 - abar_max); a fixed N(0, I) draw
                (seeded) while no seed is known, or with noise="fresh"
    x_i(t)      sqrt(abar_t) z0_i + sqrt(1 - abar_t) e_i                 (the path at t)
    a_i(t)      eps*(x_i(t), t, anchor_i), frozen model (adapters off)   (the target, no gradient)
    c_i, 0      the image's prompt embedding, the empty prompt's
    y_j(t)      reference latent j noised with a fixed N(0, I) draw
    T_call      the `timesteps` schedule timesteps of this call (cycling through all S)

    L = mean_{t in T_call} [ (1/B) sum_i ( ||eps(x_i, t, c_i) - a_i||^2 + w_0 ||eps(x_i, t, 0) - a_i||^2 ) / D
          + w_keep (1/R) sum_j ( ||eps(y_j, t, c_j) - eps*(y_j, t, c_j)||^2
                                 + w_0 ||eps(y_j, t, 0) - eps*(y_j, t, 0)||^2 ) / D ]

With `random_paths` = P > 0, i also runs over B P more paths (each image P times) whose e_i is a
new N(0, I) draw every call: the concept's generation paths from random noise, beside its memory
paths (the mean is then over B (1 + P) paths). w_0 = `null_weight`, w_keep = `keep_weight`. The anchor for image i is `anchor` (a prompt) or,
by default, the reference prompts cycled (image i gets reference prompt i mod R): the kept
concepts a model that never knew the concept would see in its place.
Cost per call and timestep (B concept, R reference images): frozen, no gradient: B (+ R (1 + [w_0>0])
with the keep term); with gradient: B (1 + [w_0>0]) (+ R (1 + [w_0>0])); about 2x the gradient
calls again in the backward pass. With B = R = 8, w_0 > 0 and one timestep: 24 frozen and 32
differentiable single-image UNet evaluations, run as two batched calls.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, ClassVar, Literal

import torch

from ..errors import InputError
from ..models.adapters import adapters_disabled
from ..models.bundle import DiffusionModel, unwrap_unet
from ..validation import is_int, is_number, require
from .base import MemoryLoss, MemoryLossConfig, register_memory_loss
from .common import (check_seed_source, checked_embeddings, checked_reference, ensure_finite_in_loss, predict_noise,
                     resolve_seeds)

SeedSource = Callable[[], "torch.Tensor | None"]
NoiseSource = Literal["seeds", "fresh"]


@dataclasses.dataclass(frozen=True)
class AnchorPathConfig(MemoryLossConfig):
    """Seed-path anchor loss (module docstring).

    Args:
        steps: S, the DDIM schedule the seeds were found on (match the probe: 20 for `track`)
            and whose timesteps the loss cycles through.
        timesteps: timesteps per call (each call takes the next ones of the S, cycling).
        min_noise: only the schedule's timesteps t >= min_noise * T_train take part (0: all);
            where the prompt still decides the content, away from the low-noise end where
            every prompt's prediction is the image's own.
        noise: "seeds" (the probe's seeds, fixed noise until the first probe) or "fresh" (a
            fixed seeded draw per image: concept ablation on the images, no probe needed).
        anchor: the anchor prompt, or None for the reference prompts cycled.
        null_weight: w_0, weight of the empty-prompt branch; 0 by default: measured on circle
            (tuning pool, 150 ESD-x steps), w_0 = 1 left the prompt drawing circles more often
            (accuracy 0.81 vs 0.63 at w_0 = 0): moving eps(x, "") away from the concept
            lengthens the guidance direction eps(x, c) - eps(x, "") that CFG amplifies.
        keep_weight: w_keep, weight of the anchor on the reference images (0: off).
        guidance: g >= 0; the target becomes a_i - g (eps*(x_i, t, c_i) - a_i), ESD's negative
            guidance taken from the anchor instead of the empty prompt (one more frozen
            evaluation per path); 0: the anchor's prediction itself.
        random_paths: P, extra paths per image and call with a new N(0, I) draw each call (0:
            off): the concept's generation paths from random noise, beside its memory paths.
        seed: seeds the fixed noise draws and the random paths' stream (a private generator;
            the global one is untouched).
    """

    kind: ClassVar[str] = "anchor_path"
    steps: int = 20
    timesteps: int = 2
    noise: NoiseSource = "seeds"
    anchor: str | None = None
    null_weight: float = 0.0
    keep_weight: float = 1.0
    min_noise: float = 0.0
    guidance: float = 0.0
    random_paths: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(is_int(self.timesteps) and 1 <= self.timesteps <= self.steps, "AnchorPathConfig.timesteps",
                self.timesteps, f"an int in [1, steps={self.steps}]")
        require(self.noise in ("seeds", "fresh"), "AnchorPathConfig.noise", self.noise, "'seeds' or 'fresh'")
        require(self.anchor is None or (isinstance(self.anchor, str) and self.anchor.strip() != ""),
                "AnchorPathConfig.anchor", self.anchor, "None or a non-empty prompt")
        for name in ("null_weight", "keep_weight"):
            value = getattr(self, name)
            require(is_number(value) and value >= 0, f"AnchorPathConfig.{name}", value, "a finite number >= 0")
        require(is_number(self.min_noise) and 0 <= self.min_noise < 1, "AnchorPathConfig.min_noise", self.min_noise,
                "a number in [0, 1)")
        require(is_number(self.guidance) and self.guidance >= 0, "AnchorPathConfig.guidance", self.guidance,
                "a finite number >= 0")
        require(is_int(self.random_paths) and self.random_paths >= 0, "AnchorPathConfig.random_paths",
                self.random_paths, "an int >= 0")
        require(is_int(self.seed) and self.seed >= 0, "AnchorPathConfig.seed", self.seed, "an int >= 0")

    def unet_evaluations(self, images: int) -> int:
        """Single-image UNet evaluations of one forward call on `images` concept images (the
        keep term's reference images not counted): frozen anchor (+ concept with guidance) +
        trained concept (+ empty) branches."""
        branches = 1 + (1 if self.null_weight > 0 else 0)
        frozen = 1 + (1 if self.guidance > 0 else 0)
        return self.timesteps * images * (1 + self.random_paths) * (frozen + branches)


@register_memory_loss
class AnchorPathLoss(MemoryLoss):
    """L of the module docstring: the concept's seed paths denoise toward the anchor.

    Args:
        model, latents, embeddings: see `MemoryLoss`; latents (B, C, h, w) of the concept images.
        config: an `AnchorPathConfig`.
        seeds: the probe's seeds, as a callable returning (B, C, h, w) or None (e.g.
            `lambda: monitor.latest_seeds`), a fixed tensor, or None (fixed noise); rows that
            hold NaN/Inf (diverged inversions) fall back to the fixed noise.
        reference_latents / reference_embeddings: (R, C, h, w) latents of known content and
            their prompt embeddings (R, L, D): the anchors' prompts and the keep term. Required
            unless `config.anchor` is set and `keep_weight` is 0.
        anchor_embeddings: (1, L, D) embedding of `config.anchor` (required when it is set).
        null_embedding: (1, L, D) embedding of the empty prompt (required when null_weight > 0).
    """

    config_class = AnchorPathConfig

    def __init__(self, model: DiffusionModel, latents: torch.Tensor, embeddings: torch.Tensor,
                 config: AnchorPathConfig | None = None, seeds: SeedSource | torch.Tensor | None = None,
                 reference_latents: torch.Tensor | None = None, reference_embeddings: torch.Tensor | None = None,
                 anchor_embeddings: torch.Tensor | None = None, null_embedding: torch.Tensor | None = None) -> None:
        super().__init__(model, latents, embeddings, config)
        cfg: AnchorPathConfig = self.config
        check_seed_source(seeds)
        self.seeds = seeds
        batch = self.latents.shape[0]
        needs_reference = cfg.anchor is None or cfg.keep_weight > 0
        if needs_reference and (reference_latents is None or reference_embeddings is None):
            raise InputError("reference_latents / reference_embeddings: required for the default anchor (the "
                             "reference prompts) and for keep_weight > 0; pass both, or set anchor and keep_weight=0")
        self.reference_latents = None
        self.reference_embeddings = None
        if reference_latents is not None and reference_embeddings is not None:
            self.reference_latents, self.reference_embeddings = checked_reference(
                model, reference_latents, reference_embeddings, self.latents)
        if cfg.anchor is not None:
            if anchor_embeddings is None:
                raise InputError(f"anchor_embeddings: required with anchor={cfg.anchor!r}; pass "
                                 "model.encode_prompts([anchor])")
            self.anchor_embeddings = checked_embeddings(anchor_embeddings, batch, model, "anchor_embeddings")
        else:
            rows = torch.arange(batch) % self.reference_embeddings.shape[0]
            self.anchor_embeddings = self.reference_embeddings[rows.to(self.reference_embeddings.device)].clone()
        self.null_embedding = None
        if cfg.null_weight > 0:
            if null_embedding is None:
                raise InputError("null_embedding: required with null_weight > 0; pass model.encode_prompts([''])")
            self.null_embedding = checked_embeddings(null_embedding, 1, model, "null_embedding")
        generator = torch.Generator().manual_seed(cfg.seed)
        self.fixed_noise = torch.randn(tuple(self.latents.shape), generator=generator, dtype=torch.float64).to(
            self.latents.device, self.latents.dtype)  # (B, C, h, w)
        self.reference_noise = None
        if self.reference_latents is not None:
            self.reference_noise = torch.randn(tuple(self.reference_latents.shape), generator=generator,
                                               dtype=torch.float64).to(self.latents.device, self.latents.dtype)
        self.path_generator = generator  # the random paths' stream, after the fixed draws
        floor = cfg.min_noise * self.schedule.num_train_timesteps
        self.indices = [i for i, t in enumerate(self.schedule.timesteps) if t >= floor]  # schedule entries used
        if not self.indices:
            raise InputError(f"min_noise: got {cfg.min_noise}; no timestep of the {cfg.steps}-step schedule "
                             f"{list(self.schedule.timesteps)} is >= {floor:g}")
        self.calls = 0  # which timesteps the next call takes
        self.last_from_seeds = 0  # images whose path came from a probe seed in the last call

    def _path_noise(self, seeds: torch.Tensor | None) -> torch.Tensor:
        """e_i per image: the seed's noise on its DDIM path, or the fixed draw."""
        if self.config.noise == "fresh":
            self.last_from_seeds = 0
            return self.fixed_noise
        seeds = resolve_seeds(seeds, self.seeds, self.latents.shape)
        if seeds is None:
            self.last_from_seeds = 0
            return self.fixed_noise
        seeds = seeds.detach().to(self.latents.device, self.latents.dtype)
        finite = torch.isfinite(seeds).flatten(1).all(1)  # (B,)
        alpha_max = float(self.schedule.alpha_prod[-1])
        path = (torch.nan_to_num(seeds) - math.sqrt(alpha_max) * self.latents) / math.sqrt(1.0 - alpha_max)
        self.last_from_seeds = int(finite.sum())
        return torch.where(finite[:, None, None, None], path, self.fixed_noise)

    def forward(self, seeds: torch.Tensor | None = None) -> torch.Tensor:
        """The loss (0-dim, compute dtype). Raises NonFiniteError when a UNet call gives NaN/Inf."""
        cfg: AnchorPathConfig = self.config
        noise = self._path_noise(seeds)
        latents, embeddings, anchors = self.latents, self.embeddings, self.anchor_embeddings
        if cfg.random_paths > 0:  # P more paths per image, new draws each call
            count = self.latents.shape[0] * cfg.random_paths
            drawn = torch.randn((count, *self.latents.shape[1:]), generator=self.path_generator, dtype=torch.float64)
            noise = torch.cat([noise, drawn.to(noise.device, noise.dtype)])
            repeat = 1 + cfg.random_paths
            latents, embeddings = latents.repeat(repeat, 1, 1, 1), embeddings.repeat(repeat, 1, 1)
            anchors = anchors.repeat(repeat, 1, 1)
        batch = latents.shape[0]
        entries = self.entries
        use_null = cfg.null_weight > 0
        keep = cfg.keep_weight > 0
        total = self.latents.new_zeros(())
        indices = self.indices
        for j in range(cfg.timesteps):
            index = indices[(self.calls * cfg.timesteps + j) % len(indices)]
            timestep = self.schedule.timesteps[index]
            alpha = float(self.schedule.alpha_prod[index])
            x = math.sqrt(alpha) * latents + math.sqrt(1.0 - alpha) * noise  # (B (1 + P), C, h, w)
            # frozen targets (no gradient): the anchors on the concept paths, the references as they were
            frozen_z, frozen_c = [x], [anchors]
            if cfg.guidance > 0:  # eps*(x, c_i) too, for the guided target
                frozen_z.append(x)
                frozen_c.append(embeddings)
            if keep:
                y = math.sqrt(alpha) * self.reference_latents + math.sqrt(1.0 - alpha) * self.reference_noise
                frozen_z.append(y)
                frozen_c.append(self.reference_embeddings)
                if use_null:
                    frozen_z.append(y)
                    frozen_c.append(self.null_embedding.expand(y.shape[0], -1, -1))
            with torch.no_grad(), adapters_disabled(unwrap_unet(self.model.unet)):
                targets = predict_noise(self.model, torch.cat(frozen_z), timestep, torch.cat(frozen_c))
            ensure_finite_in_loss(targets, "AnchorPathLoss", "frozen prediction", timestep)
            anchor, rest = targets[:batch], targets[batch:]
            if cfg.guidance > 0:  # a_i - g (eps*(x, c_i) - a_i): away from the concept, past the anchor
                concept, rest = rest[:batch], rest[batch:]
                anchor = anchor - cfg.guidance * (concept - anchor)
            # the model being trained, with gradients, on the same points
            train_z, train_c, train_t = [x], [embeddings], [anchor]
            weights = [torch.ones(batch, dtype=x.dtype, device=x.device) / batch]
            if use_null:
                train_z.append(x)
                train_c.append(self.null_embedding.expand(batch, -1, -1))
                train_t.append(anchor)
                weights.append(torch.full((batch,), cfg.null_weight / batch, dtype=x.dtype, device=x.device))
            if keep:
                count = self.reference_latents.shape[0]
                train_z.append(y)
                train_c.append(self.reference_embeddings)
                train_t.append(rest[:count])
                weights.append(torch.full((count,), cfg.keep_weight / count, dtype=x.dtype, device=x.device))
                if use_null:
                    train_z.append(y)
                    train_c.append(self.null_embedding.expand(count, -1, -1))
                    train_t.append(rest[count:])
                    weights.append(torch.full((count,), cfg.keep_weight * cfg.null_weight / count,
                                              dtype=x.dtype, device=x.device))
            prediction = predict_noise(self.model, torch.cat(train_z), timestep, torch.cat(train_c),
                                       cfg.checkpoint)
            ensure_finite_in_loss(prediction, "AnchorPathLoss", "noise prediction", timestep)
            error = (prediction - torch.cat(train_t).to(prediction.dtype)).pow(2).flatten(1).sum(1) / entries
            total = total + (torch.cat(weights) * error).sum()
        self.calls += 1
        return total / cfg.timesteps
