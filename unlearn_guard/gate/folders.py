"""Write an image set as the gate reads it: PNG files plus prompts.csv (header `file,prompt`)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from ..errors import InputError
from ..io import PROMPTS_CSV
from ..files import write_text_atomic


def save_image_folder(folder: str | os.PathLike, pixels: torch.Tensor, prompts: Sequence[str],
                      prefix: str = "image") -> Path:
    """Save (N, 3, H, W) uint8 images as `<prefix>_<i>.png` with their prompts in prompts.csv."""
    if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.dtype != torch.uint8:
        raise InputError(f"pixels: got {tuple(pixels.shape)} {pixels.dtype}; expected (N, 3, H, W) uint8")
    if len(prompts) != pixels.shape[0]:
        raise InputError(f"prompts: got {len(prompts)} for {pixels.shape[0]} images; expected one per image")
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["file", "prompt"])
    for i, (image, prompt) in enumerate(zip(pixels, prompts)):
        name = f"{prefix}_{i:03d}.png"
        Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(path / name)
        writer.writerow([name, prompt])
    write_text_atomic(path / PROMPTS_CSV, table.getvalue())
    return path
