"""Small PNG thumbnails as base64 text: what results and caches store, and the HTML embeds."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

THUMBNAIL_SIDE = 96  # px: keeps a checkpoint's 8 image pairs near 100 KB of JSON


def png_base64(image: torch.Tensor, max_side: int = THUMBNAIL_SIDE) -> str:
    """Base64 PNG of one image (3, H, W) float in [0, 1], shrunk to fit max_side x max_side."""
    array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    picture = Image.fromarray(array)
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def data_uri(png_b64: str) -> str:
    return f"data:image/png;base64,{png_b64}"
