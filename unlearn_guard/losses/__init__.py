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

Caution, measured (benchmarks/RESULTS.md, memory_aware_erasure, one seed, held-out images): these
losses optimise what the memory score reads. The inversion loss without its anchor raised every
image's seed NLL and left the score undefined; with it, the score reached the retrained model's
while the prompt still drew circles. `AnchorPathLoss` (ESD-x, 300 steps) lowered the score ESD
alone leaves from 0.536 to 0.336 (circle) and from 0.408 to 0.185 (square) with better kept
accuracy, but not the prompt's accuracy (0.44 and 0.12), and Concept Inversion still brought
either concept back. Audit a model trained with a memory loss with measures it was not trained on.
"""

from ._common import concept_latents
from .anchor_path import AnchorPathConfig, AnchorPathLoss
from .base import MemoryLoss, MemoryLossConfig, memory_loss_config_from_dict
from .inversion_likelihood import (
    InversionLikelihoodConfig,
    InversionLikelihoodLoss,
    nll_statistics,
    normal_nll_statistics,
    seed_nll,
)
from .seed_recall import SeedRecallConfig, SeedRecallLoss

LOSS_CONFIGS: dict[str, type[MemoryLossConfig]] = {
    SeedRecallConfig.kind: SeedRecallConfig,
    InversionLikelihoodConfig.kind: InversionLikelihoodConfig,
    AnchorPathConfig.kind: AnchorPathConfig,
}
LOSSES: dict[str, type[MemoryLoss]] = {
    SeedRecallConfig.kind: SeedRecallLoss,
    InversionLikelihoodConfig.kind: InversionLikelihoodLoss,
    AnchorPathConfig.kind: AnchorPathLoss,
}

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
    "seed_nll",
]
