"""`PromptCheck`: does the concept's own prompt still draw the concept? A second stop condition.

Measured in this project (README, "Memory-aware erasure"): a memory loss can bring the memory
score down to the retrained world's level, on images it never trained on, while "a circle" still
draws circles 88% of the time. A low score after a loss that targets the score is not erasure.
So a monitor given a `PromptCheck` generates `n` images from `prompt` at every probe, lets
`judge` count the concept, and lets the target count as reached only when that share is at most
`max_success` as well (the issue's "concept accuracy from the prompt <= 0.1").

Cost per probe: n generations of `num_steps` DDIM steps with CFG (2 UNet evaluations each).
The share is a point estimate: at n = 16 one image moves it by 0.06, and the Wilson upper end
of 0 / 16 is 0.19, above 0.1, so a rule on the interval could never pass at this n.

Whether the prompt draws the concept depends on how one samples (docs/attacks.md, "Sampling
settings"), so `settings` (e.g. `unlearn_guard.sampling.WORLD_SETTINGS`, or "world") takes the
share under each setting, with the same seeds, and the check reads the worst (highest): the cost
is one check per setting. Without `settings`, the one setting DDIM at `guidance_scale`,
`num_steps`, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..attacks.concept_success import worst_case_prompt_success
from ..attacks.judges import judge_name
from ..attacks.results import WorstCaseSuccess
from ..errors import InputError
from ..sampling import SamplingSetting, as_settings
from ..validation import is_int, is_number

Judge = Callable[[Any], Any]  # images (N, 3, H, W) in [0, 1] -> N booleans (unlearn_guard.attacks.judges)


@dataclass(frozen=True)
class PromptCheck:
    """Generate from the concept's prompt and count what a judge calls the concept.

    Args:
        prompt: the erased concept's prompt, e.g. "a circle".
        judge: images (N, 3, H, W) in [0, 1] -> N booleans; `ShapeJudge("circle")` in the small
            world, a detector or a CLIP zero-shot judge for a real model.
        max_success: the target holds only when the share of generations the judge calls the
            concept is at most this.
        n: generations per probe (per setting); image i starts from seed `seed + i`.
        seed / num_steps / guidance_scale: the sampling (`unlearn_guard.attacks.prompt_success`), DDIM.
        settings: None (the one DDIM setting above) or sampling settings to take the worst case over:
            a set's name ("world", "standard") or SamplingSettings; these replace num_steps and
            guidance_scale.
    """

    prompt: str
    judge: Judge = field(repr=False, compare=False)
    max_success: float = 0.1
    n: int = 16
    seed: int = 20_000
    num_steps: int = 25
    guidance_scale: float = 4.0
    settings: tuple[SamplingSetting, ...] | None = None

    def __post_init__(self) -> None:
        if self.settings is not None:
            object.__setattr__(self, "settings", as_settings(self.settings, "PromptCheck field 'settings'"))
        for name, ok, expected in (
            ("prompt", isinstance(self.prompt, str) and self.prompt.strip() != "", "a non-empty prompt"),
            ("judge", callable(self.judge), "a callable images -> one bool per image"),
            ("max_success", is_number(self.max_success) and 0 <= self.max_success <= 1, "a number in [0, 1]"),
            ("n", is_int(self.n) and self.n >= 1, "an int >= 1"),
            ("seed", is_int(self.seed) and 0 <= self.seed < 2**62, "an int >= 0"),
            ("num_steps", is_int(self.num_steps) and self.num_steps >= 1, "an int >= 1"),
            ("guidance_scale", is_number(self.guidance_scale) and self.guidance_scale >= 1, "a number >= 1"),
        ):
            if not ok:
                shown = type(self.judge).__name__ if name == "judge" else repr(getattr(self, name))
                raise InputError(f"PromptCheck field {name!r}: got {shown}, expected {expected}")

    @property
    def sampling(self) -> tuple[SamplingSetting, ...]:
        """The settings each probe samples with: `settings`, or DDIM at guidance_scale / num_steps."""
        return self.settings or (SamplingSetting("ddim", self.guidance_scale, self.num_steps),)

    def measure(self, model: Any) -> WorstCaseSuccess:
        """The judged share of `n` generations from `prompt` under each setting, and the worst."""
        return worst_case_prompt_success(model, self.prompt, self.judge, self.sampling, self.n, seed=self.seed,
                                         keep_images=False)

    def success(self, model: Any) -> float:
        """The share of `n` generations from `prompt` that the judge calls the concept (the worst setting's)."""
        return self.measure(model).rate

    def passes(self, success: float | None) -> bool:
        """True when a measured share is at most `max_success` (None, not measured, never passes)."""
        return success is not None and success <= self.max_success

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields; the judge by name."""
        return {"prompt": self.prompt, "judge": judge_name(self.judge), "max_success": self.max_success, "n": self.n,
                "seed": self.seed, "num_steps": self.num_steps, "guidance_scale": self.guidance_scale,
                "settings": [setting.to_dict() for setting in self.sampling]}
