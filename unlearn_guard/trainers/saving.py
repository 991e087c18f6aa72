"""Save an ESD adapter: diffusers' LoRA format plus `esd_config.json` (the config, targets and versions)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError, ModelError
from ..models.bundle import DiffusionModel, unwrap_unet
from ..provenance import package_versions
from .esd_config import ESDConfig

ESD_CONFIG_FILE = "esd_config.json"


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
    record = {
        "config": config.to_dict(),
        "adapter_name": adapter_name,
        "lora_target_modules": sorted(lora_config.target_modules),
        "versions": package_versions(),
    }
    (path / ESD_CONFIG_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
    return path
