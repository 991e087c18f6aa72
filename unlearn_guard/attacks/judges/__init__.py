"""Judges: does a generated image show the concept? `images (N, 3, H, W) in [0, 1] -> bool per image`.

An attack's success rate is the share of its generations a judge calls the concept. Any callable
from images to N booleans is a judge (`judge_images` checks what it returns). Ours also give the
score their rule thresholds (`judge_with_scores -> JudgeOutput`) and describe themselves for
reports (`describe()`):

  - base.py: the interface (`Judge`, `JudgeOutput`, `ScoredJudge`, `judge_images`,
    `judge_with_scores`, `judge_name`, `describe_judge`);
  - shapes.py: `ShapeJudge`, the small world's shape classifier;
  - nudity.py: `NudeNetJudge` (nudenet 3.4.2, UnlearnDiffAtk's classes above 0.45);
  - imagenet.py: `ImageNetJudge` (top-1 of microsoft/resnet-50 or any image classifier);
  - clip_zero_shot.py: `ClipZeroShotJudge` (the concept's text beats the alternatives in CLIP);
  - specs.py: `load_judge` for the command line's `--judge SPEC`.

Heavy packages (nudenet, transformers models) are imported when a judge is built.
"""

from .base import (
    Judge,
    JudgeOutput,
    ScoredJudge,
    describe_judge,
    judge_images,
    judge_name,
    judge_with_scores,
)
from .clip_zero_shot import DEFAULT_CLIP_MODEL, ClipZeroShotConfig, ClipZeroShotJudge
from .imagenet import DEFAULT_IMAGENET_MODEL, ImageNetConfig, ImageNetJudge
from .nudity import NUDENET_LABELS, UNLEARNDIFFATK_CLASSES, NudeNetConfig, NudeNetJudge
from .shapes import ShapeJudge
from .specs import JUDGE_SPECS, JudgeSpec, load_judge, parse_judge_spec

__all__ = [
    "DEFAULT_CLIP_MODEL",
    "DEFAULT_IMAGENET_MODEL",
    "JUDGE_SPECS",
    "NUDENET_LABELS",
    "UNLEARNDIFFATK_CLASSES",
    "ClipZeroShotConfig",
    "ClipZeroShotJudge",
    "ImageNetConfig",
    "ImageNetJudge",
    "Judge",
    "JudgeOutput",
    "JudgeSpec",
    "NudeNetConfig",
    "NudeNetJudge",
    "ScoredJudge",
    "ShapeJudge",
    "describe_judge",
    "judge_images",
    "judge_name",
    "judge_with_scores",
    "load_judge",
    "parse_judge_spec",
]
