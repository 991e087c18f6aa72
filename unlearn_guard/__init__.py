"""unlearn_guard: tells the truth about concept erasure in text-to-image diffusion models.

    from unlearn_guard import probe
    result = probe(pipe, "concept_images/", reference="reference_images/", config="mofc")
    print(result.summary_table()); result.to_json("probe.json")

Public API: `probe`, `ProbeConfig` (presets "mofc", "fast", "ddim"), `ProbeResult`,
`MemoryDistance` (stateful d_N metric) and `memory_distance` (its pure twin), `DiffusionModel`
and `load_model` (pipelines, folders, hub ids, erased UNet weights, text encoders, LoRA).
"""

from .config import PRESETS, InversionConfig, ProbeConfig, RegularizationConfig
from .errors import (
    ImageLoadError,
    InputError,
    InsufficientDataError,
    ModelError,
    NonFiniteError,
    StateDictMismatchError,
    UnlearnGuardError,
)
from .io import ImageSet, load_image_set
from .models import DiffusionModel, load_model
from .probe import ProbeFailure, probe, probe_image_set
from .results import ImageProbe, ProbeResult, SetProbe
from .stats import MemoryDistance, MemoryDistanceResult, memory_distance

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "DiffusionModel",
    "ImageLoadError",
    "ImageProbe",
    "ImageSet",
    "InputError",
    "InsufficientDataError",
    "InversionConfig",
    "MemoryDistance",
    "MemoryDistanceResult",
    "ModelError",
    "NonFiniteError",
    "ProbeConfig",
    "ProbeFailure",
    "ProbeResult",
    "RegularizationConfig",
    "SetProbe",
    "StateDictMismatchError",
    "UnlearnGuardError",
    "load_image_set",
    "load_model",
    "memory_distance",
    "probe",
    "probe_image_set",
]
