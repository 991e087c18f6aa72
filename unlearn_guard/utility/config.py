"""`UtilityConfig`: what the utility check measures, how much, and the bar a checkpoint must clear.

Two metrics, picked by what the config names:
  - shapes (the small world): the accuracy of the kept shapes' own prompts ("a square"), judged
    by the shipped classifier, checkpoint against base;
  - prompts (a real model): the CLIP score of generations from the prompts, checkpoint against base.
The utility figure is checkpoint / base under each sampling setting; the worst (lowest) counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

from ..sampling import STANDARD_SETTINGS, WORLD_SETTINGS, SamplingSetting, as_settings
from ..validation import is_int, is_number, require_field, require_known_fields

Metric = Literal["shape-accuracy", "clip-score"]

# Tuned on the small world (benchmarks/utility_check.py, tuning seeds; RESULTS.md "utility_check";
# docs/gate.md "Utility"): the midpoint between the highest worst-case ratio of a destroyed UNet
# (re-initialised or zeroed) and the lowest of a world retrained without one shape, rounded down to
# a multiple of 0.05. A destroyed UNet does not reach 0: its prompt-blind images still fall into
# some kept shape's class, about 1 / (kept shapes) of the time.
DEFAULT_MIN_RATIO_SHAPES = 0.55
# Not tuned here (no real model in this project): a CLIP score that keeps 90% of the base's. Choose
# it from your base model's own spread across seeds before gating on it.
DEFAULT_MIN_RATIO_CLIP = 0.9
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"


@dataclass(frozen=True)
class UtilityConfig:
    """What to measure: kept `shapes` (small world) or `prompts` (CLIP score), exactly one of them.

    Args:
        shapes: the world's kept shapes (`UtilityConfig.for_world("circle")`: all but the erased one).
        prompts: prompts for the CLIP score of a real model (e.g. a COCO caption sample).
        n: generations per shape or prompt, per setting; image i of item k starts from seed
            `seed + k * n + i`, the same for checkpoint and base (paired).
        seed: the first seed.
        settings: sampling settings (a set's name or SamplingSettings); default "world" for
            shapes, "standard" for prompts. The worst (lowest) ratio over them decides.
        min_ratio: the checkpoint passes when its worst-case ratio to the base is at least this;
            default DEFAULT_MIN_RATIO_SHAPES / DEFAULT_MIN_RATIO_CLIP by metric.
        clip_model: hub id or local folder of a CLIPModel + CLIPProcessor (prompts only).
        batch_size / confidence: images per UNet call; the Wilson intervals' level.
    """

    shapes: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    n: int = 32
    seed: int = 0
    settings: tuple[SamplingSetting, ...] | str | None = None
    min_ratio: float | None = None
    clip_model: str = DEFAULT_CLIP_MODEL
    batch_size: int = 64
    confidence: float = 0.95

    def __post_init__(self) -> None:
        from ..world import SHAPES

        set_ = object.__setattr__
        for name in ("shapes", "prompts"):
            value = getattr(self, name)
            require_field("UtilityConfig", isinstance(value, (tuple, list)) and all(isinstance(v, str) and v.strip()
                                                                                  for v in value),
                          name, value, "a tuple of non-empty strings")
            set_(self, name, tuple(value))
        require_field("UtilityConfig", bool(self.shapes) != bool(self.prompts), "shapes/prompts",
                      (self.shapes, self.prompts), "exactly one of them non-empty (world shapes or CLIP prompts)")
        unknown = [s for s in self.shapes if s not in SHAPES]
        require_field("UtilityConfig", not unknown, "shapes", self.shapes, f"shapes among {SHAPES}")
        require_field("UtilityConfig", len(set(self.shapes)) == len(self.shapes), "shapes", self.shapes,
                      "distinct shapes")
        require_field("UtilityConfig", is_int(self.n) and self.n >= 1, "n", self.n, "an int >= 1")
        require_field("UtilityConfig", is_int(self.seed) and 0 <= self.seed < 2**62, "seed", self.seed, "an int >= 0")
        require_field("UtilityConfig", is_int(self.batch_size) and self.batch_size >= 1, "batch_size",
                      self.batch_size, "an int >= 1")
        require_field("UtilityConfig", is_number(self.confidence) and 0 < self.confidence < 1, "confidence",
                      self.confidence, "a number in (0, 1)")
        require_field("UtilityConfig", isinstance(self.clip_model, str) and self.clip_model.strip() != "",
                      "clip_model", self.clip_model, "a hub id or a local folder")
        default_settings = WORLD_SETTINGS if self.shapes else STANDARD_SETTINGS
        set_(self, "settings", default_settings if self.settings is None
             else as_settings(self.settings, "UtilityConfig field 'settings'"))
        if self.min_ratio is None:
            set_(self, "min_ratio", DEFAULT_MIN_RATIO_SHAPES if self.shapes else DEFAULT_MIN_RATIO_CLIP)
        require_field("UtilityConfig", is_number(self.min_ratio) and 0 <= self.min_ratio <= 1, "min_ratio",
                      self.min_ratio, "a number in [0, 1]")

    @classmethod
    def for_world(cls, erased: str, **fields: Any) -> "UtilityConfig":
        """The small world's check for a checkpoint that erased `erased`: every other shape is kept."""
        from ..errors import InputError
        from ..world import SHAPES

        if erased not in SHAPES:
            raise InputError(f"erased: got {erased!r}; expected one of {SHAPES}")
        return cls(shapes=tuple(s for s in SHAPES if s != erased), **fields)

    @property
    def metric(self) -> Metric:
        return "shape-accuracy" if self.shapes else "clip-score"

    @property
    def items(self) -> tuple[str, ...]:
        """The shapes or the prompts, in order."""
        return self.shapes or self.prompts

    def measured_with(self) -> dict[str, Any]:
        """What fixes the generations and scores: two measurements compare only when this agrees."""
        data = self.to_dict()
        for key in ("min_ratio", "batch_size"):  # the bar and the chunk size change no score
            data.pop(key)
        if self.shapes:
            data.pop("clip_model")
        return data

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "shapes": list(self.shapes), "prompts": list(self.prompts), "n": self.n,
                "seed": self.seed, "settings": [s.to_dict() for s in self.settings], "min_ratio": self.min_ratio,
                "clip_model": self.clip_model, "batch_size": self.batch_size, "confidence": self.confidence}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UtilityConfig":
        data = {k: v for k, v in data.items() if k != "metric"}
        require_known_fields(cls, data)
        settings = data.get("settings")
        if isinstance(settings, list):
            data = {**data, "settings": tuple(SamplingSetting.from_dict(s) if isinstance(s, Mapping) else s
                                              for s in settings)}
        return cls(**{k: tuple(v) if k in ("shapes", "prompts") else v for k, v in data.items()})
