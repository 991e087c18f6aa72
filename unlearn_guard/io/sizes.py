"""The size policy of `load_image_set`: keep a shared size, or fit every image to a target by
resize or centre crop (config `resize`: "error" | "resize" | "center_crop")."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InputError
from .checks import listing
from .decode import Decoded

LATENT_FACTOR = 8  # the VAE downsamples by 8, so H and W must be multiples of 8


def fit_sizes(
    items: list[Decoded], target: tuple[int, int] | None, resize: str, label: str
) -> tuple[list[torch.Tensor], str | None]:
    """Apply the size policy; returns (3, H, W) float32 tensors in [0, 1] and the warning, if any."""
    if target is None:
        sizes = sorted({item.size for item in items})
        if len(sizes) > 1:
            by_size = [f"{h}x{w}: {listing([i.name for i in items if i.size == (h, w)])}" for h, w in sizes]
            raise InputError(
                f"{label}: images have {len(sizes)} different sizes (HxW) and no resolution was given; "
                f"expected one shared size or a resolution. Sizes: {'; '.join(by_size)}"
            )
        height, width = sizes[0]
        if height % LATENT_FACTOR == 0 and width % LATENT_FACTOR == 0:
            return [_to_tensor(item) for item in items], None
        target = (height // LATENT_FACTOR * LATENT_FACTOR, width // LATENT_FACTOR * LATENT_FACTOR)
        if resize == "error" or 0 in target:
            raise InputError(
                f"{label}: image size {height}x{width} (HxW) is not a multiple of {LATENT_FACTOR}; expected H and W "
                f"divisible by {LATENT_FACTOR} (pass resize='resize' or 'center_crop' to shrink to "
                f"{target[0]}x{target[1]}, or a resolution)"
            )

    mismatched = [item for item in items if item.size != target]
    if not mismatched:
        return [_to_tensor(item) for item in items], None
    listed = listing([f"{item.name} ({item.size[0]}x{item.size[1]})" for item in mismatched])
    if resize == "error":
        raise InputError(
            f"{label}: {len(mismatched)} of {len(items)} images are not {target[0]}x{target[1]} (HxW) and "
            f"resize='error': {listed}"
        )
    how = "bicubic, aspect ratio not preserved" if resize == "resize" else "center-cropped to the aspect ratio, then bicubic"
    note = (
        f"{label}: resized {len(mismatched)} of {len(items)} images to {target[0]}x{target[1]} (HxW) "
        f"with resize={resize!r} ({how}): {listed}"
    )
    return [_to_tensor(item) if item.size == target else _fit(item, target, resize) for item in items], note


def _to_tensor(item: Decoded) -> torch.Tensor:
    if isinstance(item.pixels, np.ndarray):
        return torch.from_numpy(item.pixels).permute(2, 0, 1).to(torch.float32) / 255  # (3, H, W)
    return item.pixels


def _crop_box(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the largest centred window with the target's aspect ratio."""
    height, width = size
    if width * target[0] > height * target[1]:  # wider than the target: trim the sides
        crop_h, crop_w = height, max(1, round(height * target[1] / target[0]))
    else:
        crop_h, crop_w = max(1, round(width * target[0] / target[1])), width
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def _fit(item: Decoded, target: tuple[int, int], resize: str) -> torch.Tensor:
    """Resize (optionally after a centre crop) one image to `target`; (3, H, W) float32 in [0, 1]."""
    top, left, crop_h, crop_w = (0, 0, *item.size) if resize == "resize" else _crop_box(item.size, target)
    if isinstance(item.pixels, np.ndarray):
        img = Image.fromarray(item.pixels[top : top + crop_h, left : left + crop_w])
        if img.size != (target[1], target[0]):
            img = img.resize((target[1], target[0]), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.array(img)).permute(2, 0, 1).to(torch.float32) / 255
    window = item.pixels[:, top : top + crop_h, left : left + crop_w].unsqueeze(0)  # (1, 3, h, w)
    if (crop_h, crop_w) != target:
        window = F.interpolate(window, size=target, mode="bicubic", align_corners=False, antialias=True)
    return window[0].clamp(0, 1)
