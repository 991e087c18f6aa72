"""ESD erasure with a LoRA adapter on the UNet (Gandikota et al., "Erasing Concepts from
Diffusion Models", ICCV 2023; code rohitgandikota/erasing, train-scripts/train-esd.py).

ESD fine-tunes eps_theta so that, for the concept prompt c, it predicts the noise of the
*negatively guided* frozen model: the concept direction (eps*(c) - eps*("")) is subtracted
instead of added. Here the fine-tuning is a peft LoRA adapter injected into the UNet in place
(`unet.add_adapter`), so the probe and `DiffusionModel.predict_noise` see the adapter as is.

Notation (paper / train-esd.py -> code):
    theta*           frozen base UNet           the UNet with adapters disabled (`adapters_disabled`)
    theta            fine-tuned UNet            the same UNet with the "esd" LoRA adapter enabled
    c, emb_p         concept embedding          `embeddings[1]` (prompt `config.concept`)
    emb_0            empty-prompt embedding     `embeddings[0]` (prompt "")
    eta              negative guidance          `config.negative_guidance`
    start_guidance   CFG scale while sampling   `config.start_guidance`
    t_enc            DDIM step to stop at       `stop` (uniform in [0, ddim_steps))
    x_t (z)          partly denoised latent     `ESDExample.latents`
    e_0, e_p         eps*(x_t, ""), eps*(x_t, c) `eps_uncond`, `eps_cond`
    e_n              eps_theta(x_t, c)          `prediction`
    loss             MSE(e_n, e_0 - eta (e_p - e_0))

One iteration (train-esd.py's loop, steps numbered as in the code below):
  1. draw stop ~ U{0, ..., ddim_steps-1} and z_T ~ N(0, I) (or a memory seed, see below);
  2. DDIM-sample (eta = 0) with the frozen model and CFG `start_guidance` from z_T for `stop`
     steps of the model's own DDIM schedule (`ddim_schedule`), giving x_t at timestep t;
  3. frozen eps*(x_t, t, c) and eps*(x_t, t, ""); target = eps_u - eta (eps_c - eps_u);
  4. loss = MSE(eps_theta(x_t, t, c), target) with the adapter enabled; one Adam step on LoRA.
Differences from train-esd.py, on purpose: x_t is sampled with the *frozen* model (train-esd.py
samples with the model being trained), and the UNet is evaluated at the timestep x_t actually
sits at (train-esd.py draws a DDPM timestep from a bucket about two DDIM strides away).

Memory-aware option (an experiment beyond the paper): MoFC shows erased models keep likely
seeds for the concept's images. Given `memory_seeds` (seeds diffusion inversion found for the
concept's images) and `memory_weight > 0`, each iteration flips a coin: with probability
`memory_fraction` the trajectory starts from a randomly chosen memory seed instead of fresh
noise, and that iteration's loss is multiplied by `memory_weight`. Whether this lowers d_N more
than plain ESD is what the experiment is for; nothing here claims it does. Note that the seeds
were found without CFG, while the trajectory here uses `start_guidance`.

Memory loss (`ESDConfig(memory_loss=...)`, another experiment): a differentiable memory loss
from `unlearn_guard.losses` is added to the ESD loss every `memory_loss_every` iterations,
    loss = MSE(e_n, target) + w * L_memory,
with w = `memory_loss_weight`, or the monitor's `regularization_weight` when that is "monitor"
(high while the concept is remembered, 0 once the calibrated signal reaches its target). The
loss is built on the monitor's `loss_images` (its separate set when the monitor holds one, so the
decisions read images the loss never sees; else the images it probes) or `memory_images`, with
their prompts (an anchored `InversionLikelihoodConfig(keep_weight=...)` also inverts the
monitor's reference images);
`SeedRecallLoss` and `AnchorPathLoss` (noise="seeds") read the seeds of the monitor's latest probe
(`ProbeMonitor.latest_seeds`, so the probe config needs keep_seeds=True); `AnchorPathLoss` takes its
anchors and keep term from the monitor's reference images. Given a `monitor`, `esd_lora_erase` probes at step 0
(before the first update: the starting seeds), after each iteration `monitor.step(i + 1)`, and
stops when the monitor says so (the calibrated signal's target, or patience).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import InputError, ModelError, NonFiniteError
from ..inversion.renoise import Conditioning, NoisePredictor
from ..schedule import DDIMSchedule, ddim_schedule, ddim_step
from ..losses import MemoryLoss
from ..models.adapters import adapters_disabled, add_lora_adapter, has_adapters, sync_adapter_modes
from ..models.bundle import DiffusionModel, unwrap_unet
from ..models.module_state import preserve_module_state
from .esd_config import ESD_TARGET_MODULES, ESDConfig, ESDMethod, ESDResult
from .memory_loss import build_memory_loss
from .saving import ESD_CONFIG_FILE, save_esd_adapter

# Re-exported: these lived here before the split (tests and users import them from trainers.esd).
__all__ = [
    "ESD_CONFIG_FILE",
    "ESD_TARGET_MODULES",
    "ESDConfig",
    "ESDExample",
    "ESDMethod",
    "ESDResult",
    "adapters_disabled",
    "draw_esd_example",
    "esd_lora_erase",
    "save_esd_adapter",
]


@dataclass(frozen=True)
class ESDExample:
    """One training example: x_t (1, C, h, w) float32 at `timestep`, and the ESD target (same shape)."""

    latents: torch.Tensor
    timestep: int
    target: torch.Tensor
    from_memory: bool


@dataclass
class _TrainingLog:
    """What the loop records, iteration by iteration, for `ESDResult`."""

    losses: list[float] = field(default_factory=list)
    memory_iterations: list[int] = field(default_factory=list)
    memory_losses: list[float | None] = field(default_factory=list)
    memory_weights: list[float | None] = field(default_factory=list)
    memory_seconds: float = 0.0
    stopped_early: bool = False
    stop_reason: str | None = None


def _latent_shape(model: DiffusionModel) -> tuple[int, int, int]:
    size = unwrap_unet(model.unet).config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return (model.latent_channels, int(height), int(width))


def _check_memory_seeds(memory_seeds: torch.Tensor | None, shape: tuple[int, int, int]) -> torch.Tensor | None:
    if memory_seeds is None:
        return None
    if not isinstance(memory_seeds, torch.Tensor) or memory_seeds.ndim != 4 or memory_seeds.shape[0] < 1:
        got = tuple(memory_seeds.shape) if isinstance(memory_seeds, torch.Tensor) else type(memory_seeds).__name__
        raise InputError(f"memory_seeds: got {got}; expected a tensor (N, C, h, w) with N >= 1")
    if tuple(memory_seeds.shape[1:]) != shape:
        raise InputError(
            f"memory_seeds: got shape {tuple(memory_seeds.shape)}; expected (N, {shape[0]}, {shape[1]}, {shape[2]}), "
            "the UNet's latent shape"
        )
    seeds = memory_seeds.detach().to("cpu", torch.float32)
    if not torch.isfinite(seeds).all():
        bad = sorted({int(i) for i in (~torch.isfinite(seeds)).flatten(1).any(1).nonzero().flatten()})
        raise InputError(f"memory_seeds: seeds {bad[:10]} hold NaN or Inf")
    return seeds


def _guided_noise(model: DiffusionModel, z: torch.Tensor, timestep: int, embeddings: torch.Tensor, scale: float) -> torch.Tensor:
    """CFG eps = eps_u + scale (eps_c - eps_u); embeddings (2, L, D) as ("", concept)."""
    return NoisePredictor(model)(z, timestep, Conditioning(embeddings[1:], embeddings[:1], scale))


def draw_esd_example(
    model: DiffusionModel,
    config: ESDConfig,
    schedule: DDIMSchedule,
    embeddings: torch.Tensor,
    generator: torch.Generator,
    memory_seeds: torch.Tensor | None = None,
) -> ESDExample:
    """Steps 1-3 of an ESD iteration with the frozen model (adapters disabled), no gradients.

    Args:
        embeddings: (2, L, D), the embeddings of "" and of `config.concept`, in that order.
        generator: a CPU generator; draws, in order: stop step, memory coin (only when memory
            seeds are used), memory index or z_T.
        memory_seeds: checked seeds (N, C, h, w) float32 on the CPU, or None.
    """
    # 1. where to stop, and where to start
    stop = int(torch.randint(schedule.num_steps, (1,), generator=generator))
    from_memory = memory_seeds is not None and float(torch.rand((), generator=generator)) < config.memory_fraction
    if from_memory:
        z = memory_seeds[int(torch.randint(memory_seeds.shape[0], (1,), generator=generator))][None]
    else:
        z = torch.randn((1, *_latent_shape(model)), generator=generator)
    z = z.to(model.device, torch.float32)  # (1, C, h, w)

    with torch.no_grad(), adapters_disabled(unwrap_unet(model.unet)):
        # 2. `stop` DDIM steps from z_T (981 -> ... for SD at 50 steps); z then sits at timestep t
        for count in range(stop):
            index = schedule.num_steps - 1 - count
            alpha_t, alpha_s = schedule.alphas_at(index)
            eps = _guided_noise(model, z, schedule.timesteps[index], embeddings, config.start_guidance)
            z = ddim_step(z, eps, alpha_t, alpha_s)
        timestep = schedule.timesteps[schedule.num_steps - 1 - stop]
        # 3. frozen predictions and the negatively guided target
        eps_uncond, eps_cond = model.predict_noise(z.expand(2, -1, -1, -1), timestep, embeddings).chunk(2)
        target = eps_uncond - config.negative_guidance * (eps_cond - eps_uncond)
    return ESDExample(latents=z, timestep=timestep, target=target, from_memory=from_memory)


def _plain_unet(model: DiffusionModel) -> torch.nn.Module:
    """The model's UNet, checked to be a diffusers UNet without adapters (ESD samples from the base model)."""
    unet = unwrap_unet(model.unet)
    if not callable(getattr(unet, "add_adapter", None)):
        raise ModelError(
            f"the UNet ({type(model.unet).__name__}) is wrapped by peft or lacks diffusers' add_adapter; "
            "ESD needs a plain UNet2DConditionModel (merge and unload existing adapters first)"
        )
    if has_adapters(unet):  # diffusers-added or peft-wrapped
        raise ModelError(
            f"the UNet already carries adapters {sorted(getattr(unet, 'peft_config', {}) or [])}; ESD samples "
            "from the base model, so fuse or unload them first (unet.fuse_lora(); unet.unload_lora())"
        )
    return unet


