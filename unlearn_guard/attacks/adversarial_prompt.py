"""UnlearnDiffAtk (Zhang et al., ECCV 2024; SPEC 9): adversarial prompts against an erased model,
many prompts at once.

For each prompt the erased model does not already draw the concept from, k adversarial tokens are
put before (or after) it and chosen so that the erased model denoises the concept's *target image*
(the original model's generation from the same prompt and seed) as well as it can. Each token is a
distribution over the vocabulary, trained through one-hot draws with a straight-through gradient
(`prompt_tokens`); after every block of steps at one timestep the most likely tokens are read out
as text, the erased model generates from that prompt and seed, and a judge says whether the
concept came back. A prompt stops at its first success.

Notation (SPEC 9 -> code):
    x0              `x0`, scaling_factor * VAE posterior mean of the target image, (C, h, w) per prompt
    u_i             row i of `run.u`, (V,) a distribution over the vocabulary (k rows per prompt)
    c'              the prompt with one-hot tokens of u spliced into the text encoder's input embeddings
    t               the block's timestep (`config.timesteps`, in order)
    eps             N(0, I), fresh every step from the prompt's own generator
    abar_t          alphas_cumprod[t] from the model's scheduler config (SPEC 1)
    L(c')           mean (eps - eps_theta*(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t | c'))^2, no guidance

Steps (SPEC 9.3): 0. check every input; 1. generate from each plain prompt and seed with the erased
model and judge (Pre-ASR; those prompts are not attacked); 2. each remaining prompt's x0 (given
targets or the base model's generations); 3. the sweep, `batch_size` prompts side by side: one UNet
call per gradient step for all of them, each block ends in one generation call and one judge call,
a prompt that succeeds (or finishes the sweep) leaves and the next waiting prompt takes its place;
4. Pre-ASR and ASR with Wilson intervals.

Batching never changes an answer: a prompt's random draws (token draws, eps) come from a generator
seeded from (config.seed, its text, its seed), its Adam state is its own, and its loss is a sum
term of its own, so a batch equals its singles (tested).
"""

from __future__ import annotations

import re
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from ..errors import InputError, NonFiniteError
from ..schedule import alphas_cumprod
from ..io import IMAGE_EXTENSIONS, ImageSet, PathLike, load_image_set
from ..models.bundle import DiffusionModel
from ..models.checks import check_finite_weights
from ..models.module_state import preserve_module_state
from ..probe_inputs import as_model
from ..probe_seeds import derive_seed
from ..provenance import model_provenance, provenance
from ..sampling import sample_from_embeddings
from ..validation import is_int
from .adversarial_config import ADVERSARIAL_PRESETS, AdversarialPromptConfig
from .adversarial_results import AdversarialPromptResult, PromptAttack, Rate
from .judges import Judge, ScoredJudge, judge_images, judge_name, judge_with_scores
from .prompt_tokens import (
    adversarial_slots,
    adversarial_text,
    draw_tokens,
    project_to_simplex,
    straight_through_one_hot,
    uniform_distributions,
    vocabulary_size,
)
from .token_slot import encode_with_token, refuse_two_text_encoders


@dataclass
class _PromptRun:
    """One prompt under attack: its token row, target latent, distributions, optimiser and stream."""

    attack: PromptAttack
    row: torch.Tensor  # (L,) token ids with pad in the k slots
    positions: torch.Tensor  # (k,)
    x0: torch.Tensor  # (C, h, w) float32 on the model's device
    u: torch.nn.Parameter  # (k, V) on the simplex
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    block: int = 0
    losses: list[float] = field(default_factory=list)  # this block's


def prompt_generator(config: AdversarialPromptConfig, prompt: str, seed: int) -> torch.Generator:
    """The prompt's own CPU generator: seeded from (config.seed, the prompt's text, its seed) only."""
    return torch.Generator().manual_seed(derive_seed(config.seed, f"adversarial_prompt:{prompt}", seed))


