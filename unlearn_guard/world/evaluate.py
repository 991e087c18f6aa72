"""Measurements in the small world shared by the main job and the experiments.

- `probe_sets`: the concept set E (renders of the concept, with its prompt) and the reference set
  R (renders of the other shapes, with theirs), as MoFC uses them: what `probe` and
  `ProbeMonitor` take as `images` / `reference`.
- `accuracy_from_prompt`: does the model still draw the concept when asked? (classifier accuracy)
- `kept_accuracy`: damage to the other concepts (mean accuracy over the shapes not erased).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..models.bundle import DiffusionModel
from .classifier import ShapeClassifier, concept_accuracy
from .generate import generate
from .shapes import SHAPES, concept_prompt, make_dataset


class ProbeSets(NamedTuple):
    """E and R for one concept; unpacks as (concept, concept_prompts, reference, reference_prompts).

    Pixels are uint8 (count, 3, 32, 32); prompts name the shape only ("a circle")."""

    concept: torch.Tensor
    concept_prompts: list[str]
    reference: torch.Tensor
    reference_prompts: list[str]


def probe_sets(concept: str, count: int, seed: int = 0) -> ProbeSets:
    """`count` renders of `concept` (one of SHAPES) and `count` of the other shapes (cycled), seeded.

        sets = probe_sets("circle", 8)
        probe(model, sets.concept, sets.concept_prompts, reference=sets.reference,
              reference_prompts=sets.reference_prompts)
    """
    if concept not in SHAPES:
        from ..errors import InputError

        raise InputError(f"concept: got {concept!r}; expected one of {SHAPES} (a shape name, not a prompt)")
    erased, _, _ = make_dataset(count, seed, shape=concept)
    others = [s for s in SHAPES if s != concept]
    reference = torch.cat([make_dataset(1, seed + 1 + i, shape=others[i % len(others)])[0] for i in range(count)])
    reference_prompts = [concept_prompt(others[i % len(others)]) for i in range(count)]
    return ProbeSets(erased, [concept_prompt(concept)] * count, reference, reference_prompts)


def out_of_world_images(kind: str, count: int, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Images no model of this world learned, with prompts: (uint8 (count, 3, 32, 32), prompts).

    kind "star": renders of a five-pointed star (drawn like the world's shapes, never trained on;
    the prompt "a star" tokenizes "star" as unknown); "noise": uniform random RGB pixels.
    """
    from .shapes import IMAGE_SIZE

    if kind == "star":
        return make_dataset(count, seed, shape="star")[0], ["a star"] * count
    if kind == "noise":
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(0, 256, (count, 3, IMAGE_SIZE, IMAGE_SIZE), generator=generator, dtype=torch.uint8), ["a circle"] * count
    from ..errors import InputError

    raise InputError(f"kind: got {kind!r}; expected 'star' or 'noise'")


def accuracy_from_prompt(model: DiffusionModel, classifier: ShapeClassifier, shape: str, count: int, seed: int) -> float:
    """Fraction of `count` images generated from "a <shape>" that the classifier calls `shape`."""
    return concept_accuracy(classifier, generate(model, [concept_prompt(shape)] * count, seed=seed), shape)


def kept_accuracy(model: DiffusionModel, classifier: ShapeClassifier, erased: str, count: int, seed: int) -> float:
    """Mean `accuracy_from_prompt` over the shapes other than `erased`."""
    others = [s for s in SHAPES if s != erased]
    return sum(accuracy_from_prompt(model, classifier, s, count, seed + 100 * k) for k, s in enumerate(others)) / len(others)