def _used_memory_seeds(model: DiffusionModel, config: ESDConfig, memory_seeds: torch.Tensor | None) -> torch.Tensor | None:
    """The checked memory seeds when the memory-aware experiment is on (warns when only half of it is set)."""
    seeds = _check_memory_seeds(memory_seeds, _latent_shape(model))
    if seeds is not None and config.memory_weight == 0:
        warnings.warn("memory_seeds given but config.memory_weight is 0: the seeds are ignored", stacklevel=3)
        seeds = None
    elif seeds is None and config.memory_weight > 0:
        warnings.warn("config.memory_weight > 0 but no memory_seeds given: plain ESD is run", stacklevel=3)
    return seeds


def _trainable_adapter(unet: torch.nn.Module, config: ESDConfig, adapter_name: str) -> list[torch.nn.Parameter]:
    """Inject the seeded LoRA adapter; only its parameters require gradients afterwards."""
    params = add_lora_adapter(unet, rank=config.rank, lora_alpha=config.lora_alpha, target_modules=config.target_modules,
                              adapter_name=adapter_name, seed=config.seed, label=config.method)
    trainable = {id(p) for p in params}
    for p in unet.parameters():
        p.requires_grad_(id(p) in trainable)
    return params


def _esd_loss(model: DiffusionModel, unet: torch.nn.Module, config: ESDConfig, example: ESDExample,
              embeddings: torch.Tensor, dtype: torch.dtype, step: int) -> torch.Tensor:
    """Step 4: MSE of eps_theta(x_t, t, c) (adapter on) against the frozen target, times
    `memory_weight` on a memory-seed iteration."""
    t = torch.full((1,), example.timestep, device=model.device, dtype=torch.long)
    raw = unet(example.latents.to(dtype), t, **model.unet_conditioning(embeddings[1:])).sample.float()
    prediction = model.epsilon(raw, example.latents, example.timestep)  # the target is eps (SPEC 1.1)
    weight = config.memory_weight if example.from_memory else 1.0
    loss = weight * torch.nn.functional.mse_loss(prediction, example.target)
    if not torch.isfinite(loss):
        raise NonFiniteError(f"ESD loss is {loss.item()} at iteration {step} (timestep t={example.timestep})")
    return loss


