"""The gate's attacks beyond the single-memory probe: settings, and one cached record part each.

`--attacks memory,multi-memory,concept-inversion,adversarial-prompt` (memory, the default, is the
probe the gate has always run). Each attack writes its own part of a checkpoint's record, cached on its own key, and
has its own threshold (`decision.Thresholds`):
  - multi-memory (`unlearn_guard.attacks.find_memories`): record["multi_memory"] holds the search
    config, the summary (distinct memories per image, cosine distances), the best-of-M memory score,
    per image its memories and cosine matrix, and thumbnails (query | each memory's reconstruction).
  - concept-inversion (`concept_inversion` + `attack_success`): record["concept_inversion"] holds
    the config, the judge, the attack's success rate with its Wilson interval, the plain prompts'
    rate beside it, the learned token's summary, where it was saved, and thumbnails of the
    generations with the judge's verdict.
  - adversarial-prompt (`adversarial_prompt_attack`, UnlearnDiffAtk): record["adversarial_prompt"]
    (gate/adversarial.py) holds the config, the judge, Pre-ASR and ASR, and per prompt its outcome,
    adversarial prompt and a thumbnail of the judged image.
  - utility (`unlearn_guard.utility`, not an attack: did the erasure keep the rest of the model?):
    record["utility"] (gate/utility.py) is the `UtilityResult` against the base model.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..attacks.adversarial_config import AdversarialPromptConfig
from ..attacks.concept_inversion import ConceptInversionConfig, attack_success, concept_inversion, prompt_success
from ..attacks.judges import JUDGE_SPECS, Judge
from ..attacks.memories import MemorySearchConfig
from ..attacks.results import MemorySearchResult
from ..errors import InputError
from ..io import ImageSet
from ..utility.config import UtilityConfig
from .decision import ATTACKS

CONCEPT_INVERSION_DIR = "concept_inversion"  # OUTPUT/concept_inversion/<checkpoint>/learned_embeds.safetensors


def parse_attacks(text: str | None) -> tuple[str, ...]:
    """`memory,concept-inversion` -> ("memory", "concept-inversion"); InputError naming unknown names."""
    if text is None:
        return ("memory",)
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    unknown = [name for name in names if name not in ATTACKS]
    if not names or unknown:
        raise InputError(f"--attacks: got {text!r}; expected a comma list of {', '.join(ATTACKS)} (default: memory)")
    return tuple(dict.fromkeys(names))  # order kept, repeats dropped


@dataclass(frozen=True)
class AttackSettings:
    """Which attacks run and how.

    Args:
        attacks: names from `ATTACKS`, in order.
        support_images: folder of other content for multi-memory (the first M - 1 images are used).
        search: the multi-memory search (M, fidelity, variant).
        concept_inversion: the textual-inversion settings (steps, lr, init token, templates).
        judge: the judge's spec for concept-inversion (`load_judge`: shapes-world:SHAPE, nudenet, imagenet:CLASS,
            clip:CONCEPT|ALT, module:callable).
        generations: images generated with the learned token (and with the plain prompts) per checkpoint.
        adversarial: the adversarial-prompt attack's settings; None until `GateConfig` picks the preset
            that fits its model (`world` for the shipped world, else `unlearndiffatk`). Its seed is
            replaced by the probe config's when the attack runs.
        adversarial_prompts: CSV of prompts with seeds for adversarial-prompt (`read_prompt_seeds`).
        adversarial_targets: folder of target images, one per prompt (`load_target_images`); None: the
            base model generates them from each prompt and seed.
        utility: the utility check's config (`UtilityConfig.for_world(erased)` in the small world,
            `UtilityConfig(prompts=...)` for a real model); its `min_ratio` follows the gate's
            `min_utility` threshold.
    """

    attacks: tuple[str, ...] = ("memory",)
    support_images: Path | None = None
    search: MemorySearchConfig = field(default_factory=MemorySearchConfig)
    concept_inversion: ConceptInversionConfig = field(default_factory=ConceptInversionConfig)
    judge: str | None = None
    generations: int = 32
    adversarial: AdversarialPromptConfig | None = None
    adversarial_prompts: Path | None = None
    adversarial_targets: Path | None = None
    utility: UtilityConfig | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "attacks", parse_attacks(",".join(self.attacks)))
        if "multi-memory" in self.attacks:
            if self.support_images is None:
                raise InputError("--attacks multi-memory needs --support-images FOLDER (images of other content; "
                                 "memory j >= 1 of each concept image starts from support image j)")
            if self.search.memories < 2:
                raise InputError(f"--memories: got {self.search.memories}; multi-memory needs at least 2 (the image's "
                                 "own seed and one found from a support image)")
        for attack in ("concept-inversion", "adversarial-prompt"):
            if attack in self.attacks and not self.judge:
                raise InputError(f"--attacks {attack} needs --judge: {JUDGE_SPECS}")
        if "adversarial-prompt" in self.attacks and self.adversarial_prompts is None:
            raise InputError("--attacks adversarial-prompt needs --adv-prompts CSV (a prompt column and a seed or "
                             "evaluation_seed column: the prompts to attack and their generation seeds)")
        if "utility" in self.attacks and not isinstance(self.utility, UtilityConfig):
            raise InputError("--attacks utility needs --utility-erased SHAPE (the small world: the kept shapes' "
                             "accuracy) or --utility-prompts FILE (a real model: the CLIP score of its prompts)")
        if self.adversarial is not None and not isinstance(self.adversarial, AdversarialPromptConfig):
            raise InputError(f"adversarial: got {type(self.adversarial).__name__}; expected an AdversarialPromptConfig")
        if isinstance(self.generations, bool) or not isinstance(self.generations, int) or self.generations < 1:
            raise InputError(f"--ci-generations: got {self.generations!r}; expected an int >= 1")

    def key_for(self, attack: str) -> dict[str, Any]:
        """What an attack's cached part depends on besides the model, the images and the probe config."""
        if attack == "multi-memory":
            return {"attack": attack, "search": self.search.to_dict()}
        if attack == "concept-inversion":
            return {"attack": attack, "concept_inversion": self.concept_inversion.to_dict(), "judge": self.judge,
                    "generations": self.generations}
        if attack == "adversarial-prompt":  # batch size and kept images change no number (batch equals singles)
            config = {k: v for k, v in (self.adversarial or AdversarialPromptConfig()).to_dict().items()
                      if k not in ("batch_size", "keep_images")}
            return {"attack": attack, "adversarial": config, "judge": self.judge}
        if attack == "utility":  # the bar (min_ratio) and the chunk size change no score
            return {"attack": attack, "utility": self.utility.measured_with()}
        return {"attack": attack}

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"attacks": list(self.attacks)}
        if "multi-memory" in self.attacks:
            data["multi_memory"] = {"support_images": str(self.support_images), **self.search.to_dict()}
        if "concept-inversion" in self.attacks:
            data["concept_inversion"] = {**self.concept_inversion.to_dict(), "judge": self.judge,
                                         "generations": self.generations}
        if "adversarial-prompt" in self.attacks:
            data["adversarial_prompt"] = {**(self.adversarial or AdversarialPromptConfig()).to_dict(),
                                          "judge": self.judge, "prompts": str(self.adversarial_prompts),
                                          "targets": None if self.adversarial_targets is None
                                          else str(self.adversarial_targets)}
        if "utility" in self.attacks:
            data["utility"] = self.utility.to_dict()
        return data

    def replace(self, **changes: Any) -> "AttackSettings":
        return dataclasses.replace(self, **changes)


