"""Erasure trainers: ESD with a LoRA adapter on the UNet (`esd_lora_erase`).

`esd` holds the maths and the loop, `esd_config` its settings and result, `memory_loss` the
memory-loss term it can add, `saving` the adapter's files.
"""

from .esd import esd_lora_erase
from .esd_config import ESD_TARGET_MODULES, ESDConfig, ESDResult
from .saving import save_esd_adapter

__all__ = ["ESD_TARGET_MODULES", "ESDConfig", "ESDResult", "esd_lora_erase", "save_esd_adapter"]
