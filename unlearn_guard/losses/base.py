"""`MemoryLoss`: what every differentiable memory loss is, the registry of kinds, and its config's JSON round trip.

Each loss module registers its class with `register_memory_loss`; `LOSS_CONFIGS` and `LOSSES`
map a config's `kind` to its config class and loss class (`losses/__init__` imports every loss,
so the registry is full once `unlearn_guard.losses` is imported)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar, TypeVar

import torch

from ..errors import InputError
from ..schedule import DDIMSchedule, ddim_schedule
from ..models.bundle import DiffusionModel
from ..validation import is_int, require
from .common import checked_embeddings, checked_latents


@dataclasses.dataclass(frozen=True)
class MemoryLossConfig:
    """Fields every memory loss has.

    Args:
        steps: S, the DDIM steps of the differentiable pass; the loss costs S UNet evaluations
            per image in the forward pass (about 2 S more in the backward, 3 S with `checkpoint`).
        checkpoint: recompute each UNet call in the backward pass (torch.utils.checkpoint): memory
            of one UNet call's activations instead of S, for one more forward per step.
    """

    kind: ClassVar[str] = ""
    steps: int = 10
    checkpoint: bool = False

    def __post_init__(self) -> None:
        require(is_int(self.steps) and self.steps >= 1, f"{type(self).__name__}.steps", self.steps, "an int >= 1")
        require(isinstance(self.checkpoint, bool), f"{type(self).__name__}.checkpoint", self.checkpoint, "a bool")

    def unet_evaluations(self, images: int) -> int:
        """UNet evaluations of one forward call on `images` images (S per image)."""
        return self.steps * images

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def memory_loss_config_from_dict(data: dict[str, Any]) -> MemoryLossConfig:
    """The config `MemoryLossConfig.to_dict` wrote (its "kind" picks the class)."""
    data = dict(data)
    kind = data.pop("kind", None)
    if kind not in LOSS_CONFIGS:
        raise InputError(f"memory loss kind: got {kind!r}; expected one of {sorted(LOSS_CONFIGS)}")
    cls = LOSS_CONFIGS[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise InputError(f"{cls.__name__}: unknown fields {sorted(unknown)}; known: {sorted(known)}")
    return cls(**data)


class MemoryLoss(torch.nn.Module):
    """A memory loss on fixed concept latents and prompt embeddings; `forward()` gives a 0-dim tensor.

    The loss holds no parameters: its gradients go to whatever the model's UNet trains (a LoRA
    adapter during erasure). It changes no weight, no `requires_grad` flag, no train/eval mode and
    draws no random numbers.

    Args:
        model: the model being trained.
        latents: (B, C, h, w) clean latents z0 of the concept's images (`concept_latents`).
        embeddings: (B, L, D) or (1, L, D) embeddings of their prompts (`model.encode_prompts`).
        config: the loss's config.
    """

    config_class: ClassVar[type[MemoryLossConfig]] = MemoryLossConfig

    def __init__(self, model: DiffusionModel, latents: torch.Tensor, embeddings: torch.Tensor,
                 config: MemoryLossConfig | None = None) -> None:
        super().__init__()
        config = config if config is not None else self.config_class()
        if not isinstance(config, self.config_class):
            raise InputError(f"config: got {type(config).__name__}; expected a {self.config_class.__name__}")
        self.model = model
        self.config = config
        self.latents = checked_latents(latents, model, "latents")  # (B, C, h, w)
        self.embeddings = checked_embeddings(embeddings, self.latents.shape[0], model)  # (B, L, D)
        self.schedule: DDIMSchedule = ddim_schedule(model.scheduler_config, config.steps)  # SPEC 1

    @property
    def entries(self) -> int:
        """D = C * h * w, the entries of one latent."""
        return self.latents[0].numel()

    @property
    def unet_evaluations(self) -> int:
        """UNet evaluations of one forward call (S per image)."""
        return self.config.unet_evaluations(self.latents.shape[0])

    def extra_repr(self) -> str:
        return f"images={self.latents.shape[0]}, config={self.config}"


LOSS_CONFIGS: dict[str, type[MemoryLossConfig]] = {}
LOSSES: dict[str, type[MemoryLoss]] = {}

LossClass = TypeVar("LossClass", bound=type[MemoryLoss])


def register_memory_loss(cls: LossClass) -> LossClass:
    """Class decorator: `cls.config_class.kind` names `cls` and its config in `LOSSES` / `LOSS_CONFIGS`."""
    kind = cls.config_class.kind
    if not kind or (kind in LOSSES and LOSSES[kind].__qualname__ != cls.__qualname__):
        raise TypeError(f"{cls.__name__}: config kind {kind!r} is empty or names another loss already")
    LOSS_CONFIGS[kind] = cls.config_class
    LOSSES[kind] = cls
    return cls
