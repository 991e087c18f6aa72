"""CLIP zero-shot as a judge: the concept's text beats every alternative on the image.

Each image is scored against the prompts `template.format(concept)` and
`template.format(alternative)` for every alternative; CLIP's image-text logits (cosine similarity
times its learned scale) go through a softmax over those prompts. The concept is present when its
prompt has the highest logit; its score is its softmax probability among them, so the score
depends on the alternatives chosen (a report should list them: `describe()` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ...provenance import package_version
from ...validation import require_field
from .base import JudgeConfig, JudgeOutput, ScoredJudge, judge_input, uint8_hwc
from .pretrained import PretrainedParts

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"


@dataclass(frozen=True)
class ClipZeroShotConfig(JudgeConfig):
    """The CLIP judge's rule.

    Args:
        concept: what to detect, e.g. "Van Gogh style painting" (put into `template`).
        alternatives: at least one other text it must beat, e.g. ("painting", "photo").
        template: a prompt with one "{}" for each text (default "a photo of {}").
        model: a hub id (default openai/clip-vit-large-patch14) or a folder with a CLIPModel and
            its CLIPProcessor.
        local_files_only: read a hub id from the local Hugging Face cache only (no download).
    """

    concept: str
    alternatives: tuple[str, ...]
    template: str = "a photo of {}"
    model: str = DEFAULT_CLIP_MODEL
    local_files_only: bool = True

    def __post_init__(self) -> None:
        def text(value: Any) -> bool:
            return isinstance(value, str) and value.strip() != ""

        require_field("ClipZeroShotConfig", text(self.concept), "concept", self.concept, "a non-empty text")
        alternatives = (self.alternatives,) if isinstance(self.alternatives, str) else tuple(self.alternatives)
        require_field("ClipZeroShotConfig", len(alternatives) >= 1 and all(text(a) for a in alternatives)
                      and len({*alternatives, self.concept}) == len(alternatives) + 1, "alternatives",
                      self.alternatives, "at least one non-empty text, all distinct and different from the concept")
        object.__setattr__(self, "alternatives", alternatives)
        require_field("ClipZeroShotConfig", isinstance(self.template, str) and self.template.count("{}") == 1,
                      "template", self.template, "a prompt with exactly one '{}', e.g. 'a photo of {}'")
        require_field("ClipZeroShotConfig", isinstance(self.model, str) and self.model != "", "model", self.model,
                      "a hub id or a folder")
        require_field("ClipZeroShotConfig", isinstance(self.local_files_only, bool), "local_files_only",
                      self.local_files_only, "a bool")

    @property
    def prompts(self) -> list[str]:
        """The concept's prompt first, then the alternatives' ones."""
        return [self.template.format(t) for t in (self.concept, *self.alternatives)]


class ClipZeroShotJudge(ScoredJudge):
    """True where the concept's prompt has CLIP's highest image-text logit among concept + alternatives.

    Args:
        config: a `ClipZeroShotConfig`.
        device: where CLIP runs.
    """

    def __init__(self, config: ClipZeroShotConfig, *, device: str | torch.device = "cpu") -> None:
        from transformers import CLIPModel, CLIPProcessor

        self.config = config
        self.parts = PretrainedParts(CLIPModel, CLIPProcessor, config.model, what="ClipZeroShotJudge model",
                                     local_files_only=config.local_files_only, device=device)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 1 + len(alternatives)) softmax over the prompts (concept first)."""
        images = judge_input(images, repr(self))
        inputs = self.parts.processor(text=self.config.prompts, images=list(uint8_hwc(images)), return_tensors="pt",
                                      padding=True, input_data_format="channels_last")
        inputs = {k: v.to(self.parts.device) for k, v in inputs.items()}
        return self.parts.model(**inputs).logits_per_image.float().softmax(dim=-1).cpu()  # (N, prompts)

    def evaluate(self, images: torch.Tensor) -> JudgeOutput:
        probabilities = self.probabilities(images)  # (N, 1 + alternatives), the concept first
        return JudgeOutput(probabilities[:, 0] > probabilities[:, 1:].amax(dim=-1), probabilities[:, 0])

    def describe(self) -> dict[str, Any]:
        return {"name": "clip", "package": "transformers", "version": package_version("transformers"),
                **self.parts.record(), "threshold": None, "classes": self.config.prompts,
                "rule": "the concept's prompt has the highest image-text logit; score = its softmax probability "
                        "among concept and alternatives",
                "config": self.config.to_dict()}

    def __repr__(self) -> str:
        config = self.config
        return f"ClipZeroShotJudge({config.concept!r} vs {list(config.alternatives)}, model={config.model!r})"
