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

import dataclasses
import json
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import torch

from ..validation import is_int, is_number, require_field
from ..errors import InputError, ModelError, NonFiniteError
from ..inversion.renoise import Conditioning, NoisePredictor
from ..inversion.schedule import DDIMSchedule, ddim_schedule, ddim_step
from ..losses import LOSSES, MemoryLoss, MemoryLossConfig, concept_latents, memory_loss_config_from_dict
from ..models.bundle import DiffusionModel, unwrap_unet
from ..models.module_state import preserve_module_state

ESDMethod = Literal["esd-x", "esd-u"]

# LoRA target modules (suffixes of diffusers UNet2DConditionModel module names; peft matches a
# name equal to an entry or ending in "." + entry).
# - esd-x = train-esd.py's "xattn": every parameter whose name contains "attn2" (cross-attention).
# - esd-u = train-esd.py's "noxattn": everything except attn2, the time embedding ("time_embed")
#   and the output head ("out.": conv_norm_out, conv_out). LoRA can only sit on Linear/Conv2d
#   layers, so the norms and biases that "noxattn" also trains are left frozen; every other
#   weight it trains is covered: conv_in, resnet convs and their time projections, the
#   transformers' proj_in/proj_out, self-attention (attn1), feed-forward, down/upsampler convs.
ESD_TARGET_MODULES: dict[str, tuple[str, ...]] = {
    "esd-x": ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"),
    "esd-u": (
        "conv_in",
        "conv1", "conv2", "conv_shortcut", "time_emb_proj",  # resnets
        "proj_in", "proj_out",  # transformer in/out projections
        "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",  # self-attention
        "ff.net.0.proj", "ff.net.2",  # feed-forward (GEGLU in, out)
        "downsamplers.0.conv", "upsamplers.0.conv",
    ),
}

ESD_CONFIG_FILE = "esd_config.json"


