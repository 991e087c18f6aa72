"""The small "shapes" world: a text-to-image model this project trains and ships, and its classifier.

    from unlearn_guard.world import load_world_model, load_classifier
    model = load_world_model()            # DiffusionModel via StableDiffusionPipeline.from_pretrained
    never = load_world_model(without="circle")  # the world retrained without circles (ground truth)
    classifier = load_classifier()        # ShapeClassifier: which of SHAPES an image shows
    sets = probe_sets("circle", 8)        # E (circles) and R (other shapes) with prompts, for probe()

The weights under `weights/` were produced by `unlearn-guard train-world` (see training.json), and
`weights/without-circle/`, `weights/without-square/`, `weights/without-triangle/` by `unlearn-guard train-world --exclude SHAPE`
(same seed, config and steps; every scene of the shape dropped; the full world's classifier).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .classifier import ShapeClassifier, concept_accuracy
from .evaluate import ProbeSets, probe_sets
from .shapes import SHAPES, caption, concept_prompt, make_dataset, render, sample_scene

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def _weights(folder: str | Path | None) -> Path:
    path = Path(folder) if folder is not None else WEIGHTS_DIR
    if not (path / "pipeline" / "model_index.json").is_file():
        raise ModelError(
            f"no trained shapes world at {path} (expected pipeline/model_index.json); "
            "run `unlearn-guard train-world --output <folder>` to train one"
        )
    return path


def retrained_world_dir(shape: str) -> Path:
    """The shipped world retrained without `shape` (`train-world --exclude`): circle, square and triangle."""
    folder = WEIGHTS_DIR / f"without-{shape}"
    if not (folder / "pipeline" / "model_index.json").is_file():
        shipped = sorted(p.name.removeprefix("without-") for p in WEIGHTS_DIR.glob("without-*") if p.is_dir())
        raise ModelError(
            f"no shipped world retrained without {shape!r}; shipped: {shipped}. Train one with "
            f"`unlearn-guard train-world --exclude {shape} --output <folder>` and load that folder"
        )
    return folder


def load_world_pipeline(folder: str | Path | None = None):
    """The shipped `StableDiffusionPipeline`, loaded from its local folder (no network)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(
        _weights(folder) / "pipeline", safety_checker=None, requires_safety_checker=False, local_files_only=True
    )


def load_world_model(folder: str | Path | None = None, *, without: str | None = None):
    """The shipped model as a `DiffusionModel` (float32, CPU); `without="circle"` loads the world
    retrained without that shape (the ground truth of unlearning; shipped for circle, square and triangle)."""
    from ..models.bundle import DiffusionModel

    if without is not None:
        folder = retrained_world_dir(without)
    pipe = load_world_pipeline(folder)
    return DiffusionModel.from_pipeline(pipe, source=f"shapes world ({_weights(folder)})")


def load_classifier(folder: str | Path | None = None) -> ShapeClassifier:
    from safetensors.torch import load_file

    classifier = ShapeClassifier()
    classifier.load_state_dict(load_file(str(_weights(folder) / "classifier.safetensors")))
    return classifier.eval()


def training_report(folder: str | Path | None = None) -> dict[str, Any]:
    return json.loads((_weights(folder) / "training.json").read_text())


__all__ = [
    "ProbeSets",
    "SHAPES",
    "WEIGHTS_DIR",
    "ShapeClassifier",
    "caption",
    "concept_accuracy",
    "concept_prompt",
    "load_classifier",
    "load_world_model",
    "load_world_pipeline",
    "retrained_world_dir",
    "make_dataset",
    "probe_sets",
    "render",
    "sample_scene",
    "training_report",
]
