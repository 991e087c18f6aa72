"""Model access: the `DiffusionModel` bundle, loaders for pipelines and erased weights, tiny builders."""

from .bundle import DiffusionModel, unwrap_unet
from .loading import load_lora_adapter, load_model, load_text_encoder, load_unet_state_dict, read_state_dict
from .module_state import ModuleSnapshot, preserve_module_state, snapshot_module_state

__all__ = [
    "DiffusionModel",
    "ModuleSnapshot",
    "load_lora_adapter",
    "load_model",
    "load_text_encoder",
    "load_unet_state_dict",
    "preserve_module_state",
    "read_state_dict",
    "snapshot_module_state",
    "unwrap_unet",
]