@dataclass(frozen=True)
class ESDConfig:
    """Settings of one ESD-LoRA erasure; defaults are train-esd.py's unless noted.

    Args:
        concept: the prompt to erase, e.g. "a red circle".
        method: "esd-x" (LoRA on cross-attention) or "esd-u" (LoRA on everything else); see
            `ESD_TARGET_MODULES` for the exact layers.
        negative_guidance: eta in target = eps_u - eta (eps_c - eps_u); ESD default 1.0.
        start_guidance: CFG scale used to sample x_t (0 = unconditional, 1 = no CFG); ESD 3.0.
        iterations: optimizer steps, one x_t each; ESD default 1000.
        lr: Adam learning rate. ESD uses 1e-5 for full fine-tuning; the LoRA default is 1e-4,
            10x higher, the usual ratio (diffusers' LoRA examples use 1e-4 where its full
            fine-tuning examples use 1e-5): with lora_B initialised to zero the first updates
            only move B, and a rank-4 update needs larger steps to reach the same change.
        rank, lora_alpha: LoRA rank r and alpha (scale alpha / r); alpha defaults to r.
        ddim_steps: DDIM steps of the sampling schedule; ESD default 50.
        seed: fixes every draw (LoRA init, stop steps, z_T, memory choices).
        memory_weight, memory_fraction: the memory-aware experiment (module docstring); off at 0.
        memory_loss: a memory loss config (`unlearn_guard.losses.AnchorPathConfig`, `SeedRecallConfig` or
            `InversionLikelihoodConfig`) to add that loss to ESD's (module docstring); None: off.
        memory_loss_weight: its weight w, a number >= 0, or "monitor" for the monitor's
            `regularization_weight` at each iteration (needs a `monitor`).
        memory_loss_every: add the term on iterations i with i % memory_loss_every == 0 (it costs
            about 3 S UNet evaluations per image with its backward pass, ESD about 3 + the sampling).
    """

    concept: str
    method: ESDMethod = "esd-x"
    negative_guidance: float = 1.0
    start_guidance: float = 3.0
    iterations: int = 1000
    lr: float = 1e-4
    rank: int = 4
    lora_alpha: float | None = None
    ddim_steps: int = 50
    seed: int = 0
    memory_weight: float = 0.0
    memory_fraction: float = 0.5
    memory_loss: MemoryLossConfig | None = None
    memory_loss_weight: float | Literal["monitor"] = 1.0
    memory_loss_every: int = 1

    def __post_init__(self) -> None:
        require_field("config", isinstance(self.concept, str) and self.concept.strip() != "", "concept", self.concept, "a non-empty prompt")
        require_field("config", self.method in ESD_TARGET_MODULES, "method", self.method, "'esd-x' or 'esd-u'")
        require_field("config", is_number(self.negative_guidance) and self.negative_guidance >= 0, "negative_guidance",
                 self.negative_guidance, "a finite number >= 0")
        require_field("config", is_number(self.start_guidance) and self.start_guidance >= 0, "start_guidance",
                 self.start_guidance, "a finite number >= 0")
        require_field("config", is_int(self.iterations) and self.iterations >= 1, "iterations", self.iterations, "an int >= 1")
        require_field("config", is_number(self.lr) and self.lr > 0, "lr", self.lr, "a finite number > 0")
        require_field("config", is_int(self.rank) and self.rank >= 1, "rank", self.rank, "an int >= 1")
        if self.lora_alpha is None:
            object.__setattr__(self, "lora_alpha", float(self.rank))
        require_field("config", is_number(self.lora_alpha) and self.lora_alpha > 0, "lora_alpha", self.lora_alpha,
                 "a finite number > 0 (or None for alpha = rank)")
        require_field("config", is_int(self.ddim_steps) and self.ddim_steps >= 1, "ddim_steps", self.ddim_steps, "an int >= 1")
        require_field("config", is_int(self.seed) and self.seed >= 0, "seed", self.seed, "an int >= 0")
        require_field("config", is_number(self.memory_weight) and self.memory_weight >= 0, "memory_weight", self.memory_weight,
                 "a finite number >= 0 (0 = off)")
        require_field("config", is_number(self.memory_fraction) and 0 <= self.memory_fraction <= 1, "memory_fraction",
                 self.memory_fraction, "a number in [0, 1]")
        if isinstance(self.memory_loss, dict):
            object.__setattr__(self, "memory_loss", memory_loss_config_from_dict(self.memory_loss))
        require_field("config", self.memory_loss is None or isinstance(self.memory_loss, MemoryLossConfig), "memory_loss",
                 self.memory_loss, "None or a memory loss config (unlearn_guard.losses)")
        require_field("config", self.memory_loss_weight == "monitor" or (is_number(self.memory_loss_weight)
                                                          and self.memory_loss_weight >= 0),
                 "memory_loss_weight", self.memory_loss_weight, "a finite number >= 0 or 'monitor'")
        require_field("config", is_int(self.memory_loss_every) and self.memory_loss_every >= 1, "memory_loss_every",
                 self.memory_loss_every, "an int >= 1")

    @property
    def target_modules(self) -> tuple[str, ...]:
        return ESD_TARGET_MODULES[self.method]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["memory_loss"] = None if self.memory_loss is None else self.memory_loss.to_dict()  # with its kind
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ESDConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"ESDConfig: unknown fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "ESDConfig":
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class ESDResult:
    """What `esd_lora_erase` did: the ESD loss per iteration run (times `memory_weight` on
    memory-seed iterations; the memory loss term is in `memory_losses`; fewer than
    `config.iterations` when `on_step` or the monitor stopped it, `stopped_early`),
    wall-clock seconds, the config, the adapter's name, its trainable parameter count, and the
    iterations that started from a memory seed; with a memory loss, its value and weight per
    iteration (None where it was not computed) and its share of the wall time; with a monitor,
    why it stopped training (None: it did not)."""

    losses: list[float]
    seconds: float
    config: ESDConfig
    adapter_name: str
    trainable_parameters: int
    memory_iterations: list[int] = field(default_factory=list)
    stopped_early: bool = False
    memory_losses: list[float | None] = field(default_factory=list)
    memory_loss_weights: list[float | None] = field(default_factory=list)
    memory_loss_seconds: float = 0.0
    stop_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "memory_losses": list(self.memory_losses),
            "memory_loss_weights": list(self.memory_loss_weights),
            "memory_loss_seconds": self.memory_loss_seconds,
            "stop_reason": self.stop_reason,
            "losses": list(self.losses),
            "seconds": self.seconds,
            "config": self.config.to_dict(),
            "adapter_name": self.adapter_name,
            "trainable_parameters": self.trainable_parameters,
            "memory_iterations": list(self.memory_iterations),
            "stopped_early": self.stopped_early,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


@dataclass(frozen=True)
class ESDExample:
    """One training example: x_t (1, C, h, w) float32 at `timestep`, and the ESD target (same shape)."""

    latents: torch.Tensor
    timestep: int
    target: torch.Tensor
    from_memory: bool


