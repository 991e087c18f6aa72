"""ESD-LoRA settings and results: `ESDConfig` (validated, JSON round trip), `ESDResult`, the LoRA layers per method."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from ..losses import MemoryLossConfig, memory_loss_config_from_dict
from ..validation import is_int, is_number, require_field, require_known_fields

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
        memory_weight, memory_fraction: the memory-aware experiment (`trainers.esd` docstring); off at 0.
        memory_loss: a memory loss config (`unlearn_guard.losses.AnchorPathConfig`, `SeedRecallConfig` or
            `InversionLikelihoodConfig`) to add that loss to ESD's (`trainers.esd` docstring); None: off.
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
        require_known_fields(cls, data)
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

