"""The judged share of generations that show the concept (SPEC 7): `attack_success` with a learned
token, `prompt_success` with plain prompts (the baseline the attack is read against), each with
its Wilson interval; `worst_case_prompt_success` takes the prompts' share under several sampling
settings (`unlearn_guard.sampling.WORLD_SETTINGS`, ...) and reports the highest."""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch

from ..errors import InputError
from ..models.bundle import DiffusionModel
from ..models.module_state import preserve_module_state
from ..sampling import SamplingSetting, as_settings, check_scheduler, sample_with_setting
from ..validation import is_int, is_number
from .judges import Judge, judge_images, judge_name
from .learned_embedding import LearnedEmbedding
from .results import AttackSuccess, WorstCaseSuccess
from .token_slot import check_dimension, encode_with_token, template_slots


def _success(model: DiffusionModel, cond: torch.Tensor, judge: Judge, prompt: str, n: int, seed: int,
             setting: SamplingSetting, batch_size: int, confidence: float, keep_images: bool) -> AttackSuccess:
    from ..stats.proportion import wilson_interval

    started = time.perf_counter()
    uncond = model.encode_prompts([""]).expand(n, -1, -1)
    images = sample_with_setting(model, cond, uncond, [seed + i for i in range(n)], setting,
                                 batch_size)  # (n, 3, H, W) in [0, 1]
    verdicts = judge_images(judge, images)
    successes = int(verdicts.sum())
    low, high = wilson_interval(successes, n, confidence)
    return AttackSuccess(prompt=prompt, successes=successes, n=n, rate=successes / n, ci_low=low, ci_high=high,
                         confidence=confidence, judge=judge_name(judge), verdicts=[bool(v) for v in verdicts],
                         seconds=time.perf_counter() - started, images=images if keep_images else None,
                         setting=setting)


def _check_generation(n: int, seed: int, num_steps: int, guidance_scale: float, batch_size: int, confidence: float,
                      scheduler: str = "ddim") -> SamplingSetting:
    """The checked arguments' `SamplingSetting`; InputError naming the first bad argument."""
    _check_counts(n, seed, batch_size, confidence)
    for name, value, ok, expected in (
        ("num_steps", num_steps, is_int(num_steps) and num_steps >= 1, "an int >= 1"),
        ("guidance_scale", guidance_scale, is_number(guidance_scale) and guidance_scale >= 1, "a number >= 1"),
    ):
        if not ok:
            raise InputError(f"{name}: got {value!r}; expected {expected}")
    return SamplingSetting(check_scheduler(scheduler), guidance_scale, num_steps)


def _check_counts(n: int, seed: int, batch_size: int, confidence: float) -> None:
    for name, value, ok, expected in (
        ("n", n, is_int(n) and n >= 1, "an int >= 1 (generations)"),
        ("seed", seed, is_int(seed) and 0 <= seed < 2**62, "an int >= 0"),
        ("batch_size", batch_size, is_int(batch_size) and batch_size >= 1, "an int >= 1"),
        ("confidence", confidence, is_number(confidence) and 0 < confidence < 1, "a number in (0, 1)"),
    ):
        if not ok:
            raise InputError(f"{name}: got {value!r}; expected {expected}")


def attack_success(
    model: Any,
    embedding: LearnedEmbedding,
    judge: Judge,
    n: int = 32,
    *,
    template: str | None = None,
    seed: int = 0,
    num_steps: int = 25,
    guidance_scale: float = 4.0,
    batch_size: int = 64,
    confidence: float = 0.95,
    keep_images: bool = True,
    scheduler: str = "ddim",
) -> AttackSuccess:
    """Generate `n` images with the learned token and count the ones `judge` calls the concept.

    Args:
        model: the model under attack (any form `probe` takes); left as found.
        embedding: a `LearnedEmbedding` (from `concept_inversion` or `load_learned_embedding`).
        judge: images (N, 3, H, W) in [0, 1] -> N booleans; `ShapeJudge("circle")` in the small world.
        n: generations; image i starts from the seed `seed + i` (as the small world's `generate`).
        template: the prompt around the token (default: the embedding's first template, "a {}").
        num_steps / guidance_scale / batch_size: sampling with CFG, as `generate`.
        confidence: of the Wilson interval around the success rate.
        scheduler: "ddim" (ours) or a diffusers scheduler by name (`unlearn_guard.sampling.SCHEDULER_NAMES`).
    Returns:
        AttackSuccess: successes, n, rate, Wilson interval, per-image verdicts, the images.
    """
    from ..probe import as_model

    model = as_model(model)
    if not isinstance(embedding, LearnedEmbedding):
        raise InputError(f"embedding: got {type(embedding).__name__}; expected a LearnedEmbedding "
                         "(concept_inversion(...) or load_learned_embedding(folder))")
    setting = _check_generation(n, seed, num_steps, guidance_scale, batch_size, confidence, scheduler)
    if not callable(judge):
        raise InputError(f"judge: got {type(judge).__name__}; expected a callable images -> one bool per image")
    check_dimension(model, embedding.vector, "embedding")
    template = template or embedding.templates[0]
    if not isinstance(template, str) or template.count("{}") != 1:
        raise InputError(f"template: got {template!r}; expected a prompt with exactly one '{{}}'")
    slots, positions = template_slots(model.tokenizer, [template], embedding.init_token)
    with preserve_module_state(*model.modules()), torch.no_grad():
        cond = encode_with_token(model, slots.expand(n, -1), positions.expand(n),
                                 embedding.vector.to(model.device))  # (n, L, D)
        return _success(model, cond, judge, embedding.prompt(template), n, seed, setting, batch_size, confidence,
                        keep_images)


