"""The "shapes" world: small RGB pictures of one coloured shape on a plain background, with captions.

Six shapes are the concepts that can be erased one at a time; colour, background, position and
size vary. Pictures are drawn at 4x and downsampled (antialiased edges), so a VAE sees smooth
images like photographs' edges rather than aliased pixel stairs.

    scene = sample_scene(generator)            # shape, colour, background, centre, radius
    image = render(scene)                      # PIL RGB, IMAGE_SIZE x IMAGE_SIZE
    caption(scene) == "a red circle on a white background"
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
SUPERSAMPLE = 4
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
# Drawn by `render` but never in the training data, the vocabulary or the classifier's classes:
# images no model of this world has learned, for checking that a signal does not read them as memories.
OUT_OF_WORLD_SHAPES = ("star",)
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
}
BACKGROUNDS = {"white": (250, 250, 250), "black": (15, 15, 15), "gray": (128, 128, 128)}


@dataclass(frozen=True)
class Scene:
    """One picture: shape and colour names, background name, centre and radius in pixels."""

    shape: str
    colour: str
    background: str
    cx: float
    cy: float
    radius: float

    @property
    def shape_index(self) -> int:
        return SHAPES.index(self.shape)


def caption(scene: Scene) -> str:
    return f"a {scene.colour} {scene.shape} on a {scene.background} background"


def caption_variant(scene: Scene, variant: int) -> str:
    """One of four phrasings (0: shape only, 1: + colour, 2: + background, 3: both), so that short
    concept prompts such as "a circle" are in the training distribution."""
    colour = f"{scene.colour} " if variant in (1, 3) else ""
    background = f" on a {scene.background} background" if variant in (2, 3) else ""
    return f"a {colour}{scene.shape}{background}"


def concept_prompt(shape: str) -> str:
    """The prompt that names a concept without colour or background ("a circle")."""
    return f"a {shape}"


def vocabulary() -> list[str]:
    """Every word a caption or concept prompt can contain (the tokenizer's vocabulary)."""
    return sorted({"a", "on", "background", *SHAPES, *COLOURS, *BACKGROUNDS})


def sample_scene(generator: torch.Generator, shape: str | None = None, size: int = IMAGE_SIZE) -> Scene:
    """A random scene (uniform shape, colour, background; radius 18-38% of the side; fully inside)."""
    u = torch.rand(6, generator=generator).tolist()
    shape = shape or SHAPES[int(u[0] * len(SHAPES))]
    colour = list(COLOURS)[int(u[1] * len(COLOURS))]
    background = list(BACKGROUNDS)[int(u[2] * len(BACKGROUNDS))]
    radius = size * (0.18 + 0.20 * u[3])
    cx = radius + (size - 2 * radius) * u[4]
    cy = radius + (size - 2 * radius) * u[5]
    return Scene(shape, colour, background, cx, cy, radius)


def _polygon(cx: float, cy: float, r: float, corners: int, rotation: float) -> list[tuple[float, float]]:
    return [
        (cx + r * math.cos(rotation + 2 * math.pi * k / corners), cy + r * math.sin(rotation + 2 * math.pi * k / corners))
        for k in range(corners)
    ]


def render(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw a scene as an RGB PIL image of `size` x `size`."""
    s = SUPERSAMPLE
    big = Image.new("RGB", (size * s, size * s), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(big)
    fill = COLOURS[scene.colour]
    cx, cy, r = scene.cx * s, scene.cy * s, scene.radius * s
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif scene.shape == "square":
        h = r * 0.85
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif scene.shape == "triangle":
        draw.polygon(_polygon(cx, cy + 0.2 * r, r, 3, -math.pi / 2), fill=fill)
    elif scene.shape == "diamond":
        draw.polygon(_polygon(cx, cy, r, 4, 0.0), fill=fill)
    elif scene.shape == "cross":
        w = r * 0.35
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    elif scene.shape == "star":
        outer, inner = _polygon(cx, cy, r, 5, -math.pi / 2), _polygon(cx, cy, r * 0.45, 5, -math.pi / 2 + math.pi / 5)
        draw.polygon([point for pair in zip(outer, inner) for point in pair], fill=fill)
    elif scene.shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        inner = r * 0.55
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=BACKGROUNDS[scene.background])
    else:
        raise ValueError(f"unknown shape {scene.shape!r}; expected one of {SHAPES + OUT_OF_WORLD_SHAPES}")
    return big.resize((size, size), Image.Resampling.LANCZOS)


def make_dataset(count: int, seed: int, shape: str | None = None, size: int = IMAGE_SIZE):
    """`count` scenes and pictures: (uint8 tensor (N, 3, size, size), list of scenes, list of captions)."""
    generator = torch.Generator().manual_seed(seed)
    scenes = [sample_scene(generator, shape, size) for _ in range(count)]
    pixels = np.stack([np.asarray(render(scene, size)) for scene in scenes])  # (N, H, W, 3)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), scenes, [caption(s) for s in scenes]