# ---------------------------------------------------------------------------------------- helpers
def _tuner_layers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [module for module in unet.modules() if isinstance(module, BaseTunerLayer)]


@contextmanager
def adapters_disabled(unet: torch.nn.Module) -> Iterator[None]:
    """Run the base model theta*: every peft adapter off for the body, and back on afterwards
    only if it was on before. A UNet without adapters passes through unchanged."""
    layers = _tuner_layers(unet)
    was_enabled = bool(layers) and not any(layer.disable_adapters for layer in layers)
    if was_enabled:
        unet.disable_adapters()
    try:
        yield
    finally:
        if was_enabled:
            unet.enable_adapters()


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


def _add_esd_adapter(unet: torch.nn.Module, config: ESDConfig, adapter_name: str) -> list[torch.nn.Parameter]:
    """Inject the LoRA adapter (seeded init) and return its parameters, in float32."""
    from peft import LoraConfig

    lora_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.lora_alpha,
        init_lora_weights=True,  # A: kaiming-uniform, B: zeros, so the model starts unchanged
        target_modules=list(config.target_modules),
    )
    # LoRA A is drawn from torch's global generator: seed it without disturbing the caller's stream.
    devices = [unet.device] if unet.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        try:
            unet.add_adapter(lora_config, adapter_name=adapter_name)
        except ValueError as error:  # peft: no target module found in the model
            raise ModelError(
                f"{config.method}: could not put LoRA on {list(config.target_modules)} in this UNet: {error}"
            ) from error
    params = [p for name, p in unet.named_parameters() if ".lora_" in name and f".{adapter_name}." in name]
    for p in params:
        # fp16/bf16 base weights: train the adapter in float32 (peft casts activations to it).
        p.data = p.data.float()
    return params


def _build_memory_loss(model: DiffusionModel, config: ESDConfig, monitor: Any, memory_images: Any,
                       memory_prompts: Any) -> MemoryLoss | None:
    """The memory loss module of `config.memory_loss` on the monitor's concept images (or
    `memory_images`), checked before any training."""
    loss_config = config.memory_loss
    if loss_config is None:
        if memory_images is not None:
            warnings.warn("memory_images given but config.memory_loss is None: the images are ignored", stacklevel=3)
        return None
    if config.memory_loss_weight == "monitor" and monitor is None:
        raise InputError("memory_loss_weight: got 'monitor' but no monitor was given; pass monitor=ProbeMonitor(...) "
                         "or a fixed weight")
    seed_recall = loss_config.kind == "seed_recall"
    if seed_recall:
        if monitor is None or memory_images is not None:
            raise InputError("memory_loss: seed_recall reads the seeds the monitor's probe finds for the monitor's "
                             "loss_images; pass monitor=... and no memory_images")
        probe_config = monitor.config.probe
        _require_kept_seeds(monitor, "seed_recall")
        if probe_config.inversion.num_steps != loss_config.steps:
            warnings.warn(f"memory_loss.steps={loss_config.steps} differs from the probe's "
                          f"{probe_config.inversion.num_steps} inversion steps: the seeds sit at another timestep "
                          "than the loss starts from", stacklevel=3)
    if memory_images is not None:
        from ..io import load_image_set

        images = load_image_set(memory_images, memory_prompts if memory_prompts is not None else config.concept,
                                resolution=model.resolution, label="memory_images")
    elif monitor is not None:
        images = monitor.loss_images  # its separate loss_images when given, else the images it decides on
    else:
        raise InputError("memory_loss: needs images of the concept; pass memory_images=... or monitor=...")
    latents = concept_latents(model, images.pixels)  # (B, C, h, w), the base model before any update
    embeddings = model.encode_prompts(images.prompts)  # (B, L, D)
    extra: dict[str, Any] = {"seeds": lambda: monitor.latest_seeds} if seed_recall else {}
    if loss_config.kind == "anchor_path":
        return _build_anchor_path(model, loss_config, monitor, images, latents, embeddings)
    if getattr(loss_config, "keep_weight", 0) > 0:  # the anchor on known content: the monitor's reference set
        if monitor is None:
            raise InputError("memory_loss: keep_weight > 0 anchors on the monitor's reference images; pass monitor=...")
        extra.update(_monitor_reference(model, monitor))
    return LOSSES[loss_config.kind](model, latents, embeddings, loss_config, **extra)


