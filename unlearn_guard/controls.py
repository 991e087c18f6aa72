"""The negative control: images no model of any world can have learned, made by the probe itself.

A probe that reads "remembered" on images nobody could have trained on measures the model's
inversion, not its memory. Every probe with a reference set therefore also inverts a small
control set, deterministic from the config's seed and at the model's resolution:
  - uniform RGB noise (every pixel drawn alone);
  - a checkerboard with random cell size and colours;
  - stripes at a random angle, period and colours;
  - a mosaic of random-coloured blocks.
Kinds cycle in that order. Each image is inverted twice: with one of the concept's own prompts
(cycled over E's distinct prompts) and with the neutral prompt "" (a model can be degenerate for
one prompt only, e.g. an adapter that silences the concept's cross-attention).

The control's memory score uses the same R and N anchors as E's. Its cost is
2 x control_images x (UNet evaluations per image of the preset); `control_cost` states it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .config import ProbeConfig
from .io import ImageSet
from .probe_seeds import derive_seed

CONTROL_KINDS = ("uniform-noise", "checkerboard", "stripes", "color-blocks")


def _colours(generator: torch.Generator, count: int) -> torch.Tensor:
    return torch.rand(count, 3, 1, 1, generator=generator)


def control_pixels(kind: str, size: int, generator: torch.Generator) -> torch.Tensor:
    """One control image of `kind` (CONTROL_KINDS), (3, size, size) float32 in [0, 1]."""
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    if kind == "uniform-noise":
        return torch.rand(3, size, size, generator=generator)
    if kind == "checkerboard":
        cell = max(1, size // int(torch.randint(4, 17, (1,), generator=generator)))
        a, b = _colours(generator, 2)
        mask = (((x // cell) + (y // cell)) % 2).bool()
        return torch.where(mask, a, b)
    if kind == "stripes":
        angle = float(torch.rand(1, generator=generator)) * math.pi
        period = size / float(torch.randint(3, 13, (1,), generator=generator))
        a, b = _colours(generator, 2)
        phase = (x * math.cos(angle) + y * math.sin(angle)) / period
        return torch.where((phase.floor() % 2).bool(), a, b)
    if kind == "color-blocks":
        blocks = int(torch.randint(3, 9, (1,), generator=generator))
        coarse = torch.rand(1, 3, blocks, blocks, generator=generator)
        return torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest")[0]
    raise ValueError(f"kind: got {kind!r}; expected one of {CONTROL_KINDS}")


def control_set(config: ProbeConfig, resolution: int, concept_prompts: Sequence[str]) -> ImageSet | None:
    """The control set: `config.control_images` images, each with a concept prompt and with "".

    None when the control is off (control_images 0). Names say the kind, the index and the prompt
    ("control:stripes-2|concept"); the images are the same for the same seed and resolution.
    """
    count = config.control_images
    if count == 0:
        return None
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "control", 0))
    kinds = [CONTROL_KINDS[i % len(CONTROL_KINDS)] for i in range(count)]
    images = torch.stack([control_pixels(kind, resolution, generator) for kind in kinds])
    distinct = list(dict.fromkeys(concept_prompts)) or [""]
    prompts = [distinct[i % len(distinct)] for i in range(count)] + [""] * count
    names = [f"control:{kind}-{i}|concept" for i, kind in enumerate(kinds)] + \
            [f"control:{kind}-{i}|neutral" for i, kind in enumerate(kinds)]
    pixels = torch.cat([images, images]) * 2 - 1
    return ImageSet(pixels=pixels, names=names, prompts=prompts, sources=[f"control[{i}]" for i in range(2 * count)])


def control_cost(config: ProbeConfig, evaluations_per_image: int) -> int:
    """UNet evaluations the control adds: 2 x control_images x the preset's evaluations per image."""
    return 2 * config.control_images * int(evaluations_per_image)
