"""Measure a model's utility and compare a checkpoint with its base (the utility check).

    config = UtilityConfig.for_world("circle")      # kept: square, triangle, diamond, cross, ring
    result = utility_check(checkpoint, base, config)
    result.passed, result.ratio, result.worst.setting.label

Per sampling setting, every item (kept shape or prompt) gets `n` generations from its prompt, the
same seeds for checkpoint and base; the shapes are judged by the shipped classifier (accuracy with
a Wilson interval), the prompts scored by CLIP. The ratio of the checkpoint's mean to the base's
is the utility figure; the worst setting decides.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch

from ..attacks.judges import ShapeJudge, judge_images
from ..errors import InputError
from ..models.module_state import preserve_module_state
from ..sampling import SamplingSetting, sample_with_setting
from .clip import clip_score_of, load_clip
from .config import UtilityConfig
from .results import ItemScore, SettingUtility, UtilityResult, UtilityScores


@torch.no_grad()
def generate_items(model: Any, prompts: list[str], n: int, seed: int, setting: SamplingSetting,
                   batch_size: int = 64) -> torch.Tensor:
    """Images (K * n, 3, H, W) in [0, 1]: n per prompt, in prompt order; image j starts from seed + j."""
    with preserve_module_state(*model.modules()):
        cond = torch.cat([model.encode_prompts([p]).expand(n, -1, -1) for p in prompts])  # (K n, L, D)
        uncond = model.encode_prompts([""]).expand(len(cond), -1, -1)
        return sample_with_setting(model, cond, uncond, [seed + j for j in range(len(cond))], setting, batch_size)


def measure_utility(model: Any, config: UtilityConfig, *, classifier: torch.nn.Module | None = None,
                    clip: tuple[Any, Any] | None = None) -> UtilityScores:
    """One model's scores on every item under every setting of `config`.

    Args:
        model: any form `probe` takes (a DiffusionModel, a pipeline, a folder); left as found.
        classifier: the world's ShapeClassifier (shapes; default the shipped one).
        clip: a loaded (model, processor) from `load_clip` (prompts; default `config.clip_model`).
    """
    from ..probe import as_model

    _check_config(config)
    started = time.perf_counter()
    model = as_model(model)
    rows = measure_settings(model, config, range(len(config.settings)), classifier=classifier, clip=clip)
    return UtilityScores.measured(config, rows, getattr(model, "source", ""), time.perf_counter() - started)


def measure_settings(model: Any, config: UtilityConfig, indices: Sequence[int], *,
                     classifier: torch.nn.Module | None = None,
                     clip: tuple[Any, Any] | None = None) -> list[list[ItemScore]]:
    """The rows of `measure_utility` for the settings `indices` of `config` only, in that order: each
    setting's generations do not depend on the others', so ranks can share the settings out."""
    from ..probe import as_model
    from ..stats.proportion import wilson_interval
    from ..world import concept_prompt, load_classifier

    _check_config(config)
    model = as_model(model)
    if config.shapes:
        classifier = classifier if classifier is not None else load_classifier()
        judges = [ShapeJudge(shape, classifier) for shape in config.shapes]
        prompts = [concept_prompt(shape) for shape in config.shapes]
    else:
        clip = clip if clip is not None else load_clip(config.clip_model)
        prompts = list(config.prompts)
    scores = []
    for index in indices:
        images = generate_items(model, prompts, config.n, config.seed, config.settings[index], config.batch_size)
        row = []
        for k, item in enumerate(config.items):
            block = images[k * config.n : (k + 1) * config.n]  # (n, 3, H, W)
            if config.shapes:
                successes = int(judge_images(judges[k], block).sum())
                low, high = wilson_interval(successes, config.n, config.confidence)
                row.append(ItemScore(item, successes / config.n, config.n, successes, low, high))
            else:
                row.append(ItemScore(item, clip_score_of(block.to(model.device), item, clip), config.n))
        scores.append(row)
    return scores


def utility_provenance(model: Any, config: UtilityConfig) -> dict[str, Any]:
    """The provenance of a utility result measured on `model` (the checkpoint's)."""
    from ..provenance import model_provenance, provenance

    return provenance(model.device, model.dtype, seed=config.seed, **model_provenance(model))


def _check_config(config: Any) -> None:
    if not isinstance(config, UtilityConfig):
        raise InputError(f"config: got {type(config).__name__}; expected a UtilityConfig")


def compare_utility(checkpoint: UtilityScores, base: UtilityScores, config: UtilityConfig) -> UtilityResult:
    """The utility check from two measurements made with `config` (InputError when they were not)."""
    wanted = config.measured_with()
    for name, scores in (("checkpoint", checkpoint), ("base", base)):
        if scores.measured_with != wanted:
            differ = sorted(k for k in set(wanted) | set(scores.measured_with)
                            if wanted.get(k) != scores.measured_with.get(k))
            raise InputError(f"{name} scores were measured with another config (differs in {differ}); "
                             "measure both with the config you compare them under")
    settings = [SettingUtility(setting, checkpoint.scores[i], base.scores[i], checkpoint.mean(i), base.mean(i))
                for i, setting in enumerate(config.settings)]
    return UtilityResult(config, settings, checkpoint.source, base.source,
                         {"checkpoint": checkpoint.seconds, "base": base.seconds})


def utility_check(checkpoint: Any, base: Any, config: UtilityConfig, *, classifier: torch.nn.Module | None = None,
                  clip: tuple[Any, Any] | None = None) -> UtilityResult:
    """Does `checkpoint` keep its base model's utility? Both measured with `config`, then compared.

    Args:
        checkpoint: the erased model (any form `probe` takes).
        base: the original model, or its `UtilityScores` measured before with the same config
            (a gate measures the base once for many checkpoints).
        config: `UtilityConfig.for_world(erased)` in the small world, `UtilityConfig(prompts=...)`
            with a real model.
    Returns:
        UtilityResult: per setting and item, the worst setting, `ratio`, `passed`, `reason`.
    """
    from ..probe import as_model

    _check_config(config)
    if config.prompts and clip is None:
        clip = load_clip(config.clip_model)  # once for both models
    base_scores = base if isinstance(base, UtilityScores) else measure_utility(base, config, classifier=classifier,
                                                                               clip=clip)
    checkpoint_model = as_model(checkpoint)
    checkpoint_scores = measure_utility(checkpoint_model, config, classifier=classifier, clip=clip)
    result = compare_utility(checkpoint_scores, base_scores, config)
    result.provenance = utility_provenance(checkpoint_model, config)
    return result
