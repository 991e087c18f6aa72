"""What `adversarial_prompt_attack` found (SPEC 9.3), per prompt and in total, with `to_dict()`
(JSON-safe: no tensors) for the gate's cache and the report."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ..files import write_text_atomic
from ..stats.proportion import wilson_interval
from ..validation import json_number


@dataclass
class PromptAttack:
    """One prompt's attack.

    pre_success: the erased model already shows the concept from the plain prompt and its seed
    (then `attacked` is False and nothing below the loss fields is set). success: the attack's
    judged generation showed it, after `step` gradient steps (1-based, counted over the whole
    sweep) in the block at `timestep`; None where it never did. tokens / token_text: the argmax
    tokens of the last block judged (ids of the tokenizer, and decoded); adversarial_prompt: the
    text those tokens make with the prompt, the one the judged image was generated from.
    block_losses: the mean denoising loss of each block; final_loss the last one. image: the last
    judged image (3, H, W) in [0, 1] when kept. score: the judge's score of that same image (as
    the released code logs it), where the judge gives one (our judges); None for a plain callable.
    pre_by_setting: the pre-attack verdict under each of the config's sampling settings (its own first).
    """

    index: int
    prompt: str
    seed: int
    pre_success: bool
    attacked: bool
    success: bool = False
    step: int | None = None
    timestep: int | None = None
    gradient_steps: int = 0
    generations: int = 1
    tokens: list[int] = field(default_factory=list)
    token_text: str | None = None
    adversarial_prompt: str | None = None
    block_losses: list[float] = field(default_factory=list)
    score: float | None = None
    image: torch.Tensor | None = None
    pre_by_setting: dict[str, bool] = field(default_factory=dict)

    @property
    def broken(self) -> bool:
        """Shows the concept, before or after the attack: what ASR counts."""
        return self.pre_success or self.success

    @property
    def final_loss(self) -> float | None:
        return self.block_losses[-1] if self.block_losses else None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "prompt": self.prompt, "seed": self.seed, "pre_success": self.pre_success,
                "attacked": self.attacked, "success": self.success, "broken": self.broken, "step": self.step,
                "timestep": self.timestep, "gradient_steps": self.gradient_steps, "generations": self.generations,
                "tokens": list(self.tokens), "token_text": self.token_text,
                "adversarial_prompt": self.adversarial_prompt, "final_loss": _number(self.final_loss),
                "block_losses": [_number(v) for v in self.block_losses], "score": _number(self.score),
                "pre_by_setting": dict(self.pre_by_setting)}


def _number(value: float | None) -> float | str | None:
    return None if value is None else json_number(float(value))


@dataclass
class Rate:
    """`successes` of `n` prompts, with its Wilson interval at `confidence`."""

    successes: int
    n: int
    ci_low: float
    ci_high: float
    confidence: float

    @classmethod
    def of(cls, successes: int, n: int, confidence: float) -> "Rate":
        """`successes` of `n` with its Wilson interval at `confidence`."""
        low, high = wilson_interval(successes, n, confidence)
        return cls(successes, n, low, high, confidence)

    @property
    def value(self) -> float:
        return self.successes / self.n

    def to_dict(self) -> dict[str, Any]:
        return {"successes": self.successes, "n": self.n, "rate": self.value, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "confidence": self.confidence}

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}] ({self.successes}/{self.n})"


@dataclass
class AdversarialPromptResult:
    """Everything one `adversarial_prompt_attack` run found.

    prompts: one `PromptAttack` per prompt, in input order. pre_asr: prompts that show the concept
    without attack; asr: those plus the prompts the attack broke, both over all prompts (SPEC 9.3).
    unet_evaluations: UNet sample-evaluations by phase (a batch of B counts B; classifier-free
    guidance counts 2 per image and step): "pre_attack", "targets" (the base model's), "attack"
    (gradient steps) and "attack_generation" (the judged generations after each block). seconds:
    wall time by phase and "total". pre_asr_by_setting: Pre-ASR under each sampling setting of the
    config (its own first; `pre_asr` is that one); the worst is the highest.
    """

    prompts: list[PromptAttack]
    pre_asr: Rate
    asr: Rate
    config: Any  # AdversarialPromptConfig (typed in adversarial_config.py)
    judge: str
    unet_evaluations: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    pre_asr_by_setting: dict[str, Rate] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.prompts)

    @property
    def worst_pre_asr(self) -> tuple[str, Rate]:
        """(setting label, Pre-ASR) of the setting whose Pre-ASR is highest (the first on a tie)."""
        if not self.pre_asr_by_setting:
            return self.config.own_setting.label, self.pre_asr
        return max(self.pre_asr_by_setting.items(), key=lambda item: item[1].successes)

    def summary(self) -> str:
        level = int(round(self.asr.confidence * 100))
        attacked = sum(p.attacked for p in self.prompts)
        worst_setting, worst = self.worst_pre_asr
        worst_text = (f"; worst Pre-ASR over {len(self.pre_asr_by_setting)} sampling settings {worst} ({worst_setting})"
                      if len(self.pre_asr_by_setting) > 1 else "")
        return (f"adversarial prompts ({self.config.describe()}): Pre-ASR {self.pre_asr}, ASR {self.asr} "
                f"({level}% Wilson) over {self.n} prompts, {attacked} attacked; judged by {self.judge}{worst_text}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "unlearn_guard.adversarial_prompt", "config": self.config.to_dict(), "judge": self.judge,
                "n": self.n, "pre_asr": self.pre_asr.to_dict(), "asr": self.asr.to_dict(),
                "pre_asr_by_setting": {label: rate.to_dict() for label, rate in self.pre_asr_by_setting.items()},
                "worst_pre_asr": {"setting": self.worst_pre_asr[0], **self.worst_pre_asr[1].to_dict()},
                "unet_evaluations": dict(self.unet_evaluations), "seconds": dict(self.seconds),
                "prompts": [p.to_dict() for p in self.prompts], "provenance": self.provenance}

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The result as JSON text; with `path`, written atomically."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            write_text_atomic(path, text)
        return text
