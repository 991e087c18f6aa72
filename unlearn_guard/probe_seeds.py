"""Per-image random streams of the probe: every draw comes from a generator derived from (seed,
set, image index), so batching and chunking never change an answer: a batch of N equals N singles."""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch

from .config import ProbeConfig


def derive_seed(seed: int, label: str, index: int) -> int:
    """A 63-bit seed for one image of one set: independent of batching and of the other images."""
    digest = hashlib.sha256(f"unlearn_guard:{seed}:{label}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def image_generators(config: ProbeConfig, label: str, indices: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image: seeded from (seed, set, index), or in rng="released" mode a
    fresh generator seeded with `image_seed` (42) for every image, as the released code does."""
    released_seed = config.image_generator_seed
    if released_seed is not None:
        return [torch.Generator().manual_seed(released_seed) for _ in indices]
    return [torch.Generator().manual_seed(derive_seed(config.seed, label, i)) for i in indices]


def consume_released_extra_draws(generators: Sequence[torch.Generator], latent_shape: Sequence[int]) -> None:
    """The released pipeline's two randn draws of the latent's shape after the posterior sample
    (img2img's noise and the inversion's stored noise); neither is used, both move the stream."""
    for generator in generators:
        for _ in range(2):
            torch.randn((1, *latent_shape), generator=generator)
