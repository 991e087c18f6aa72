"""diffusers' schedulers by name, built from a model's own scheduler config (`from_config`).

Every scheduler takes the model's betas, timestep spacing and prediction type from the config the
model ships (SPEC 1), exactly as `SCHEDULER_CLASS.from_config(pipe.scheduler.config)` does when a
user swaps the scheduler of a `StableDiffusionPipeline`. "ddim" is not here: it is this package's
own DDIM loop (`unlearn_guard.schedule`).
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from .settings import check_scheduler

# name -> (diffusers class, config overrides). The overrides pin what the name promises whatever the
# model's config says: "dpm++" is DPM-Solver++ (2M), not the SDE variant a config might select.
SCHEDULER_CLASSES: dict[str, tuple[str, dict[str, Any]]] = {
    "pndm": ("PNDMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "lms": ("LMSDiscreteScheduler", {}),
}


def build_scheduler(scheduler_config: Mapping[str, Any], name: str) -> Any:
    """A fresh diffusers scheduler `name` (not "ddim") from a model's scheduler config."""
    import diffusers

    check_scheduler(name)
    if name == "ddim":
        raise ValueError("'ddim' is sampled by unlearn_guard's own loop, not a diffusers scheduler")
    class_name, overrides = SCHEDULER_CLASSES[name]
    config = {k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")}
    # `DiffusionModel.predict_noise` hands the scheduler eps whatever the UNet predicts (SPEC 1.1)
    config["prediction_type"] = "epsilon"
    return getattr(diffusers, class_name).from_config(config, **overrides)


def step_accepts_generator(scheduler: Any) -> bool:
    """True when the scheduler's `step` takes `generator=` (the ancestral and SDE ones draw noise)."""
    return "generator" in inspect.signature(scheduler.step).parameters