@contextmanager
def _counting_unet(unet: torch.nn.Module) -> Iterator[list[int]]:
    """For the body: [UNet sample-evaluations so far], counted by a forward hook (a batch of B is B)."""
    counter = [0]

    def count(module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        sample = args[0] if args else kwargs.get("sample")
        counter[0] += int(sample.shape[0])

    handle = unet.register_forward_hook(count, with_kwargs=True)
    try:
        yield counter
    finally:
        handle.remove()


@torch.no_grad()
def _generate(model: DiffusionModel, prompts: Sequence[str], seeds: Sequence[int],
              config: AdversarialPromptConfig) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1]: image i from prompts[i] started from seeds[i] (DDIM with CFG)."""
    size = config.batch_size
    cond = torch.cat([model.encode_prompts(prompts[s : s + size]) for s in range(0, len(prompts), size)])
    uncond = model.encode_prompts([""]).expand(len(prompts), -1, -1)
    return sample_from_embeddings(model, cond, uncond, list(seeds), config.num_steps, config.guidance_scale, size)


def _gradient_step(model: DiffusionModel, runs: list[_PromptRun], abar: torch.Tensor, embeddings: torch.Tensor,
                   config: AdversarialPromptConfig) -> torch.Tensor:
    """One Adam step and projection on every run's u (SPEC 9.1-9.2); (B,) each run's loss, on the CPU."""
    device = model.device
    # 1. each prompt's draws from its own stream, tokens first, then eps
    ids = [draw_tokens(run.u, config.one_hot, run.generator) for run in runs]  # B x (k,)
    eps = torch.stack([torch.randn(run.x0.shape, generator=run.generator) for run in runs]).to(device)  # (B, C, h, w)
    # 2. c': the drawn tokens' embedding rows, spliced into each prompt's row at its slots
    one_hot = torch.stack([straight_through_one_hot(run.u, i) for run, i in zip(runs, ids)])  # (B, k, V)
    rows = one_hot.to(embeddings.dtype) @ embeddings[: one_hot.shape[-1]]  # (B, k, D)
    input_ids = torch.stack([run.row.index_put((run.positions,), i) for run, i in zip(runs, ids)])  # (B, L)
    positions = torch.stack([run.positions for run in runs])  # (B, k)
    cond = encode_with_token(model, input_ids, positions, rows)  # (B, L, D)
    # 3. z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps at each prompt's own block timestep
    timesteps = torch.tensor([config.timesteps[run.block] for run in runs], device=device)
    a = abar[timesteps].float().view(-1, 1, 1, 1)
    x0 = torch.stack([run.x0 for run in runs])
    noisy = a.sqrt() * x0 + (1 - a).sqrt() * eps
    # 4. the loss, without guidance; each prompt's loss is its own sum term
    predicted = model.unet(noisy.to(model.dtype), timesteps, encoder_hidden_states=cond)
    predicted = (predicted.sample if hasattr(predicted, "sample") else predicted[0]).float()
    predicted = model.epsilon(predicted, noisy, timesteps)  # eps whatever the UNet predicts (SPEC 1.1)
    losses = (predicted - eps).pow(2).mean(dim=(1, 2, 3))  # (B,)
    finite = torch.isfinite(losses.detach())
    if not bool(finite.all()):
        run = runs[int((~finite).nonzero()[0, 0])]
        raise NonFiniteError(f"adversarial prompt: the loss of prompt {run.attack.index} ({run.attack.prompt!r}) is "
                             f"{float(losses[~finite][0])} at timestep {config.timesteps[run.block]}, step "
                             f"{run.attack.gradient_steps + 1}; try a lower lr")
    for run in runs:
        run.optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    # 5. Adam, then back onto the simplex
    for run in runs:
        run.optimizer.step()
        with torch.no_grad():
            run.u.copy_(project_to_simplex(run.u))
        run.attack.gradient_steps += 1
    return losses.detach().cpu()


def _start(model: DiffusionModel, attack: PromptAttack, x0: torch.Tensor, vocabulary: int,
           config: AdversarialPromptConfig) -> _PromptRun:
    row, positions = adversarial_slots(model.tokenizer, attack.prompt, config.num_tokens, config.placement)
    u = torch.nn.Parameter(uniform_distributions(config.num_tokens, vocabulary, model.device))
    optimizer = torch.optim.Adam([u], lr=config.lr, weight_decay=config.weight_decay)
    attack.attacked = True
    return _PromptRun(attack, row, positions, x0, u, optimizer, prompt_generator(config, attack.prompt, attack.seed))


def _judged(judge: Judge, images: torch.Tensor) -> tuple[list[bool], list[float | None]]:
    """Verdicts, and the judge's score of each image where it gives one (our judges: a detector's
    top score, a class probability); None for a plain callable, whose only answer is the verdict."""
    if isinstance(judge, ScoredJudge):
        output = judge_with_scores(judge, images)
        return output.verdicts.tolist(), [float(v) for v in output.scores]
    return judge_images(judge, images).tolist(), [None] * len(images)


def _judge_block(model: DiffusionModel, runs: list[_PromptRun], judge: Judge, config: AdversarialPromptConfig) -> list[bool]:
    """Read out every run's argmax tokens as a prompt, generate from it with the prompt's seed, judge."""
    texts = []
    for run in runs:
        tokens = run.u.detach().argmax(dim=-1).cpu().tolist()
        token_text, full = adversarial_text(model.tokenizer, run.attack.prompt, tokens, config.placement)
        run.attack.tokens, run.attack.token_text, run.attack.adversarial_prompt = tokens, token_text, full
        texts.append(full)
    images = _generate(model, texts, [run.attack.seed for run in runs], config)
    verdicts, scores = _judged(judge, images)
    for run, image, score in zip(runs, images, scores):
        run.attack.generations += 1
        run.attack.image = image if config.keep_images else None
        run.attack.score = score
    return verdicts


def _sweep(model: DiffusionModel, waiting: deque[tuple[PromptAttack, torch.Tensor]], judge: Judge,
           abar: torch.Tensor, config: AdversarialPromptConfig, counter: list[int], progress: bool) -> dict[str, int]:
    """Step 3: blocks of gradient steps for up to batch_size prompts at a time, each judged after its
    block; a prompt leaves at its first success or the sweep's end and the next waiting one starts.
    Returns the UNet sample-evaluations of the gradient steps ("attack") and of the judged
    generations ("attack_generation")."""
    embeddings = model.text_encoder.get_input_embeddings().weight.detach()  # (V_e, D)
    vocabulary = vocabulary_size(model.tokenizer, embeddings)
    counts = {"attack": 0, "attack_generation": 0}
    active: list[_PromptRun] = []
    broken = 0
    with tqdm(total=len(waiting) * len(config.timesteps), desc="adversarial prompts", unit="block",
              disable=not progress, leave=False) as bar:
        while waiting or active:
            while waiting and len(active) < config.batch_size:
                active.append(_start(model, *waiting.popleft(), vocabulary, config))
            mark = counter[0]
            for run in active:
                run.losses = []
            for _ in range(config.steps_per_timestep):
                losses = _gradient_step(model, active, abar, embeddings, config)
                for run, loss in zip(active, losses.tolist()):
                    run.losses.append(loss)
            counts["attack"] += counter[0] - mark
            mark = counter[0]
            verdicts = _judge_block(model, active, judge, config)
            counts["attack_generation"] += counter[0] - mark
            still = []
            for run, verdict in zip(active, verdicts):
                run.attack.block_losses.append(sum(run.losses) / len(run.losses))
                if verdict:
                    run.attack.success, run.attack.step = True, run.attack.gradient_steps
                    run.attack.timestep = config.timesteps[run.block]
                    bar.total -= len(config.timesteps) - run.block - 1
                    broken += 1
                elif run.block + 1 < len(config.timesteps):
                    run.block += 1
                    still.append(run)
            bar.update(len(active))
            bar.set_postfix(broken=broken)
            active = still
    return counts


@torch.no_grad()
def _pre_attack_settings(model: DiffusionModel, attacks: list[PromptAttack], judge: Judge,
                         config: AdversarialPromptConfig) -> None:
    """Step 1b: each prompt's pre-attack verdict under every sampling setting of the config; the
    own setting's is the step-1 verdict, the others are generated from the same prompts and seeds."""
    from ..sampling import sample_with_setting

    own, *others = config.sampling_settings()
    for attack in attacks:
        attack.pre_by_setting = {own.label: attack.pre_success}
    size = config.batch_size
    for setting in others:
        for start in range(0, len(attacks), size):
            chunk = attacks[start : start + size]
            cond = model.encode_prompts([a.prompt for a in chunk])
            uncond = model.encode_prompts([""]).expand(len(chunk), -1, -1)
            images = sample_with_setting(model, cond, uncond, [a.seed for a in chunk], setting, size)
            for attack, verdict in zip(chunk, judge_images(judge, images).tolist()):
                attack.pre_by_setting[setting.label] = bool(verdict)