def _require_kept_seeds(monitor: Any, loss: str) -> None:
    """A loss that reads the monitor's seeds needs a probe that keeps them."""
    if not monitor.config.probe.keep_seeds:
        raise InputError(f"memory_loss: {loss} needs the monitor's probe to keep its seeds; build the monitor "
                         "with MonitorConfig(probe=ProbeConfig.from_preset(..., keep_seeds=True))")


def _monitor_reference(model: DiffusionModel, monitor: Any) -> dict[str, torch.Tensor]:
    """The monitor's reference images as a loss's anchor: their latents and prompt embeddings."""
    return {"reference_latents": concept_latents(model, monitor.reference.pixels),
            "reference_embeddings": model.encode_prompts(monitor.reference.prompts)}


def _build_anchor_path(model: DiffusionModel, loss_config: Any, monitor: Any, images: Any, latents: torch.Tensor,
                       embeddings: torch.Tensor) -> MemoryLoss:
    """`AnchorPathLoss` on the concept images: the monitor's seeds (when it keeps them and probes
    these images) and the monitor's reference images as the anchors and the keep term."""
    seeds = None
    if loss_config.noise == "seeds":
        if monitor is None or images is not monitor.loss_images:
            raise InputError("memory_loss: anchor_path with noise='seeds' follows the seeds the monitor's probe finds "
                             "for the monitor's loss_images; pass monitor=... and no memory_images, or noise='fresh'")
        _require_kept_seeds(monitor, "anchor_path with noise='seeds'")
        if monitor.config.probe.inversion.num_steps != loss_config.steps:
            raise InputError(f"memory_loss: anchor_path steps={loss_config.steps} differs from the probe's "
                             f"{monitor.config.probe.inversion.num_steps} inversion steps; the seeds sit at the "
                             "probe's last timestep, so set steps to the probe's step count")
        seeds = lambda: monitor.latest_seeds  # noqa: E731
    needs_reference = loss_config.anchor is None or loss_config.keep_weight > 0
    extra: dict[str, Any] = {}
    if needs_reference:
        if monitor is None:
            raise InputError("memory_loss: anchor_path anchors on the monitor's reference images (the default anchor "
                             "and keep_weight > 0); pass monitor=..., or set anchor=... and keep_weight=0")
        extra.update(_monitor_reference(model, monitor))
    if loss_config.anchor is not None:
        extra["anchor_embeddings"] = model.encode_prompts([loss_config.anchor])
    if loss_config.null_weight > 0:
        extra["null_embedding"] = model.encode_prompts([""])
    return LOSSES[loss_config.kind](model, latents, embeddings, loss_config, seeds=seeds, **extra)


