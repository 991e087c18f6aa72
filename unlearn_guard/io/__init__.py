"""Load the images and prompts that `probe` receives, validated once at the boundary.

`load_image_set` accepts tensors, PIL images, files and folders and returns an `ImageSet`:
pixels (N, 3, H, W) float32 in [-1, 1] plus one name, prompt, source and SHA-256 per image.
Every problem becomes an `InputError` (or `ImageLoadError` for a file or PIL object) that names
the argument or file, what was received and what was expected.

The parts, one job each: `checks` (arguments, pixel invariants, message helpers), `decode`
(files, PIL images, tensors, RGB conversion and hashing; its docstring has the conversion
rules), `sizes` (the size policy), `prompts` (prompts.csv, lists and mappings; prompts with
seeds). The resize policy itself lives in the config.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

import torch
from PIL import Image

from ..config import ResizePolicy
from ..errors import InputError
from .checks import (
    MAX_LISTED,
    Resolution,
    check_arguments,
    check_pixels,
    listing,
)
from .decode import IMAGE_EXTENSIONS, Decoded, decode, hash_float
from .prompts import (
    CSV_FILE_COLUMNS,
    CSV_PROMPT_COLUMN,
    CSV_SEED_COLUMNS,
    PROMPTS_CSV,
    PromptSeeds,
    read_prompt_seeds,
    read_prompts,
    resolve_prompts,
    warn_mixed_empty_prompts,
)
from .sizes import LATENT_FACTOR, fit_sizes

PathLike = Union[str, os.PathLike]
ImagesInput = Union[torch.Tensor, Image.Image, PathLike, Sequence[Union[Image.Image, PathLike]], "ImageSet"]
PromptsInput = Union[str, Sequence[str], Mapping[str, str], None]


@dataclass
class ImageSet:
    """Validated images with one name, prompt, source and hash each.

    Args:
        pixels: (N, 3, H, W) float32 in [-1, 1], N >= 1.
        names: file name, or "image[i]" for in-memory inputs.
        prompts: one prompt per image ("" means unconditional).
        sources: full path, or "tensor[i]" / "pil[i]".
        sha256: hex digest of each decoded input (see `unlearn_guard.io.decode`); when left empty it
            is computed from the float32 pixels as stored.
    """

    pixels: torch.Tensor
    names: list[str]
    prompts: list[str]
    sources: list[str]
    sha256: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_pixels(self.pixels)
        n = self.pixels.shape[0]
        if not self.sha256:
            self.sha256 = [hash_float(((p + 1) / 2).clamp(0, 1)) for p in self.pixels]
        for attr in ("names", "prompts", "sources", "sha256"):
            values = getattr(self, attr)
            if not isinstance(values, list) or len(values) != n or not all(isinstance(v, str) for v in values):
                raise InputError(f"ImageSet.{attr}: expected a list of {n} str (one per image), got {values!r:.200}")

    def __len__(self) -> int:
        return self.pixels.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) shared by every image."""
        return int(self.pixels.shape[2]), int(self.pixels.shape[3])

    def subset(self, indices: Sequence[int]) -> "ImageSet":
        """A new ImageSet with the images at `indices`, in that order."""
        n = len(self)
        picked = list(indices)
        if not picked:
            raise InputError("ImageSet.subset: indices is empty; expected at least one index")
        bad = [i for i in picked if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n]
        if bad:
            raise InputError(f"ImageSet.subset: indices {bad[:MAX_LISTED]} are not ints in [-{n}, {n})")
        return ImageSet(
            pixels=self.pixels[picked].contiguous(),
            names=[self.names[i] for i in picked],
            prompts=[self.prompts[i] for i in picked],
            sources=[self.sources[i] for i in picked],
            sha256=[self.sha256[i] for i in picked],
        )


def load_image_set(
    images: ImagesInput,
    prompts: PromptsInput = None,
    *,
    resolution: Resolution | None = None,
    resize: ResizePolicy = "resize",
    label: str = "images",
) -> ImageSet:
    """Load, validate and convert `images` (and their prompts) into an `ImageSet`.

    Args:
        images: a tensor (N, 3, H, W) or (3, H, W), float in [0, 1] or uint8; a PIL image or a
            list of them; a folder (str/Path, its `prompts.csv` supplies prompts); a list of
            image files (PIL images may be mixed in); or an ImageSet (checked and returned as
            is unless prompts or the size have to change).
        prompts: one str for all images, a list (one per image), a dict name -> prompt, or None
            (only for folders, which then need a prompts.csv with columns file,prompt).
        resolution: int or (H, W) every image must end up at; None keeps the shared size,
            which must be a multiple of 8.
        resize: "error" rejects a size mismatch, "resize" resizes bicubic to the target,
            "center_crop" crops to the target aspect ratio first. Both warn once.
        label: the argument name used in messages ("images", "reference").

    Returns:
        ImageSet with pixels (N, 3, H, W) float32 in [-1, 1], contiguous, on the CPU.
    """
    target = check_arguments(resolution, resize, label)
    if isinstance(images, ImageSet):
        return _recheck_image_set(images, prompts, target, resize, label)

    items, folder = decode(images, label)
    converted = [item for item in items if item.converted_from is not None]
    if converted:
        listed = listing([f"{item.name} ({item.converted_from})" for item in converted])
        warnings.warn(
            f"{label}: converted {len(converted)} of {len(items)} images to RGB: {listed}",
            UserWarning,
            stacklevel=2,
        )
    names = [item.name for item in items]
    resolved = resolve_prompts(prompts, names, folder, label)
    warn_mixed_empty_prompts(resolved, names, label)

    tensors, resize_note = fit_sizes(items, target, resize, label)
    if resize_note:
        warnings.warn(resize_note, UserWarning, stacklevel=2)
    pixels = (torch.stack(tensors) * 2 - 1).to(torch.float32).contiguous()  # (N, 3, H, W)
    return ImageSet(
        pixels=pixels,
        names=names,
        prompts=resolved,
        sources=[item.source for item in items],
        sha256=[item.sha256 for item in items],
    )


def _recheck_image_set(
    image_set: ImageSet, prompts: PromptsInput, target: tuple[int, int] | None, resize: str, label: str
) -> ImageSet:
    """An ImageSet is re-validated; it is copied only if prompts or the size change."""
    image_set.__post_init__()
    new_prompts = image_set.prompts
    if prompts is not None:
        new_prompts = resolve_prompts(prompts, image_set.names, None, label)
        warn_mixed_empty_prompts(new_prompts, image_set.names, label)
    items = [
        Decoded(name, source, ((p + 1) / 2).clamp(0, 1), digest)
        for name, source, p, digest in zip(image_set.names, image_set.sources, image_set.pixels, image_set.sha256)
    ]
    tensors, resize_note = fit_sizes(items, target, resize, label)
    if resize_note:
        warnings.warn(resize_note, UserWarning, stacklevel=3)
    elif prompts is None:
        return image_set
    pixels = image_set.pixels if not resize_note else (torch.stack(tensors) * 2 - 1).contiguous()
    return ImageSet(pixels, list(image_set.names), list(new_prompts), list(image_set.sources), list(image_set.sha256))


__all__ = [
    "CSV_FILE_COLUMNS",
    "CSV_PROMPT_COLUMN",
    "CSV_SEED_COLUMNS",
    "IMAGE_EXTENSIONS",
    "LATENT_FACTOR",
    "PROMPTS_CSV",
    "ImageSet",
    "ImagesInput",
    "PathLike",
    "PromptSeeds",
    "PromptsInput",
    "Resolution",
    "load_image_set",
    "read_prompt_seeds",
    "read_prompts",
]
