"""The argument and pixel checks of `load_image_set`, and the message helpers every part of `io` shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch

from ..errors import InputError
from ..validation import is_int

FLOAT_TOLERANCE = 1e-6
MAX_LISTED = 5  # names quoted in one message before "... and k more"

Resolution = Union[int, tuple[int, int]]


def check_arguments(resolution: Resolution | None, resize: str, label: str) -> tuple[int, int] | None:
    """`load_image_set`'s label, resize policy and resolution; returns the target (H, W) or None."""
    if not isinstance(label, str) or not label:
        raise InputError(f"label: got {label!r}, expected a non-empty str such as 'images'")
    if resize not in ("error", "resize", "center_crop"):
        raise InputError(f"resize: got {resize!r}, expected 'error', 'resize' or 'center_crop'")
    if resolution is None:
        return None
    pair = (resolution, resolution) if is_int(resolution) else resolution
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(is_int(v) and v > 0 for v in pair)):
        raise InputError(f"resolution: got {resolution!r}, expected a positive int or (height, width)")
    return int(pair[0]), int(pair[1])


def check_pixels(pixels: object) -> None:
    """ImageSet invariant: (N, 3, H, W) float32, N >= 1, finite, in [-1, 1]."""
    if not isinstance(pixels, torch.Tensor):
        raise InputError(f"ImageSet.pixels: got {type(pixels).__name__}, expected a torch.Tensor")
    if pixels.ndim != 4 or pixels.shape[0] < 1 or pixels.shape[1] != 3 or pixels.dtype != torch.float32:
        raise InputError(
            f"ImageSet.pixels: got shape {tuple(pixels.shape)} {pixels.dtype}, "
            "expected (N >= 1, 3, H, W) float32 in [-1, 1]"
        )
    flat = pixels.detach().flatten(1)
    finite = flat.isfinite().all(dim=1)
    if not bool(finite.all()):
        raise InputError(f"ImageSet.pixels[{first_false(finite)}] contains NaN or Inf; expected values in [-1, 1]")
    i = first_outside(flat, -1.0, 1.0)
    if i is not None:
        raise InputError(
            f"ImageSet.pixels[{i}] has values in [{flat[i].min().item():.4g}, {flat[i].max().item():.4g}], "
            "expected [-1, 1]"
        )


def first_outside(flat: torch.Tensor, low: float, high: float) -> int | None:
    """Index of the first row of (N, D) `flat` with a value outside [low, high] (within FLOAT_TOLERANCE), or None."""
    inside = (flat.amin(dim=1) >= low - FLOAT_TOLERANCE) & (flat.amax(dim=1) <= high + FLOAT_TOLERANCE)
    return None if bool(inside.all()) else first_false(inside)


def first_false(flags: torch.Tensor) -> int:
    """Index of the first False in a 1-D bool tensor that holds one."""
    return int((~flags).nonzero()[0, 0])


def listing(entries: Sequence[str]) -> str:
    """The first `MAX_LISTED` entries, comma-separated, then "and k more"."""
    shown = ", ".join(entries[:MAX_LISTED])
    more = len(entries) - MAX_LISTED
    return f"{shown} and {more} more" if more > 0 else shown
