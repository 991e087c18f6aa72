"""The memory loss `esd_lora_erase` adds to ESD's: built from `ESDConfig.memory_loss` on the concept's images.

The images are the monitor's `loss_images` (or `memory_images`); `seed_recall` and
`anchor_path` (noise="seeds") follow the seeds of the monitor's latest probe, and the anchors and
keep terms read the monitor's reference images. The monitor is read only through its public
attributes (`config`, `latest_seeds`, `loss_images`, `reference`).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ..errors import InputError
from ..losses import LOSSES, MemoryLoss, concept_latents
from ..models.bundle import DiffusionModel
from .esd_config import ESDConfig


def build_memory_loss(model: DiffusionModel, config: ESDConfig, monitor: Any, memory_images: Any,
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

