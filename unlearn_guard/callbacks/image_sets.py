"""The monitor's image sets: loaded and checked once, and probed together in one call.

The monitor decides on its concept images E against the reference set R; with separate
`loss_images` (the images a memory loss trains on) each probe inverts E and those in one call,
E first, and splits the result, so E's numbers equal a probe of E alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..config import ProbeConfig, ResizePolicy
from ..errors import InputError, InsufficientDataError
from ..io import ImageSet, ImagesInput, PromptsInput, load_image_set
from ..probe import measure_memory
from ..results import ProbeResult, SetProbe


@dataclass(frozen=True)
class MonitorImages:
    """The sets a monitor probes: `images` (E) and `reference` (R), which every decision reads,
    and `loss_images`, the separate images a memory loss trains on (None: the loss trains on E)."""

    images: ImageSet
    reference: ImageSet
    loss_images: ImageSet | None


def load_monitor_images(images: ImagesInput, prompts: PromptsInput, reference: ImagesInput,
                        reference_prompts: PromptsInput, loss_images: ImagesInput | None, loss_prompts: PromptsInput,
                        *, resolution: int, resize: ResizePolicy) -> MonitorImages:
    """Load and check the monitor's sets at the model's `resolution`.

    Raises `InsufficientDataError` when E or R has fewer than 2 images (d_N needs 2 per set), and
    `InputError` when `loss_images` shares an image with E (the decisions must read images the loss
    never sees) or `loss_prompts` comes without `loss_images`.
    """
    concept = load_image_set(images, prompts, resolution=resolution, resize=resize, label="images")
    reference_set = load_image_set(reference, reference_prompts, resolution=resolution, resize=resize,
                                   label="reference")
    for label, part in (("images (E)", concept), ("reference (R)", reference_set)):
        if len(part) < 2:
            raise InsufficientDataError(f"d_N needs at least 2 images in each set; {label} has {len(part)}")
    loss_set: ImageSet | None = None
    if loss_images is not None:
        loss_set = load_image_set(loss_images, loss_prompts, resolution=resolution, resize=resize,
                                  label="loss_images")
        shared = set(loss_set.sha256) & set(concept.sha256)
        if shared:
            raise InputError(f"loss_images: {len(shared)} image(s) also in images, e.g. "
                             f"{loss_set.names[loss_set.sha256.index(next(iter(shared)))]}; "
                             "the decisions read images the memory loss never sees, so the two sets must differ")
    elif loss_prompts is not None:
        raise InputError("loss_prompts: given without loss_images")
    return MonitorImages(concept, reference_set, loss_set)


def joined(first: ImageSet, second: ImageSet) -> ImageSet:
    """One set, `first` then `second`: one probe call for both (per-image generators follow the
    index, so `first`'s numbers equal a probe of `first` alone)."""
    return ImageSet(torch.cat([first.pixels, second.pixels]), first.names + second.names,
                    first.prompts + second.prompts, first.sources + second.sources, first.sha256 + second.sha256)


def split_result(result: ProbeResult, count: int, config: ProbeConfig) -> tuple[ProbeResult, ProbeResult]:
    """A probe of joined sets as two results, the first `count` images and the rest, each with
    its own d_N and memory score against the same R and N sets."""
    parts = []
    for rows in (slice(0, count), slice(count, None)):
        erased = result.erased
        part = SetProbe(erased.label, erased.images[rows], erased.unet_evaluations, erased.seconds,
                        None if erased.seeds is None else erased.seeds[rows],
                        None if erased.reconstructions is None else erased.reconstructions[rows])
        distance, memory, notes = (None, None, list(result.notes)) if result.reference is None else \
            measure_memory(part, result.reference, result.normal_nll, config)
        parts.append(dataclasses.replace(result, erased=part, memory_distance=distance, memory=memory, notes=notes))
    return parts[0], parts[1]
