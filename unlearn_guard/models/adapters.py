"""peft adapter plumbing on a UNet: find its LoRA layers, add a seeded LoRA adapter, run the base model.

A trainer injects the adapter in place (`unet.add_adapter`), so the probe and
`DiffusionModel.predict_noise` see the UNet as it is trained; the frozen base model theta* is the
same UNet with its adapters switched off (`adapters_disabled`). peft is imported only when used.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

from ..errors import ModelError


def tuner_layers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """Every peft tuner layer (a LoRA wrapper around a Linear/Conv2d) inside `unet`."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [module for module in unet.modules() if isinstance(module, BaseTunerLayer)]


def has_adapters(unet: torch.nn.Module) -> bool:
    """Whether `unet` carries any peft adapter, added by diffusers (`peft_config`) or by a peft wrapper."""
    return bool(getattr(unet, "peft_config", None)) or bool(tuner_layers(unet))


@contextmanager
def adapters_disabled(unet: torch.nn.Module) -> Iterator[None]:
    """Run the base model theta*: every peft adapter off for the body, and back on afterwards
    only if it was on before. A UNet without adapters passes through unchanged."""
    layers = tuner_layers(unet)
    was_enabled = bool(layers) and not any(layer.disable_adapters for layer in layers)
    if was_enabled:
        unet.disable_adapters()
    try:
        yield
    finally:
        if was_enabled:
            unet.enable_adapters()


def lora_parameters(unet: torch.nn.Module, adapter_name: str) -> list[torch.nn.Parameter]:
    """The lora_A / lora_B parameters of adapter `adapter_name`, in the UNet's parameter order."""
    return [p for name, p in unet.named_parameters() if ".lora_" in name and f".{adapter_name}." in name]


def add_lora_adapter(unet: torch.nn.Module, *, rank: int, lora_alpha: float, target_modules: Sequence[str],
                     adapter_name: str, seed: int, label: str = "lora") -> list[torch.nn.Parameter]:
    """Inject a LoRA adapter (seeded init, the model starts unchanged); return its parameters in float32.

    Args:
        unet: a diffusers UNet with `add_adapter` (no peft wrapper).
        rank, lora_alpha: LoRA rank r and alpha (scale alpha / r).
        target_modules: module-name suffixes peft matches (a name equal to one or ending in "." + one).
        seed: seeds lora_A's init without disturbing the caller's random stream.
        label: names the caller in the error when no target module exists in this UNet.
    """
    from peft import LoraConfig

    lora_config = LoraConfig(
        r=rank,
        lora_alpha=lora_alpha,
        init_lora_weights=True,  # A: kaiming-uniform, B: zeros, so the model starts unchanged
        target_modules=list(target_modules),
    )
    # LoRA A is drawn from torch's global generator: seed it without disturbing the caller's stream.
    devices = [unet.device] if unet.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            unet.add_adapter(lora_config, adapter_name=adapter_name)
        except ValueError as error:  # peft: no target module found in the model
            raise ModelError(f"{label}: could not put LoRA on {list(target_modules)} in this UNet: {error}") from error
    params = lora_parameters(unet, adapter_name)
    for p in params:
        # fp16/bf16 base weights: train the adapter in float32 (peft casts activations to it).
        p.data = p.data.float()
    return params


def sync_adapter_modes(unet: torch.nn.Module) -> None:
    """Give every tuner layer its base layer's train/eval flag (wrappers added after a flag snapshot
    was taken are not in it, so they follow the layer they wrap)."""
    for layer in tuner_layers(unet):
        layer.train(layer.get_base_layer().training)
