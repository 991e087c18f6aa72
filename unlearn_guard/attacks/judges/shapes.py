"""The small world's judge: the shipped shape classifier's top-1 answer."""

from __future__ import annotations

from typing import Any

import torch

from ...errors import InputError
from ...files import file_sha256
from ...provenance import package_version
from .base import JudgeOutput, ScoredJudge, judge_input


class ShapeJudge(ScoredJudge):
    """True where the shipped classifier's top-1 class is `shape`; score = its softmax probability.

    Args:
        shape: one of `unlearn_guard.world.SHAPES`.
        classifier: a `ShapeClassifier`; default the shipped one (`load_classifier()`).
    """

    def __init__(self, shape: str, classifier: torch.nn.Module | None = None) -> None:
        from ...world import SHAPES, load_classifier

        if shape not in SHAPES:
            raise InputError(f"shape: got {shape!r}; expected one of {SHAPES}")
        self.shape = shape
        self.label = SHAPES.index(shape)
        self.shipped = classifier is None
        self.classifier = load_classifier() if classifier is None else classifier

    def evaluate(self, images: torch.Tensor) -> JudgeOutput:
        """(N, 3, 32, 32) in [0, 1] -> verdicts (top-1 == shape) and the shape's probability."""
        images = judge_input(images, repr(self))
        device = next(self.classifier.parameters()).device
        probabilities = self.classifier.probabilities(images.to(device)).cpu()  # (N, len(SHAPES))
        return JudgeOutput(probabilities.argmax(dim=1) == self.label, probabilities[:, self.label])

    def describe(self) -> dict[str, Any]:
        from ...world import WEIGHTS_DIR

        return {"name": "shapes-world", "package": "unlearn_guard", "version": package_version("unlearn_guard"),
                "model": str(WEIGHTS_DIR / "classifier.safetensors") if self.shipped else "a ShapeClassifier in memory",
                "model_files": ({"classifier.safetensors": file_sha256(WEIGHTS_DIR / "classifier.safetensors")}
                                if self.shipped else {}),
                "threshold": None, "classes": [self.shape],
                "rule": f"the shape classifier's top-1 class is {self.shape!r}; score = its softmax probability"}

    def __repr__(self) -> str:
        return f"ShapeJudge({self.shape!r})"