def _memory_term_backward(memory_loss: MemoryLoss | None, config: ESDConfig, monitor: Any, step: int,
                          log: _TrainingLog) -> None:
    """Add w * L_memory's gradients on the iterations that carry the term, and log its value and weight."""
    memory_value = memory_weight = None
    if memory_loss is not None and step % config.memory_loss_every == 0:
        memory_weight = (monitor.regularization_weight if config.memory_loss_weight == "monitor"
                         else float(config.memory_loss_weight))
        if memory_weight > 0:
            # gradients add up: backward of (ESD + w L) = backward(ESD) + backward(w L)
            began = time.perf_counter()
            term = memory_loss()
            if not torch.isfinite(term):
                raise NonFiniteError(f"memory loss is {term.item()} at iteration {step}")
            if term.requires_grad:
                (memory_weight * term).backward()
            memory_value = float(term.detach())
            log.memory_seconds += time.perf_counter() - began
    log.memory_losses.append(memory_value)
    log.memory_weights.append(memory_weight)


def _stop_requested(step: int, config: ESDConfig, on_step: Callable[[int, float], bool | None] | None, monitor: Any,
                    log: _TrainingLog) -> bool:
    """After iteration `step`: whether `on_step` or the monitor ends training (recorded in `log`)."""
    if on_step is not None and on_step(step, log.losses[-1]) is True:
        log.stopped_early = step + 1 < config.iterations
        return True
    if monitor is not None and monitor.step(step + 1):
        log.stopped_early, log.stop_reason = step + 1 < config.iterations, monitor.stop_reason
        return True
    return False


