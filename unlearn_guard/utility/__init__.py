"""The utility check: did the erased checkpoint keep what the model could do besides the concept?

Erasure papers report the concept and the model's remaining quality side by side; a checkpoint
that destroyed the model also "forgets" the concept. In the small world the utility is the
accuracy of the kept shapes' prompts (the shipped classifier), with a real model the CLIP score of
generations; each against the base model, under every sampling setting, the worst ratio deciding.

    from unlearn_guard.utility import UtilityConfig, utility_check
    result = utility_check(checkpoint, base, UtilityConfig.for_world("circle"))
    print(result.summary_table())

- config.py: `UtilityConfig` (items, n, seed, settings, min_ratio, clip_model).
- measure.py: `measure_utility` (`measure_settings`: some settings only), `compare_utility`, `utility_check`.
- results.py: `ItemScore`, `UtilityScores`, `SettingUtility`, `UtilityResult`.
- clip.py: `load_clip`, `clip_score_of` (torchmetrics); fid.py: optional `frechet_distance`.
"""

from .clip import clip_score_of, load_clip
from .config import DEFAULT_CLIP_MODEL, DEFAULT_MIN_RATIO_CLIP, DEFAULT_MIN_RATIO_SHAPES, UtilityConfig
from .fid import frechet_distance
from .measure import (compare_utility, generate_items, measure_settings, measure_utility, utility_check,
                      utility_provenance)
from .results import ItemScore, SettingUtility, UtilityResult, UtilityScores

__all__ = ["DEFAULT_CLIP_MODEL", "DEFAULT_MIN_RATIO_CLIP", "DEFAULT_MIN_RATIO_SHAPES", "ItemScore", "SettingUtility",
           "UtilityConfig", "UtilityResult", "UtilityScores", "clip_score_of", "compare_utility", "frechet_distance",
           "generate_items", "load_clip", "measure_settings", "measure_utility", "utility_check",
           "utility_provenance"]