# --------------------------------------------------------------------------- inputs


def _check_prompts(prompts: Any, seeds: Any) -> tuple[list[str], list[int]]:
    listed = [prompts] if isinstance(prompts, str) else list(prompts) if isinstance(prompts, (list, tuple)) else None
    if not listed or not all(isinstance(p, str) for p in listed):
        raise InputError(f"prompts: got {prompts!r:.200}; expected a non-empty list of str")
    seed_list = [seeds] if is_int(seeds) else list(seeds) if isinstance(seeds, (list, tuple)) else None
    if seed_list is None or len(seed_list) != len(listed):
        raise InputError(f"seeds: got {seeds!r:.200}; expected one int seed per prompt ({len(listed)})")
    bad = [f"[{i}] {s!r}" for i, s in enumerate(seed_list) if not (is_int(s) and 0 <= s < 2**63)]
    if bad:
        raise InputError(f"seeds: entries {', '.join(bad[:5])} are not ints in [0, 2**63)")
    return listed, [int(s) for s in seed_list]


def _resolve_config(config: AdversarialPromptConfig | str | None) -> AdversarialPromptConfig:
    if config is None or isinstance(config, str):
        return AdversarialPromptConfig.from_preset(config or "unlearndiffatk")
    if not isinstance(config, AdversarialPromptConfig):
        raise InputError(f"config: got {type(config).__name__}; expected an AdversarialPromptConfig or one of "
                         f"{sorted(ADVERSARIAL_PRESETS)}")
    return config


