"""Differentiable memory losses: push a model being erased toward one that never knew the concept.

The memory score and d_N (`unlearn_guard.signal`, SPEC 4-5) read, per image of the concept,
whether inversion finds a seed as likely as those of known content that regenerates the image.
Each loss here is a short differentiable stand-in for part of that reading, computed through the
model being trained; gradients reach only parameters that require them (the LoRA/peft adapter
during erasure), and the losses write no weight, flag or probe state.

  - `SeedRecallLoss` (seed-anchored): the last probe's seeds, run through S DDIM steps of the
    current model, should no longer land on the images. Cost: S UNet evaluations per image.
  - `InversionLikelihoodLoss` (inversion-based): S-step differentiable inversion of the images;
    the seeds' NLL is pushed toward a retrained model's or a never-known set's. Cost: S per image.
  - `AnchorPathLoss` (seed-anchored, concept ablation on the probe's paths): along the DDIM path
    from each image to its probe seed, the concept prompt and the empty prompt denoise as the
    frozen model does for a kept concept; an anchor keeps the reference images as they were.
    Cost: about 3 UNet evaluations per image and timestep, no differentiable DDIM pass.

    from unlearn_guard.losses import InversionLikelihoodConfig, InversionLikelihoodLoss, concept_latents
    memory = InversionLikelihoodLoss(model, concept_latents(model, pixels), model.encode_prompts(prompts),
                                     InversionLikelihoodConfig(steps=10))
    loss = esd_loss + monitor.regularization_weight * memory()

`ESDConfig(memory_loss=...)` wires either into `esd_lora_erase`.

Caution: these losses optimise what the memory score reads, so a model trained with one can
score as forgotten while its prompt still draws the concept, or while Concept Inversion brings it
back (measured: benchmarks/RESULTS.md, memory_aware_erasure). Audit a model trained with a memory
loss with measures it was not trained on.

The registry `LOSSES` / `LOSS_CONFIGS` (kind -> class) lives in `base.py` with the base classes;
this module only re-exports.
"""

from .anchor_path import AnchorPathConfig, AnchorPathLoss
from .base import LOSS_CONFIGS, LOSSES, MemoryLoss, MemoryLossConfig, memory_loss_config_from_dict, register_memory_loss
from .common import concept_latents
from .inversion_likelihood import (
    InversionLikelihoodConfig,
    InversionLikelihoodLoss,
    nll_statistics,
    normal_nll_statistics,
    seed_nll,
)
from .seed_recall import SeedRecallConfig, SeedRecallLoss

__all__ = [
    "AnchorPathConfig",
    "AnchorPathLoss",
    "InversionLikelihoodConfig",
    "InversionLikelihoodLoss",
    "LOSSES",
    "LOSS_CONFIGS",
    "MemoryLoss",
    "MemoryLossConfig",
    "SeedRecallConfig",
    "SeedRecallLoss",
    "concept_latents",
    "memory_loss_config_from_dict",
    "nll_statistics",
    "normal_nll_statistics",
    "register_memory_loss",
    "seed_nll",
]