def prompt_success(
    model: Any,
    prompts: str | Sequence[str],
    judge: Judge,
    n: int = 32,
    *,
    seed: int = 0,
    num_steps: int = 25,
    guidance_scale: float = 4.0,
    batch_size: int = 64,
    confidence: float = 0.95,
    keep_images: bool = False,
    scheduler: str = "ddim",
) -> AttackSuccess:
    """The same count for plain prompts (cycled to `n`): the baseline the attack is read against,
    e.g. the classifier accuracy of "a circle" on an erased model. `scheduler` as `attack_success`."""
    from ..probe import as_model

    model = as_model(model)
    setting = _check_generation(n, seed, num_steps, guidance_scale, batch_size, confidence, scheduler)
    listed = _prompt_list(prompts)
    with preserve_module_state(*model.modules()), torch.no_grad():
        return _success(model, _prompt_embeddings(model, listed, n, batch_size), judge, _prompt_label(listed), n,
                        seed, setting, batch_size, confidence, keep_images)


def worst_case_prompt_success(
    model: Any,
    prompts: str | Sequence[str],
    judge: Judge,
    settings: str | SamplingSetting | Sequence[SamplingSetting] = "world",
    n: int = 32,
    *,
    seed: int = 0,
    batch_size: int = 64,
    confidence: float = 0.95,
    keep_images: bool = False,
) -> WorstCaseSuccess:
    """`prompt_success` under each sampling setting, same prompts and seeds; the worst is the highest rate.

    Args:
        settings: a set's name ("world", "standard", "default"), one `SamplingSetting` or a sequence.
        n / seed / batch_size / confidence / keep_images: as `prompt_success`, for every setting.
    Returns:
        WorstCaseSuccess: one AttackSuccess per setting (each names its setting), `worst`, `worst_setting`.
    """
    from ..probe import as_model

    model = as_model(model)
    chosen = as_settings(settings)
    _check_counts(n, seed, batch_size, confidence)
    listed = _prompt_list(prompts)
    with preserve_module_state(*model.modules()), torch.no_grad():
        cond = _prompt_embeddings(model, listed, n, batch_size)  # (n, L, D), shared by every setting
        return WorstCaseSuccess([_success(model, cond, judge, _prompt_label(listed), n, seed, setting, batch_size,
                                          confidence, keep_images) for setting in chosen])


def _prompt_list(prompts: Any) -> list[str]:
    listed = [prompts] if isinstance(prompts, str) else list(prompts)
    if not listed or not all(isinstance(p, str) for p in listed):
        raise InputError(f"prompts: got {prompts!r}; expected a prompt or a non-empty list of prompts")
    return listed


def _prompt_label(listed: list[str]) -> str:
    return listed[0] if len(listed) == 1 else f"{len(listed)} prompts, e.g. {listed[0]!r}"


def _prompt_embeddings(model: DiffusionModel, listed: list[str], n: int, batch_size: int) -> torch.Tensor:
    """(n, L, D): the prompts cycled to n generations, encoded in chunks of `batch_size`."""
    cycled = [listed[i % len(listed)] for i in range(n)]
    return torch.cat([model.encode_prompts(cycled[s : s + batch_size]) for s in range(0, n, batch_size)])
