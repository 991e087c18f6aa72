"""The main job on the embedded default: probe a tiny model built from configs on generated images.

No flags, no downloads. The model has random weights (a later issue replaces it with the
project's own trained small model), so the numbers show that the pipeline runs end to end and
what a report contains, not whether a concept was erased.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from .config import ProbeConfig
from .models import DiffusionModel
from .models.tiny import build_tiny_components
from .probe import probe
from .results import ProbeResult

_COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 60), "yellow": (230, 200, 40)}


def shape_image(shape: str, colour: str, size: int, generator: torch.Generator) -> Image.Image:
    """One RGB picture of a coloured circle or square at a random position and size, on white."""
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    radius = int(torch.randint(size // 8, size // 3, (1,), generator=generator))
    cx, cy = (int(v) for v in torch.randint(radius, size - radius, (2,), generator=generator))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=_COLOURS[colour])
    return image


def demo_images(shape: str, count: int, size: int, seed: int) -> tuple[list[Image.Image], list[str]]:
    """`count` images of one shape in rotating colours, with their prompts."""
    generator = torch.Generator().manual_seed(seed)
    colours = list(_COLOURS)
    images, prompts = [], []
    for i in range(count):
        colour = colours[i % len(colours)]
        images.append(shape_image(shape, colour, size, generator))
        prompts.append(f"a {colour} {shape}")
    return images, prompts


def run_demo(
    output_dir: str | Path = "unlearn_guard_outputs/demo",
    preset: str = "mofc",
    images_per_set: int = 4,
    seed: int = 0,
    progress: bool = True,
) -> tuple[ProbeResult, Path]:
    """Probe the tiny model with circles (the 'erased' concept) against squares (the reference)."""
    model = DiffusionModel.from_components(**build_tiny_components(seed=seed), source="tiny-random (built from configs)")
    size = model.resolution
    erased, erased_prompts = demo_images("circle", images_per_set, size, seed)
    reference, reference_prompts = demo_images("square", images_per_set, size, seed + 1)
    config = ProbeConfig.from_preset(preset, seed=seed, progress=progress)
    started = time.perf_counter()
    result = probe(model, erased, erased_prompts, reference=reference, reference_prompts=reference_prompts, config=config)
    result.provenance["demo_seconds"] = time.perf_counter() - started
    out = Path(output_dir)
    path = out / "result.json"
    result.to_json(path)
    return result, path
