"""Erasure trainers: ESD with a LoRA adapter on the UNet (`esd_lora_erase`)."""

from .esd import ESD_TARGET_MODULES, ESDConfig, ESDResult, esd_lora_erase, save_esd_adapter

__all__ = ["ESD_TARGET_MODULES", "ESDConfig", "ESDResult", "esd_lora_erase", "save_esd_adapter"]
