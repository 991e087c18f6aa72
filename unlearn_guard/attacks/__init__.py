"""Attacks beside the single-memory probe, each in its own module with its config and results.

  - `find_memories` (memories.py): MoFC's Sequential Inversion Block, many memories per image
    (SPEC 6); `MemorySearchConfig`, `MemorySearchResult`.
  - `concept_inversion` / `attack_success` (concept_inversion.py): textual inversion against the
    erased model, then the share of generations a judge calls the concept (SPEC 7);
    `ConceptInversionConfig`, `LearnedEmbedding`, `AttackSuccess`.
  - `worst_case_prompt_success` (concept_success.py): a prompt's judged share under several
    sampling settings (`unlearn_guard.sampling`), the highest reported; `WorstCaseSuccess`.
  - judges.py: `ShapeJudge` (the small world's classifier) and `load_judge` for the command line.

They take models, images and prompts exactly as `probe` does (same loaders, errors, provenance).
"""

from .concept_inversion import (
    ConceptInversionConfig,
    LearnedEmbedding,
    attack_success,
    concept_inversion,
    load_learned_embedding,
    prompt_success,
)
from .concept_success import worst_case_prompt_success
from .judges import ShapeJudge, judge_images, load_judge
from .memories import MemorySearchConfig, find_memories
from .results import AttackSuccess, ImageMemories, Memory, MemorySearchResult, WorstCaseSuccess

__all__ = [
    "AttackSuccess",
    "ConceptInversionConfig",
    "ImageMemories",
    "LearnedEmbedding",
    "Memory",
    "MemorySearchConfig",
    "MemorySearchResult",
    "ShapeJudge",
    "WorstCaseSuccess",
    "attack_success",
    "concept_inversion",
    "find_memories",
    "judge_images",
    "load_judge",
    "load_learned_embedding",
    "prompt_success",
    "worst_case_prompt_success",
]
