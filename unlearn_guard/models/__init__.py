"""Model access: the `DiffusionModel` bundle, loaders for pipelines and erased weights, tiny builders."""

from .bundle import DiffusionModel, unwrap_unet

__all__ = ["DiffusionModel", "unwrap_unet"]