def _check_timesteps(model: DiffusionModel, config: AdversarialPromptConfig) -> None:
    limit = int(model.scheduler_config["num_train_timesteps"])
    outside = [t for t in config.timesteps if t >= limit]
    if outside:
        raise InputError(f"config.timesteps: {outside[:5]} are not below the model's num_train_timesteps ({limit})")


def load_target_images(folder: PathLike, count: int | None = None, resolution: int | None = None) -> ImageSet:
    """Target images from a folder, one per prompt in prompt order: image files ordered by the number
    their names start with when all do (UnlearnDiffAtk's `imgs/{case}_0.png`: 2_0.png before 10_0.png),
    else by name. `count`: the number of prompts the folder must match."""
    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"targets: {str(path)!r} is not a folder; expected a folder of target images")
    files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
             and not p.name.startswith(".")]
    leading = [re.match(r"\d+", p.name) for p in files]
    if files and all(leading):
        files.sort(key=lambda p: (int(re.match(r"\d+", p.name).group()), p.name))
    else:
        files.sort(key=lambda p: p.name)
    if not files:
        raise InputError(f"targets: {str(path)!r} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    if count is not None and len(files) != count:
        raise InputError(f"targets: {str(path)!r} holds {len(files)} images for {count} prompts; expected one per prompt")
    return load_image_set([str(p) for p in files], "", resolution=resolution, label="targets")


def _target_latents(model: DiffusionModel, attacks: list[PromptAttack], targets: Any, base: DiffusionModel | None,
                    config: AdversarialPromptConfig, counter: list[int]) -> dict[int, torch.Tensor]:
    """Step 2: x0 (C, h, w) of each attacked prompt's target image, by prompt index."""
    latents: dict[int, torch.Tensor] = {}
    for start in range(0, len(attacks), config.batch_size):
        chunk = attacks[start : start + config.batch_size]
        if targets is not None:
            pixels = targets.pixels[[a.index for a in chunk]]  # (b, 3, H, W) in [-1, 1]
        else:
            with preserve_module_state(*base.modules()), _counting_unet(base.unet) as base_counter:
                pixels = _generate(base, [a.prompt for a in chunk], [a.seed for a in chunk], config) * 2 - 1
            counter[0] += base_counter[0]
        for attack, latent in zip(chunk, model.encode_images(pixels, None, mode="mean")):  # (b, C, h, w)
            latents[attack.index] = latent
    return latents


# --------------------------------------------------------------------------- the attack


def _checked_inputs(model: Any, prompts: Any, seeds: Any, judge: Any, config: AdversarialPromptConfig, targets: Any,
                    base_model: Any) -> tuple[DiffusionModel, list[str], list[int], Any, DiffusionModel | None]:
    """Check everything before any compute: the model, prompts and seeds, judge, timesteps, room for
    the tokens in each prompt, and targets or base model. Returns (model, prompts, seeds, target
    set or None, base model or None)."""
    model = as_model(model)
    model.check()
    refuse_two_text_encoders(model, "The adversarial-prompt attack (UnlearnDiffAtk)")
    check_finite_weights(model)
    prompt_list, seed_list = _check_prompts(prompts, seeds)
    if not callable(judge):
        raise InputError(f"judge: got {type(judge).__name__}; expected a callable images -> one bool per image")
    _check_timesteps(model, config)
    for i, prompt in enumerate(prompt_list):
        adversarial_slots(model.tokenizer, prompt, config.num_tokens, config.placement, label=f"prompts[{i}]")
    if (targets is None) == (base_model is None):
        raise InputError("targets / base_model: got " + ("both" if targets is not None else "neither") +
                         "; expected target images (targets=) or the original model that makes them (base_model=)")
    target_set = None
    if targets is not None:
        target_set = load_image_set(targets, "", resolution=model.resolution, label="targets")
        if len(target_set) != len(prompt_list):
            raise InputError(f"targets: got {len(target_set)} images for {len(prompt_list)} prompts; expected one "
                             "per prompt, in prompt order")
    base = None if base_model is None else as_model(base_model)
    if base is not None and base.resolution != model.resolution:
        raise InputError(f"base_model: makes {base.resolution}px images; the attacked model takes {model.resolution}px")
    return model, prompt_list, seed_list, target_set, base


def adversarial_prompt_attack(
    model: Any,
    prompts: str | Sequence[str],
    seeds: int | Sequence[int],
    judge: Judge,
    config: AdversarialPromptConfig | str | None = None,
    *,
    targets: Any = None,
    base_model: Any = None,
    progress: bool = True,
) -> AdversarialPromptResult:
    """Attack the erased `model` with adversarial prompts (UnlearnDiffAtk, SPEC 9), batched over prompts.

    Args:
        model: the erased model under attack: a `DiffusionModel`, a diffusers pipeline, or a hub id /
            local folder. Left exactly as found (weights, requires_grad, train/eval); only the token
            distributions get gradients.
        prompts: P prompts ("a circle"); `read_prompt_seeds(csv)` reads them with their seeds.
        seeds: one generation seed per prompt: every generation from prompt i (pre-attack, after each
            block, the base model's target) starts from `randn` seeded with seeds[i].
        judge: images (N, 3, H, W) in [0, 1] -> N booleans (`ShapeJudge("circle")` in the small world).
        config: an `AdversarialPromptConfig` or a preset name ("unlearndiffatk", the default; "world").
        targets: the target image of each prompt, (P, 3, H, W) float in [0, 1] (or uint8), a folder
            (`load_target_images`), a list of files or an `ImageSet`; brought to the model's resolution.
        base_model: the original (not erased) model, which makes each target from its prompt and seed
            with the config's sampling settings. Give `targets` or `base_model`, not both.
        progress: a tqdm bar over the blocks.
    Returns:
        AdversarialPromptResult: per prompt the pre-attack verdict, the attack's success, step,
        timestep, tokens and adversarial prompt; Pre-ASR and ASR with Wilson intervals; UNet
        evaluations and seconds by phase.
    """
    started = time.perf_counter()
    config = _resolve_config(config)
    model, prompt_list, seed_list, target_set, base = _checked_inputs(model, prompts, seeds, judge, config, targets,
                                                                      base_model)

    seconds: dict[str, float] = {}
    counts = {"pre_attack": 0, "targets": 0, "attack": 0, "attack_generation": 0}
    attacks = [PromptAttack(index=i, prompt=p, seed=s, pre_success=False, attacked=False)
               for i, (p, s) in enumerate(zip(prompt_list, seed_list))]
    with preserve_module_state(*model.modules()), _counting_unet(model.unet) as counter:
        for module in model.modules():
            module.requires_grad_(False)  # gradients reach only u; flags come back on exit
        # 1. Pre-attack: the plain prompts with their seeds, judged batch by batch
        for start in range(0, len(attacks), config.batch_size):
            chunk = attacks[start : start + config.batch_size]
            images = _generate(model, [a.prompt for a in chunk], [a.seed for a in chunk], config)
            verdicts, scores = _judged(judge, images)
            for attack, verdict, image, score in zip(chunk, verdicts, images, scores):
                attack.pre_success = bool(verdict)
                attack.image = image if config.keep_images else None
                attack.score = score
        counts["pre_attack"] = counter[0]
        seconds["pre_attack"] = time.perf_counter() - started
        # 1b. the same prompts and seeds under the config's other sampling settings (reported only)
        mark, before = time.perf_counter(), counter[0]
        _pre_attack_settings(model, attacks, judge, config)
        if len(config.sampling_settings()) > 1:
            counts["pre_attack_settings"] = counter[0] - before
            seconds["pre_attack_settings"] = time.perf_counter() - mark
        # 2. targets of the prompts to attack
        pending = [a for a in attacks if not a.pre_success]
        mark, base_count = time.perf_counter(), [0]
        latents = _target_latents(model, pending, target_set, base, config, base_count)
        counts["targets"] = base_count[0]
        seconds["targets"] = time.perf_counter() - mark
        # 3. the sweep
        mark = time.perf_counter()
        abar = alphas_cumprod(model.scheduler_config).to(model.device)  # (T_train,)
        with torch.enable_grad():
            counts.update(_sweep(model, deque((a, latents[a.index]) for a in pending), judge, abar, config, counter,
                                 progress))
        seconds["attack"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - started

    # 4. Pre-ASR (under each sampling setting) and ASR over all prompts
    by_setting = {setting.label: Rate.of(sum(a.pre_by_setting[setting.label] for a in attacks), len(attacks),
                                         config.confidence) for setting in config.sampling_settings()}
    return AdversarialPromptResult(
        prompts=attacks, pre_asr=Rate.of(sum(a.pre_success for a in attacks), len(attacks), config.confidence),
        pre_asr_by_setting=by_setting,
        asr=Rate.of(sum(a.broken for a in attacks), len(attacks), config.confidence),
        config=config, judge=judge_name(judge), unet_evaluations=counts, seconds=seconds,
        provenance=provenance(model.device, model.dtype, seed=config.seed, **model_provenance(model),
                              base_model_source=None if base is None else base.source),
    )


__all__ = ["AdversarialPromptConfig", "AdversarialPromptResult", "PromptAttack", "adversarial_prompt_attack",
           "load_target_images", "prompt_generator"]
