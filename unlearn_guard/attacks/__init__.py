"""Attacks beside the single-memory probe, each in its own module with its config and results.

  - `find_memories` (memories.py): MoFC's Sequential Inversion Block, many memories per image
    (SPEC 6); `MemorySearchConfig`, `MemorySearchResult`.
  - `concept_inversion` / `attack_success` (concept_inversion.py): textual inversion against the
    erased model, then the share of generations a judge calls the concept (SPEC 7);
    `ConceptInversionConfig`, `LearnedEmbedding`, `AttackSuccess`.
  - `adversarial_prompt_attack` (adversarial_prompt.py): UnlearnDiffAtk, k adversarial tokens per
    prompt chosen against the erased model's denoising loss on a target image, batched over
    prompts, with Pre-ASR and ASR (SPEC 9); `AdversarialPromptConfig`, `AdversarialPromptResult`.
  - judges/: one interface, images -> booleans and scores (`judge_with_scores`), for `ShapeJudge`
    (the small world's classifier), `NudeNetJudge`, `ImageNetJudge`, `ClipZeroShotJudge` and any
    callable; `load_judge` for the command line.
  - `worst_case_prompt_success` (concept_success.py): a prompt's judged share under several
    sampling settings (`unlearn_guard.sampling`), the highest reported; `WorstCaseSuccess`.

They take models, images and prompts exactly as `probe` does (same loaders, errors, provenance).
"""

from .adversarial_config import AdversarialPromptConfig
from .adversarial_prompt import adversarial_prompt_attack, load_target_images
from .adversarial_results import AdversarialPromptResult, PromptAttack
from .concept_inversion import (
    ConceptInversionConfig,
    LearnedEmbedding,
    attack_success,
    concept_inversion,
    load_learned_embedding,
    prompt_success,
)
from .concept_success import worst_case_prompt_success
from .judges import (
    ClipZeroShotConfig,
    ClipZeroShotJudge,
    ImageNetConfig,
    ImageNetJudge,
    JudgeOutput,
    NudeNetConfig,
    NudeNetJudge,
    ShapeJudge,
    describe_judge,
    judge_images,
    judge_with_scores,
    load_judge,
)
from .memories import MemorySearchConfig, find_memories
from .results import AttackSuccess, ImageMemories, Memory, MemorySearchResult, WorstCaseSuccess

__all__ = [
    "AdversarialPromptConfig",
    "AdversarialPromptResult",
    "AttackSuccess",
    "ClipZeroShotConfig",
    "ClipZeroShotJudge",
    "ConceptInversionConfig",
    "ImageMemories",
    "ImageNetConfig",
    "ImageNetJudge",
    "JudgeOutput",
    "LearnedEmbedding",
    "Memory",
    "MemorySearchConfig",
    "MemorySearchResult",
    "NudeNetConfig",
    "NudeNetJudge",
    "PromptAttack",
    "ShapeJudge",
    "WorstCaseSuccess",
    "adversarial_prompt_attack",
    "attack_success",
    "concept_inversion",
    "describe_judge",
    "find_memories",
    "judge_images",
    "judge_with_scores",
    "load_judge",
    "load_learned_embedding",
    "load_target_images",
    "prompt_success",
    "worst_case_prompt_success",
]