def multi_memory_part(result: MemorySearchResult, concept: ImageSet, thumbnails: int) -> dict[str, Any]:
    """record["multi_memory"]: the search's result without the probe, plus thumbnails per image."""
    from ..report.images import png_base64

    part = result.to_dict(include_probe=False)
    rows = []
    reconstructions = result.reconstructions
    if reconstructions is not None:
        for i in range(min(thumbnails, len(result.images))):
            rows.append({"name": concept.names[i], "image": png_base64((concept.pixels[i] + 1) / 2),
                         "memories": [png_base64(reconstructions[i, j]) for j in range(reconstructions.shape[1])]})
    part["thumbnails"] = rows
    return part


def concept_inversion_part(model: Any, concept: ImageSet, settings: AttackSettings, judge: Judge, seed: int,
                           thumbnails: int, save_to: Path | None) -> dict[str, Any]:
    """record["concept_inversion"]: learn the token on the concept images, generate with it and with the
    concept images' own prompts, judge both; save the token to `save_to` (diffusers' format)."""
    from ..report.images import png_base64

    started = time.perf_counter()
    config = settings.concept_inversion.replace(seed=seed)
    learned = concept_inversion(model, concept, config)
    attack = attack_success(model, learned, judge, n=settings.generations, seed=seed)
    baseline = prompt_success(model, list(dict.fromkeys(concept.prompts)), judge, n=settings.generations, seed=seed)
    saved = None
    if save_to is not None:
        saved = str(learned.save(save_to))
    shown = min(thumbnails, attack.n)
    return {
        "config": config.to_dict(),
        "judge": settings.judge,
        "attack": attack.to_dict(),
        "baseline": baseline.to_dict(),
        "embedding": learned.to_dict(),
        "losses": _thin(learned.losses, 200),
        "saved_to": saved,
        "seconds": time.perf_counter() - started,
        "thumbnails": [{"image": png_base64(attack.images[i]), "verdict": bool(attack.verdicts[i])}
                       for i in range(shown)],
    }


def _thin(values: list[float], count: int) -> list[float]:
    """At most `count` values, evenly spaced (the loss curve for the report, not every step)."""
    if len(values) <= count:
        return list(values)
    stride = len(values) / count
    return [values[int(i * stride)] for i in range(count)]
