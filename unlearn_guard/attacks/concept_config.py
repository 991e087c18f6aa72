"""The settings of one Concept Inversion run (SPEC 7): a frozen dataclass that validates itself
and round-trips through JSON (`to_dict` / `from_dict`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..validation import is_int, is_number, require_field, require_known_fields


@dataclass(frozen=True)
class ConceptInversionConfig:
    """Settings of one Concept Inversion run.

    Args:
        token: the new token's name (the key in the saved file; what a prompt writes), e.g. "<concept>".
        init_token: the word whose embedding row v* starts from; must be one token of the model's
            tokenizer. The paper starts from a generic word ("art" for styles). A word outside the
            vocabulary starts from the unknown token's row (a warning says so).
        templates: prompts with one "{}" where the token goes; drawn uniformly per image and step.
        steps: optimiser steps. The default, 300, is the small world's measured budget
            (benchmarks/concept_inversion_attack.py); the paper ran 5000 on SD 1.4: raise it for real models.
        lr: AdamW learning rate on v* (the paper: 0.005 scaled by batch 4 x accumulation 4 = 0.08 for ESD).
        batch_size: images per step (drawn with replacement from the training images).
        weight_decay: AdamW weight decay (diffusers' textual inversion default, 1e-2).
        seed: fixes every draw (batches, templates, VAE samples, timesteps, noise).
        progress: a tqdm bar over the steps, with the running loss.
    """

    token: str = "<concept>"
    init_token: str = "shape"
    templates: tuple[str, ...] = ("a {}",)
    steps: int = 300
    lr: float = 5e-3
    batch_size: int = 8
    weight_decay: float = 1e-2
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        require_field("config", isinstance(self.token, str) and self.token.strip() == self.token and self.token != ""
                 and " " not in self.token, "token", self.token, "a non-empty name without spaces, e.g. '<concept>'")
        require_field("config", isinstance(self.init_token, str) and self.init_token.strip() != "" and " " not in self.init_token.strip(),
                 "init_token", self.init_token, "one word")
        templates = (self.templates,) if isinstance(self.templates, str) else tuple(self.templates)
        require_field("config", len(templates) >= 1 and all(isinstance(t, str) and t.count("{}") == 1 for t in templates),
                 "templates", self.templates, "prompts with exactly one '{}' each, e.g. ('a {}',)")
        object.__setattr__(self, "templates", templates)
        require_field("config", is_int(self.steps) and self.steps >= 1, "steps", self.steps, "an int >= 1")
        require_field("config", is_number(self.lr) and self.lr > 0, "lr", self.lr, "a finite number > 0")
        require_field("config", is_int(self.batch_size) and self.batch_size >= 1, "batch_size", self.batch_size, "an int >= 1")
        require_field("config", is_number(self.weight_decay) and self.weight_decay >= 0, "weight_decay", self.weight_decay,
                 "a finite number >= 0")
        require_field("config", is_int(self.seed) and 0 <= self.seed < 2**63, "seed", self.seed, "an int in [0, 2**63)")

    def replace(self, **changes: Any) -> "ConceptInversionConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise InputError(f"ConceptInversionConfig has no field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["templates"] = list(self.templates)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConceptInversionConfig":
        require_known_fields(cls, data)
        return cls(**{k: tuple(v) if k == "templates" else v for k, v in data.items()})
