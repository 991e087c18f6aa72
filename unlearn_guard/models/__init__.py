"""Model access: the `DiffusionModel` bundle, loaders for pipelines and erased weights in every
shipping format (`formats.py` detects them), tiny builders."""

from .adapters import adapters_disabled, add_lora_adapter, has_adapters, lora_parameters, sync_adapter_modes, tuner_layers
from .bundle import DiffusionModel, unwrap_unet
from .loading import load_model, load_unet_state_dict
from .lora_loading import load_lora_adapter
from .state_dicts import read_state_dict
from .text_encoders import load_text_encoder
from .module_state import ModuleSnapshot, preserve_module_state, snapshot_module_state

__all__ = [
    "DiffusionModel",
    "ModuleSnapshot",
    "adapters_disabled",
    "add_lora_adapter",
    "has_adapters",
    "load_lora_adapter",
    "load_model",
    "load_text_encoder",
    "load_unet_state_dict",
    "lora_parameters",
    "preserve_module_state",
    "read_state_dict",
    "snapshot_module_state",
    "sync_adapter_modes",
    "tuner_layers",
    "unwrap_unet",
]
