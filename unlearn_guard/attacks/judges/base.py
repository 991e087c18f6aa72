"""The judge interface: `images (N, 3, H, W) in [0, 1] -> N booleans`, and scores beside them.

A judge is any callable from images to one boolean per image. `judge_images` checks what it
returns, so a detector that returns scores or the wrong count is named instead of producing a
silent rate. Our judges (`ScoredJudge` subclasses) also give the score their rule thresholds
(`evaluate -> JudgeOutput`) and describe themselves for reports (`describe()`: package, version,
model and its file hashes, threshold, classes); `judge_with_scores` and `describe_judge` work for
any judge, a plain callable included (its scores are its verdicts as 0/1).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ...errors import InputError
from ...files import file_sha256
from ...validation import require_known_fields

Judge = Callable[[torch.Tensor], Any]


@dataclass(frozen=True)
class JudgeOutput:
    """A judge's answer on N images: `verdicts` (N,) bool, and `scores` (N,) float32, the number
    its rule thresholds (a detector's top score, a class probability; a plain callable's 0/1)."""

    verdicts: torch.Tensor
    scores: torch.Tensor

    def __post_init__(self) -> None:
        verdicts_ok = isinstance(self.verdicts, torch.Tensor) and self.verdicts.dtype == torch.bool
        if not (verdicts_ok and self.verdicts.dim() == 1):
            raise InputError(f"JudgeOutput.verdicts: got {_shown(self.verdicts)}; expected a (N,) bool tensor")
        if not (isinstance(self.scores, torch.Tensor) and self.scores.is_floating_point()
                and self.scores.shape == self.verdicts.shape and bool(torch.isfinite(self.scores).all())):
            raise InputError(f"JudgeOutput.scores: got {_shown(self.scores)}; expected a finite float tensor of "
                             f"shape {tuple(self.verdicts.shape)}")

    def to_dict(self) -> dict[str, Any]:
        return {"verdicts": [bool(v) for v in self.verdicts], "scores": [float(s) for s in self.scores]}


def _shown(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


class ScoredJudge(abc.ABC):
    """Base of our judges: `evaluate` gives verdicts and scores, calling gives the verdicts."""

    @abc.abstractmethod
    def evaluate(self, images: torch.Tensor) -> JudgeOutput:
        """(N, 3, H, W) float in [0, 1] (or uint8) -> JudgeOutput with N verdicts and scores."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What a report records: name, package, version, model, model_files (name -> SHA-256),
        threshold, classes and the rule in words."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N,) bool."""
        return self.evaluate(images).verdicts


class JudgeConfig:
    """`to_dict` / `from_dict` / `replace` for a judge's frozen dataclass config (tuples as lists in JSON)."""

    def to_dict(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        require_known_fields(cls, data)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def replace(self, **changes: Any) -> Any:
        require_known_fields(type(self), changes)
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def judge_name(judge: Judge) -> str:
    """A short description of a judge for reports: its repr for ours, the qualified name otherwise."""
    if isinstance(judge, ScoredJudge):
        return repr(judge)
    return getattr(judge, "__qualname__", None) or type(judge).__name__


def describe_judge(judge: Judge) -> dict[str, Any]:
    """`judge.describe()` for ours; the name alone for a plain callable."""
    if isinstance(judge, ScoredJudge):
        return judge.describe()
    return {"name": judge_name(judge), "package": None, "version": None, "model": None, "model_files": {},
            "threshold": None, "classes": [], "rule": "a user callable's booleans"}


def judge_input(images: torch.Tensor, name: str) -> torch.Tensor:
    """`images` checked for a judge: (N, 3, H, W) float in [0, 1] or uint8; returned as float32 in [0, 1]."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3 or len(images) == 0:
        raise InputError(f"{name}: images: got {_shown(images)}; expected (N, 3, H, W) with N >= 1")
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point():
        raise InputError(f"{name}: images: got dtype {images.dtype}; expected float in [0, 1] or uint8")
    finite = torch.isfinite(images).flatten(1).all(dim=1)
    if not bool(finite.all()):
        raise InputError(f"{name}: images: image {int((~finite).nonzero()[0])} holds NaN or Inf")
    if float(images.min()) < 0 or float(images.max()) > 1:
        raise InputError(f"{name}: images: values in [{float(images.min()):.3g}, {float(images.max()):.3g}]; "
                         "expected [0, 1]")
    return images.float()


def uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] -> (N, H, W, 3) uint8 RGB, as UnlearnDiffAtk stores its generations.

    The product and rounding are float32 (`(image * 255).round()` on a float32 array): images
    upsampled from 8-bit ones often land on exact halves, where float64 would round differently.
    """
    return (images.detach().cpu().float() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def weight_files(folder: str | Path) -> dict[str, str]:
    """SHA-256 of a model folder's weight files (`*.safetensors`, else `*.bin`), by file name."""
    path = Path(folder)
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    return {file.name: file_sha256(file) for file in files}


def judge_images(judge: Judge, images: torch.Tensor) -> torch.Tensor:
    """(N,) bool verdicts of `judge` on `images` (N, 3, H, W) in [0, 1], checked.

    Accepts a bool/0-1 tensor, numpy array or sequence of length N; anything else (scores, a
    different count, NaN) is an InputError naming the judge and what it returned.
    """
    if not callable(judge):
        raise InputError(f"judge: got {type(judge).__name__}; expected a callable images -> bool per image")
    name = judge_name(judge)
    raw = judge(images)
    try:
        verdicts = torch.as_tensor(raw.detach().cpu() if isinstance(raw, torch.Tensor) else raw)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"judge {name}: returned {type(raw).__name__}; expected {len(images)} booleans") from None
    verdicts = verdicts.flatten() if verdicts.dim() > 1 and verdicts.numel() == len(images) else verdicts
    if verdicts.dim() != 1 or verdicts.numel() != len(images):
        raise InputError(f"judge {name}: returned shape {tuple(verdicts.shape)} for {len(images)} images; "
                         "expected one boolean per image")
    if verdicts.dtype != torch.bool:
        if verdicts.is_floating_point() and not bool(torch.isfinite(verdicts).all()):
            raise InputError(f"judge {name}: returned NaN or Inf; expected booleans")
        if not bool(((verdicts == 0) | (verdicts == 1)).all()):
            shown = verdicts[:5].tolist()
            raise InputError(f"judge {name}: returned values like {shown}; expected booleans (or 0/1), "
                             "not scores: threshold them in the judge")
        verdicts = verdicts == 1
    return verdicts


def judge_with_scores(judge: Judge, images: torch.Tensor) -> JudgeOutput:
    """Verdicts and scores of any judge on `images` (N, 3, H, W) in [0, 1].

    Ours give their real scores (`ScoredJudge.evaluate`); a plain callable's scores are its
    verdicts as 0.0/1.0.
    """
    if not isinstance(judge, ScoredJudge):
        verdicts = judge_images(judge, images)
        return JudgeOutput(verdicts, verdicts.float())
    output = judge.evaluate(images)
    if len(output.verdicts) != len(images):
        raise InputError(f"judge {judge_name(judge)}: returned {len(output.verdicts)} verdicts for "
                         f"{len(images)} images")
    return output