# ---------------------------------------------------------------------------------------- public API
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

    unet = unwrap_unet(model.unet)
    if not callable(getattr(unet, "add_adapter", None)):
        raise ModelError(
            f"the UNet ({type(model.unet).__name__}) is wrapped by peft or lacks diffusers' add_adapter; "
            "ESD needs a plain UNet2DConditionModel (merge and unload existing adapters first)"
        )
    if getattr(unet, "peft_config", None) or _tuner_layers(unet):  # diffusers-added or peft-wrapped
        raise ModelError(
            f"the UNet already carries adapters {sorted(getattr(unet, 'peft_config', {}) or [])}; ESD samples "
            "from the base model, so fuse or unload them first (unet.fuse_lora(); unet.unload_lora())"
        )
    shape = _latent_shape(model)
    seeds = _check_memory_seeds(memory_seeds, shape)
    if seeds is not None and config.memory_weight == 0:
        warnings.warn("memory_seeds given but config.memory_weight is 0: the seeds are ignored", stacklevel=2)
        seeds = None
    elif seeds is None and config.memory_weight > 0:
        warnings.warn("config.memory_weight > 0 but no memory_seeds given: plain ESD is run", stacklevel=2)

    memory_loss = _build_memory_loss(model, config, monitor, memory_images, memory_prompts)
    schedule = ddim_schedule(model.scheduler_config, config.ddim_steps)  # from the model's config (SPEC 1)
    embeddings = model.encode_prompts(["", config.concept])  # (2, L, D)
    generator = torch.Generator().manual_seed(config.seed)
    model.extras.setdefault("esd_configs", {})[adapter_name] = config  # for save_esd_adapter
    losses: list[float] = []
    memory_iterations: list[int] = []
    memory_losses: list[float | None] = []
    memory_weights: list[float | None] = []
    memory_seconds = 0.0
    stopped_early = False
    stop_reason: str | None = None

    start = time.perf_counter()
    try:
        with preserve_module_state(unet):  # records flags before the adapter exists; restores on exit
            params = _add_esd_adapter(unet, config, adapter_name)
            trainable = {id(p) for p in params}
            for p in unet.parameters():
                p.requires_grad_(id(p) in trainable)
            optimizer = torch.optim.Adam(params, lr=config.lr)
            dtype = model.dtype  # the base weights' dtype (the adapter itself is float32)
            if monitor is not None:
                monitor.maybe_probe(0)  # the starting point (and seed_recall's first seeds)
                if monitor.should_stop:  # the target holds already: no update at all
                    stopped_early, stop_reason = True, monitor.stop_reason
            todo = 0 if stopped_early else config.iterations
            bar = tqdm(range(todo), desc=f"ESD {config.method}", disable=not progress)
            for step in bar:
                unet.eval()
                example = draw_esd_example(model, config, schedule, embeddings, generator, seeds)
                unet.train()
                # 4. eps_theta(x_t, t, c) with the adapter, against the frozen target
                t = torch.full((1,), example.timestep, device=model.device, dtype=torch.long)
                prediction = unet(example.latents.to(dtype), t, encoder_hidden_states=embeddings[1:]).sample.float()
                weight = config.memory_weight if example.from_memory else 1.0
                loss = weight * torch.nn.functional.mse_loss(prediction, example.target)
                if not torch.isfinite(loss):
                    raise NonFiniteError(f"ESD loss is {loss.item()} at iteration {step} (timestep t={example.timestep})")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
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
                        memory_seconds += time.perf_counter() - began
                memory_losses.append(memory_value)
                memory_weights.append(memory_weight)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)  # the callback never sees stale gradients
                losses.append(float(loss.detach()))
                if example.from_memory:
                    memory_iterations.append(step)
                if progress:
                    bar.set_postfix(loss=f"{losses[-1]:.4g}")
                if on_step is not None and on_step(step, losses[-1]) is True:
                    stopped_early = step + 1 < config.iterations
                    break
                if monitor is not None and monitor.step(step + 1):
                    stopped_early, stop_reason = step + 1 < config.iterations, monitor.stop_reason
                    break
            bar.close()
    finally:
        # The LoRA wrappers did not exist when the flags were recorded: they follow their layer.
        for layer in _tuner_layers(unet):
            layer.train(layer.get_base_layer().training)
    return ESDResult(
        losses=losses,
        seconds=time.perf_counter() - start,
        config=config,
        adapter_name=adapter_name,
        trainable_parameters=sum(p.numel() for p in params),
        memory_iterations=memory_iterations,
        stopped_early=stopped_early,
        memory_losses=memory_losses if memory_loss is not None else [],
        memory_loss_weights=memory_weights if memory_loss is not None else [],
        memory_loss_seconds=memory_seconds,
        stop_reason=stop_reason,
    )


def save_esd_adapter(
    model: DiffusionModel,
    folder: str | os.PathLike,
    adapter_name: str = "esd",
    *,
    config: ESDConfig | None = None,
) -> Path:
    """Save the ESD adapter in diffusers' LoRA format, plus `esd_config.json`; returns the folder.

    `pytorch_lora_weights.safetensors` is written by `StableDiffusionPipeline.save_lora_weights`
    with the adapter's LoraConfig as metadata (without it, loaders assume alpha = rank), so both
    `pipeline.load_lora_weights(folder)` and `unlearn_guard.models.load_lora_adapter` read it.
    `config` defaults to the one `esd_lora_erase` used for this adapter.
    """
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    unet = unwrap_unet(model.unet)
    adapters = getattr(unet, "peft_config", None) or {}
    if adapter_name not in adapters:
        raise ModelError(f"adapter_name: the UNet has no adapter {adapter_name!r}; it has {sorted(adapters)}")
    config = config or model.extras.get("esd_configs", {}).get(adapter_name)
    if config is None:
        raise InputError(f"config: no ESDConfig known for adapter {adapter_name!r}; pass config=...")
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    lora_config = adapters[adapter_name]
    StableDiffusionPipeline.save_lora_weights(
        str(path),
        unet_lora_layers=get_peft_model_state_dict(unet, adapter_name=adapter_name),
        unet_lora_adapter_metadata=lora_config.to_dict(),
        safe_serialization=True,
    )
    from ..provenance import package_versions

    record = {
        "config": config.to_dict(),
        "adapter_name": adapter_name,
        "lora_target_modules": sorted(lora_config.target_modules),
        "versions": package_versions(),
    }
    (path / ESD_CONFIG_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
    return path
