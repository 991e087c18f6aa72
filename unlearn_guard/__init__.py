"""unlearn_guard: tells the truth about concept erasure in text-to-image diffusion models.

    from unlearn_guard import probe
    result = probe(pipe, "concept_images/", reference="reference_images/", config="mofc")
    print(result.summary_table()); result.to_json("probe.json")

Public API: `probe`, `ProbeConfig` (presets "mofc", "fast", "ddim"), `ProbeResult`,
`memory_score` (the calibrated decision signal, `DEFAULT_MAX_MEMORY` its gate threshold),
`MemoryDistance` (stateful d_N metric) and `memory_distance` (its pure twin), `DiffusionModel`
and `load_model` (pipelines, folders, hub ids, erased UNet weights, text encoders, LoRA).

"SPEC x.y" in the code's comments is section x.y of docs/spec.md, the science document; the
package's rooms and their layers are in docs/layout.md.

Importing the package is cheap: each public name loads its module (and torch, diffusers) on
first use (PEP 562). So `unlearn-guard --help` answers at once, and the command line's own
start-up (about 6 s of imports on 2 CPU cores) runs inside its Ctrl-C handling.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "PRESETS": "config",
    "InversionConfig": "config",
    "ProbeConfig": "config",
    "RegularizationConfig": "config",
    "ImageLoadError": "errors",
    "InputError": "errors",
    "InsufficientDataError": "errors",
    "ModelError": "errors",
    "NonFiniteError": "errors",
    "NonFiniteWeightsError": "errors",
    "OutputError": "errors",
    "StateDictMismatchError": "errors",
    "UnlearnGuardError": "errors",
    "ImageSet": "io",
    "load_image_set": "io",
    "DiffusionModel": "models",
    "load_model": "models",
    "ProbeFailure": "probe",
    "probe": "probe",
    "probe_image_set": "probe",
    "ImageProbe": "results",
    "ProbeResult": "results",
    "SetProbe": "results",
    "DEFAULT_MAX_MEMORY": "signal",
    "MemoryScoreResult": "signal",
    "memory_score": "signal",
    "MemoryDistance": "stats",
    "MemoryDistanceResult": "stats",
    "memory_distance": "stats",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # what static tools and IDEs see; at run time __getattr__ below loads these
    from .config import PRESETS, InversionConfig, ProbeConfig, RegularizationConfig
    from .errors import (
        ImageLoadError,
        InputError,
        InsufficientDataError,
        ModelError,
        NonFiniteError,
        NonFiniteWeightsError,
        OutputError,
        StateDictMismatchError,
        UnlearnGuardError,
    )
    from .io import ImageSet, load_image_set
    from .models import DiffusionModel, load_model
    from .probe import ProbeFailure, probe, probe_image_set
    from .results import ImageProbe, ProbeResult, SetProbe
    from .signal import DEFAULT_MAX_MEMORY, MemoryScoreResult, memory_score
    from .stats import MemoryDistance, MemoryDistanceResult, memory_distance


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups find it directly
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """Keeps `unlearn_guard.probe` the function.

    Importing a submodule binds it on its package under its own name, and the submodule
    `unlearn_guard.probe` shares its name with the function it defines. Whichever code imports it
    first (the gate does), `unlearn_guard.probe` must stay the function that
    `from unlearn_guard import probe` promises; the module stays in sys.modules.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