def esd_lora_erase(
    model: DiffusionModel,
    config: ESDConfig,
    *,
    memory_seeds: torch.Tensor | None = None,
    on_step: Callable[[int, float], bool | None] | None = None,
    progress: bool = True,
    adapter_name: str = "esd",
    monitor: Any = None,
    memory_images: Any = None,
    memory_prompts: Any = None,
) -> ESDResult:
    """Erase `config.concept` from `model` with ESD, training a LoRA adapter on its UNet in place.

    The adapter `adapter_name` is added to `model.unet` and left enabled; every base weight stays
    bit-identical. Train/eval flags and base `requires_grad` flags are restored afterwards, also
    when `on_step` raises (its exceptions propagate; a callback layer decides what to swallow).

    Args:
        model: the model to erase from; its UNet must carry no peft adapter yet.
        config: the ESD settings.
        memory_seeds: (N, C, h, w) seeds where the concept still lives, for the memory-aware
            experiment (used only when config.memory_weight > 0).
        on_step: called as on_step(iteration, loss) after each optimizer step (iteration counts
            from 0), with the adapter enabled; it may switch modes (the next iteration sets them
            again). Returning True stops training after this iteration (`stopped_early`), so a
            `ProbeMonitor` can end it: `on_step=lambda i, loss: monitor.step(i + 1)`.
        progress: show a tqdm bar.
        monitor: a `ProbeMonitor` on `model`: probed at step 0 (before the first update) and then
            `monitor.step(i + 1)` after each iteration; training stops when it says so (don't
            also call it from `on_step`). It feeds the memory loss its weight ("monitor") and,
            for seed_recall and anchor_path, its seeds. With a memory loss the monitor reads the
            images the loss trains on: measured (RESULTS.md, anchor_path guidance 1), its score
            reached the retrained world's and stopped training while held-out images still
            remembered, so gate the result on images the loss never saw.
        memory_images / memory_prompts: the concept images (any form `probe` takes) for an
            inversion-based memory loss; default: the monitor's images. Prompts default to
            `config.concept`.
    """
    from tqdm.auto import tqdm

    unet = _plain_unet(model)
    seeds = _used_memory_seeds(model, config, memory_seeds)
    memory_loss = build_memory_loss(model, config, monitor, memory_images, memory_prompts)
    schedule = ddim_schedule(model.scheduler_config, config.ddim_steps)  # from the model's config (SPEC 1)
    embeddings = model.encode_prompts(["", config.concept])  # (2, L, D)
    generator = torch.Generator().manual_seed(config.seed)
    model.extras.setdefault("esd_configs", {})[adapter_name] = config  # for save_esd_adapter
    log = _TrainingLog()

    start = time.perf_counter()
    try:
        with preserve_module_state(unet):  # records flags before the adapter exists; restores on exit
            params = _trainable_adapter(unet, config, adapter_name)
            optimizer = torch.optim.Adam(params, lr=config.lr)
            dtype = model.dtype  # the base weights' dtype (the adapter itself is float32)
            if monitor is not None:
                monitor.maybe_probe(0)  # the starting point (and seed_recall's first seeds)
                if monitor.should_stop:  # the target holds already: no update at all
                    log.stopped_early, log.stop_reason = True, monitor.stop_reason
            bar = tqdm(range(0 if log.stopped_early else config.iterations), desc=f"ESD {config.method}",
                       disable=not progress)
            for step in bar:
                unet.eval()
                example = draw_esd_example(model, config, schedule, embeddings, generator, seeds)
                unet.train()
                loss = _esd_loss(model, unet, config, example, embeddings, dtype, step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                _memory_term_backward(memory_loss, config, monitor, step, log)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)  # the callback never sees stale gradients
                log.losses.append(float(loss.detach()))
                if example.from_memory:
                    log.memory_iterations.append(step)
                if progress:
                    bar.set_postfix(loss=f"{log.losses[-1]:.4g}")
                if _stop_requested(step, config, on_step, monitor, log):
                    break
            bar.close()
    finally:
        sync_adapter_modes(unet)  # the LoRA wrappers did not exist when the flags were recorded
    return ESDResult(
        losses=log.losses,
        seconds=time.perf_counter() - start,
        config=config,
        adapter_name=adapter_name,
        trainable_parameters=sum(p.numel() for p in params),
        memory_iterations=log.memory_iterations,
        stopped_early=log.stopped_early,
        memory_losses=log.memory_losses if memory_loss is not None else [],
        memory_loss_weights=log.memory_weights if memory_loss is not None else [],
        memory_loss_seconds=log.memory_seconds,
        stop_reason=log.stop_reason,
    )
